"""Reading a range of one partition again, with a consumer of its own (no group, no commits).

The worker's group consumer must not be moved backwards at run time: Faust tracks a read offset
per partition and drops what it believes it has already seen. A separate, short-lived reader has
no such state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream import unreadable
from stream.kafka import KafkaConnection
from stream.plan import Continuity, Message, from_record

_CHUNK = 5000
_CHUNK_BYTES = 1024 * 1024
"""A chunk is applied as one batch: bounded like the worker's batches (its batch_max and
batch_max_bytes defaults), so a re-read of gateway arrays is no heavier than a live batch."""


def partition_reader(
    kafka: KafkaConnection,
) -> Callable[[str, int, int, int], AsyncIterator[list[Message]]]:
    unreadable.install()

    async def reread(
        topic: str, partition: int, start: int, stop: int
    ) -> AsyncIterator[list[Message]]:
        """Messages with ``start <= offset < stop`` that the log still holds, in chunks."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **kafka.client_kwargs(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        continuity = Continuity()
        await consumer.start()
        try:
            consumer.assign([tp])
            earliest = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, max(start, earliest))
            while await consumer.position(tp) < stop:
                fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=_CHUNK)
                held = unreadable.take(topic, partition)
                chunk: list[Message] = []
                size = 0
                for r in fetched.get(tp, []):
                    if r.offset >= stop:
                        break
                    chunk.append(from_record(r))
                    size += len(r.value or b"")
                    if size >= _CHUNK_BYTES:
                        yield continuity.link(chunk)
                        chunk, size = [], 0
                if chunk:
                    yield continuity.link(chunk)
                if held is not None:
                    raise unreadable.UnreadableBatch(held)
        finally:
            await consumer.stop()

    return reread
