"""Fleet views: one client of 10,000 devices (1,000 in a quick run) with 90 days of data.

The data reach Redis through the worker's own ``Writer`` (device scripts and client aggregates,
as a batch of the worker would), a few heartbeats per device-day. Then, through one API process
on one connection, one request at a time: a 90-day ranking for each metric, a 90-day client-wide
series for each metric (each figure after one first request, reported apart: the API reads and
remembers the client's devices then), and the live delay (a batch written through ``Writer``
until its change shows on an open stream). The fleet keys' memory is the ``MEMORY USAGE`` of
the client's keys, per device-day.

Figures: ``rank_activity_first_ms``/``p50``/``p99``, ``rank_users_...`` the same,
``fleet_series_p50_ms``/``p99``, ``live_p50_ms``/``p99``, ``fleet_bytes_per_device_day``.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from redis.asyncio import Redis

from bench.query_load import api_server, serving
from devact.progress import Meter
from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import connect
from state.dates import day_expires_at
from state.registry import Registry
from state.settings import StoreSettings
from state.writer import Positions, Writer

log = logging.getLogger(__name__)

DAYS = 90
ZONE = "UTC"
REQUESTS = 60
"""Requests per figure: p99 of 60 is their slowest but one; the figures are indicative."""
LIVE_PROBES = 30
DEVICES_PER_WRITE = 500
UTC_ZONE = ZoneInfo(ZONE)


def _percentile(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


def _device_days(
    rng: random.Random, devices: list[str], client: str, today: date, offset: int
) -> Iterator[DeviceBatch]:
    """Device batches of a few heartbeats per device-day: busy devices every working day, idle
    ones rarely. Users as on shared devices: each device has 1 to 10 regular users, and one
    heartbeat in ten comes from one of the client's 2,000 other users, who roam."""
    expire: dict[date, int] = {}
    for device in devices:
        batch = DeviceBatch(client, device)
        busy = rng.random()
        regulars = [f"{device}/u{n}" for n in range(rng.randint(1, 10))]
        for n in range(DAYS):
            day = today - timedelta(days=n)
            if rng.random() > busy:
                continue
            at = expire.setdefault(day, day_expires_at(day, UTC_ZONE, 400))
            batch.days[day] = DayBatch(
                at,
                [
                    Contribution(
                        0,
                        offset,
                        rng.randint(1, 30),
                        f"r{rng.randrange(2000)}" if rng.random() < 0.1 else rng.choice(regulars),
                    )
                    for _ in range(rng.randint(1, 3))
                ],
            )
        offset += 1
        yield batch


async def _load(redis: Redis, client: str, devices: list[str], today: date) -> int:
    writer = Writer(redis)
    rng = random.Random(101)
    pending: list[DeviceBatch] = []
    device_days = 0
    with Meter("fleet: loading", len(devices), "devices") as loaded:
        for batch in _device_days(rng, devices, client, today, 0):
            pending.append(batch)
            device_days += len(batch.days)
            if len(pending) == DEVICES_PER_WRITE:
                await writer.apply(pending, Positions("bench.fleet", {}))
                loaded.advance(len(pending))
                pending = []
        if pending:
            await writer.apply(pending, Positions("bench.fleet", {}))
            loaded.advance(len(pending))
    return device_days


async def _timed(
    http: httpx.AsyncClient, path: str, params: dict[str, str], progress: Callable[[int], None]
) -> tuple[float, list[float]]:
    """The first request's time (the API reads and remembers the client's devices then), and
    the ``REQUESTS`` after it; ``progress`` is told of each request, outside its timing."""
    started = time.perf_counter()
    (await http.get(path, params=params)).raise_for_status()
    first = (time.perf_counter() - started) * 1000
    progress(1)
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = await http.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        progress(1)
    return first, samples


