"""One batch, end to end: judge, look up timezones, apply to Redis, dead-letter the rest.

Knows no Redis command and no Faust type: state/ does the writes, and dead letters leave
through an injected ``send`` so the same code runs under Faust, a bare consumer, or a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from state.errors import StoreUnavailable
from state.registry import Registry
from state.writer import Writer
from stream.dlq import DeadLetterRecord, to_record
from stream.model import Rejection
from stream.plan import DeadLetter, Message, client_ids, decode_batch, plan_batch

log = logging.getLogger(__name__)

SendDeadLetters = Callable[[Sequence[DeadLetterRecord]], Awaitable[None]]
Clock = Callable[[], datetime]

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
    ) -> None:
        self._registry = registry
        self._writer = writer
        self._send = send
        self._clock = clock
        self._default_timezone = default_timezone
        self._retention_days = retention_days

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
        names = client_ids(judged)
        zones: dict[str, str] = {}
        if names:
            zones = await self._registry.timezones(names, self._default_timezone, now)
        plan = plan_batch(judged, zones, now, self._retention_days)
        results = await self._writer.apply(plan.device_batches)
        letters = list(plan.dead_letters)
        for result, members in zip(results, plan.members, strict=True):
            if result.owner is not None:
                mismatch = Rejection(
                    "device_client_mismatch", f"device belongs to client {result.owner}"
                )
                letters += [DeadLetter(j.message, j.element.index, mismatch) for j in members]
        if letters:
            await self._send([to_record(letter) for letter in letters])
        return BatchOutcome(
            applied=sum(r.applied for r in results),
            skipped=sum(r.skipped for r in results),
            dead_letters=len(letters),
        )
