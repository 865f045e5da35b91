"""One batch, end to end: judge, look up timezones, apply to Redis, dead-letter the rest.

Knows no Redis command and no Faust type: state/ does the writes, and dead letters leave
through an injected ``send`` so the same code runs under Faust, a bare consumer, or a test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from state.errors import LostWrites, StoreUnavailable
from state.logs import log_fields
from state.registry import Registry
from state.write_types import ApplyProgress, BatchWriter, PackedBatch, Positions, Span
from stream.dlq import DeadLetterRecord, to_records
from stream.model import DEFAULT_LIMITS, MessageLimits, Reason, Rejection
from stream.pacing import Pacer
from stream.plan import (
    PIECE_EVENTS,
    DeadLetter,
    Judged,
    Message,
    Plan,
    Planner,
    Source,
    client_ids,
    judge_pieces,
)
from stream.refusals import CLOCK_SKEW, Refusals

if TYPE_CHECKING:
    from stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

SendDeadLetters = Callable[[Sequence[DeadLetterRecord]], Awaitable[None]]
Clock = Callable[[], datetime]
T = TypeVar("T")
Reread = Callable[[str, int, int, int], AsyncIterator[list[Message]]]
"""``reread(topic, partition, start, stop)``: the partition's messages with ``start <= offset <
stop`` that the log still holds, in chunks, from a reader of its own (not the group's consumer,
whose position must not move)."""


ZONE_CACHE = timedelta(seconds=30)
"""How long a client's timezone is used before it is read again: a `devact client add` that
changes it applies to events processed from then on, within this delay."""
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Prepared:
    """A judged and planned batch, ready to apply."""

    messages: Sequence[Message]
    positions: Positions
    plan: Plan
    packed: PackedBatch
    progress: ApplyProgress = field(default_factory=ApplyProgress)
    """How far applying it got: a retry resumes there."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    skipped: int
    dead_letters: int
    deferred: int = 0
    """Events of devices whose Redis Cluster primary could not be reached: applied later, when
    the gap repair reads them again (state/write_types.py)."""
    reasons: tuple[Reason, ...] = ()
    """The dead letters' reasons, one per dead letter."""
    generated: tuple[datetime, ...] = ()
    """When each event counted now was generated."""
    expired: int = 0
    """Heartbeats whose day had expired by the time they were written (``Plan.expired``)."""
    refused_before: int = 0
    """Events read again that an earlier reading refused (``Plan.refused_before``)."""


