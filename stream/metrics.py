"""The worker's Prometheus metrics (``/metrics`` on ``DEVACT_WORKER_METRICS_PORT``, next to the
health endpoints): what its batches did, how far behind the group is, and whether Redis answers.

Labels are bounded: an outcome, a dead-letter reason, a topic and a partition; never a device
or a client. Counters count events (heartbeats), not messages, except where named so. Names and
their meaning: docs/operations.md ("Metrics"); deploy/ dashboards and alerts use them.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from stream.lag import PartitionOffsets
from stream.model import Reason

log = logging.getLogger(__name__)

OUTCOMES = ("applied", "duplicate", "dead_letter", "deferred", "refused_before", "expired")
"""What became of an event: counted now, found counted already (a replay), sent to the
dead-letter topic, waiting for a Redis Cluster primary that could not be reached, read again
after an earlier reading refused it (left alone: stream/refusals.py), or valid when Kafka
received it but its day expired before it was written (not written)."""

_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 50_000, 100_000)
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_AGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21_600, 86_400, 604_800)


def _version() -> str:
    try:
        return version("device-activity")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.events = Counter(
            "devact_worker_events", "Events by what became of them", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "devact_worker_dead_letters", "Events sent to the dead-letter topic, by reason",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.batch_messages = Histogram(
            "devact_worker_batch_messages", "Kafka messages per batch", buckets=_SIZE_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.batch_events = Histogram(
            "devact_worker_batch_events", "Events per batch (a message may hold an array)",
            buckets=_SIZE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_apply = Histogram(
            "devact_worker_batch_apply_seconds",
            "Time to apply a batch to Redis, retries included", buckets=_SECONDS_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "devact_worker_consumer_lag",
            "Messages of a partition the group has not committed yet (end offset minus "
            "committed offset), read from Kafka at each scrape",
            ["topic", "partition"], registry=registry,
        )  # fmt: skip
        self.applied_offset = Gauge(
            "devact_worker_applied_offset",
            "The last offset of a partition this worker applied to Redis",
            ["topic", "partition"], registry=registry,
        )  # fmt: skip
        self.gap_repairs = Counter(
            "devact_worker_gap_repairs",
            "Partition ranges read again because Redis lacked them (lost writes, a cluster "
            "primary back)", registry=registry,
        )  # fmt: skip
        self.gap_repair_events = Counter(
            "devact_worker_gap_repair_events", "Events those re-reads counted",
            registry=registry,
        )  # fmt: skip
        self.redis_retries = Counter(
            "devact_worker_redis_retries",
            "Batches tried again because Redis failed or lost writes", registry=registry,
        )  # fmt: skip
        self.redis_up = Gauge(
            "devact_worker_redis_up", "1 when the last exchange with Redis succeeded",
            registry=registry,
        )  # fmt: skip
        self.event_age = Histogram(
            "devact_worker_event_age_seconds",
            "Age of each counted event when counted: now minus its generated_at_utc",
            buckets=_AGE_BUCKETS, registry=registry,
        )  # fmt: skip
        build = Gauge(
            "devact_build_info", "The running build", ["component", "version"], registry=registry
        )
        build.labels("worker", _version()).set(1)
        self.redis_up.set(1)
        self._outcomes = {name: self.events.labels(name) for name in OUTCOMES}

    def batch(
        self,
        *,
        messages: int,
        events: int,
        applied: int,
        duplicates: int,
        deferred: int,
        reasons: Iterable[Reason],
        refused_before: int = 0,
        expired: int = 0,
        seconds: float,
        generated: Sequence[datetime],
        now: datetime,
        last_offsets: dict[tuple[str, int], int],
    ) -> None:
        """A batch applied: ``generated`` is when each counted event was generated."""
        self.batch_messages.observe(messages)
        self.batch_events.observe(events)
        self.batch_apply.observe(seconds)
        letters = 0
        for reason, count in collections.Counter(
            reasons
        ).items():  # 10,000 incs of one label took 35 ms
            self.dead_letters.labels(reason).inc(count)
            letters += count
        counts = {
            "applied": applied,
            "duplicate": duplicates,
            "dead_letter": letters,
            "deferred": deferred,
            "refused_before": refused_before,
            "expired": expired,
        }
        for outcome, count in counts.items():
            if count:
                self._outcomes[outcome].inc(count)
        observe = self.event_age.observe
        for moment in generated:
            observe((now - moment).total_seconds())
        for (topic, partition), offset in last_offsets.items():
            self.applied_offset.labels(topic, str(partition)).set(offset)
        self.redis_up.set(1)

    def gap_repaired(self, events: int) -> None:
        self.gap_repairs.inc()
        self.gap_repair_events.inc(events)

    def redis_failed(self) -> None:
        self.redis_retries.inc()
        self.redis_up.set(0)

    def offsets(self, topic: str, partitions: Sequence[PartitionOffsets]) -> None:
        for p in partitions:
            self.lag.labels(topic, str(p.partition)).set(p.lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
