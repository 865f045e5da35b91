"""Under pressure: one API process (``devact api``) facing a crowd, then 1,000 live streams.

Data: the query section's data set (bench/query_data.py: devices heartbeating through working
days for 90 days, clients in several timezones), 300 devices (25 in a quick run), fed to Redis
through the worker's own ``BatchProcessor``; no PostgreSQL.

The crowd: 32, 256 and 1,024 connections in turn (a quick run: 256 only), each a closed loop of
requests for the 90-day daily activity series of random devices (bench/crowd_load.py: every
request of the measured window is counted, the slowest included), after a warm-up on the same
connections. Figures per level: req/s, p50 and p99 latency of every request, the requests
answered with each status other than 200 (or not at all), and the CPU of the API process and of
Redis per request (from /proc and ``INFO cpu``). The API runs with its default limits: beyond
``DEVACT_MAX_IN_FLIGHT`` (1,000) requests at once it answers a fast 503, and such answers are
counted, not hidden.

The live streams: bench/pressure_live.py.

Standalone: ``python -m bench.pressure [--quick]`` starts its own Kafka and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench import pressure_live
from bench.common import local_stack, waiting
from bench.crowd_load import closed_loop, request
from bench.query_data import (
    DAYS,
    BenchError,
    Dataset,
    Loader,
    _no_reread,
    generated_total,
    make_dataset,
    register,
)
from bench.query_load import HttpServer, _tree_cpu_s, redis_cpu, serving
from devact.progress import Meter
from devtools.services import Endpoints
from devtools.services.process import free_port
from state.connection import connect
from state.registry import Registry
from state.settings import StoreSettings
from state.writer import Writer
from stream.dlq import DeadLetterRecord
from stream.processor import BatchProcessor

log = logging.getLogger(__name__)

SEED = 8
MS = 1000.0
CURVE = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99)
CHECKED_DEVICES = 3


@dataclass(frozen=True)
class Mode:
    devices: int
    connections: tuple[int, ...]
    duration_s: int
    warmup_s: int
    streams: int
    rounds: int


FULL = Mode(devices=300, connections=(32, 256, 1024), duration_s=15, warmup_s=3, streams=1000,
            rounds=5)  # fmt: skip
QUICK = Mode(devices=25, connections=(256,), duration_s=5, warmup_s=1, streams=200, rounds=3)


# --- Data ---------------------------------------------------------------------------------------


class _NoPostgres:
    """The loader's PostgreSQL side, discarded: this section reads Redis only."""

    async def copy_records_to_table(self, table: str, records: Sequence[object]) -> None:
        return None


async def load(redis_url: str, dataset: Dataset) -> tuple[str, dict[str, object]]:
    """Flush Redis, register the data set's clients, load their devices as bench/query_data.py
    does (without PostgreSQL); the token of all clients, and the figures of the load."""
    redis = connect(StoreSettings(redis_url=redis_url, redis_timeout_s=60.0))
    try:
        await redis.flushall()
        token = await register(redis, dataset)
        dead: list[DeadLetterRecord] = []

        async def send(letters: Sequence[DeadLetterRecord]) -> None:
            dead.extend(letters)

        processor = BatchProcessor(
            Registry(redis),
            Writer(redis, fleet=False),  # the device series read the device keys alone
            send,
            clock=lambda: datetime.now(UTC),
            default_timezone="UTC",
            retention_days=400,
            reread=_no_reread,
        )
        with Meter("pressure: loading Redis", DAYS, "days") as loaded:
            stats = await Loader(processor, _NoPostgres()).load(dataset, loaded.advance)
        if dead:
            raise BenchError(f"{len(dead)} dead letters, e.g. {dead[0]!r:.300}")
    finally:
        await redis.aclose()
    return token, {
        "pressure_devices": len(dataset.devices),
        "pressure_device_days": stats.device_days,
        "pressure_rows": stats.rows,
    }


def _series_path(dataset: Dataset, n: int) -> str:
    device = dataset.devices[n]
    return (
        f"/v2/clients/{device.client_id}/analytics/devices/{device.device_id}/activity"
        f"?metric=activity-count&start_date={dataset.first_day}&end_date={dataset.last_day}"
    )


