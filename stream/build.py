"""The one place a ``BatchProcessor`` is put together from the worker's settings.

The worker, `devact replay` and every ingest contender of `make bench` build theirs here, so
they judge with the same limits, register (or refuse) unknown clients the same way, write to one
Redis or a cluster as ``DEVACT_REDIS_URL`` says, and read refusals back the same way. What
differs between them is passed in: where dead letters go, the metrics, whether every batch is a
second reading.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from state.connection import Store
from state.registry import Registry
from state.writer import new_writer
from stream.processor import BatchProcessor, Clock, Reread, SendDeadLetters
from stream.refusals import Refusals
from stream.reread import partition_reader
from stream.settings import WorkerSettings

if TYPE_CHECKING:
    from stream.metrics import WorkerMetrics


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_processor(
    settings: WorkerSettings,
    store: Store,
    send: SendDeadLetters,
    *,
    metrics: WorkerMetrics | None = None,
    rereading: bool = False,
    clock: Clock = utc_now,
    reread: Reread | None = None,
    refusals: bool = True,
) -> BatchProcessor:
    """The processor that applies ``settings.topic`` to ``store`` (``state.connection.open_store``,
    closed by the caller). ``send`` takes the dead letters (the worker's producer; replay counts
    them, since the dead-letter topic already holds them). ``rereading``: every batch reads
    offsets read before, so every event is checked against the refusals of earlier readings.
    ``reread``: how a gap in a partition is read again (default: from ``settings``' Kafka).
    ``refusals`` off: nothing was refused before (a loader of events it generated valid), so
    Kafka's dead letters are never read back."""
    kafka = settings.kafka_connection()
    return BatchProcessor(
        registry=Registry(store),
        writer=new_writer(store, fleet=settings.fleet_aggregates),
        send=send,
        clock=clock,
        default_timezone=settings.default_timezone,
        retention_days=settings.retention_days,
        reread=partition_reader(kafka) if reread is None else reread,
        metrics=metrics,
        limits=settings.message_limits(),
        register_unknown=settings.unknown_clients == "register",
        refusals=Refusals(kafka, settings.topic, settings.dlq_topic) if refusals else None,
        rereading=rereading,
    )
