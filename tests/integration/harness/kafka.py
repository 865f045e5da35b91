"""Kafka as the tests use it: the messages they produce, their topics, and reading a topic back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream.topics import STAMPED_BY_BROKER

from .waiting import POLL_INTERVAL_S, READY_TIMEOUT_S

# The heartbeat topic is created here, before the worker starts, and the worker is told the same
# count, so a Faust table co-partitioned with it cannot disagree about partitions.
TOPIC_PARTITIONS = 4
DLQ_PARTITIONS = 2


@dataclass(frozen=True)
class Message:
    """One Kafka message to produce: the value bytes and the key bytes."""

    value: bytes
    key: bytes | None = None


def encode(event: Any) -> bytes:
    """A heartbeat (object, array or anything) as the UTF-8 JSON a producer sends."""
    return json.dumps(event, ensure_ascii=False).encode()


def heartbeat_message(event: Mapping[str, Any]) -> Message:
    """The docs/events.md message: JSON value, keyed by the device id as written in the event."""
    return Message(encode(event), str(event["device_id"]).encode())


async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, p, 1, topic_configs=STAMPED_BY_BROKER) for n, p in partitions.items()]
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not set(partitions) <= set(await admin.list_topics()):
            if time.monotonic() >= deadline:
                raise AssertionError(f"topics {sorted(partitions)} never appeared")
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value=m.value, key=m.key) for m in messages]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, partitions: int, *, at_least: int, timeout_s: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of ``topic`` from the beginning, once at least ``at_least`` have arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while len(records) < at_least and time.monotonic() < deadline:
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(batch)
        # Then drain up to the end offsets, so that any extra message is seen too.
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() >= deadline + READY_TIMEOUT_S:
                raise AssertionError(f"could not read {topic} up to its end offsets")
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()
