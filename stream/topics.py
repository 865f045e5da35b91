"""What Kafka's metadata says of a topic."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.kafka import KafkaConnection

STAMPED_BY_BROKER = {"message.timestamp.type": "LogAppendTime"}
"""The config of a topic whose records carry the time the broker appended them, not a time the
producer chose: the heartbeats and dead-letter topics (docs/events.md)."""


class TopicNotFound(Exception):
    pass


async def topic_partitions(kafka: KafkaConnection, topic: str) -> list[int]:
    """The partition numbers of ``topic``, from the cluster's metadata."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        return await partitions_of(admin, topic)
    finally:
        await admin.close()


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    """``topic_partitions`` with an admin client already started."""
    described = await admin.describe_topics([topic])
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0 and entry["partitions"]:
            return sorted(p["partition"] for p in entry["partitions"])
    raise TopicNotFound(f"topic {topic} does not exist")


async def timestamp_type(admin: AIOKafkaAdminClient, topic: str) -> str | None:
    """The topic's ``message.timestamp.type`` (``CreateTime`` or ``LogAppendTime``), None when
    the broker does not say."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    for response in await admin.describe_configs([resource]):
        for error_code, _message, _type, name, entries, *_ in response.resources:
            if name != topic or error_code != 0:
                continue
            for entry_name, value, *_ in entries:
                if entry_name == "message.timestamp.type":
                    return str(value)
    return None
