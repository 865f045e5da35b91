"""Queries and memory (issue 4, items 3 and 4): the API against the seed's SQL, on the same events.

Data: devices heartbeating every 5 minutes through an 8-hour working day (09:00-16:55 local, 96
heartbeats a weekday), a few heartbeats on some weekend days, 90 days, 1 to 10 users a day out of
a small pool per device; several clients in timezones with DST and odd offsets. Deterministic for
a seed and a start date (the 90 days end a week before today, so Redis's retention keeps them).

The events reach Redis through the worker's own code (``BatchProcessor.process``, without Kafka:
one JSON array of heartbeats per message and device-day, consecutive offsets per partition) and
PostgreSQL through COPY into the seed's ``heartbeats`` table, both in the order they happen.
Memory: Redis ``used_memory`` growth over the
load, and PostgreSQL's table and index size, per device-day. Queries: ``wrk`` at 32 connections
against the API (one process, then one per core) and the SQL baseline (bench/sql_api.py), after
checking both answer the same for a sample of devices.

Standalone: ``python -m bench.query [--quick]`` starts its own Redis and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bench.common import waiting
from bench.flame import flame_graph
from bench.postgres import PostgresServer
from bench.query_data import (
    BenchError,
    Dataset,
    Device,
    generated_total,
    load_redis_and_pg,
    make_dataset,
)
from bench.query_load import (
    HttpServer,
    Mode,
    WrkResult,
    api_server,
    drive,
    flat,
    pg_cpu,
    redis_cpu,
    serving,
    sql_server,
)
from devact.cli import DEFAULT_API_SERVER, ApiServer
from devtools.services.process import free_port
from devtools.services.redis import RedisServer

SEED = 4
CHECKED_DEVICES = 6
FULL = Mode(devices=500, duration_s=15, warmup_s=3, extra_runs=True)
QUICK = Mode(devices=25, duration_s=4, warmup_s=1, extra_runs=False)


# --- Correctness --------------------------------------------------------------------------------


async def check_same_answers(api: HttpServer, sql: HttpServer, token: str, dataset: Dataset) -> int:
    """For a sample of devices, the API and the SQL baseline give the same bodies (daily and
    weekly, both metrics; user counts are exact at 500 users a day or fewer), and the daily
    activity adds up to the device's generated heartbeats. Returns the requests compared."""
    rng = random.Random(dataset.seed)
    compared = 0
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for n in rng.sample(
            range(len(dataset.devices)), min(CHECKED_DEVICES, len(dataset.devices))
        ):
            device = dataset.devices[n]
            expected_total = generated_total(dataset, n)
            for metric in ("activity-count", "user-count"):
                for granularity in ("daily", "weekly"):
                    path = _series_path(device, dataset, metric, granularity)
                    ours = await http.get(api.url + path, headers=auth)
                    theirs = await http.get(sql.url + path)
                    if ours.status_code != 200 or ours.content != theirs.content:
                        raise BenchError(
                            f"different answers for {path}:\n"
                            f"API {ours.status_code} {ours.text}\n"
                            f"SQL {theirs.status_code} {theirs.text}"
                        )
                    compared += 1
                    total = sum(point["value"] for point in ours.json()["data"])
                    if metric == "activity-count" and total != expected_total:
                        raise BenchError(f"{path}: total {total}, generated {expected_total}")
    return compared


def _series_path(device: Device, dataset: Dataset, metric: str, granularity: str) -> str:
    return (
        f"/v2/clients/{device.client_id}/analytics/devices/{device.device_id}/activity"
        f"?metric={metric}&granularity={granularity}"
        f"&start_date={dataset.first_day}&end_date={dataset.last_day}"
    )


# --- The section --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    mode: Mode
    dataset: Dataset
    redis_url: str
    postgres: PostgresServer
    token: str
    devices_file: Path
    run_dir: Path

    def env(self, mix: str) -> dict[str, str]:
        """What the wrk script reads (bench/wrk/activity.lua): the whole range's series of both
        metrics, daily ("daily") or daily and weekly ("mix")."""
        granularities = ("daily", "weekly") if mix == "mix" else ("daily",)
        return self.series_env(mix, self.dataset.first_day, granularities)

    def series_env(self, mix: str, first: date, granularities: Sequence[str]) -> dict[str, str]:
        """The series of both metrics from ``first`` to the data set's last day, in each of
        ``granularities`` in turn."""
        pairs = [f"{m}:{g}" for g in granularities for m in ("activity-count", "user-count")]
        return {
            "BENCH_DEVICES": str(self.devices_file),
            "BENCH_START": first.isoformat(),
            "BENCH_END": self.dataset.last_day.isoformat(),
            "BENCH_TOKEN": self.token,
            "BENCH_SEED": str(SEED),
            "BENCH_SERIES": ",".join(pairs),
            "BENCH_MIX": mix,
        }

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def sql_probe(self) -> str:
        return _series_path(self.dataset.devices[0], self.dataset, "activity-count", "daily")


