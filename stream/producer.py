"""Publishing heartbeats to Kafka at a steady rate (`devact produce`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

Event = dict[str, object]


def encode(events: list[Event]) -> tuple[bytes, bytes]:
    """Key and value of one message: a single event keyed by its device, or a JSON array
    (docs/events.md: a gateway's batch) keyed by its first event's device."""
    key = str(events[0]["device_id"]).encode()
    value = orjson.dumps(events[0] if len(events) == 1 else events)
    return key, value


COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
"""Every codec a Kafka producer may use: the worker reads them all."""


class Publisher:
    def __init__(
        self, bootstrap: str, topic: str, per_message: int = 1, compression: str = "none"
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}: one of {COMPRESSIONS}")
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=5,
            acks="all",
            max_batch_size=256 * 1024,
            compression_type=None if compression == "none" else compression,
        )
        self._topic = topic
        self._per_message = per_message
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def publish(self, events: Iterable[Event]) -> None:
        """Send all events, waiting for the broker to acknowledge every one."""
        pending: list[asyncio.Future[object]] = []
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) == self._per_message:
                pending.append(await self._send(chunk))
                chunk = []
        if chunk:
            pending.append(await self._send(chunk))
        await asyncio.gather(*pending)

    async def _send(self, chunk: list[Event]) -> asyncio.Future[object]:
        key, value = encode(chunk)
        self.sent += len(chunk)
        future: asyncio.Future[object] = await self._producer.send(self._topic, value, key=key)
        return future


async def publish_at_rate(
    publisher: Publisher,
    next_event: Callable[[datetime], Event],
    rate: float,
    duration_s: float | None,
) -> None:
    """Emit ``rate`` events per second, in ticks of 50 ms, until ``duration_s`` (or forever)."""
    tick_s = 0.05
    started = time.monotonic()
    ticks, due = 0, 0.0
    while duration_s is None or ticks * tick_s < duration_s:
        ticks += 1
        due += rate * tick_s
        count, due = int(due), due - int(due)
        now = datetime.now(UTC)
        await publisher.publish(next_event(now) for _ in range(count))
        if ticks % 200 == 0:  # every 10 s
            log.info("sent %d heartbeats", publisher.sent)
        await asyncio.sleep(max(0.0, started + ticks * tick_s - time.monotonic()))
