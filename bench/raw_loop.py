"""The ingest benchmark's ceiling: a bare aiokafka consumer loop around the worker's BatchProcessor.

Issue 4 compares `devact worker` (Faust) with what Python can do at best on the same path. This
loop is that best: no framework between the broker and the per-batch code, nothing else in the
process. It maps one to one onto the Faust worker (stream/app.py):

| Faust worker                                   | here                                          |
|------------------------------------------------|-----------------------------------------------|
| consumer group ``app_id``, earliest            | ``--group``, earliest, no auto-commit         |
| batches of up to ``batch_max`` fetched events  | ``getmany(max_records=batch_max)``            |
| ``BatchProcessor``, built from its settings    | the same, built the same way                  |
| dead letters through the app's producer        | an ``AIOKafkaProducer``, awaited per batch    |
| offsets acknowledged after the batch is done   | committed (last + 1) after the batch is done  |

What makes it a ceiling and not a strawman: fetches are large (a few MiB per partition, so one
round trip brings thousands of heartbeats) and aiokafka's fetcher fetches in the background, so a
batch is always waiting when the previous one is done; nothing runs per message but building the
``Message``. Batches are applied strictly one after the other, in offset order, which the
effectively-once check of state/ relies on (see docs/design.md, "Effectively-once counting").

Why batch n+1 is not prepared while batch n is applied (``BatchProcessor.prepare``/``apply``):
tried three ways, it did not pay on the benchmark machine. ``prepare`` never yields to the event
loop, so within one thread the apply task makes no progress meanwhile; letting the apply reach
its Redis wait first only makes its replies wait for ``prepare``; a second thread doubles
``prepare``'s time through the GIL. Each came out at or below this plain loop's rate.

    python -m bench.raw_loop --bootstrap HOST:PORT --redis-url URL --topic T --group G

Runs until SIGTERM or SIGINT, then stops cleanly (exit 0). Other settings (default timezone,
retention, Redis timeout, log level) come from the worker's ``DEVACT_`` environment.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bench.common import peer_settings
from state.connection import open_store
from stream.app import ensure_topics
from stream.build import build_processor
from stream.dlq import DeadLetterRecord
from stream.plan import Message, from_record
from stream.processor import BatchProcessor, SendDeadLetters
from stream.settings import WorkerSettings
from stream.worker import tune_gc

log = logging.getLogger("bench.raw_loop")

_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
"""Per partition and fetch: about 15,000 single-heartbeat messages (~270 bytes each with the
record overhead), so a 5000-event batch never waits on a fetch that brought too little."""
_FETCH_BYTES = 32 * 1024 * 1024
"""Per fetch response: all 6 partitions of the benchmark at their full size in one round trip."""
_DLQ_MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""As the worker's producer (stream/app.py): the largest rejected event still fits."""
_POLL_MS = 200
"""How long one ``getmany`` waits on a quiet topic: bounds how late a stop request is seen."""
_PROGRESS_EVERY_S = 10.0


def _messages(fetched: Mapping[TopicPartition, Sequence[Any]]) -> list[Message]:
    """The records of one ``getmany``, each partition's in offset order."""
    return [from_record(r) for records in fetched.values() for r in records]


def _next_offsets(fetched: Mapping[TopicPartition, Sequence[Any]]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit once the batch is applied: its last one + 1."""
    return {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}


def _dead_letter_sender(producer: AIOKafkaProducer, topic: str) -> SendDeadLetters:
    async def send(records: Sequence[DeadLetterRecord]) -> None:
        """Wait for the broker's acknowledgement of every letter before the batch counts as
        done, as the worker does."""
        pending = [
            await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in records
        ]
        await asyncio.gather(*pending)

    return send


class Progress:
    """Logs events applied and the rate every ``_PROGRESS_EVERY_S``."""

    def __init__(self) -> None:
        self.events = 0
        self._started: float | None = None
        self._last_report = 0.0

    def add(self, count: int) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = self._last_report = now
        self.events += count
        if now - self._last_report >= _PROGRESS_EVERY_S:
            self._last_report = now
            rate = self.events / max(now - self._started, 1e-9)
            log.info("applied %d messages, %.0f msg/s since the first batch", self.events, rate)


async def consume(
    consumer: AIOKafkaConsumer, processor: BatchProcessor, batch_max: int, stop: asyncio.Event
) -> int:
    """Fetch, apply, commit, one batch after the other, until ``stop`` is set; returns the
    messages applied. A batch that Redis cannot take is retried until it can, or, when stopping,
    left uncommitted, to be delivered again."""
    progress = Progress()
    while not stop.is_set():
        fetched = await consumer.getmany(timeout_ms=_POLL_MS, max_records=batch_max)
        if not fetched:
            continue
        try:
            await processor.process_until_done(_messages(fetched), stopping=stop.is_set)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise  # the processor gives up only when stopping; anything else is a real cancel
            log.info("stopping with a batch not yet applied; it stays uncommitted")
            break
        await _commit(consumer, _next_offsets(fetched))
        progress.add(sum(len(records) for records in fetched.values()))
    return progress.events


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        # A rebalance moved the partition: its new owner reads these events again, and state/
        # skips what it already holds.
        log.warning("offset commit failed (%s); the events will be re-read and skipped", exc)


async def run(settings: WorkerSettings) -> None:
    """Consume ``settings.topic`` into Redis until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    await ensure_topics(settings)  # the dead-letter topic, as the worker creates it
    kafka = settings.kafka_connection()
    consumer = AIOKafkaConsumer(
        settings.topic,
        **kafka.client_kwargs(),
        group_id=settings.app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        isolation_level="read_committed",  # as the worker reads
    )
    producer = AIOKafkaProducer(**kafka.client_kwargs(), max_request_size=_DLQ_MAX_REQUEST_BYTES)
    redis = open_store(settings)
    processor = build_processor(settings, redis, _dead_letter_sender(producer, settings.dlq_topic))
    await producer.start()
    await consumer.start()
    log.info("consuming %s as group %s", settings.topic, settings.app_id)
    try:
        applied = await consume(consumer, processor, settings.batch_max, stop)
        log.info("stopped after %d messages", applied)
    finally:
        await consumer.stop()  # leaves the group at once: no wait for a session timeout
        await producer.stop()
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    settings = peer_settings(
        argv,
        "python -m bench.raw_loop",
        "Bare aiokafka loop: heartbeats topic -> Redis through the worker's code.",
    )
    tune_gc()  # the same collector settings as the worker
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
