"""Redis bytes per typical device-day (issue 3 item 3: "a few hundred bytes", measured).

About 1,000 device-days of 1 to 10 users and a few dozen heartbeats each (100 devices of 10
days, so a device's owner record is shared by its days as in production) are written through
state/'s Writer. Two figures are printed: ``MEMORY USAGE`` summed over the device-month keys,
and the ``INFO memory`` used_memory delta of the whole write
divided by the device-days (owner records, expiry entries and allocator overhead included).
Only a generous sanity bound is asserted; the goal itself is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import connect
from state.settings import StoreSettings
from state.writer import Positions, Writer
from tests.integration.harness.output import show

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the bytes of one Redis (MEMORY USAGE, INFO memory) written by the one-Redis Writer: "
        "the figure of one node"
    ),
)

SEED = 77
DEVICES = 100
DAYS_PER_DEVICE = 10
FIRST_DAY = date(2026, 9, 1)
SANITY_BOUND_BYTES = 2_000
NO_POSITIONS = Positions("", {})


@dataclass(frozen=True)
class Figures:
    device_days: int
    keys_bytes: int
    meta_bytes: int
    used_memory_delta: int
    hashtables_delta: int
    """Growth of the keyspace's and the expiry table's hash tables (MEMORY STATS), in bytes."""
    users_types: set[str]

    @property
    def keys_per_device_day(self) -> float:
        return self.keys_bytes / self.device_days

    @property
    def meta_per_device_day(self) -> float:
        return self.meta_bytes / self.device_days

    @property
    def used_memory_per_device_day(self) -> float:
        return self.used_memory_delta / self.device_days

    @property
    def hashtables_per_device_day(self) -> float:
        return self.hashtables_delta / self.device_days


def typical_device(rng: random.Random, client: str, device: str, expire_at: int) -> DeviceBatch:
    """Ten days of a shared kiosk: 1 to 10 users a day from its 4 to 15 regulars, 20 to 60
    heartbeats among them, all from one partition (the message key is the device id)."""
    batch = DeviceBatch(client, device)
    partition, offset = rng.randrange(6), rng.randrange(1_000_000)
    regulars = [f"user-{rng.randrange(10_000)}@example.org" for _ in range(rng.randint(4, 15))]
    for n in range(DAYS_PER_DEVICE):
        users = rng.sample(regulars, rng.randint(1, min(10, len(regulars))))
        day = DayBatch(expire_at)
        for _ in range(rng.randint(20, 60)):
            offset += 1
            day.contributions.append(
                Contribution(partition, offset, rng.randint(0, 40), rng.choice(users))
            )
        batch.days[FIRST_DAY + timedelta(days=n)] = day
    return batch


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def hashtables(redis: Redis) -> int:
    """Bytes of the main and expiry hash tables of this connection's database. They grow by
    doubling, so their share of a delta depends on where the keyspace stood."""
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))
    stats = (await redis.memory_stats()).get(f"db.{db}", {})
    return int(stats.get("overhead.hashtable.main", 0)) + int(
        stats.get("overhead.hashtable.expires", 0)
    )


async def measure(redis: Redis) -> Figures:
    rng = random.Random(SEED)
    expire_at = int(time.time()) + 86_400  # gone soon after the test, in a shared Redis
    client = str(uuid.uuid4())
    devices = [str(uuid.uuid4()) for _ in range(DEVICES)]
    batches = [typical_device(rng, client, d, expire_at) for d in devices]
    writer = Writer(redis)
    before, tables_before = await used_memory(redis), await hashtables(redis)
    for first in range(0, len(batches), 20):
        await writer.apply(batches[first : first + 20], NO_POSITIONS)
    after, tables_after = await used_memory(redis), await hashtables(redis)

    keys_bytes, meta_bytes, types = 0, 0, set()
    for batch in batches:
        meta_bytes += await redis.memory_usage(keys.device_meta(batch.device_id), samples=0) or 0
        for month in {keys.device_month(batch.device_id, day) for day in batch.days}:
            usage = await redis.memory_usage(month, samples=0)
            assert usage is not None, f"{month} is missing"
            keys_bytes += usage
            types.add(await redis.object("encoding", month))
        for day in batch.days:
            if await redis.exists(keys.day_users(batch.device_id, day)):
                types.add("day users key")
    return Figures(
        DEVICES * DAYS_PER_DEVICE,
        keys_bytes,
        meta_bytes,
        after - before,
        tables_after - tables_before,
        types,
    )


@pytest.fixture(scope="module")
def figures(services: Any, request: pytest.FixtureRequest) -> Figures:
    async def main() -> Figures:
        redis = connect(StoreSettings(redis_url=services.redis_url, redis_timeout_s=30.0))
        try:
            return await measure(redis)
        finally:
            await redis.aclose()

    f = asyncio.run(main())
    show(
        request,
        f"\nRedis bytes per typical device-day ({f.device_days} device-days, 1-10 users, "
        f"20-60 heartbeats):\n"
        f"  MEMORY USAGE of the device-month hashes:  {f.keys_per_device_day:.0f} bytes\n"
        f"  owner record (meta hash), per device-day:  {f.meta_per_device_day:.0f} bytes\n"
        f"  INFO used_memory delta per device-day:     {f.used_memory_per_device_day:.0f} bytes\n"
        f"    of which keyspace and expiry hash tables: {f.hashtables_per_device_day:.0f} bytes",
    )
    return f


def test_a_typical_device_month_stays_one_listpack_hash(figures: Figures) -> None:
    """Its users in the month's dictionary, no day users key; a value over 64 bytes or a
    128th field would have turned the hash into a hash table."""
    assert figures.users_types == {"listpack"}


def test_a_typical_device_day_costs_well_under_2000_bytes(figures: Figures) -> None:
    assert 0 < figures.keys_per_device_day < SANITY_BOUND_BYTES
    assert figures.used_memory_per_device_day < SANITY_BOUND_BYTES
