"""The ingest benchmark's peer: the same aggregation as a Quix Streams application.

Issue 4 asks how `devact worker` (Faust) compares with what a user would pick instead of Faust:
Quix Streams (PyPI ``quixstreams``). This app does the worker's job the way Quix is meant to be
used, and the per-batch work through the very same code (stream/processor.py, state/):

| Faust worker (stream/app.py)                   | here                                           |
|------------------------------------------------|------------------------------------------------|
| consumer group ``app_id``, earliest            | ``consumer_group``, earliest                   |
| raw bytes in, ``decode_batch`` parses JSON     | ``bytes`` deserializer; the same parsing       |
| a batch of up to ``batch_max`` (5000) events   | one checkpoint (``commit_every=batch_max``,    |
|                                                | ``commit_interval=0.5``), flushed by the sink  |
| ``BatchProcessor.process_until_done``          | ``BatchProcessor.process`` on the sink's own   |
|                                                | event loop; a failure is Quix backpressure     |
| acknowledged after the batch is applied        | Quix commits the checkpoint after the flush    |

Quix Streams is synchronous and calls its sink once per message; the sink only collects
messages, and ``flush()``, which Quix calls when the checkpoint is due, hands all of them, every
partition together, to the BatchProcessor as one batch, as the Faust agent does. state/ is
redis.asyncio, so the sink owns a private event loop and runs each batch to completion on it.

When Redis (or the broker, for dead letters) fails, ``flush()`` raises Quix's
``SinkBackpressureError``: Quix drops the checkpoint, commits nothing, seeks its partitions back
to the checkpoint's first offsets and pauses them for the backoff (0.1 s doubling to 5 s, the
worker's). The batch is then delivered and applied again; state/ skips what it already holds.
This is the framework's own retry, and unlike retrying inside the sink it keeps SIGTERM answered.

    python -m bench.quix_app --bootstrap HOST:PORT --redis-url URL --topic T --group G

Runs until SIGTERM or SIGINT, then commits what is applied and stops (exit 0). Other settings
(default timezone, retention, Redis timeout, log level) come from the worker's ``DEVACT_``
environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from quixstreams import Application
from quixstreams.kafka import Producer
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import HeadersTuples, TopicConfig
from quixstreams.sinks import BaseSink, SinkBackpressureError

from bench.common import peer_settings
from state.connection import open_store
from stream.build import build_processor
from stream.dlq import DeadLetterRecord
from stream.kafka import KafkaConnection
from stream.plan import Message, to_message
from stream.processor import SendDeadLetters
from stream.settings import WorkerSettings
from stream.worker import tune_gc

log = logging.getLogger("bench.quix_app")

_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
"""As the bare loop (bench/raw_loop.py), so neither peer waits on smaller fetches."""
_DLQ_MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""As the worker's producer (stream/app.py): the largest rejected event still fits."""
_CHECKPOINT_MAX_S = 0.5
"""Longest a checkpoint collects before it is applied: bounds the delay a quiet stream adds.
Long enough that under a backlog ``commit_every`` ends every checkpoint (Quix polls 5000
messages in 0.05-0.2 s here), so batches are as large as the worker's."""
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
"""The worker's retry schedule (stream/processor.py), here as Quix's backpressure pauses."""


class DeadLetterFailed(Exception):
    """The broker refused or did not acknowledge a dead letter."""


def _dead_letter_sender(producer: Producer, topic: str) -> SendDeadLetters:
    async def send(records: Sequence[DeadLetterRecord]) -> None:
        """Wait until the broker acknowledged every letter before the batch counts as done.
        Blocks the sink's loop while it waits, which is all there is to do at that point."""
        errors: list[object] = []

        def delivered(error: object | None, _: object) -> None:
            """confluent_kafka's delivery report: ``error`` is a KafkaError or None."""
            if error is not None:
                errors.append(error)

        for r in records:
            producer.produce(topic, r.value, r.key, headers=r.headers, on_delivery=delivered)
        if producer.flush() > 0 or errors:
            raise DeadLetterFailed(f"{len(errors)} dead letters refused: {errors[:1]}")

    return send


