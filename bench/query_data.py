"""The query section's data set and its loading: devices' heartbeats over 90 days, generated
deterministically, fed to Redis through the worker's own ``BatchProcessor`` and to PostgreSQL
through COPY; and the memory each store then uses per device-day."""

from __future__ import annotations

import logging
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
import orjson
from redis.asyncio import Redis

from bench.common import waiting
from bench.sql_api import INDEX, SCHEMA
from devact.progress import Meter
from state import keys
from state.connection import connect
from state.registry import Registry
from stream.build import build_processor
from stream.dlq import DeadLetterRecord
from stream.plan import Message
from stream.processor import BatchProcessor
from stream.settings import WorkerSettings

log = logging.getLogger(__name__)

TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "UTC")
DAYS = 90
SLOTS = 96
"""Heartbeats of a working day: every 5 minutes from 09:00 to 16:55 local time."""
DAY_OFF = 0.05
"""Chance that a device is not used on a weekday (holidays, repairs)."""
WEEKEND_USE = 0.25
"""Chance that a device is used on a weekend day, then for 1 to 12 heartbeats."""
NOBODY = 0.03
"""Chance that a heartbeat has no user signed in (it counts toward activity only)."""
PARTITIONS = 6
TOPIC = "heartbeats"
MESSAGES_PER_BATCH = 500
"""Messages (device-days) per ``process`` call: about 45,000 heartbeats."""
PG_ROWS_PER_COPY = 200_000
SAMPLED_DEVICES = 20
"""Devices whose keys' ``MEMORY USAGE`` is summed (about 1,400 device-days)."""


class BenchError(RuntimeError):
    """The bench found something wrong: a dead letter, different answers, failed requests."""


# --- The data set -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    client_id: str
    device_id: str
    timezone: str
    partition: int


@dataclass(frozen=True)
class Dataset:
    seed: int
    first_day: date
    devices: list[Device]
    clients: dict[str, str] = field(default_factory=dict)

    @property
    def last_day(self) -> date:
        return self.day(DAYS - 1)

    def day(self, n: int) -> date:
        return self.first_day + timedelta(days=n)


def make_dataset(devices: int, seed: int, today: date) -> Dataset:
    """Clients in every timezone of TIMEZONES, devices spread over them. The 90 days start on a
    Monday and end at least a week before ``today``."""
    latest_first = today - timedelta(days=DAYS + 6)
    first = latest_first - timedelta(days=latest_first.weekday())
    names = uuid.UUID(int=seed)
    clients = {str(uuid.uuid5(names, f"client/{tz}")): tz for tz in TIMEZONES}
    ids = list(clients)
    out = []
    for n in range(devices):
        client = ids[n % len(ids)]
        device = str(uuid.uuid5(names, f"device/{n}"))
        partition = zlib.crc32(device.encode()) % PARTITIONS  # the message key picks it
        out.append(Device(client, device, clients[client], partition))
    return Dataset(seed, first, out, clients)


Record = tuple[str, str, str | None, datetime, int]
"""A ``heartbeats`` row: client_id, device_id, user_id, generated_at_utc (naive UTC), count."""
Beat = tuple[int, str | None, int]
"""A heartbeat of a device-day: working-day slot, user (None: nobody signed in), count."""


class SlotGrid:
    """The working-day instants of each (timezone, day): as JSON text and as naive UTC."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, date], tuple[list[str], list[datetime]]] = {}

    def slots(self, timezone: str, day: date) -> tuple[list[str], list[datetime]]:
        found = self._cache.get((timezone, day))
        if found is None:
            # 09:00 local then 5-minute steps of wall time; no DST change falls within 9 to 17 h.
            start = datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo(timezone))
            utc = [(start + timedelta(minutes=5 * k)).astimezone(UTC) for k in range(SLOTS)]
            iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in utc]
            found = self._cache[(timezone, day)] = (iso, [t.replace(tzinfo=None) for t in utc])
        return found


class DeviceHistory:
    """One device's heartbeats, day after day, from a generator seeded for that device alone (so
    one device's history can be generated again on its own, for the correctness check)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.device = dataset.devices[n]
        self._rng = random.Random(f"{dataset.seed}/{n}")
        self._pool = [
            f"user-{self._rng.randrange(100_000):05d}@example.org"
            for _ in range(self._rng.randint(4, 15))
        ]

    def next_day(self, day: date) -> list[Beat]:
        """The heartbeats of ``day``; call for every day of the range, in order. On a weekday the
        day's users take turns in contiguous sessions; on a weekend day there may be a few
        heartbeats of one user."""
        rng, pool = self._rng, self._pool
        plan: list[tuple[int, str | None]]
        if day.weekday() >= 5:
            if rng.random() >= WEEKEND_USE:
                return []
            user = rng.choice(pool)
            plan = [(s, user) for s in sorted(rng.sample(range(SLOTS), rng.randint(1, 12)))]
        elif rng.random() < DAY_OFF:
            return []
        else:
            users = rng.sample(pool, rng.randint(1, min(10, len(pool))))
            bounds = [0, *sorted(rng.sample(range(1, SLOTS), len(users) - 1)), SLOTS]
            plan = [
                (slot, None if rng.random() < NOBODY else user)
                for user, begin, end in zip(users, bounds, bounds[1:], strict=False)
                for slot in range(begin, end)
            ]
        counts = rng.choices(range(41), k=len(plan))
        return [(slot, user, count) for (slot, user), count in zip(plan, counts, strict=True)]


