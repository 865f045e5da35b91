"""The Faust app: the heartbeats topic, the dead-letter topic, and the batching agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import mode
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code
from redis.exceptions import RedisError

from state.cluster_writer import new_writer
from state.connection import open_store
from state.registry import Registry
from stream import unreadable
from stream.batching import BatchingApp
from stream.dlq import DeadLetterRecord
from stream.health import HealthServer
from stream.kafka import check_access
from stream.lag import GroupOffsets
from stream.metrics import WorkerMetrics
from stream.pacing import Pacer
from stream.processor import BatchProcessor, Prepared
from stream.refusals import Refusals
from stream.reread import partition_reader
from stream.settings import WorkerSettings
from stream.topics import STAMPED_BY_BROKER, timestamp_type

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


_LAG_TIMEOUT_S = 2.0
"""How long a scrape waits for Kafka's offsets."""
_IDLE_CATCH_UP_S = 1.0
"""How long the worker waits for a batch before it applies, by itself, events that wait for a
Redis Cluster primary that was unreachable (``BatchProcessor.catch_up``)."""
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

    async def send_dead_letters(records: Sequence[DeadLetterRecord]) -> None:
        """Send and wait for the broker's acknowledgement, so a batch is only acknowledged once
        its dead letters are durable. A message may have 10,000 of them: they go straight to
        the producer (Faust's ``Topic.send`` took 0.58 ms a record, the producer 0.11 ms), and
        the event loop is handed back in between, so the worker keeps answering."""
        pacer = Pacer()
        pending = []
        for r in records:
            sent = await app.producer.send(
                settings.dlq_topic, r.key, r.value, None, None, r.headers
            )
            pending.append(sent)
            await pacer.pace()
        await asyncio.gather(*pending)

    @app.service
    class HeartbeatBatches(mode.Service):
        """The agent: one instance per worker, so each partition's batches are applied strictly
        in offset order."""

        def __post_init__(self) -> None:
            self._redis = open_store(settings)
            self._metrics = WorkerMetrics()
            self._offsets = GroupOffsets(kafka, settings.app_id, settings.topic)
            self._processor = BatchProcessor(
                registry=Registry(self._redis),
                writer=new_writer(self._redis, fleet=settings.fleet_aggregates),
                send=send_dead_letters,
                clock=_utc_now,
                default_timezone=settings.default_timezone,
                retention_days=settings.retention_days,
                reread=partition_reader(kafka),
                metrics=self._metrics,
                limits=settings.message_limits(),
                register_unknown=settings.unknown_clients == "register",
                refusals=Refusals(kafka, settings.topic, settings.dlq_topic),
            )

        @mode.Service.task
        async def _apply_batches(self) -> None:
            """Two stages: while Redis applies one batch, the next is judged and planned (the
            worker's CPU and Redis's then work at the same time). Applying stays strictly one
            batch after the other, which the effectively-once check in state/ relies on."""
            applying: asyncio.Task[None] | None = None
            delivered: dict[int, int] = {}  # per partition, the last offset taken
            generation = None
            try:
                while not self.should_stop:
                    try:
                        records = await asyncio.wait_for(
                            channel.take(settings.batch_max, settings.batch_max_bytes),
                            _IDLE_CATCH_UP_S,
                        )
                    except TimeoutError:
                        if applying is not None:
                            await applying
                            applying = None
                        if app.consumer_generation_id == generation:
                            await self._processor.catch_up(source.get_topic_name(), delivered)
                        continue
                    if app.consumer_generation_id != generation:
                        generation, delivered = app.consumer_generation_id, {}
                        self._processor.reassigned()
                    batch = channel.messages(records)
                    for message in batch:
                        delivered[message.partition] = message.offset
                    prepared = await self._processor.prepare_until_done(batch, self._stopping)
                    if applying is not None:
                        await applying  # raises CancelledError when it gave up (stopping)
                    applying = asyncio.create_task(self._apply(prepared, records))
            finally:
                if applying is not None and not applying.done():
                    applying.cancel()  # left unacknowledged: delivered again after a restart

        async def _apply(self, prepared: Prepared, records: list[Any]) -> None:
            await self._processor.apply_until_done(prepared, self._stopping)
            channel.ack(records)

        def _stopping(self) -> bool:
            return bool(app.should_stop)

        async def on_start(self) -> None:
            self._health = HealthServer(
                settings.worker_metrics_host, settings.worker_metrics_port, self._problems,
                self._scrape,
            )  # fmt: skip
            await self._health.start()

        async def on_stop(self) -> None:
            await self._health.stop()
            await self._offsets.close()
            await self._redis.aclose()

        async def _scrape(self) -> bytes:
            """The metrics, the group's lag read from Kafka first (kept as it was when Kafka
            does not answer in time)."""
            try:
                async with asyncio.timeout(_LAG_TIMEOUT_S):
                    partitions = await self._offsets.read()
                self._metrics.offsets(settings.topic, partitions)
            except Exception as exc:  # a scrape must answer whatever Kafka does
                log.warning("consumer lag not read from Kafka: %s", exc or type(exc).__name__)
            self._metrics.redis_up.set(0 if await self._redis_problem() else 1)
            return self._metrics.render()

        async def _redis_problem(self) -> str | None:
            try:
                await self._redis.ping()
            except (RedisError, OSError) as exc:
                return f"Redis unreachable: {exc}"
            return None

        async def _problems(self) -> list[str]:
            """Why the worker cannot do all of its work now (empty: ready)."""
            problems = [h.report.describe() for h in getattr(app.consumer, "held", {}).values()]
            if redis := await self._redis_problem():
                problems.append(redis)
            return problems

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
