"""The ingest data set: seeded heartbeats over the last 30 days, and its oracle.

Shape (issue 4): 10,000 devices of 20 clients in several timezones, each device with a pool of 1
to 10 regular users, heartbeats spread at random over the 30 days before ``now``. Every heartbeat
is valid, so every one must end up counted: the oracle is each device's total activity, summed
here from the events themselves.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from state import keys
from state.connection import Store
from state.registry import Registry
from stream.kafka import KafkaConnection

TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
_NAMESPACE = uuid.UUID("3f0f8a52-6c5e-4c1b-9d0a-8a1f4b7e2c55")
DAYS = 30
PROGRESS_EVERY = 10_000
"""Heartbeats generated between two progress reports."""


def _no_progress(n: int) -> None:
    pass


@dataclass
class Dataset:
    clients: dict[str, str]
    """Client id to timezone."""
    messages: list[tuple[bytes, bytes]]
    """Key and value of each Kafka message."""
    events: int
    activity_by_device: dict[str, int] = field(default_factory=dict)
    client_of_device: dict[str, str] = field(default_factory=dict)


def generate(
    events: int,
    devices: int,
    per_message: int,
    now: datetime,
    seed: int,
    progress: Callable[[int], None] = _no_progress,
) -> Dataset:
    """``events`` heartbeats of ``devices`` devices, ``per_message`` per Kafka message (one
    heartbeat alone, or a JSON array of them as a gateway sends, docs/events.md); ``progress``
    is told of them ``PROGRESS_EVERY`` at a time."""
    rng = random.Random(seed)
    clients = {
        str(uuid.uuid5(_NAMESPACE, f"client/{n}")): TIMEZONES[n % len(TIMEZONES)] for n in range(20)
    }
    client_ids = sorted(clients)
    device_ids = [str(uuid.uuid5(_NAMESPACE, f"{seed}/{n}")) for n in range(devices)]
    owner = {d: client_ids[n % len(client_ids)] for n, d in enumerate(device_ids)}
    pools = {d: [str(uuid.uuid4()) for _ in range(rng.randint(1, 10))] for d in device_ids}
    start = now - timedelta(days=DAYS)
    span_s = DAYS * 86_400 - 60  # the newest heartbeat is a minute old
    activity = dict.fromkeys(device_ids, 0)
    batch: list[dict[str, object]] = []
    messages: list[tuple[bytes, bytes]] = []
    for n in range(1, events + 1):
        if n % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
        device = device_ids[rng.randrange(devices)]
        count = rng.randint(0, 40)
        at = start + timedelta(seconds=rng.uniform(0, span_s))
        activity[device] += count
        batch.append(
            {
                "client_id": owner[device],
                "device_id": device,
                "user_id": rng.choice(pools[device]),
                "generated_at_utc": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "total_activity_count": count,
            }
        )
        if len(batch) == per_message:
            messages.append(_encode(batch))
            batch = []
    if batch:
        messages.append(_encode(batch))
    progress(events % PROGRESS_EVERY)
    return Dataset(clients, messages, events, activity, owner)


def _encode(batch: list[dict[str, object]]) -> tuple[bytes, bytes]:
    key = str(batch[0]["device_id"]).encode()
    return key, orjson.dumps(batch[0] if len(batch) == 1 else batch)


async def produce(
    kafka: KafkaConnection,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    progress: Callable[[int], None] = _no_progress,
) -> None:
    """Send every message and wait for the broker's acknowledgement of all; ``progress`` is
    told of each acknowledged part."""
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(), linger_ms=20, max_batch_size=1 << 20, acks="all"
    )
    await producer.start()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                progress(len(pending))
                pending = []
        await asyncio.gather(*pending)
        progress(len(pending))
    finally:
        await producer.stop()


async def register_clients(redis: Store, clients: dict[str, str], now: datetime) -> None:
    registry = Registry(redis)
    for client_id, timezone in clients.items():
        await registry.add_client(client_id, timezone, "bench", now)


async def verify(redis: Store, data: Dataset, now: datetime, sample: int, seed: int) -> int:
    """Compare the activity Redis counted for ``sample`` devices with the oracle; raises on any
    difference. Returns the number of devices checked."""
    rng = random.Random(seed)
    devices = rng.sample(sorted(data.activity_by_device), min(sample, len(data.activity_by_device)))
    # Every local day an event of the last DAYS days can fall on, in any timezone.
    first = (now - timedelta(days=DAYS + 1)).date()
    days = [first + timedelta(days=n) for n in range(DAYS + 3)]
    async with redis.pipeline(transaction=False) as pipe:
        for device in devices:
            for day in days:
                pipe.hget(keys.device_month(device, day), str(day.day))
        counts = await pipe.execute()
    wrong = []
    for n, device in enumerate(devices):
        got = sum(int(c) for c in counts[n * len(days) : (n + 1) * len(days)] if c is not None)
        if got != data.activity_by_device[device]:
            wrong.append((device, data.activity_by_device[device], got))
    if wrong:
        raise AssertionError(f"{len(wrong)} devices counted wrong, e.g. {wrong[:3]}")
    return len(devices)