async def check_answers(api: HttpServer, token: str, dataset: Dataset) -> None:
    """A few devices' series add up to their generated heartbeats before any load runs."""
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(min(CHECKED_DEVICES, len(dataset.devices))):
            path = _series_path(dataset, n)
            response = await http.get(api.url + path, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                raise BenchError(f"{path}: {response.status_code} {response.text}")
            total = sum(point["value"] for point in response.json()["data"])
            if total != generated_total(dataset, n):
                raise BenchError(f"{path}: total {total}, generated {generated_total(dataset, n)}")


# --- The crowd ----------------------------------------------------------------------------------


async def crowd(
    api: HttpServer, requests: list[bytes], connections: int, mode: Mode, redis_url: str
) -> dict[str, object]:
    """One level of the crowd: a warm-up, then the measured window (bench/crowd_load.py)."""
    return await waiting(
        f"pressure: {connections} connections",
        _crowd(api, requests, connections, mode, redis_url),
        seconds=mode.warmup_s + mode.duration_s,
    )


async def _crowd(
    api: HttpServer, requests: list[bytes], connections: int, mode: Mode, redis_url: str
) -> dict[str, object]:
    assert api.process is not None
    pid = api.process.pid
    store_cpu = redis_cpu(redis_url)
    marks: dict[str, tuple[float, float, float, float]] = {}

    async def at_window(moment: str) -> None:
        # Wall time, the API's CPU, Redis's CPU and this process's (the load generator's).
        marks[moment] = (time.monotonic(), _tree_cpu_s(pid), await store_cpu(), time.process_time())

    tally = await closed_loop(
        api.port, requests, connections, mode.warmup_s, mode.duration_s, SEED, at_window
    )
    wall, api_cpu, store_cpu_s, own_cpu = (
        end - start for start, end in zip(marks["start"], marks["end"], strict=True)
    )
    counted = sum(tally.statuses.values())
    if not tally.latencies:
        raise BenchError(f"{connections} connections: no answer at all: {dict(tally.statuses)}")
    latencies, ok, first = sorted(tally.latencies), sorted(tally.ok_latencies), tally.first_answers
    first.sort()
    errors = {k: v for k, v in sorted(tally.statuses.items()) if k != "200"}
    answered = max(1, tally.in_window)
    prefix = f"crowd_{connections}"
    figures: dict[str, object] = {
        f"{prefix}_rps": round(tally.in_window / wall, 1),
        f"{prefix}_ok_rps": round(tally.ok_in_window / wall, 1),
        f"{prefix}_p50_ms": _ms(latencies, 50),
        f"{prefix}_p99_ms": _ms(latencies, 99),
        f"{prefix}_max_ms": round(latencies[-1] * MS, 1),
        f"{prefix}_ok_p50_ms": _ms(ok, 50),
        f"{prefix}_ok_p99_ms": _ms(ok, 99),
        f"{prefix}_first_answer_p50_ms": _ms(first, 50),
        f"{prefix}_first_answer_max_ms": _ms(first, 100),
        f"{prefix}_requests": counted,
        f"{prefix}_errors": sum(errors.values()),
        f"{prefix}_errors_by_status": errors,
        f"{prefix}_retry_after_waits": tally.retry_waits,
        f"{prefix}_latency_curve": [[p, _ms(latencies, p)] for p in CURVE],
        f"{prefix}_api_cpu_ms_per_request": round(MS * api_cpu / answered, 3),
        f"{prefix}_redis_cpu_ms_per_request": round(MS * store_cpu_s / answered, 3),
        f"{prefix}_api_cpu_pct": round(100 * api_cpu / wall, 1),
        f"{prefix}_redis_cpu_pct": round(100 * store_cpu_s / wall, 1),
        f"{prefix}_loadgen_cpu_pct": round(100 * own_cpu / wall, 1),
    }
    log.info("pressure, %d connections: %s", connections, {
        k: v for k, v in figures.items() if not k.endswith("_curve")
    })  # fmt: skip
    return figures


def _ms(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds (None: no value)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return round(ordered[min(rank, len(ordered)) - 1] * MS, 1)


# --- The section --------------------------------------------------------------------------------


def api_process(redis_url: str, run_dir: Path) -> HttpServer:
    """One ``devact api`` process (default limits) on the bench's Redis."""
    devact = str(Path(sys.executable).parent / "devact")
    port = free_port()
    argv = [devact, "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return HttpServer("pressure-api", argv, {"DEVACT_REDIS_URL": redis_url}, port, run_dir)


async def run(endpoints: Endpoints, run_dir: Path, quick: bool) -> dict[str, object]:
    """The pressure section. Flushes the Redis of ``endpoints`` (the bench's own).

    Figures (flat): ``crowd_<connections>_rps`` (every response), ``_ok_rps`` (200 only),
    ``_p50_ms``, ``_p99_ms``, ``_errors`` (responses other than 200 and socket errors) and
    ``_errors_by_status`` ({"503": n, "socket_read": n}), ``_api_cpu_ms_per_request``,
    ``_redis_cpu_ms_per_request``; ``live_<streams>_*`` (bench/pressure_live.py);
    ``pressure_load_average_1m``: how busy the machine was as the section began.
    """
    mode = QUICK if quick else FULL
    results: dict[str, object] = {"pressure_load_average_1m": round(os.getloadavg()[0], 2)}
    dataset = make_dataset(mode.devices, SEED, datetime.now(UTC).date())
    token, figures = await load(endpoints.redis_url, dataset)
    results.update(figures)
    live = await pressure_live.prepare(endpoints.redis_url, mode.streams)
    auth = {"Authorization": f"Bearer {token}"}
    async with serving(api_process(endpoints.redis_url, run_dir), "/readyz", auth) as api:
        await check_answers(api, token, dataset)
        requests = [
            request(_series_path(dataset, n), api.port, auth) for n in range(len(dataset.devices))
        ]
        for connections in mode.connections:
            results.update(await crowd(api, requests, connections, mode, endpoints.redis_url))
        results.update(await pressure_live.run(endpoints, api, run_dir, live, mode.rounds))
    results["crowd_connections"] = list(mode.connections)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one crowd of 256, 200 streams")
    parser.add_argument("--run-dir", type=Path, help="default: a new directory under /tmp")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="devact-bench-pressure-"))

    async def body() -> dict[str, object]:
        with local_stack(run_dir) as endpoints:
            return await run(endpoints, run_dir, args.quick)

    results = asyncio.run(body())
    printable = {k: v for k, v in results.items() if not k.endswith("_curve")}
    sys.stdout.write(orjson.dumps(printable, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
