"""One device's 90-day daily series, one request at a time, and what a device-day costs Redis:
``python bench/device_series.py REDIS_URL [DEVICES]`` (the Redis is flushed).

Written to compare key layouts side by side: it uses only what every layout's ``state`` has
(``Writer.apply``, ``Reader.series``), so it runs against an older checkout too, with that
checkout first on ``PYTHONPATH`` (before issue 21 the read was ``device_view(client, device,
SeriesQuery(metric, series_plan(...)))``, and before 2026-12-07 it took the token first: call it
so there). The data are seeded: the same devices every run (shared
devices, 4 to 15 regulars each, 1 to 10 of them on 85% of the last 300 days). Prints
``used_memory`` growth per device-day, and per metric the p50/p99 of 1,000 requests and Redis's
CPU per request (``INFO cpu``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from state.batch import Contribution, DayBatch, DeviceBatch
from state.dates import day_expires_at
from state.queries import SeriesQuery
from state.reader import Reader
from state.registry import Registry
from state.writer import Positions, Writer

DAYS = 300
REQUESTS = 1000


def batches(devices: int, today: date) -> tuple[str, list[str], list[DeviceBatch], int]:
    rng = random.Random(42)
    client = str(uuid.UUID(int=rng.getrandbits(128)))
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(devices)]
    expire = {
        today - timedelta(days=n): day_expires_at(today - timedelta(days=n), ZoneInfo("UTC"), 400)
        for n in range(DAYS)
    }
    out, offset, device_days = [], 0, 0
    for device in ids:
        regulars = [f"{device}/u{n}" for n in range(rng.randint(4, 15))]
        batch = DeviceBatch(client, device)
        for day, expire_at in expire.items():
            if rng.random() >= 0.85:
                continue
            contributions = []
            for user in rng.sample(regulars, rng.randint(1, min(10, len(regulars)))):
                offset += 1
                contributions.append(Contribution(0, offset, rng.randint(1, 400), user))
            batch.days[day] = DayBatch(expire_at, contributions)
        device_days += len(batch.days)
        out.append(batch)
    return client, ids, out, device_days


async def cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def main(url: str, devices: int) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    today = datetime.now(UTC).date()
    client, ids, loaded, device_days = batches(devices, today)
    registry = Registry(redis)
    await registry.add_client(client, "UTC", "series", datetime.now(UTC))
    before = int((await redis.info("memory"))["used_memory"])
    writer = Writer(redis, fleet=False) if _has_fleet_switch() else Writer(redis)
    for first in range(0, len(loaded), 50):
        await writer.apply(loaded[first : first + 50], Positions("", {}))
    grown = int((await redis.info("memory"))["used_memory"]) - before
    out: dict[str, object] = {
        "device_days": device_days,
        "bytes_per_device_day": round(grown / device_days, 1),
    }
    reader, rng = Reader(redis), random.Random(7)
    first = today - timedelta(days=89)
    for metric in ("activity-count", "user-count"):
        await reader.series(SeriesQuery(client, ids[0], metric, first, today))  # type: ignore[arg-type]
        samples, cpu = [], await cpu_s(redis)
        for _ in range(REQUESTS):
            query = SeriesQuery(client, rng.choice(ids), metric, first, today)  # type: ignore[arg-type]
            started = time.perf_counter()
            await reader.series(query)
            samples.append((time.perf_counter() - started) * 1000)
        cpu = await cpu_s(redis) - cpu
        samples.sort()
        out[metric] = {
            "p50_ms": round(samples[REQUESTS // 2], 3),
            "p99_ms": round(samples[int(REQUESTS * 0.99)], 3),
            "redis_cpu_us_per_request": round(cpu / REQUESTS * 1e6, 1),
        }
    await redis.flushall()
    await redis.aclose()
    print(json.dumps(out))


def _has_fleet_switch() -> bool:
    """Older layouts' writers took no ``fleet`` argument (they had no fleet aggregates)."""
    import inspect

    return "fleet" in inspect.signature(Writer).parameters


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300))
