"""Kafka for the fault tests: topics, producers (one in the background), group members."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from stream.topics import STAMPED_BY_BROKER
from tests.integration.harness.kafka import Message

from .constants import FAST_POLL_S, PARTITIONS


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # Idempotent: a send retried across a broker restart must not write a message twice, or the
    # topic itself would hold more events than the oracle counts.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=120_000,
        linger_ms=5,
    )


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            stamped = NewTopic(topic, partitions, 1, topic_configs=STAMPED_BY_BROKER)
            await admin.create_topics([stamped])
            deadline = time.monotonic() + 60
            while topic not in await admin.list_topics():
                assert time.monotonic() < deadline, f"topic {topic} never appeared"
                await asyncio.sleep(FAST_POLL_S)
        finally:
            await admin.close()

    asyncio.run(run())


def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send and wait for every acknowledgement."""

    async def run() -> None:
        producer = _producer(bootstrap)
        await producer.start()
        try:
            sent = [await producer.send(topic, value=m.value, key=m.key) for m in messages]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def topic_message_count(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> int:
    """Messages in the topic (sum of end offsets; the topic starts empty, nothing is compacted)."""

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(run())


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    partitions: tuple[int, ...]


def group_members(bootstrap: str, group: str, topic: str) -> list[GroupMember]:
    """The consumer group's members and the partitions of ``topic`` each was assigned."""

    async def run() -> list[GroupMember]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        members = []
        for response in responses:
            for described in response.groups:
                for member in described[5]:
                    member_id, client_id, assignment = member[0], member[-4], member[-1]
                    parts: tuple[int, ...] = ()
                    if assignment:
                        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                        parts = tuple(
                            sorted(tp.partition for tp in decoded.partitions() if tp.topic == topic)
                        )
                    members.append(GroupMember(member_id, client_id, parts))
        return members

    return asyncio.run(run())


class BackgroundProducer:
    """Sends messages from a thread at a steady rate, so that faults strike while events flow.

    The pace is rate limiting, not synchronisation: nothing in the tests waits on it except
    ``join`` at the end. ``sent`` counts acknowledged messages.
    """

    def __init__(
        self, bootstrap: str, topic: str, messages: Sequence[Message], rate_per_s: float
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._messages = list(messages)
        self._rate = rate_per_s
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="background-producer", daemon=True)

    def start(self) -> BackgroundProducer:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float = 180.0) -> float:
        """Wait until every message is acknowledged; returns how long sending took."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"producer still sending after {timeout_s:.0f} s"
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error
        assert self.sent == len(self._messages), (self.sent, len(self._messages))
        assert self.finished_at is not None
        return self.finished_at - self.started_at

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.finished_at = time.monotonic()

    async def _send_all(self) -> None:
        producer = _producer(self._bootstrap)
        await producer.start()
        try:
            tick_s = 0.05
            per_tick = max(1, round(self._rate * tick_s))
            next_tick = time.monotonic()
            for first in range(0, len(self._messages), per_tick):
                chunk = self._messages[first : first + per_tick]
                sent = [await producer.send(self._topic, value=m.value, key=m.key) for m in chunk]
                await asyncio.gather(*sent)
                self.sent += len(chunk)
                next_tick += tick_s
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        finally:
            await producer.stop()
