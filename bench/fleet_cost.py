"""What the fleet aggregates cost per heartbeat, without Kafka: Redis's CPU and the writer's.

Applies the same batches (shaped as the ingest bench's: 10,000 devices of 20 clients, 1 to 10
users each, heartbeats at random over 30 days, 5,000 per batch) through ``Writer`` twice, with
and without the fleet aggregates (``DEVACT_FLEET_AGGREGATES``), against a Redis of its own, and
reports per heartbeat: Redis CPU (from /proc), the writer's packing CPU and its whole CPU. Not
part of ``make bench`` (its ingest section measures the same through the worker, side by side);
run it when ``state/fleet.py`` or ``apply_client.lua`` change:

    .venv/bin/python -m bench.fleet_cost [batches]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

from bench.trips import _cpu_s, scratch_redis
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import connect
from state.settings import StoreSettings
from state.writer import Positions, Span, Writer

BATCH = 5_000


def _batches(rng: random.Random, offset: int, owner: dict[str, str],
             pools: dict[str, list[str]]) -> list[DeviceBatch]:  # fmt: skip
    today = date.today()
    expire = int((datetime.now(UTC) + timedelta(days=60)).timestamp())
    devices = list(owner)
    by_device: dict[str, DeviceBatch] = {}
    for n in range(BATCH):
        device = devices[rng.randrange(len(devices))]
        day = today - timedelta(days=rng.randrange(30))
        batch = by_device.setdefault(device, DeviceBatch(owner[device], device))
        batch.days.setdefault(day, DayBatch(expire)).contributions.append(
            Contribution(n % 6, offset + n, rng.randint(0, 40), rng.choice(pools[device]))
        )
    return list(by_device.values())


async def _run(url: str, pid: int, fleet: bool, batches: int) -> str:
    rng = random.Random(5)
    clients = [str(uuid.uuid4()) for _ in range(20)]
    owner = {str(uuid.uuid4()): clients[n % 20] for n in range(10_000)}
    pools = {d: [str(uuid.uuid4()) for _ in range(rng.randint(1, 10))] for d in owner}
    redis = connect(StoreSettings(redis_url=url, redis_timeout_s=30))
    try:
        await redis.flushall()
        writer = Writer(redis, fleet=fleet)
        pack_s = 0.0
        redis_cpu, own_cpu, started = _cpu_s(pid), time.process_time(), time.perf_counter()
        for k in range(batches):
            device_batches = _batches(rng, k * BATCH, owner, pools)
            before = time.process_time()
            packed = writer.pack(device_batches)
            pack_s += time.process_time() - before
            span = Span(k * BATCH, k * BATCH + BATCH - 1, force=True)
            await writer.apply_packed(packed, Positions("fleet-cost", {0: span}))
        events = batches * BATCH
        return (
            f"fleet aggregates {'on ' if fleet else 'off'}: "
            f"{events / (time.perf_counter() - started):7.0f} events/s, Redis "
            f"{(_cpu_s(pid) - redis_cpu) / events * 1e6:5.1f} us/event, packing "
            f"{pack_s / events * 1e6:5.1f} us/event, writer "
            f"{(time.process_time() - own_cpu) / events * 1e6:5.1f} us/event"
        )
    finally:
        await redis.aclose()


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with scratch_redis("fleet-cost-") as (url, pid):
        for _ in range(2):  # alternated, twice: the machine is noisy
            for fleet in (False, True):
                print(asyncio.run(_run(url, pid, fleet, batches)))


if __name__ == "__main__":
    main()
