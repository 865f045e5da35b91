"""Handing the event loop back during long CPU work, so that nothing a message holds keeps the
worker's other tasks waiting: its /healthz, the previous batch's round trips to Redis, Faust's
fetches and commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

SLICE_S = 0.010
"""How long CPU work holds the event loop at most between two hand-backs (plus one piece of the
work): short beside a probe's timeout or a Redis round trip, long beside a hand-back (a loop
turn with nothing else to do costs microseconds)."""


class Pacer:
    """Call :meth:`pace` between pieces of work: it hands the event loop back once the work has
    held it for ``slice_s`` since the last hand-back (or since the pacer was made)."""

    def __init__(
        self, slice_s: float = SLICE_S, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._slice_s = slice_s
        self._clock = clock
        self._since = clock()
        self.handed_back = 0
        """How many times it has handed the loop back."""

    async def pace(self) -> None:
        if self._clock() - self._since >= self._slice_s:
            await asyncio.sleep(0)
            self.handed_back += 1
            self._since = self._clock()
