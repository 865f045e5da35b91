"""One batch, end to end: judge, look up timezones, apply to Redis, dead-letter the rest.

Knows no Redis command and no Faust type: state/ does the writes, and dead letters leave
through an injected ``send`` so the same code runs under Faust, a bare consumer, or a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from state.errors import StoreUnavailable
from state.registry import Registry
from state.writer import Positions, Span, Writer
from stream.dlq import DeadLetterRecord, to_record
from stream.model import Rejection
from stream.plan import DeadLetter, Message, client_ids, decode_batch, plan_batch

log = logging.getLogger(__name__)

SendDeadLetters = Callable[[Sequence[DeadLetterRecord]], Awaitable[None]]
Clock = Callable[[], datetime]
Rewind = Callable[[str, int, int | None, int], Awaitable[bool]]
"""``rewind(topic, partition, applied, gap_start)``: make the consumer re-read the partition from
just after ``applied`` (None: from its beginning). Returns False when the log holds nothing
readable before ``gap_start`` (it is past retention): there is nothing to re-read."""


async def _cannot_rewind(topic: str, partition: int, applied: int | None, gap_start: int) -> bool:
    """For readers that do not seek (a replay reads what it was asked to): the gap stays, and
    the partition's applied position simply does not advance past it."""
    return True


ZONE_CACHE = timedelta(seconds=30)
"""How long a client's timezone is used before it is read again: a `devact client add` that
changes it applies to events processed from then on, within this delay."""
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    skipped: int
    dead_letters: int


class BatchProcessor:
    def __init__(
        self,
        registry: Registry,
        writer: Writer,
        send: SendDeadLetters,
        clock: Clock,
        default_timezone: str,
        retention_days: int,
        rewind: Rewind = _cannot_rewind,
    ) -> None:
        self._registry = registry
        self._writer = writer
        self._send = send
        self._clock = clock
        self._default_timezone = default_timezone
        self._retention_days = retention_days
        self._rewind = rewind
        self._zones: dict[str, tuple[str, datetime]] = {}
        """Client timezones with the time they must be read again."""
        self._rewinding: dict[int, int] = {}
        """Partitions being re-read, with the offset where the gap began: messages from there on
        that still arrive were fetched before the seek, so they do not continue the position."""

    async def process_until_done(self, messages: Sequence[Message]) -> BatchOutcome:
        """Process a batch, retrying with backoff until it succeeds; never raises.

        The caller acknowledges the batch afterwards, so while Redis (or the broker, for dead
        letters) is unreachable the consumer stops pulling and nothing unapplied is ever
        committed. Retrying is safe: state/ skips events it already applied. Only dead letters
        may be sent twice if a failure strikes between sending them and finishing.
        """
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return await self.process(messages)
            except StoreUnavailable as exc:
                log.warning("Redis unavailable (%s); retrying the batch in %.1f s", exc, delay)
            except Exception:
                log.exception("Batch failed; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        """Process a batch completely: every event is applied or dead-lettered on return."""
        now = self._clock()
        judged = decode_batch(messages, now)
        zones = await self._timezones(client_ids(judged), now)
        plan = plan_batch(judged, zones, now, self._retention_days)
        positions = self._positions(messages)
        batch = await self._writer.apply(plan.device_batches, positions)
        results = batch.devices
        letters = list(plan.dead_letters)
        for result, members in zip(results, plan.members, strict=True):
            if result.owner is not None:
                mismatch = Rejection(
                    "device_client_mismatch", f"device belongs to client {result.owner}"
                )
                letters += [DeadLetter(j.message, j.element.index, mismatch) for j in members]
        if letters:
            await self._send([to_record(letter) for letter in letters])
        await self._repair_gaps(positions, batch.previous)
        return BatchOutcome(
            applied=sum(r.applied for r in results),
            skipped=sum(r.skipped for r in results),
            dead_letters=len(letters),
        )

    async def _timezones(self, names: set[str], now: datetime) -> dict[str, str]:
        """Clients' timezones, read from Redis at most every ``ZONE_CACHE_S`` per client (and
        unknown clients registered there with the default timezone on first sight)."""
        stale = {n for n in names if n not in self._zones or self._zones[n][1] <= now}
        if stale:
            fresh = await self._registry.timezones(stale, self._default_timezone, now)
            expires = now + ZONE_CACHE
            self._zones.update({n: (tz, expires) for n, tz in fresh.items()})
        return {n: self._zones[n][0] for n in names}

    def forget_partitions(self) -> None:
        """Drop re-read state: called when partitions are revoked (their new owner checks its
        own batches against Redis)."""
        self._rewinding.clear()

    def _positions(self, messages: Sequence[Message]) -> Positions:
        """Per partition, the offsets this batch covers contiguously.

        A partition being re-read contributes only its re-read messages (offsets before the
        gap); the first of them is where the consumer resumed, so it is forced.
        """
        firsts: dict[int, int] = {}
        lasts: dict[int, int] = {}
        for m in messages:
            gap = self._rewinding.get(m.partition)
            if gap is not None and m.offset >= gap:
                continue  # fetched before the seek: applied (harmlessly) but not a position
            firsts.setdefault(m.partition, m.offset)
            lasts[m.partition] = max(m.offset, lasts.get(m.partition, -1))
        forced = {p for p in firsts if self._rewinding.pop(p, None) is not None}
        spans = {p: Span(firsts[p], lasts[p], p in forced) for p in firsts}
        return Positions(messages[0].topic if messages else "", spans)

    async def _repair_gaps(self, positions: Positions, previous: dict[int, int | None]) -> None:
        """A batch that does not continue Redis's applied position means Redis lost writes (a
        restart that replayed an AOF missing its last second, a failover, a FLUSHALL): re-read
        the partition from what Redis still has. Already-applied events will be skipped."""
        for partition, span in positions.spans.items():
            found = previous[partition]
            if span.force or span.first <= (-1 if found is None else found) + 1:
                continue
            log.warning(
                "%s[%d]: batch starts at %d but Redis has applied only up to %s: re-reading",
                positions.topic,
                partition,
                span.first,
                found,
            )
            if await self._rewind(positions.topic, partition, found, span.first):
                self._rewinding[partition] = span.first
            else:
                log.error(
                    "%s[%d]: offsets before %d are past retention; moving on",
                    positions.topic,
                    partition,
                    span.first,
                )
                forced = Positions(positions.topic, {partition: Span(span.last, span.last, True)})
                await self._writer.apply([], forced)
