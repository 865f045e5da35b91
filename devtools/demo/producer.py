"""Publishing heartbeats to Kafka at a steady rate (`devact produce`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from stream.kafka import KafkaConnection

Event = dict[str, object]
Progress = Callable[[int], None]
"""Told how many more events were sent."""
PROGRESS_EVERY = 1000
"""Events between two reports of a long ``publish``: a report is never made per event."""
TICK_S = 0.05
"""``publish_at_rate`` sends a tick's share of events every 50 ms."""


def _no_progress(sent: int) -> None:
    pass


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
        self, kafka: KafkaConnection, topic: str, per_message: int = 1, compression: str = "none"
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}: one of {COMPRESSIONS}")
        self._producer = AIOKafkaProducer(
            **kafka.client_kwargs(),
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

    async def publish(self, events: Iterable[Event], progress: Progress = _no_progress) -> None:
        """Send all events, waiting for the broker to acknowledge every one. ``progress`` hears
        of them as they are handed to the producer, ``PROGRESS_EVERY`` at a time, and of the
        rest once all are acknowledged."""
        pending: list[asyncio.Future[object]] = []
        chunk: list[Event] = []
        reported = self.sent
        for event in events:
            chunk.append(event)
            if len(chunk) == self._per_message:
                pending.append(await self._send(chunk))
                chunk = []
                if self.sent - reported >= PROGRESS_EVERY:
                    progress(self.sent - reported)
                    reported = self.sent
        if chunk:
            pending.append(await self._send(chunk))
        await asyncio.gather(*pending)
        if self.sent > reported:
            progress(self.sent - reported)

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
    progress: Progress = _no_progress,
) -> None:
    """Emit ``rate`` events per second, in ticks of 50 ms, until ``duration_s`` (or forever);
    ``progress`` hears of each tick's events once acknowledged."""
    started = time.monotonic()
    for ticks, count in enumerate(_tick_counts(rate, duration_s), start=1):
        now = datetime.now(UTC)
        await publisher.publish((next_event(now) for _ in range(count)), progress)
        await asyncio.sleep(max(0.0, started + ticks * TICK_S - time.monotonic()))


def scheduled(rate: float, duration_s: float | None) -> int | None:
    """How many events ``publish_at_rate`` sends at ``rate`` over ``duration_s``; None when it
    runs until stopped."""
    return None if duration_s is None else sum(_tick_counts(rate, duration_s))


def _tick_counts(rate: float, duration_s: float | None) -> Iterator[int]:
    """Events of each tick: ``rate`` a second, a tick's fraction of an event carried over."""
    ticks, due = 0, 0.0
    while duration_s is None or ticks * TICK_S < duration_s:
        ticks += 1
        due += rate * TICK_S
        count, due = int(due), due - int(due)
        yield count
