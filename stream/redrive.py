"""Sending dead letters back to the heartbeats topic once their cause is fixed (``devact dlq
redrive``), each dead letter at most once, however often the command runs.

How "once" holds. The worker counts each heartbeats message once by its offset; a redrive
writes a new message, at a new offset, so the worker cannot tell a second redrive of the same
dead letter from a new event. The redrive itself is made idempotent, with Kafka transactions:

- every event sent back is marked in a compacted topic ``<dlq topic>.redriven`` (key: where it
  came from, the heartbeats message's topic, partition and offset, and its index in an array),
  in the same transaction as the message sent back; the worker reads only committed messages,
  so a message sent back exists for it if and only if its mark does;
- a redrive reads the marks (committed only) after starting its transactional producer, whose
  fixed ``transactional.id`` fences any other redrive still running (its open transaction is
  aborted), and sends only events without a mark, each once (an event dead-lettered twice, by a
  worker that re-read its batch, is one event).

So a redrive that crashes half-way left whole transactions behind, and the next one sends the
rest; two at once cannot both send the same event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from stream.dlq import StoredDeadLetter, read_dead_letters
from stream.kafka import KafkaConnection
from stream.topics import TopicNotFound, topic_partitions

REDRIVEN_HEADER = "redriven_from"
"""Header of a message sent back: ``<dlq topic>/<partition>/<offset>`` of its dead letter."""
_PER_TRANSACTION = 500


@dataclass
class RedriveSummary:
    chosen: list[StoredDeadLetter] = field(default_factory=list)
    """The dead letters matching the filters whose event was not sent back before (the first
    of each event's dead letters)."""
    already: int = 0
    """Events matching the filters that an earlier redrive sent back."""
    sent: int = 0


def marks_topic(dlq_topic: str) -> str:
    return f"{dlq_topic}.redriven"


def mark(letter: StoredDeadLetter) -> bytes:
    """The event's identity: where it came from (or, without a source, its dead letter)."""
    if not letter.source:
        return f"dlq/{letter.partition}/{letter.offset}".encode()
    return f"{letter.source}#{'' if letter.element is None else letter.element}".encode()


def _unsent(
    letters: Sequence[StoredDeadLetter], done: set[bytes]
) -> tuple[list[StoredDeadLetter], int]:
    """The first dead letter of each event not marked, and how many events are marked."""
    first: dict[bytes, StoredDeadLetter] = {}
    for letter in letters:
        first.setdefault(mark(letter), letter)
    chosen = [letter for key, letter in first.items() if key not in done]
    return chosen, len(first) - len(chosen)


async def redrive(
    kafka: KafkaConnection,
    dlq_topic: str,
    topic: str,
    choose: Callable[[StoredDeadLetter], bool],
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda _: None,
) -> RedriveSummary:
    """Send the chosen dead letters that were never sent back to ``topic``, with their original
    key and value and a header naming their dead letter (``dry_run``: only say which)."""
    letters = [letter for letter in await read_dead_letters(kafka, dlq_topic) if choose(letter)]
    summary = RedriveSummary()
    if dry_run:
        done = await _read_marks(kafka, marks_topic(dlq_topic))
        summary.chosen, summary.already = _unsent(letters, done)
        return summary
    await _ensure_marks_topic(kafka, marks_topic(dlq_topic))
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(), transactional_id=f"devact-redrive-{dlq_topic}"
    )
    await producer.start()  # fences an earlier redrive's producer: its open transaction aborts
    try:
        done = await _read_marks(kafka, marks_topic(dlq_topic))
        summary.chosen, summary.already = _unsent(letters, done)
        for first in range(0, len(summary.chosen), _PER_TRANSACTION):
            chunk = summary.chosen[first : first + _PER_TRANSACTION]
            await _send(producer, chunk, dlq_topic, topic)
            summary.sent += len(chunk)
            progress(len(chunk))
    finally:
        await producer.stop()
    return summary


async def _send(
    producer: AIOKafkaProducer, chunk: Sequence[StoredDeadLetter], dlq_topic: str, topic: str
) -> None:
    async with producer.transaction():
        for letter in chunk:
            origin = f"{dlq_topic}/{letter.partition}/{letter.offset}".encode()
            headers = [(REDRIVEN_HEADER, origin), ("source", letter.source.encode())]
            await producer.send(topic, key=letter.key, value=letter.value, headers=headers)
            await producer.send(marks_topic(dlq_topic), key=mark(letter), value=origin)


async def _read_marks(kafka: KafkaConnection, topic: str) -> set[bytes]:
    """The keys of the committed marks (none when the topic does not exist yet)."""
    try:
        partitions = await topic_partitions(kafka, topic)
    except TopicNotFound:
        return set()
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offset
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)  # seek_to_beginning after end_offsets stayed at the end
        found: set[bytes] = set()
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                found.update(r.key for r in batch.get(tp, []) if r.key is not None)
        return found
    finally:
        await consumer.stop()


async def _ensure_marks_topic(kafka: KafkaConnection, topic: str) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if topic not in existing:
            config = {"cleanup.policy": "compact"}
            response = await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
            for name, code, *_ in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):  # another redrive won
                    raise for_code(code)(f"cannot create topic {name}")
    finally:
        await admin.close()
