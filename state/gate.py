"""A bound on the round trips one process has in flight, so that a crowd queues instead of
failing: redis-py's pools (100 connections by default) raise when they run out, and the API
answered that as "store unavailable" while Redis was idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from state.errors import StoreUnavailable


class Gate:
    """At most ``size`` round trips at once, the others waiting their turn for up to
    ``wait_s``. The pools are sized above ``size`` (state/connection.py), so none ever runs out.

    While the last round trip found Redis unreachable, a caller that would have to wait fails
    at once instead: the callers holding a slot are probing, and a queue behind them would turn
    the contract's 503 within 2 s into one after several timeouts in a row.
    """

    def __init__(self, size: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(size)
        self._wait_s = wait_s
        self._down = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._down and self._slots.locked():
            raise StoreUnavailable("Redis is unreachable (the last round trip failed)")
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreUnavailable(f"no Redis connection came free in {self._wait_s} s") from None
        try:
            yield
        except StoreUnavailable:
            self._down = True
            raise
        else:
            self._down = False
        finally:
            self._slots.release()
