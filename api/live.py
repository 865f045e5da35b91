"""Live: today's point of a device as Server-Sent Events, pushed within a second of a batch
changing it (docs/api.md).

One subscription per API process to the worker's change channel (state/changes.py) wakes the
streams that watch the devices a batch changed; each re-reads its point (one round trip) and
sends it when it differs. The worker publishes one message per batch, whatever its size, so
watching costs it nothing per event; a thousand open streams are a thousand waiting tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from state.changes import changed_devices
from state.connection import Store
from state.reader import Metric, Reader, SeriesQuery, series_plan

KEEPALIVE_S = 10
"""A comment line this often keeps proxies from closing a quiet stream (the contract: at
least every 15 s)."""
_RECHECK_S = 300.0
"""Longest wait without a change: a safety net, e.g. for a token revoked meanwhile."""


class LiveHub:
    """Who watches which device, woken by the change subscription."""

    def __init__(self, redis: Store) -> None:
        self._redis = redis
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def watching(self) -> int:
        return sum(len(events) for events in self._watchers.values())

    @contextlib.contextmanager
    def watch(self, device_id: str) -> Iterator[asyncio.Event]:
        changed = asyncio.Event()
        self._watchers.setdefault(device_id, set()).add(changed)
        try:
            yield changed
        finally:
            watchers = self._watchers[device_id]
            watchers.discard(changed)
            if not watchers:
                del self._watchers[device_id]

    async def _listen(self) -> None:
        async for devices in changed_devices(self._redis):
            if devices is None:  # the subscription was lost: anything may have changed
                woken = [e for events in self._watchers.values() for e in events]
            else:
                woken = [e for d in devices for e in self._watchers.get(d, ())]
            for event in woken:
                event.set()


def _seconds_to_midnight(zone: ZoneInfo) -> float:
    now = datetime.now(zone)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), zone)
    return max(0.05, (midnight - now).total_seconds())


async def live_points(
    reader: Reader,
    hub: LiveHub,
    token: str,
    client_id: str,
    device_id: str,
    metric: Metric,
    zone: ZoneInfo,
) -> AsyncIterator[str]:
    """Today's point (the client's local day) now, then whenever it changes; the day rolls
    over at the client's local midnight. Ends when the token no longer grants the client."""
    last: tuple[str, int] | None = None
    with hub.watch(device_id) as changed:
        while True:
            changed.clear()  # before reading: a change during the read wakes the next wait
            today = datetime.now(zone).date()
            query = SeriesQuery(metric, series_plan(today, today, "daily"))
            view = await reader.device_view(token, client_id, device_id, query)
            if view.grant is None or not view.grant.allows(client_id):
                return
            point = (today.isoformat(), (view.values or [0])[0])
            if point != last:
                last = point
                yield orjson.dumps({"date": point[0], "value": point[1]}).decode()
            wait = min(_seconds_to_midnight(zone), _RECHECK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
