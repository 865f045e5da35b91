"""What Kafka says of a consumer group on a topic: per partition, the log's first and next
offset and the group's committed offset, hence its lag. Read with aiokafka's admin client (the
group's offsets) and a consumer of no group (the log's ends), so it works whether or not a
worker runs: the worker's metrics and ``devact status`` both use it."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.kafka import KafkaConnection
from stream.topics import partitions_of


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    partition: int
    start: int
    """The first offset the log still holds."""
    end: int
    """The offset the next message will get (for a reader of committed messages: the first
    offset of a transaction still open)."""
    committed: int | None
    """The next offset the group will read (None: the group never committed one)."""

    @property
    def lag(self) -> int:
        """Messages the group has still to read (from the log's start when it committed none).
        A transactional producer's commit markers take offsets too: a group that read
        everything may lag by them until it commits past them."""
        return max(0, self.end - (self.start if self.committed is None else self.committed))


class GroupOffsets:
    """Long-lived clients reading a group's offsets on one topic (``read``, as often as
    wanted)."""

    def __init__(self, kafka: KafkaConnection, group: str, topic: str) -> None:
        self.topic = topic
        self._group = group
        self._admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        self._consumer = AIOKafkaConsumer(
            **kafka.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed"
        )
        self._started = False

    async def read(self) -> list[PartitionOffsets]:
        if not self._started:
            await self._admin.start()
            await self._consumer.start()
            self._started = True
        partitions = await partitions_of(self._admin, self.topic)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=tps)
        starts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        out = []
        for tp in tps:
            found = committed.get(tp)
            offset = None if found is None or found.offset < 0 else found.offset
            out.append(PartitionOffsets(tp.partition, starts[tp], ends[tp], offset))
        return out

    async def close(self) -> None:
        if self._started:
            await self._consumer.stop()
            await self._admin.close()
            self._started = False


async def group_offsets(kafka: KafkaConnection, group: str, topic: str) -> list[PartitionOffsets]:
    """One reading of :class:`GroupOffsets`."""
    reader = GroupOffsets(kafka, group, topic)
    try:
        return await reader.read()
    finally:
        await reader.close()
