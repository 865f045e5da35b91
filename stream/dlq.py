"""Dead-letter records: the original bytes, the original key, and why, in headers; and reading
them back (``devact dlq``, ``devact status``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.kafka import KafkaConnection
from stream.plan import DeadLetter
from stream.sources import ArraySource, original_bytes
from stream.topics import TopicNotFound, topic_partitions


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def to_record(letter: DeadLetter) -> DeadLetterRecord:
    """The record of one dead letter (for many, ``to_records``: it scans a message once)."""
    return _record(letter, original_bytes(letter.message.value, letter.index))


async def to_records(
    letters: Sequence[DeadLetter], pace: Callable[[], Awaitable[None]]
) -> list[DeadLetterRecord]:
    """The records of ``letters``, awaiting ``pace`` between pieces of the work: each array
    message is scanned once for the bytes of all its elements that are dead letters."""
    sources: dict[tuple[str, int, int], ArraySource] = {}
    records = []
    for letter in letters:
        m, value = letter.message, letter.message.value
        if letter.index is not None:
            source = sources.get((m.topic, m.partition, m.offset))
            if source is None:
                source = sources[(m.topic, m.partition, m.offset)] = ArraySource(m.value)
            while not source.found(letter.index):
                source.scan()
                await pace()
            value = source.element(letter.index)
        records.append(_record(letter, value))
        await pace()
    return records


def _record(letter: DeadLetter, value: bytes) -> DeadLetterRecord:
    m, r = letter.message, letter.rejection
    headers = [
        ("reason", r.reason.encode()),
        ("detail", r.detail.encode("utf-8", "replace")),
        ("source", f"{m.topic}/{m.partition}/{m.offset}".encode()),
    ]
    if r.field is not None:
        headers.append(("field", r.field.encode()))
    if letter.index is not None:
        headers.append(("element", str(letter.index).encode()))
    return DeadLetterRecord(m.key, value, headers)


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as the dead-letter topic holds it."""

    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source: str
    """``topic/partition/offset`` of the heartbeats message it came from."""
    field: str | None = None
    element: int | None = None
    """Its index in the source message, when that was an array."""


def _stored(record: Any) -> StoredDeadLetter:
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
    element = headers.get("element")
    return StoredDeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key,
        value=record.value or b"",
        reason=headers.get("reason", "?"),
        detail=headers.get("detail", ""),
        source=headers.get("source", ""),
        field=headers.get("field"),
        element=int(element) if element is not None and element.isdigit() else None,
    )


async def read_dead_letters(kafka: KafkaConnection, topic: str) -> list[StoredDeadLetter]:
    """Every dead letter the topic holds now, partition by partition, in offset order (a
    consumer of no group: reading them moves nothing)."""
    try:
        partitions = await topic_partitions(kafka, topic)
    except TopicNotFound:
        return []
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)  # seek_to_beginning after end_offsets stayed at the end
        found: list[StoredDeadLetter] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                found += [_stored(r) for r in batch.get(tp, []) if r.offset < ends[tp]]
        return found
    finally:
        await consumer.stop()