class BatchProcessor:
    def __init__(
        self,
        registry: Registry,
        writer: BatchWriter,
        send: SendDeadLetters,
        clock: Clock,
        default_timezone: str,
        retention_days: int,
        reread: Reread,
        metrics: WorkerMetrics | None = None,
        limits: MessageLimits = DEFAULT_LIMITS,
        pacer: Callable[[], Pacer] = Pacer,
        register_unknown: bool = True,
        refusals: Refusals | None = None,
        rereading: bool = False,
    ) -> None:
        self._registry = registry
        self._writer = writer
        self._send = send
        self._clock = clock
        self._default_timezone = default_timezone
        self._retention_days = retention_days
        self._reread = reread
        self._metrics = metrics
        self._limits = limits
        self._pacer = pacer
        """Makes the pacer of each piece of CPU work (a test gives it a clock of its own)."""
        self._register_unknown = register_unknown
        """Whether a heartbeat of an unregistered client registers it (the contract's default)
        or is dead-lettered as ``unknown_client`` (clients managed with `devact client add`)."""
        self._refusals = refusals
        """What earlier readings refused: asked about every batch read again (``rereading``,
        the gap repair) and, in a worker, about records that may have been judged before it was
        given their partition (``reassigned``). None: every event is judged afresh."""
        self._rereading = rereading
        """Every batch reads offsets read before (`devact replay`)."""
        self._fresh_after_ms = _ms(clock() + CLOCK_SKEW)
        """Records with an older timestamp may have been judged by a reader before this one."""
        self._zones: dict[str, tuple[str | None, datetime]] = {}
        """Client timezones (None: not registered) with the time they must be read again."""
        self.waiting = False
        """Events were deferred (a Redis Cluster primary could not be reached) and not yet
        applied: :meth:`catch_up` applies them once it is back, even with no new batch."""

    async def process_until_done(
        self, messages: Sequence[Message], stopping: Callable[[], bool] = lambda: False
    ) -> BatchOutcome:
        """Process a batch, retrying with backoff until it succeeds; never raises.

        The caller acknowledges the batch afterwards, so while Redis (or the broker, for dead
        letters) is unreachable the consumer stops pulling and nothing unapplied is ever
        committed. Retrying is safe: state/ skips events it already applied. Only dead letters
        may be sent twice if a failure strikes between sending them and finishing. When the
        worker is ``stopping``, it gives up instead of retrying, leaving the batch unacknowledged.
        """
        prepared = await self.prepare_until_done(messages, stopping)
        return await self.apply_until_done(prepared, stopping)

    async def prepare_until_done(
        self, messages: Sequence[Message], stopping: Callable[[], bool] = lambda: False
    ) -> Prepared:
        """:meth:`prepare`, retried like :meth:`process_until_done` (it may read timezones)."""
        return await _until_done(lambda: self.prepare(messages), stopping, self._failed)

    async def apply_until_done(
        self, prepared: Prepared, stopping: Callable[[], bool] = lambda: False
    ) -> BatchOutcome:
        """:meth:`apply`, retried like :meth:`process_until_done`; what it logs names the
        batch's partitions and offsets (``log_fields``)."""
        started = time.monotonic()
        spans = prepared.positions.spans
        where = " ".join(f"{p}:{s.first}-{s.last}" for p, s in sorted(spans.items()))
        with log_fields(topic=prepared.positions.topic, offsets=where):
            outcome = await _until_done(lambda: self.apply(prepared), stopping, self._failed)
        if self._metrics is not None:
            topic, plan = prepared.positions.topic, prepared.plan
            self._metrics.batch(
                messages=len(prepared.messages),
                events=sum(map(len, plan.members))
                + len(plan.dead_letters)
                + plan.expired
                + plan.refused_before,
                applied=outcome.applied,
                duplicates=outcome.skipped,
                deferred=outcome.deferred,
                reasons=outcome.reasons,
                refused_before=outcome.refused_before,
                expired=outcome.expired,
                seconds=time.monotonic() - started,
                generated=outcome.generated,
                now=self._clock(),
                last_offsets={(topic, p): s.last for p, s in prepared.positions.spans.items()},
            )
        return outcome

    def _failed(self) -> None:
        if self._metrics is not None:
            self._metrics.redis_failed()

    def reassigned(self) -> None:
        """The consumer was given partitions (a rebalance): their records up to now may have
        been judged by the reader that had them before."""
        self._fresh_after_ms = _ms(self._clock() + CLOCK_SKEW)
        if self._refusals is not None:
            self._refusals.forget()

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        """Process a batch completely: every event is applied or dead-lettered on return."""
        return await self.apply(await self.prepare(messages))

    async def prepare(self, messages: Sequence[Message], rereading: bool = False) -> Prepared:
        """Judge, plan and encode a batch: the CPU-bound half, which touches Redis only for
        timezones it has not cached. A worker prepares the next batch while Redis applies this
        one, so it works in pieces and hands the event loop back every 10 ms (``Pacer``),
        whatever the messages hold: the apply of the previous batch then sends its pipeline
        and reads its replies in between, and /healthz answers.

        ``rereading``: the messages were read before (the gap repair), so what was refused then
        stays refused (stream/refusals.py)."""
        now = self._clock()
        refused = await self._refused(messages, rereading or self._rereading)
        pacer = self._pacer()
        judged: list[Judged] = []
        for piece in judge_pieces(messages, now, self._limits):
            judged += piece
            await pacer.pace()
        zones = await self._timezones(client_ids(judged), now)
        planner = Planner(zones, now, self._retention_days, refused)
        for start in range(0, len(judged), PIECE_EVENTS):
            planner.add(judged[start : start + PIECE_EVENTS])
            await pacer.pace()
        packed = self._writer.pack(planner.plan.device_batches)
        return Prepared(messages, _positions(messages), planner.plan, packed)

    async def apply(self, prepared: Prepared) -> BatchOutcome:
        """Apply a prepared batch; batches must be applied one after the other, in order.

        First, any writes Redis lost before this batch are re-applied: the per-key offsets of
        state/ require each partition's events to be applied in order. Called again after a
        failure, it resumes where the previous call stopped (``prepared.progress``).
        """
        positions = prepared.positions
        filled = await self._fill_gaps(positions)
        if filled:
            prepared.progress.restart()  # what an earlier attempt applied may be lost too
        spans = {
            p: replace(s, force=True) if p in filled else s for p, s in positions.spans.items()
        }
        outcome, letters = await self._apply(
            prepared.plan, prepared.packed, Positions(positions.topic, spans), prepared.progress
        )
        if letters:
            await self._send(await to_records(letters, self._pacer().pace))
        return outcome

    async def catch_up(self, topic: str, delivered: dict[int, int]) -> None:
        """When events wait (:attr:`waiting`), apply what Redis lacks up to ``delivered`` (per
        partition, the last offset applied by this worker): the gap repair a new batch would
        run, for when none comes. Called between batches, never during one."""
        if not self.waiting or not delivered:
            return
        self.waiting = False
        spans = {p: Span(offset + 1, offset, after=offset) for p, offset in delivered.items()}
        try:
            await self._fill_gaps(Positions(topic, spans))
        except Exception as exc:  # tried again at the next idle moment, or by the next batch
            log.warning("catching up deferred events failed (%s); trying again later", exc)
            self.waiting = True
            return
        self.waiting = self.waiting or self._writer.leaving_out()

    async def _apply(
        self,
        plan: Plan,
        packed: PackedBatch,
        positions: Positions,
        progress: ApplyProgress | None = None,
    ) -> tuple[BatchOutcome, list[DeadLetter]]:
        batch = await self._writer.apply_packed(packed, positions, progress)
        letters = list(plan.dead_letters)
        for result, members in zip(batch.devices, plan.members, strict=True):
            if result.owner is not None:
                mismatch = Rejection(
                    "device_client_mismatch", f"device belongs to client {result.owner}"
                )
                letters += [DeadLetter(j.message, j.element.index, mismatch) for j in members]
        outcome = BatchOutcome(
            applied=sum(r.applied for r in batch.devices),
            skipped=sum(r.skipped for r in batch.devices),
            dead_letters=len(letters),
            deferred=sum(
                len(members)
                for result, members in zip(batch.devices, plan.members, strict=True)
                if result.deferred
            ),
            reasons=tuple(letter.rejection.reason for letter in letters),
            expired=plan.expired,
            refused_before=plan.refused_before,
            generated=tuple(
                j.element.verdict.generated_at  # type: ignore[union-attr]
                for result, members in zip(batch.devices, plan.members, strict=True)
                if result.applied
                for j in members[len(members) - result.applied :]
            ),
        )
        self.waiting = self.waiting or outcome.deferred > 0
        return outcome, letters

    async def _fill_gaps(self, positions: Positions) -> set[int]:
        """Re-apply what Redis lost before this batch; returns the partitions that had a gap.

        A batch that does not continue Redis's applied position means Redis lost writes (a
        restart that replayed an AOF missing its last second, a failover, a FLUSHALL). The
        missing range is read again by a reader of its own and applied; what Redis still holds
        is skipped, and its dead letters, sent the first time, are not sent again, except
        ``device_client_mismatch``: a device deferred on a Redis Cluster node that was down
        is judged here for the first time, so those are sent (at least once).
        """
        stored = await self._writer.applied_positions(positions.topic, sorted(positions.spans))
        gaps: set[int] = set()
        for partition, span in positions.spans.items():
            found = stored[partition]
            start = 0 if found is None else found + 1
            if span.first <= start or (found is not None and span.after == found):
                continue  # it continues what Redis holds (across offsets nothing can read)
            log.warning(
                "%s[%d]: Redis has applied only up to %s, not up to %d: re-reading",
                positions.topic, partition, found, span.first - 1,
            )  # fmt: skip
            forced = True  # the first message read is the first the log still holds
            async for chunk in self._reread(positions.topic, partition, start, span.first):
                first, last = chunk[0], chunk[-1]
                spans = {partition: Span(first.offset, last.offset, forced, first.previous)}
                prepared = await self.prepare(chunk, rereading=True)
                outcome, letters = await self._apply(
                    prepared.plan, prepared.packed, Positions(positions.topic, spans)
                )
                if self._metrics is not None:
                    self._metrics.gap_repaired(outcome.applied)
                # A device's owner is only known once its script ran: when it was deferred (its
                # cluster node was down), this is the first time. Sent at least once, then.
                owners = [r for r in letters if r.rejection.reason == "device_client_mismatch"]
                if owners:
                    await self._send(await to_records(owners, self._pacer().pace))
                forced = False
            gaps.add(partition)
        return gaps

    async def _refused(self, messages: Sequence[Message], rereading: bool) -> Set[Source]:
        """The events of ``messages`` that an earlier reading refused, as far as it matters:
        all of them when ``rereading``, else those of records older than this reader's
        partitions (none in the steady state: then Kafka is not asked)."""
        if self._refusals is None or not messages:
            return frozenset()
        fresh = self._fresh_after_ms
        if not rereading:
            messages = [m for m in messages if m.timestamp is None or m.timestamp < fresh]
            if not messages:
                return frozenset()
        return await self._refusals.among(messages)

    async def _timezones(self, names: set[str], now: datetime) -> dict[str, str]:
        """Clients' timezones, read from Redis at most every ``ZONE_CACHE_S`` per client.
        Unknown clients are registered there with the default timezone on first sight, or, with
        ``register_unknown`` off, left out (their events become ``unknown_client`` dead
        letters, until a registration is read, within ``ZONE_CACHE_S``)."""
        stale = {n for n in names if n not in self._zones or self._zones[n][1] <= now}
        if stale:
            expires = now + ZONE_CACHE
            try:
                fresh: dict[str, str | None]
                if self._register_unknown:
                    fresh = dict(await self._registry.timezones(stale, self._default_timezone, now))
                else:
                    known = await self._registry.known_timezones(stale)
                    fresh = {n: known.get(n) for n in stale}
            except StoreUnavailable as exc:
                if not stale <= self._zones.keys():
                    raise
                # Known clients keep their timezone until the registry answers again (on a
                # Redis Cluster, one node down must not stop the devices on the others).
                log.warning("client timezones unavailable (%s): using those known", exc)
                fresh = {n: self._zones[n][0] for n in stale}
            self._zones.update({n: (tz, expires) for n, tz in fresh.items()})
        return {n: tz for n in names if (tz := self._zones[n][0]) is not None}