class RedisActivitySink(BaseSink):
    """Collects a checkpoint's heartbeats and applies them, as one batch, on ``flush()``."""

    def __init__(self, settings: WorkerSettings, dead_letters: Producer) -> None:
        super().__init__()
        self._messages: list[Message] = []
        self._loop = asyncio.new_event_loop()
        self._redis = open_store(settings)
        send = _dead_letter_sender(dead_letters, settings.dlq_topic)
        self._processor = build_processor(settings, self._redis, send)
        self._delay = _BACKOFF_FIRST_S

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: HeadersTuples,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self._messages.append(to_message(topic, partition, offset, key, value, timestamp))

    def flush(self) -> None:
        """Apply the checkpoint's messages; Quix commits their offsets only if this returns."""
        messages, self._messages = self._messages, []
        if not messages:
            return
        try:
            self._loop.run_until_complete(self._processor.process(messages))
        except Exception as exc:
            log.warning("batch failed (%r); Quix retries it in %.1f s", exc, self._delay)
            retry_after, self._delay = self._delay, min(self._delay * 2, _BACKOFF_MAX_S)
            raise SinkBackpressureError(retry_after=retry_after) from exc
        self._delay = _BACKOFF_FIRST_S

    def on_paused(self) -> None:
        """Another sink's backpressure dropped the checkpoint: its messages come again."""
        self._messages = []

    def close(self) -> None:
        self._loop.run_until_complete(self._redis.aclose())
        self._loop.close()


def connection_config(kafka: KafkaConnection) -> ConnectionConfig:
    """The connection in librdkafka's terms (Quix's clients are confluent-kafka's)."""
    return ConnectionConfig(
        bootstrap_servers=kafka.bootstrap,
        security_protocol=kafka.security_protocol.lower(),
        sasl_mechanism=kafka.sasl_mechanism if kafka.sasl else None,
        sasl_username=kafka.username,
        sasl_password=kafka.password,
        ssl_ca_location=None if kafka.ca_file is None else str(kafka.ca_file),
        ssl_certificate_location=None if kafka.cert_file is None else str(kafka.cert_file),
        ssl_key_location=None if kafka.key_file is None else str(kafka.key_file),
    )


def create_app(settings: WorkerSettings) -> tuple[Application, RedisActivitySink]:
    app = Application(
        broker_address=connection_config(settings.kafka_connection()),
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        # A checkpoint is the worker's batch: at most batch_max messages.
        commit_every=settings.batch_max,
        commit_interval=_CHECKPOINT_MAX_S,
        consumer_extra_config={
            "max.partition.fetch.bytes": _PARTITION_FETCH_BYTES,
            "session.timeout.ms": int(settings.session_timeout_s * 1000),
        },
        producer_extra_config={"message.max.bytes": _DLQ_MAX_REQUEST_BYTES},
        use_changelog_topics=False,  # no Quix state: Redis is the state
        loglevel=logging.getLevelNamesMapping()[settings.log_level.upper()],
    )
    source = app.topic(settings.topic, key_deserializer="bytes", value_deserializer="bytes")
    # Registered so that Quix creates it when missing, as the worker creates its DLQ.
    dlq = app.topic(
        settings.dlq_topic,
        key_serializer="bytes",
        value_serializer="bytes",
        config=TopicConfig(
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            extra_config={"max.message.bytes": str(_DLQ_MAX_REQUEST_BYTES)},
        ),
    )
    sink = RedisActivitySink(settings, app.get_producer())
    app.dataframe(source).sink(sink)
    log.info("consuming %s as group %s, dead letters to %s", source.name, settings.app_id, dlq.name)
    return app, sink


def main(argv: Sequence[str] | None = None) -> int:
    settings = peer_settings(
        argv,
        "python -m bench.quix_app",
        "Quix Streams app: heartbeats topic -> Redis through the worker's code.",
    )
    app, sink = create_app(settings)
    tune_gc()  # the same collector settings as the worker
    try:
        app.run()  # until SIGTERM or SIGINT, which Quix handles itself
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
