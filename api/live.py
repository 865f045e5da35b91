"""Live: today's point of a device as Server-Sent Events, pushed within a second of a batch
changing it (docs/api.md).

One subscription per API process to the worker's change channel (state/changes.py) wakes the
channels of the devices a batch changed. A channel is one device, metric and timezone, shared
by every stream that watches it: it reads its point once per change, however many streams
wait on it, so reads per batch follow the devices changed, not the streams open. The worker
publishes one message per batch, whatever its size, so watching costs it nothing per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from api.auth import Authenticator
from api.errors import TooManyRequests
from api.metrics import ApiMetrics
from state.changes import changes
from state.connection import Store
from state.queries import Metric, SeriesQuery
from state.reader import Reader
from state.registry import hash_token

log = logging.getLogger(__name__)

KEEPALIVE_S = 10
"""A comment line this often keeps proxies from closing a quiet stream (the contract: at
least every 15 s)."""
RECHECK_S = 2.5
"""Longest wait of a stream without a change: it then asks for its token's grant again (from
api/auth.py's cache), so a revoked token's streams end within ``auth_cache_s`` and this."""
RETRY_AFTER_S = 5

Point = tuple[str, int]
"""A day, ISO, and its value."""


@dataclass(eq=False)
class Channel:
    """One device's point of one metric in one timezone, shared by the streams that watch it."""

    client_id: str
    device_id: str
    metric: Metric
    zone: ZoneInfo
    point: Point | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when ``point`` was read again, then replaced: a stream takes it before it looks at
    ``point``, so a read that ends meanwhile wakes it."""
    streams: int = 0
    _reading: asyncio.Task[None] | None = None
    _again: bool = False

    def today(self) -> date:
        return datetime.now(self.zone).date()

    async def current(self, reader: Reader) -> Point:
        """Today's point, read first when what is held is of another day (or nothing)."""
        if self.point is None or self.point[0] != self.today().isoformat():
            await asyncio.shield(self.refresh(reader))
        assert self.point is not None
        return self.point

    def refresh(self, reader: Reader) -> asyncio.Task[None]:
        """Read the point again. Callers that come while a read runs share it, and it reads
        once more when it ends: it may have started before the change that called."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(reader))
        else:
            self._again = True
        return self._reading

    async def _read(self, reader: Reader) -> None:
        while True:
            self._again = False
            today = self.today()
            query = SeriesQuery(self.client_id, self.device_id, self.metric, today, today)
            answer = await reader.series(query)
            self.point = (today.isoformat(), answer.series.values[0])
            self.changed.set()
            self.changed = asyncio.Event()
            if not self._again:
                return


ChannelKey = tuple[str, str, Metric, str]


class LiveHub:
    """The open live streams of one process: their channels, the change subscription that
    wakes them (and makes ``auth`` forget revoked tokens), and the caps on their number."""

    def __init__(
        self,
        redis: Store,
        reader: Reader,
        auth: Authenticator,
        max_streams: int,
        max_per_token: int,
        metrics: ApiMetrics,
    ) -> None:
        self._redis = redis
        self._reader = reader
        self._auth = auth
        self._max_streams = max_streams
        self._max_per_token = max_per_token
        self._metrics = metrics
        self._channels: dict[ChannelKey, Channel] = {}
        self._by_device: dict[str, set[Channel]] = {}
        self._per_token: dict[str, int] = {}
        self._open = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def streams(self) -> int:
        return self._open

    def admit(self, token: str) -> Callable[[], None]:
        """Count a new stream of ``token``, or 429 beyond a cap; returns what un-counts it
        (idempotent)."""
        if self._open >= self._max_streams:
            self._metrics.refused.labels("live_streams").inc()
            raise TooManyRequests(
                f"This server holds its maximum of {self._max_streams} live streams",
                {"limit": self._max_streams},
                retry_after_s=RETRY_AFTER_S,
            )
        digest = hash_token(token)
        held = self._per_token.get(digest, 0)
        if held >= self._max_per_token:
            self._metrics.refused.labels("live_streams").inc()
            raise TooManyRequests(
                f"This token holds its maximum of {self._max_per_token} live streams",
                {"limit": self._max_per_token},
                retry_after_s=RETRY_AFTER_S,
            )
        self._per_token[digest] = held + 1
        self._open += 1
        self._metrics.live_streams.set(self._open)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open -= 1
                left = self._per_token.pop(digest) - 1
                if left:
                    self._per_token[digest] = left
                self._metrics.live_streams.set(self._open)

        return release

    @contextlib.contextmanager
    def watch(
        self, client_id: str, device_id: str, metric: Metric, zone: ZoneInfo
    ) -> Iterator[Channel]:
        """The channel of a device, metric and zone, made for the first stream that watches it
        and dropped with the last."""
        key = (client_id, device_id, metric, zone.key)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(client_id, device_id, metric, zone)
            self._by_device.setdefault(device_id, set()).add(channel)
        channel.streams += 1
        try:
            yield channel
        finally:
            channel.streams -= 1
            if not channel.streams:
                del self._channels[key]
                watched = self._by_device[device_id]
                watched.discard(channel)
                if not watched:
                    del self._by_device[device_id]

    async def _listen(self) -> None:
        async for news in changes(self._redis):
            if news.missed:  # the subscription was lost: anything may have changed
                self._auth.forget()
                woken = list(self._channels.values())
            else:
                self._auth.forget(news.revoked)
                woken = [c for d in news.devices for c in self._by_device.get(d, ())]
            for channel in woken:
                channel.refresh(self._reader).add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("live: reading a watched device failed: %s", exc)


def _seconds_to_midnight(zone: ZoneInfo) -> float:
    now = datetime.now(zone)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), zone)
    return max(0.05, (midnight - now).total_seconds())


async def live_points(
    hub: LiveHub,
    reader: Reader,
    auth: Authenticator,
    token: str,
    client_id: str,
    device_id: str,
    metric: Metric,
    zone: ZoneInfo,
) -> AsyncIterator[str]:
    """Today's point (the client's local day) now, then whenever it changes; the day rolls
    over at the client's local midnight. Ends when the token no longer grants the client."""
    last: Point | None = None
    with hub.watch(client_id, device_id, metric, zone) as channel:
        while True:
            grant = await auth.grant(token)
            if grant is None or not grant.allows(client_id):
                return
            changed = channel.changed
            point = await channel.current(reader)
            if point != last:
                last = point
                yield orjson.dumps({"date": point[0], "value": point[1]}).decode()
            wait = min(_seconds_to_midnight(zone), RECHECK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)


class LiveResponse(EventSourceResponse):
    """The stream's response, which un-counts its stream however it ends (even when the
    client left before the first event, and the generator never ran)."""

    def __init__(self, points: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(points, ping=KEEPALIVE_S)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