async def _until_done(
    step: Callable[[], Awaitable[T]], stopping: Callable[[], bool], failed: Callable[[], None]
) -> T:
    """Run ``step`` until it succeeds, with backoff; give up (CancelledError) when stopping.
    ``failed`` is told of every failure."""
    delay = _BACKOFF_FIRST_S
    while True:
        try:
            return await step()
        except StoreUnavailable as exc:
            failed()
            log.warning("Redis unavailable (%s); retrying the batch in %.1f s", exc, delay)
        except LostWrites as exc:
            failed()
            log.warning("Redis lost writes of this batch (%s): applying it again", exc)
            continue
        except Exception:
            failed()
            log.exception("Batch failed; retrying in %.1f s", delay)
        if stopping():
            # The batch stays unacknowledged and is delivered again after the restart.
            raise asyncio.CancelledError("worker stopping with a batch not yet applied")
        await asyncio.sleep(delay)
        delay = min(delay * 2, _BACKOFF_MAX_S)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def slices(messages: Sequence[Message], max_bytes: int) -> Iterator[Sequence[Message]]:
    """Consecutive runs of messages holding about ``max_bytes`` of values (at least one)."""
    first = size = 0
    for index, message in enumerate(messages):
        size += len(message.value)
        if size >= max_bytes:
            yield messages[first : index + 1]
            first, size = index + 1, 0
    if first < len(messages):
        yield messages[first:]


def _positions(messages: Sequence[Message]) -> Positions:
    """Per partition, the first and last offset of the batch's messages, and what the reader
    delivered before the first."""
    spans: dict[int, Span] = {}
    for m in messages:
        span = spans.get(m.partition)
        if span is None:
            spans[m.partition] = Span(m.offset, m.offset, after=m.previous)
        elif m.offset > span.last:
            spans[m.partition] = Span(span.first, m.offset, after=span.after)
    return Positions(messages[0].topic if messages else "", spans)
