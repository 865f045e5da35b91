"""What earlier readings of the heartbeats topic refused, read back from Kafka, so that a reading
again refuses it too (docs/events.md, "Verdicts that do not change with the clock").

A heartbeats message may be read many times: by the worker after a rebalance or a restart, by the
gap repair after Redis lost writes (all of the topic after a FLUSHALL), by `devact replay` months
later. Its time rules are judged against its record's own time (stream/plan.py), so they give
the same verdict at every reading. Other rules depend on what an operator changes in between: the
retention (raised so that a redrive can count old events), a client's registration, a device's
owner. Changing those is what a redrive is for, and the redrive sends a copy of the dead letter,
at a new offset. If a reading again also counted the original under the new rules, the event
would count twice (once from each offset), and whether it did would depend on the order of the
operator's commands.

So a refusal is final for the offset it was given to: an event that the dead-letter topic holds,
or that a redrive marked as sent back (stream/redrive.py, whose compacted marks outlive the
dead letters), is neither counted nor dead-lettered again when its offset is read again; only
its copy sent back by a redrive counts. A dead letter that the dead-letter topic no longer
retains and that was never sent back is judged afresh: nothing can send it back any more.

Reading the refusals costs one pass over the dead-letter topic from shortly before the oldest
record to judge (by time: offsets_for_times), and the whole marks topic; they are kept as a set of
(partition, offset, index), about 120 bytes each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence, Set
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.kafka import KafkaConnection
from stream.plan import Message, Source
from stream.redrive import marks_topic
from stream.topics import TopicNotFound, topic_partitions

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(minutes=5)
"""How far the clocks that stamp the records (brokers, and the workers for a dead-letter topic
with ``CreateTime``) may disagree: a dead letter is looked for from this long before the record
it refuses, and a worker treats records up to this long after it was given its partitions as
possibly judged by their previous reader."""
_FETCH = 5000


class Refusals:
    """The events of one heartbeats topic that earlier readings refused."""

    def __init__(self, kafka: KafkaConnection, topic: str, dlq_topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._dlq_topic = dlq_topic
        self._known: frozenset[Source] = frozenset()
        self._from_ms: int | None = None
        """The record time the dead letters were read from (None: not read yet)."""

    def forget(self) -> None:
        """Read them again at the next question: other readers may have refused more."""
        self._known, self._from_ms = frozenset(), None

    async def among(self, messages: Sequence[Message]) -> Set[Source]:
        """The refused events, at least all those of ``messages``: read from Kafka the first
        time, and again when ``messages`` hold a record older than those read for."""
        stamps = [m.timestamp for m in messages if m.timestamp is not None and m.timestamp >= 0]
        oldest = min(stamps) if len(stamps) == len(messages) else 0  # no time: from the start
        if self._from_ms is None or oldest < self._from_ms:
            self._from_ms = max(0, oldest - int(CLOCK_SKEW.total_seconds() * 1000))
            self._known = frozenset(await self._read(self._from_ms))
            log.info(
                "%d events of %s refused before (dead letters since %d ms, and redrive marks)",
                len(self._known), self._topic, self._from_ms,
            )  # fmt: skip
        return self._known

    async def _read(self, from_ms: int) -> set[Source]:
        found: set[Source] = set()
        for topic, since in ((self._dlq_topic, from_ms), (marks_topic(self._dlq_topic), 0)):
            for key, headers in await _read_topic(self._kafka, topic, since):
                source = (
                    _dead_letter_source(headers, self._topic)
                    if topic == self._dlq_topic
                    else _mark_source(key, self._topic)
                )
                if source is not None:
                    found.add(source)
        return found


def _dead_letter_source(headers: dict[str, bytes], topic: str) -> Source | None:
    """The event a dead letter refused (its ``source`` and ``element`` headers)."""
    where = _where(headers.get("source", b""), topic)
    element = headers.get("element")
    if where is None or (element is not None and not element.isdigit()):
        return None
    return (*where, None if element is None else int(element))


def _mark_source(key: bytes | None, topic: str) -> Source | None:
    """The event a redrive mark names (``topic/partition/offset#element``, stream/redrive.py)."""
    source, sep, element = (key or b"").partition(b"#")
    where = _where(source, topic)
    if where is None or not sep or (element and not element.isdigit()):
        return None
    return (*where, int(element) if element else None)


def _where(source: bytes, topic: str) -> tuple[int, int] | None:
    """Partition and offset of ``topic/partition/offset`` when it names ``topic``."""
    name, _, rest = source.decode("utf-8", "replace").rpartition("/")
    named, _, partition = name.rpartition("/")
    if named != topic or not partition.isdigit() or not rest.isdigit():
        return None
    return int(partition), int(rest)


async def _read_topic(
    kafka: KafkaConnection, topic: str, since_ms: int
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """Key and headers of the committed records of ``topic`` from ``since_ms`` on, up to the end
    offsets when it starts (none when the topic does not exist)."""
    try:
        partitions = await topic_partitions(kafka, topic)
    except TopicNotFound:
        return []
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        found: list[tuple[bytes | None, dict[str, bytes]]] = []
        for tp in tps:
            start = starts[tp]
            if start is None:  # nothing that recent
                continue
            consumer.seek(tp, start.offset)
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=_FETCH)
                found += [
                    (r.key, dict(r.headers or ())) for r in batch.get(tp, []) if r.offset < ends[tp]
                ]
        return found
    finally:
        await consumer.stop()