async def _live_delays(
    http: httpx.AsyncClient, redis: Redis, client: str, device: str, today: date
) -> list[float]:
    """Writes through ``Writer`` (as a batch would) and waits for the stream's next event."""
    writer = Writer(redis)
    delays: list[float] = []
    url = f"/v2/clients/{client}/analytics/devices/{device}/activity/live"
    async with http.stream("GET", url, params={"metric": "activity-count"}) as response:
        lines = response.aiter_lines()
        async for line in lines:  # today's point first
            if line.startswith("data:"):
                break
        with Meter("fleet: live delay", LIVE_PROBES, "probes") as probed:
            for n in range(LIVE_PROBES):
                batch = DeviceBatch(client, device)
                batch.days[today] = DayBatch(
                    day_expires_at(today, UTC_ZONE, 400), [Contribution(1, n, 1, None)]
                )
                started = time.perf_counter()
                await writer.apply([batch], Positions("bench.fleet.live", {}))
                async for line in lines:
                    if line.startswith("data:"):
                        delays.append((time.perf_counter() - started) * 1000)
                        break
                probed.advance()
    return delays


async def _fleet_bytes(redis: Redis, client: str) -> int:
    total = 0
    async for key in redis.scan_iter(match=f"{keys.client_tag(client)}*", count=1000):
        total += int(await redis.memory_usage(key) or 0)
    return total


async def run(redis_url: str, run_dir: Path, quick: bool) -> dict[str, Any]:
    count = 1_000 if quick else 10_000
    redis = connect(StoreSettings(redis_url=redis_url, redis_timeout_s=30))
    client = str(uuid.uuid4())
    devices = [str(uuid.uuid4()) for _ in range(count)]
    today = datetime.now(UTC).date()
    try:
        registry = Registry(redis)
        await registry.add_client(client, ZONE, "bench fleet", datetime.now(UTC))
        token = await registry.create_token([client], all_clients=False, name="bench")
        started = time.monotonic()
        device_days = await _load(redis, client, devices, today)
        log.info("fleet: %d devices, %d device-days loaded in %.1f s", count, device_days,
                 time.monotonic() - started)  # fmt: skip
        fleet_bytes = await _fleet_bytes(redis, client)
        server = api_server(redis_url, 1, run_dir / "logs")
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        headers = {"Authorization": f"Bearer {token}"}
        first = (today - timedelta(days=DAYS - 1)).isoformat()
        span = {"start_date": first, "end_date": today.isoformat()}
        results: dict[str, Any] = {"fleet_devices": count, "fleet_device_days": device_days}
        http = httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)
        async with serving(server, "/readyz", headers), http:
            ranking = f"/v2/clients/{client}/analytics/devices"
            series = f"/v2/clients/{client}/analytics/activity"
            for name, path, metric in (
                ("rank_activity", ranking, "activity-count"),
                ("rank_users", ranking, "user-count"),
                ("fleet_series", series, "activity-count"),
                ("fleet_users_series", series, "user-count"),
            ):
                try:
                    with Meter(f"fleet: {name}", REQUESTS + 1, "requests") as asked:
                        params = {**span, "metric": metric}
                        first, samples = await _timed(http, path, params, asked.advance)
                except httpx.HTTPStatusError as failed:  # e.g. a 503: Redis took too long
                    log.error("fleet: %s did not finish: %s", name, failed)
                    results[f"{name}_p99_ms"] = "did not finish"
                    continue
                results[f"{name}_first_ms"] = round(first, 2)
                results[f"{name}_p50_ms"] = _percentile(samples, 50)
                results[f"{name}_p99_ms"] = _percentile(samples, 99)
            delays = await _live_delays(http, redis, client, devices[0], today)
        results["live_p50_ms"] = _percentile(delays, 50)
        results["live_p99_ms"] = _percentile(delays, 99)
        results["live_mean_ms"] = round(statistics.fmean(delays), 2)
        results["fleet_bytes_per_device_day"] = round(fleet_bytes / device_days, 1)
        log.info("fleet: %s", orjson.dumps(results).decode())
        return results
    finally:
        await redis.aclose()