API_SERVERS = tuple(ApiServer)
"""Every server `devact api` can run under, driven in turn under the same load."""


async def measure_queries(ctx: Context) -> dict[str, object]:
    """Same answers first, then each server under the same load: one process of the API under
    each HTTP server it can run under (query_uvicorn_*, query_granian_*; the default's figures
    are also the main ones, query_*), one of the SQL baseline, then one per core of each. The
    server not under load meanwhile sits idle."""
    redis_seconds, pg_seconds = redis_cpu(ctx.redis_url), pg_cpu(ctx.postgres)
    daily, mix, extra = ctx.env("daily"), ctx.env("mix"), ctx.mode.extra_runs
    cores = os.cpu_count() or 1
    # Other work on the machine slows every figure but the CPU per request; this says how much.
    results: dict[str, object] = {"query_load_average_1m": round(os.getloadavg()[0], 2)}
    runs: list[WrkResult] = []
    default = str(DEFAULT_API_SERVER)

    def record(prefix: str, result: WrkResult) -> None:
        runs.append(result)
        results.update(flat(prefix, result))

    async with serving(sql_server(ctx.postgres.dsn, 1, ctx.run_dir), ctx.sql_probe, {}) as sql:
        for name in API_SERVERS:
            api = api_server(ctx.redis_url, 1, ctx.run_dir, name)
            async with serving(api, "/readyz", ctx.auth) as api:
                results[f"query_{name}_checked_requests"] = await check_same_answers(
                    api, sql, ctx.token, ctx.dataset
                )
                result = await drive(api, daily, ctx.mode, redis_seconds)
                record(f"query_{name}", result)
                if name == default:
                    record("query", result)
                    if extra:
                        record("query_mix", await drive(api, mix, ctx.mode, redis_seconds))
        record("sql", await drive(sql, daily, ctx.mode, pg_seconds))
        if extra:
            record("sql_mix", await drive(sql, mix, ctx.mode, pg_seconds))
    results["query_range_curve"] = await _range_curve(ctx, default, redis_seconds)
    graph = ctx.run_dir / "flame-api.svg"
    async with serving(
        api_server(ctx.redis_url, 1, ctx.run_dir, default), "/readyz", ctx.auth
    ) as api:
        assert api.process is not None
        with flame_graph(api.process.pid, graph):  # a pass of its own: its figures not kept
            await drive(api, daily, ctx.mode, redis_seconds)
    if graph.exists():
        results["flame_graphs_query"] = {"api": str(graph)}
    results["query_checked_requests"] = results[f"query_{default}_checked_requests"]
    results["api_server"] = default
    results["query_cpu_ms"] = round(
        float(str(results["query_server_cpu_ms_per_request"]))
        + float(str(results["query_store_cpu_ms_per_request"])),
        3,
    )
    for name in API_SERVERS:
        api = api_server(ctx.redis_url, cores, ctx.run_dir, name)
        async with serving(api, "/readyz", ctx.auth) as api:
            result = await drive(api, daily, ctx.mode, redis_seconds)
            record(f"query_{name}_per_core", result)
            if name == default:
                record("query_per_core", result)
    if extra:
        async with serving(
            sql_server(ctx.postgres.dsn, cores, ctx.run_dir), ctx.sql_probe, {}
        ) as sql:
            record("sql_per_core", await drive(sql, daily, ctx.mode, pg_seconds))
    results["query_rps_per_core"] = results["query_per_core_rps"]
    if extra:
        results["sql_rps_per_core"] = results["sql_per_core_rps"]
    results["query_per_core_workers"] = cores
    results["query_series"] = "query_*, sql_*: 90-day daily series of both metrics, in turn"
    results["query_servers"] = (
        "query_uvicorn_*, query_granian_*: the same under each server of devact api --server;"
        " query_* are api_server's, query_cpu_ms its API + Redis CPU ms per request"
    )
    results["query_mix_series"] = "query_mix_*, sql_mix_*: 90-day daily and weekly of both"
    results["loadgen_cpu_pct"] = max(r.loadgen_cpu_pct for r in runs)
    return results