def generated_total(dataset: Dataset, n: int) -> int:
    """The activity count of the ``n``-th device over the whole range."""
    history = DeviceHistory(dataset, n)
    return sum(c for d in range(DAYS) for _, _, c in history.next_day(dataset.day(d)))


# --- Loading ------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    rows: int = 0
    device_days: int = 0
    generate_s: float = 0.0
    redis_s: float = 0.0
    pg_s: float = 0.0


class Loader:
    """Feeds the events, in the order they happen, to the worker's processor and to COPY.

    One Kafka message per device-day: a JSON array of its heartbeats (at most 96), offsets
    consecutive per partition; how events are packed into messages changes nothing in Redis.
    PostgreSQL gets each day's rows sorted by time, as they would arrive: its heap interleaves
    devices as a production table's would, instead of clustering each device's rows together.
    """

    def __init__(self, processor: BatchProcessor, pg: Any) -> None:
        self._processor, self._pg = processor, pg
        self._offsets = [0] * PARTITIONS
        self._messages: list[Message] = []
        self._records: list[Record] = []
        self.stats = LoadStats()

    async def load(self, dataset: Dataset, progress: Callable[[int], None]) -> LoadStats:
        """Every day of the data set; ``progress`` is told of each day loaded."""
        grid = SlotGrid()
        histories = [DeviceHistory(dataset, n) for n in range(len(dataset.devices))]
        for d in range(DAYS):
            started = time.perf_counter()
            day = dataset.day(d)
            records: list[Record] = []
            for history in histories:
                beats = history.next_day(day)
                if beats:
                    records += self._add_device_day(
                        history.device, beats, *grid.slots(history.device.timezone, day)
                    )
            records.sort(key=lambda r: r[3])
            self._records += records
            self.stats.generate_s += time.perf_counter() - started
            await self._flush(final=d == DAYS - 1)
            progress(1)
        return self.stats

    def _add_device_day(
        self, device: Device, beats: list[Beat], iso: list[str], naive: list[datetime]
    ) -> list[Record]:
        value = orjson.dumps(
            [
                {
                    "client_id": device.client_id,
                    "device_id": device.device_id,
                    "user_id": user,
                    "generated_at_utc": iso[slot],
                    "total_activity_count": count,
                }
                for slot, user, count in beats
            ]
        )
        p = device.partition
        self._messages.append(Message(TOPIC, p, self._offsets[p], device.device_id.encode(), value))
        self._offsets[p] += 1
        self.stats.rows += len(beats)
        self.stats.device_days += 1
        return [(device.client_id, device.device_id, u, naive[s], c) for s, u, c in beats]

    async def _flush(self, final: bool) -> None:
        while len(self._messages) >= MESSAGES_PER_BATCH or (final and self._messages):
            batch = self._messages[:MESSAGES_PER_BATCH]
            del self._messages[:MESSAGES_PER_BATCH]
            started = time.perf_counter()
            await self._processor.process(batch)
            self.stats.redis_s += time.perf_counter() - started
        if len(self._records) >= PG_ROWS_PER_COPY or (final and self._records):
            started = time.perf_counter()
            await self._pg.copy_records_to_table("heartbeats", records=self._records)
            self.stats.pg_s += time.perf_counter() - started
            self._records = []


async def _index(pg: Any) -> None:
    await pg.execute(INDEX)
    await pg.execute("ANALYZE heartbeats")


async def _no_reread(
    topic: str, partition: int, start: int, stop: int
) -> AsyncIterator[list[Message]]:
    """The processor's ``reread``: never needed, since every partition's offsets follow on."""
    raise BenchError(f"the load made the processor re-read {topic}[{partition}] {start}..{stop}")
    yield []  # unreachable; makes this an async generator, as ``Reread`` is


async def register(redis: Redis, dataset: Dataset) -> str:
    """The data set's clients with their timezones, and a token for all of them."""
    registry = Registry(redis)
    now = datetime.now(UTC)
    for client_id, timezone in dataset.clients.items():
        await registry.add_client(client_id, timezone, f"bench {timezone}", now)
    return await registry.create_token([], all_clients=True, name="bench")


