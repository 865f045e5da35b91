"""The worker's pipeline: batches from the heartbeats channel, judged and applied to Redis.

A ``mode.Service`` the Faust app starts and stops (``stream/app.py`` registers one instance per
worker, so each partition's batches are applied strictly in offset order). It also serves the
worker's /healthz, /readyz and /metrics (``stream/health.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import mode
from redis.exceptions import RedisError

from state.connection import open_store
from stream.batching import BatchChannel, BatchingApp
from stream.build import build_processor
from stream.dlq import DeadLetterRecord
from stream.health import HealthServer
from stream.lag import GroupOffsets
from stream.metrics import WorkerMetrics
from stream.pacing import Pacer
from stream.processor import Prepared
from stream.settings import WorkerSettings

log = logging.getLogger(__name__)

_LAG_TIMEOUT_S = 2.0
"""How long a scrape waits for Kafka's offsets."""
IDLE_CATCH_UP_S = 1.0
"""How long the worker waits for a batch before it applies, by itself, events that wait for a
Redis Cluster primary that was unreachable (``BatchProcessor.catch_up``)."""


class HeartbeatPipeline(mode.Service):
    """Takes batches from ``channel`` (the heartbeats topic ``topic``), and applies them. Made
    by Faust when the app starts, inside its event loop."""

    def __init__(
        self, app: BatchingApp, settings: WorkerSettings, channel: BatchChannel, topic: str,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self._app = app
        self._settings = settings
        self._channel = channel
        self._topic = topic
        super().__init__(**kwargs)
        self._redis = open_store(settings)
        self._metrics = WorkerMetrics()
        self._offsets = GroupOffsets(settings.kafka_connection(), settings.app_id, settings.topic)
        self._processor = build_processor(
            settings, self._redis, self._send_dead_letters, metrics=self._metrics
        )

    async def _send_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        """Send and wait for the broker's acknowledgement, so a batch is only acknowledged once
        its dead letters are durable. A message may have 10,000 of them: they go straight to
        the producer (Faust's ``Topic.send`` took 0.58 ms a record, the producer 0.11 ms), and
        the event loop is handed back in between, so the worker keeps answering."""
        pacer = Pacer()
        pending = []
        producer = self._app.producer
        for r in records:
            sent = await producer.send(
                self._settings.dlq_topic, r.key, r.value, None, None, r.headers
            )
            pending.append(sent)
            await pacer.pace()
        await asyncio.gather(*pending)

    @mode.Service.task
    async def _apply_batches(self) -> None:
        """Two stages: while Redis applies one batch, the next is judged and planned (the
        worker's CPU and Redis's then work at the same time). Applying stays strictly one
        batch after the other, which the effectively-once check in state/ relies on."""
        app, channel, settings = self._app, self._channel, self._settings
        applying: asyncio.Task[None] | None = None
        delivered: dict[int, int] = {}  # per partition, the last offset taken
        generation = None
        try:
            while not self.should_stop:
                try:
                    records = await asyncio.wait_for(
                        channel.take(settings.batch_max, settings.batch_max_bytes),
                        IDLE_CATCH_UP_S,
                    )
                except TimeoutError:
                    if applying is not None:
                        await applying
                        applying = None
                    if app.consumer_generation_id == generation:
                        await self._processor.catch_up(self._topic, delivered)
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
        self._channel.ack(records)

    def _stopping(self) -> bool:
        return bool(self._app.should_stop)

    async def on_start(self) -> None:
        settings = self._settings
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
        """The metrics, the group's lag read from Kafka first (kept as it was when Kafka does
        not answer in time)."""
        try:
            async with asyncio.timeout(_LAG_TIMEOUT_S):
                partitions = await self._offsets.read()
            self._metrics.offsets(self._settings.topic, partitions)
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
        problems = [h.report.describe() for h in getattr(self._app.consumer, "held", {}).values()]
        if redis := await self._redis_problem():
            problems.append(redis)
        return problems
