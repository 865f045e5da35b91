"""Turning a batch of Kafka messages into "apply these increments" for state/. Pure: no I/O.

Two steps, because the client's timezone sits between them: ``decode_batch`` judges every event
on its own, the caller looks up the timezones of the clients named, then ``plan_batch`` buckets
the heartbeats by local day and groups them per device.

Both run once per event, so they avoid per-event work that a batch can share: the future limit is
worked out once, and local days and expiries come from the memo of ``state.dates.LocalDays``
instead of two timezone conversions per event.

Every rule that depends on time is judged against the time of the Kafka record (``Message.
timestamp``), never the reader's clock, so that reading an offset again, at any time, gives the
same verdict (docs/events.md, "Verdicts that do not change with the clock"). The reader's clock
only decides whether a counted event's day still exists when it is written: a day whose keys
have expired is not written again (``Plan.expired``).

Both also come in pieces (``judge_pieces``, ``Planner``) for a caller that hands the event loop
back between them: a batch may hold 10,000 events of one message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from state.batch import Contribution, DayBatch, DeviceBatch
from state.dates import LocalDays, local_days
from stream.model import (
    DEFAULT_LIMITS,
    FUTURE_TOLERANCE,
    Element,
    Heartbeat,
    MessageLimits,
    Rejection,
    decode_pieces,
)


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a Kafka record the worker needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    previous: int | None = None
    """The offset of the message the same reader delivered just before this one from the same
    partition, when known: the offsets in between hold nothing readable (transaction markers,
    aborted or compacted records), so a batch starting here continues one that ended there."""
    timestamp: int | None = None
    """The record's timestamp in milliseconds since the epoch: the time the time rules are judged
    against. On a topic with ``LogAppendTime`` (the worker creates the heartbeats topic so) it is
    when the broker appended the record; with ``CreateTime``, what the producer set. None (or
    negative: a producer that set none) only for a record without one: judged against the
    reader's clock, the one case where a verdict may change with the time it is read."""


def to_message(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    timestamp: int | None,
) -> Message:  # fmt: skip
    """The message of a Kafka record, whichever client read it (``timestamp`` in milliseconds).
    A tombstone (a null value) is judged as empty bytes: ``invalid_json``."""
    return Message(topic, partition, offset, key, value or b"", timestamp=timestamp)


def from_record(record: Any) -> Message:
    """The message of an aiokafka ``ConsumerRecord``."""
    return to_message(
        record.topic, record.partition, record.offset, record.key, record.value, record.timestamp
    )


Source = tuple[int, int, int | None]
"""An event of the heartbeats topic: partition, offset, and index in an array message (None for
a single event, or a whole message refused)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST_AT_EPOCH = _EPOCH + FUTURE_TOLERANCE


def _latest(message: Message, now: datetime) -> datetime:
    """The latest ``generated_at`` accepted in ``message``: ``FUTURE_TOLERANCE`` after its
    record's time, or after ``now`` for a record without one; in one step, since it is worked
    out for every message whose record time differs from the last one's."""
    if message.timestamp is None or message.timestamp < 0:
        return now + FUTURE_TOLERANCE
    return _LATEST_AT_EPOCH + timedelta(milliseconds=message.timestamp)


class Continuity:
    """What a reader delivered last, per partition, so that each batch can name what it
    follows (``Message.previous`` of its first message of each partition)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], int] = {}

    def link(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` (in offset order per partition), the first of each partition marked
        with what this reader delivered before it."""
        linked = list(messages)
        seen: set[tuple[str, int]] = set()
        for index, message in enumerate(linked):
            key = (message.topic, message.partition)
            if key not in seen:
                seen.add(key)
                linked[index] = replace(message, previous=self._last.get(key))
        for message in linked:
            self._last[(message.topic, message.partition)] = message.offset
        return linked

    def forget(self) -> None:
        """The reader moved (a rebalance, a seek): nothing is known to precede what comes."""
        self._last.clear()


@dataclass(slots=True, unsafe_hash=True)  # not frozen, like Element: one per event
class Judged:
    message: Message
    element: Element


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event and where it came from."""

    message: Message
    index: int | None
    rejection: Rejection


@dataclass(slots=True)
class Plan:
    device_batches: list[DeviceBatch] = field(default_factory=list)
    members: list[list[Judged]] = field(default_factory=list)
    """The events behind each device batch (same order), to dead-letter them if it is refused."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    expired: int = 0
    """Heartbeats within the retention window when Kafka received them whose day's keys had
    expired when they were planned (a worker far behind, a replay months later): counted once
    and expired since, as far as Redis is concerned, so not written again. No dead letter."""
    refused_before: int = 0
    """Events read again that an earlier reading refused (``Planner``'s ``refused``): neither
    counted nor dead-lettered again."""


def decode_batch(
    messages: Sequence[Message], now: datetime, limits: MessageLimits = DEFAULT_LIMITS
) -> list[Judged]:
    return [j for piece in judge_pieces(messages, now, limits) for j in piece]


PIECE_EVENTS = 256
"""Events judged or planned in one piece at most: a few hundred microseconds of CPU, so that a
clock read per piece costs nothing measurable."""
PIECE_BYTES = 64 * 1024
"""Message bytes parsed in one piece at most (a piece ends after the message that reaches it)."""


