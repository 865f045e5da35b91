"""The Faust app: the heartbeats topic and its batch channel, the dead-letter topic, and the
pipeline that applies the batches (stream/pipeline.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from stream import unreadable
from stream.batching import BatchingApp
from stream.kafka import check_access
from stream.pipeline import HeartbeatPipeline
from stream.settings import WorkerSettings
from stream.topics import STAMPED_BY_BROKER, timestamp_type

log = logging.getLogger(__name__)


_DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The dead-letter topic (when the worker creates it) and the producer accept messages this
large, so a rejected event as big as the heartbeats topic allows still fits with its headers."""


def create_app(settings: WorkerSettings) -> faust.App:
    unreadable.install()
    kafka = settings.kafka_connection()
    app = BatchingApp(
        settings.app_id,
        broker=kafka.faust_broker(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        web_enabled=False,
        datadir=str(settings.worker_dir),
        topic_partitions=settings.topic_partitions,
        # A new consumer group must start from the oldest retained heartbeat, not skip the
        # backlog produced before the first worker came up.
        consumer_auto_offset_reset="earliest",
        # Static membership: a worker restarted with the same id takes its partitions back at
        # once instead of waiting for the session timeout and a rebalance.
        consumer_group_instance_id=settings.worker_instance_id,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_max_poll_records=settings.fetch_max,
        producer_max_request_size=_DLQ_MAX_MESSAGE_BYTES,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(settings.topic, key_type=bytes, value_type=bytes)
    channel = app.batch_channel(source)
    topic = source.get_topic_name()

    @app.service
    class Pipeline(HeartbeatPipeline):
        """One instance per worker, so each partition's batches are applied strictly in offset
        order; Faust makes it when the app starts."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(app, settings, channel, topic, **kwargs)

    return app


async def ensure_topics(settings: WorkerSettings) -> None:
    """Create the heartbeats and dead-letter topics when missing (Faust only creates its own
    internal topics). Waits for the broker as long as it takes: a worker never exits because
    Kafka is not up yet. But it does when Kafka refuses it (``KafkaAccessRefused``: wrong
    credentials, a certificate not trusted), which waiting would not change."""
    delay = 0.2
    kafka = settings.kafka_connection()
    while True:
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        try:
            await check_access(kafka)
            await admin.start()
            existing = set(await admin.list_topics())
            # The broker's time stamps each record: the time rules judge against it.
            dlq_config = {**STAMPED_BY_BROKER, "max.message.bytes": str(_DLQ_MAX_MESSAGE_BYTES)}
            topics = ((settings.topic, STAMPED_BY_BROKER), (settings.dlq_topic, dlq_config))
            wanted = [
                NewTopic(name, settings.topic_partitions, 1, topic_configs=config)
                for name, config in topics
                if name not in existing
            ]
            if wanted:
                _check_created(await admin.create_topics(wanted))
            if await timestamp_type(admin, settings.topic) == "CreateTime":
                log.warning(
                    "topic %s stamps records with CreateTime: the producers' clocks decide "
                    "event_in_future and event_too_old. Let the broker stamp them: "
                    "kafka-configs.sh --alter --entity-type topics --entity-name %s "
                    "--add-config message.timestamp.type=LogAppendTime (docs/events.md)",
                    settings.topic, settings.topic,
                )  # fmt: skip
            return
        except (KafkaConnectionError, OSError) as exc:
            log.warning("Kafka not reachable yet (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            await admin.close()


def _check_created(response: Any) -> None:
    """Topic creation answers per topic; "already exists" means another worker won the race."""
    for topic, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"cannot create topic {topic}")