RANGE_CURVE: tuple[tuple[int, str], ...] = (
    (1, "daily"), (7, "daily"), (30, "daily"), (90, "daily"),
    (90, "weekly"), (90, "monthly"), (90, "quarterly"),
)  # fmt: skip
"""The series of how a request's cost grows: range length in days, and granularity."""
RANGE_CURVE_S = 5
"""Seconds of load per point of the curve (after one of warm-up): its shape is what it shows."""


async def _range_curve(
    ctx: Context, server: str, redis_seconds: Callable[[], Awaitable[float]]
) -> list[dict[str, object]]:
    """One API process under the same load for each range and granularity of ``RANGE_CURVE``
    (both metrics in turn, the range ending on the data set's last day)."""
    mode = replace(ctx.mode, duration_s=RANGE_CURVE_S, warmup_s=1)
    curve: list[dict[str, object]] = []
    async with serving(
        api_server(ctx.redis_url, 1, ctx.run_dir, server), "/readyz", ctx.auth
    ) as api:
        for days, granularity in RANGE_CURVE:
            first = ctx.dataset.last_day - timedelta(days=days - 1)
            env = ctx.series_env(f"{days} days, {granularity}", first, (granularity,))
            result = await drive(api, env, mode, redis_seconds)
            curve.append(
                {
                    "days": days, "granularity": granularity, "rps": result.rps,
                    "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                    "server_cpu_ms": result.server_cpu_ms, "store_cpu_ms": result.store_cpu_ms,
                }
            )  # fmt: skip
    return curve


Peer = Callable[["Context", int], Awaitable[dict[str, object]]]
"""Another store measured on the same data set and load (bench/clickhouse.py): it is given the
context and the data set's device-days, and returns its figures."""


async def run(
    redis_url: str,
    run_dir: Path,
    quick: bool,
    peers: tuple[Peer, ...] = (),
) -> dict[str, object]:
    """The query and memory section. Flushes the Redis at ``redis_url`` (the bench's own);
    ``peers`` run after the API and the SQL baseline, PostgreSQL still up but idle.

    Figures (flat): ``query_rps``, ``query_p50_ms``, ``query_p99_ms`` (one API process, 90-day
    daily series of both metrics), ``query_rps_per_core`` (all workers of the API with one
    worker per core, together), ``sql_*`` the same for the SQL baseline, ``*_latency_curve``
    as [percentile, ms], ``redis_bytes_per_device_day`` (``used_memory`` growth over the load),
    ``pg_bytes_per_device_day`` (table and index), ``query_rows``, ``query_device_days``,
    ``loadgen_cpu_pct`` (wrk's CPU, percent of one core, the highest of all runs).
    """
    mode = QUICK if quick else FULL
    dataset = make_dataset(mode.devices, SEED, datetime.now(UTC).date())
    devices_file = _write_devices(run_dir, dataset)
    postgres = PostgresServer(run_dir, free_port())
    try:
        await waiting("query: starting PostgreSQL", asyncio.to_thread(postgres.start))
        token, results = await load_redis_and_pg(redis_url, postgres.dsn, dataset)
        ctx = Context(mode, dataset, redis_url, postgres, token, devices_file, run_dir)
        results.update(await measure_queries(ctx))
        for peer in peers:
            results.update(await peer(ctx, int(str(results["query_device_days"]))))
    finally:
        postgres.stop()
        shutil.rmtree(postgres.data_dir, ignore_errors=True)  # about 0.5 GB at full size
    results["query_vs_sql_rps"] = round(
        float(str(results["query_rps"])) / float(str(results["sql_rps"])), 1
    )
    return results


def _write_devices(run_dir: Path, dataset: Dataset) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "query-devices.txt"
    path.write_text("".join(f"{d.client_id} {d.device_id}\n" for d in dataset.devices))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small data set, short runs")
    parser.add_argument("--run-dir", type=Path, help="default: a new directory under /tmp")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="devact-bench-query-"))
    redis = RedisServer(run_dir, free_port())
    redis.start()
    try:
        results = asyncio.run(run(redis.url, run_dir, args.quick))
    finally:
        redis.stop()
    sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