def judge_pieces(
    messages: Sequence[Message],
    now: datetime,
    limits: MessageLimits = DEFAULT_LIMITS,
    events: int = PIECE_EVENTS,
    size: int = PIECE_BYTES,
) -> Iterator[list[Judged]]:
    """``decode_batch`` in consecutive pieces of at most ``events`` events or about ``size``
    message bytes, each judged when it is taken, against its record's time (``now`` for a
    record without one)."""
    stamp: int | None = None
    latest = now + FUTURE_TOLERANCE
    piece: list[Judged] = []
    parsed = 0
    for m in messages:
        parsed += len(m.value)
        if m.timestamp != stamp:  # records of one record batch share it (LogAppendTime)
            stamp = m.timestamp
            latest = _latest(m, now)
        for elements in decode_pieces(m.value, latest, limits, events):
            if len(elements) == 1:  # most messages: no comprehension to set up
                piece.append(Judged(m, elements[0]))
            else:
                piece += [Judged(m, element) for element in elements]
            if len(piece) >= events or parsed >= size:
                yield piece
                piece, parsed = [], 0
    if piece:
        yield piece


def client_ids(judged: Sequence[Judged]) -> set[str]:
    return {j.element.verdict.client_id for j in judged if isinstance(j.element.verdict, Heartbeat)}


_TOO_OLD = Rejection("event_too_old", "the local day is past the retention window")
_UNKNOWN_CLIENT = Rejection(
    "unknown_client",
    "the client is not registered, and this worker counts registered clients only "
    "(DEVACT_UNKNOWN_CLIENTS=dead_letter): register it with `devact client add`, then redrive",
    "client_id",
)


def plan_batch(
    judged: Sequence[Judged],
    timezones: Mapping[str, str],
    now: datetime,
    retention_days: int,
    refused: Set[Source] = frozenset(),
) -> Plan:
    """Group valid heartbeats per (device, client) and local day, in first-seen order.

    Within a device batch, events keep their order in the batch, which keeps each partition's
    offsets ascending: the effectively-once check in state/ relies on it.
    """
    planner = Planner(timezones, now, retention_days, refused)
    planner.add(judged)
    return planner.plan


class Planner:
    """``plan_batch`` fed in pieces: the plan of the events added so far, in their order.

    ``now`` is the reader's clock, used only to leave out days that have expired (``Plan.
    expired``); ``refused`` holds events an earlier reading refused (stream/refusals.py), which
    are neither counted nor dead-lettered again, whatever the rules say of them now."""

    def __init__(
        self,
        timezones: Mapping[str, str],
        now: datetime,
        retention_days: int,
        refused: Set[Source] = frozenset(),
    ) -> None:
        self.plan = Plan()
        self._timezones = timezones
        self._now = now
        self._retention_days = retention_days
        self._refused = refused
        self._by_device: dict[tuple[str, str], int] = {}
        self._days_of: dict[str, LocalDays] = {}

    def add(self, judged: Sequence[Judged]) -> None:
        plan, by_device, days_of, refused = self.plan, self._by_device, self._days_of, self._refused
        now_ts = self._now.timestamp()
        stamp: int | None = None
        record_ts = now_ts
        for j in judged:
            if refused and (j.message.partition, j.message.offset, j.element.index) in refused:
                plan.refused_before += 1
                continue
            verdict = j.element.verdict
            if isinstance(verdict, Rejection):
                plan.dead_letters.append(DeadLetter(j.message, j.element.index, verdict))
                continue
            days = days_of.get(verdict.client_id)
            if days is None:
                zone = self._timezones.get(verdict.client_id)
                if zone is None:  # not registered, and the worker registers no client itself
                    plan.dead_letters.append(
                        DeadLetter(j.message, j.element.index, _UNKNOWN_CLIENT)
                    )
                    continue
                days = days_of[verdict.client_id] = local_days(ZoneInfo(zone), self._retention_days)
            found = days.of(verdict.generated_at)
            if j.message.timestamp != stamp:
                stamp = j.message.timestamp
                record_ts = now_ts if stamp is None or stamp < 0 else stamp / 1000
            if found is None or found[1] <= record_ts:  # None: off the calendar
                plan.dead_letters.append(DeadLetter(j.message, j.element.index, _TOO_OLD))
                continue
            day, expire_at = found
            if expire_at <= now_ts:
                plan.expired += 1
                continue
            slot = by_device.get((verdict.device_id, verdict.client_id))
            if slot is None:
                slot = by_device[(verdict.device_id, verdict.client_id)] = len(plan.device_batches)
                plan.device_batches.append(DeviceBatch(verdict.client_id, verdict.device_id))
                plan.members.append([])
            day_batches = plan.device_batches[slot].days
            day_batch = day_batches.get(day)
            if day_batch is None:
                day_batch = day_batches[day] = DayBatch(expire_at)
            day_batch.contributions.append(
                Contribution(j.message.partition, j.message.offset, verdict.count, verdict.user_id)
            )
            plan.members[slot].append(j)
