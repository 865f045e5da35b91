"""Re-reading the heartbeats topic into Redis (`devact replay`).

A plain aiokafka consumer with no group: it reads every partition from the earliest retained
offset (or from a point in time) up to the end offsets seen when it starts, and hands batches to
the same BatchProcessor the worker uses. Events Redis already holds are skipped by state/, so a
replay over populated Redis changes nothing and a replay after FLUSHALL rebuilds the same state:
time rules are judged against each record's own time, and events refused before (dead letters,
and those a redrive sent back) stay refused, whatever the rules say now (stream/refusals.py).
It writes no dead letters: the DLQ already holds those events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from state.connection import open_store
from stream import unreadable
from stream.build import build_processor
from stream.dlq import DeadLetterRecord
from stream.plan import Continuity, from_record
from stream.processor import slices
from stream.settings import WorkerSettings
from stream.topics import topic_partitions

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Told, after the seek and after each fetch, how many messages are replayed and of how many:
offsets, as the total counts them (an aborted transaction's or a marker's offset counts too)."""


def _no_progress(done: int, total: int) -> None:
    pass


@dataclass(slots=True)
class ReplaySummary:
    messages: int = 0
    applied: int = 0
    skipped: int = 0
    rejected: int = 0
    """Refused now, and not dead-lettered before (the rules changed since: a lowered retention,
    a client unregistered)."""
    refused_before: int = 0
    """Dead letters of the first reading, or sent back by a redrive: left alone."""
    expired: int = 0
    """Valid when Kafka received them, in days that have expired since: not written."""


async def replay(
    settings: WorkerSettings, since: datetime | None = None, progress: Progress = _no_progress
) -> ReplaySummary:
    unreadable.install()
    kafka = settings.kafka_connection()
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level="read_committed",  # aborted transactions were never counted
    )
    continuity = Continuity()
    redis = open_store(settings)
    summary = ReplaySummary()

    async def drop_dead_letters(records: Sequence[DeadLetterRecord]) -> None:
        summary.rejected += len(records)

    processor = build_processor(settings, redis, drop_dead_letters, rereading=True)
    partitions = [
        TopicPartition(settings.topic, p) for p in await topic_partitions(kafka, settings.topic)
    ]
    await consumer.start()
    try:
        consumer.assign(partitions)
        starts = await _seek_start(consumer, partitions, since)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        log.info("replaying %d messages of %d partitions", total, len(partitions))
        read = dict.fromkeys(partitions, 0)
        progress(0, total)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            held = unreadable.take_all(settings.topic)
            messages = continuity.link(
                [
                    from_record(r)
                    for tp, records in batches.items()
                    for r in records
                    if r.offset < ends[tp]
                ]
            )
            # In batches bounded like the worker's: a fetch of gateway arrays holds far more.
            for batch in slices(messages, settings.batch_max_bytes):
                outcome = await processor.process_until_done(batch)
                summary.messages += len(batch)
                summary.applied += outcome.applied
                summary.skipped += outcome.skipped
                summary.refused_before += outcome.refused_before
                summary.expired += outcome.expired
            if held:  # what came before it is applied; nothing after it is skipped
                raise unreadable.UnreadableBatch(held[0])
            for tp in list(remaining):
                position = await consumer.position(tp)
                read[tp] = min(position, ends[tp]) - starts[tp]
                if position >= ends[tp]:
                    remaining.discard(tp)
            progress(sum(read.values()), total)
    finally:
        await consumer.stop()
        await redis.aclose()
    return summary


async def _seek_start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> dict[TopicPartition, int]:
    """Position every partition at its first offset to replay; returns those offsets."""
    earliest = await consumer.beginning_offsets(partitions)
    if since is None:
        starts = dict(earliest)
    else:
        found = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        ends = await consumer.end_offsets(partitions)
        starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    return starts