async def redis_key_bytes(redis: Redis, dataset: Dataset, devices: int) -> tuple[int, int]:
    """``MEMORY USAGE`` summed over the keys of the first ``devices`` devices (meta, device-months
    and any wide month's day users keys), and the number of their device-days: the keys' own
    bytes, without the keyspace's hash tables and expiry entries that ``used_memory`` also
    counts."""
    total, device_days = 0, 0
    for device in dataset.devices[:devices]:
        days = [dataset.day(d) for d in range(DAYS)]
        months = list(dict.fromkeys(keys.device_month(device.device_id, day) for day in days))
        async with redis.pipeline(transaction=False) as pipe:
            pipe.memory_usage(keys.device_meta(device.device_id), samples=0)
            for month in months:
                pipe.memory_usage(month, samples=0)
                pipe.hkeys(month)
            for day in days:
                pipe.memory_usage(keys.day_users(device.device_id, day), samples=0)
            sizes = await pipe.execute()
        meta, per_month, per_day = (
            sizes[0],
            sizes[1 : 1 + 2 * len(months)],
            sizes[1 + 2 * len(months) :],
        )
        total += (meta or 0) + sum(s or 0 for s in per_month[::2]) + sum(s or 0 for s in per_day)
        device_days += sum(1 for fields in per_month[1::2] for f in fields if f.isdigit())
    return total, device_days


async def load_redis_and_pg(
    redis_url: str, pg_dsn: str, dataset: Dataset, kafka_bootstrap: str = "localhost:9092"
) -> tuple[str, dict[str, object]]:
    """Flush Redis, register the clients, load both stores; returns the token and the figures.
    ``kafka_bootstrap``: where the processor reads earlier refusals (dead letters) from, the
    bench's own Kafka (there are none: every event of the data set is valid)."""
    # The device keys alone: the fleet keys are measured apart (bench/fleet.py).
    settings = WorkerSettings(
        redis_url=redis_url, redis_cluster=False, redis_timeout_s=60.0, fleet_aggregates=False,
        default_timezone="UTC", retention_days=400, kafka_bootstrap=kafka_bootstrap,
    )  # fmt: skip
    redis = connect(settings)
    pg = await asyncpg.connect(pg_dsn)
    try:
        await redis.flushall()
        token = await register(redis, dataset)
        await pg.execute(SCHEMA)
        await pg.executemany("INSERT INTO clients VALUES ($1, $2)", dataset.clients.items())
        dead: list[DeadLetterRecord] = []

        async def send(letters: Sequence[DeadLetterRecord]) -> None:
            dead.extend(letters)

        processor = build_processor(settings, redis, send, reread=_no_reread)
        used_before = int((await redis.info("memory"))["used_memory"])
        with Meter("query: loading Redis and PostgreSQL", DAYS, "days") as loaded:
            stats = await Loader(processor, pg).load(dataset, loaded.advance)
        used = int((await redis.info("memory"))["used_memory"]) - used_before
        if dead:
            raise BenchError(f"{len(dead)} dead letters, e.g. {dead[0]!r:.300}")
        key_bytes, key_device_days = await redis_key_bytes(redis, dataset, SAMPLED_DEVICES)
        started = time.perf_counter()
        await waiting("query: indexing PostgreSQL", _index(pg))
        stats.pg_s += time.perf_counter() - started
        pg_total = int(await pg.fetchval("SELECT pg_total_relation_size('heartbeats')"))
        pg_table = int(await pg.fetchval("SELECT pg_table_size('heartbeats')"))
    finally:
        await pg.close()
        await redis.aclose()
    figures: dict[str, object] = {
        "query_rows": stats.rows,
        "query_devices": len(dataset.devices),
        "query_device_days": stats.device_days,
        "query_first_day": dataset.first_day.isoformat(),
        "generate_s": round(stats.generate_s, 1),
        "redis_load_s": round(stats.redis_s, 1),
        "redis_load_events_per_s": round(stats.rows / stats.redis_s),
        "pg_load_s": round(stats.pg_s, 1),
        "redis_bytes_per_device_day": round(used / stats.device_days, 1),
        "redis_key_bytes_per_device_day": round(key_bytes / key_device_days, 1),
        "pg_bytes_per_device_day": round(pg_total / stats.device_days, 1),
        "pg_table_bytes_per_device_day": round(pg_table / stats.device_days, 1),
        "pg_to_redis_bytes_ratio": round(pg_total / used, 1),
        "pg_table_to_redis_bytes_ratio": round(pg_table / used, 1),
    }
    log.info("loaded: %s", figures)
    return token, figures
