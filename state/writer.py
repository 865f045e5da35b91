"""Applying a batch of heartbeats to Redis: counters, user sketches, ownership, TTLs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from state import keys, resp
from state.batch import DeviceBatch
from state.dates import month_expires_at
from state.encoding import EXACT_USERS_LIMIT, user_hashes
from state.errors import LostWrites, unavailable_on_failure
from state.fleet import ClientCall, client_calls
from state.resp import evalsha as _evalsha
from state.scripts import Scripts

_KNOWN_DEVICES_LIMIT = 200_000
"""Bound of the writer's memory of (client, device) pairs already in their client's set."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int = 0
    """Events counted now."""
    skipped: int = 0
    """Events found already applied (a replay); they change nothing."""
    owner: str | None = None
    """Set when the device belongs to another client: nothing of the batch was applied."""
    deferred: bool = False
    """Its node could not be reached (a Redis Cluster primary down): nothing was applied, and
    the partitions' positions on that node stay behind, so the events are read again and
    applied once it is back (state/cluster_writer.py)."""

    @property
    def rejected(self) -> bool:
        return self.owner is not None


def _script_call(batch: DeviceBatch) -> tuple[list[str], list[str | int | bytes]]:
    """The keys and arguments of the device's ``apply_device.lua`` call: the meta key and one
    key per month, each month's expiry, then per day its month, its day of the month, its
    heartbeat count, and four arguments a heartbeat (partition, offset, count, and the user's
    64-bit hash as 8 bytes, '' for nobody)."""
    script_keys = [keys.device_meta(batch.device_id)]
    months: dict[tuple[int, int], int] = {}
    expiries: list[int] = []
    day_args: list[str | int | bytes] = []
    for day, day_batch in batch.days.items():
        month = months.get((day.year, day.month))
        if month is None:
            month = months[(day.year, day.month)] = len(months) + 1
            script_keys.append(keys.device_month(batch.device_id, day))
            expiries.append(month_expires_at(day, day_batch.expire_at))
        day_args += [month, day.day, len(day_batch.contributions)]
        for c in day_batch.contributions:
            day_args += [c.partition, c.offset, c.count,
                         b"" if c.user_id is None else user_hashes(c.user_id)[1]]  # fmt: skip
    args: list[str | int | bytes] = [batch.client_id, EXACT_USERS_LIMIT, len(expiries), *expiries]
    args.append(len(batch.days))
    args += day_args
    return script_keys, args


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's messages in a batch."""

    first: int
    last: int
    force: bool = False
    """Advance even if ``first`` does not follow the stored position (the caller knows the log
    holds nothing readable in between)."""
    after: int | None = None
    """The offset the reader delivered just before ``first``, when known: the batch continues a
    stored position equal to it, whatever lies between (transaction markers, aborted records)."""


@dataclass(frozen=True, slots=True)
class Positions:
    """What a batch covers, per partition; once it is applied, the applied positions advance."""

    topic: str
    spans: dict[int, Span]


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Device batches with their script calls already encoded, cut into round trips."""

    batches: Sequence[DeviceBatch]
    commands: list[bytes]
    trips: list[range]
    """The indexes of ``commands`` (and ``batches``) sent in each round trip, in order."""
    clients: list[ClientCall] = field(default_factory=list)
    """The client aggregates' calls, for when every device batch is accepted."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    devices: list[ApplyResult]
    """One per device batch, in order."""
    previous: dict[int, int | None]
    """Per partition, the applied position Redis held before this batch (None: nothing). When
    a span's first offset is past it + 1, Redis lost writes and the position did not move."""


@dataclass(slots=True)
class ApplyProgress:
    """How far applying one batch got: the round trips Redis answered and their results. A
    retry (after a time-out, a broken connection) resumes after them instead of sending the
    whole batch again; what they applied stays applied."""

    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trips_done: int = 0
    devices: list[ApplyResult] = field(default_factory=list)
    previous: dict[int, int | None] | None = None
    """Set by the last round trip, which advances the applied positions."""
    finer: set[str] = field(default_factory=set)
    """The clients whose aggregate call was partly replayed: it goes again as one segment per
    offset (state/fleet.py)."""
    down_slots: set[int] = field(default_factory=set)
    """On a Redis Cluster, the slots whose commands this batch deferred (their primary could
    not be reached); it only grows until the batch restarts (state/cluster_writer.py)."""

    def restart(self) -> None:
        """Forget everything: Redis lost writes, the batch is applied again from its start."""
        self.batch_id = uuid.uuid4().hex
        self.trips_done = 0
        self.devices.clear()
        self.previous = None
        self.finer.clear()
        self.down_slots.clear()


SCRIPTS_PER_TRIP = 256
"""Device scripts in one round trip at most. Measured with ``python -m bench.trips`` (20,000
devices through ``Writer``, 2026-12-02, this 2-core machine, two round trips in flight): one
heartbeat per device, 17,923 events/s with 32 scripts a round trip, 23,953 with 256, 19,112 with
the whole batch in one; five per device, 75,842 / 106,649 / 92,978. Past a few dozen the cap
costs nothing measurable (the spread is the machine's noise), and 256 keeps a round trip near
10 ms of Redis time, so a retry re-sends little. Before round trips were pipelined, a batch of
gateway arrays went out whole, as 10,000 scripts, and took over a second."""
EVENTS_PER_TRIP = 4096
"""Heartbeats carried by one round trip at most (a device with more is sent alone): with
arrays a device script carries several, and Redis's time grows with them (about 8 to 45 us
of Redis per heartbeat above), so 4,096 is at most a few tens of milliseconds."""


def cut_trips(batches: Sequence[DeviceBatch]) -> list[range]:
    """Consecutive device batches grouped into round trips (``cut``)."""
    return cut([sum(len(day.contributions) for day in b.days.values()) for b in batches])


def cut(sizes: Sequence[int]) -> list[range]:
    """Consecutive scripts, carrying ``sizes`` heartbeats each, grouped into round trips of at
    most ``SCRIPTS_PER_TRIP`` scripts and ``EVENTS_PER_TRIP`` heartbeats."""
    trips: list[range] = []
    first = events = 0
    for index, size in enumerate(sizes):
        if index > first and (index - first >= SCRIPTS_PER_TRIP or events + size > EVENTS_PER_TRIP):
            trips.append(range(first, index))
            first, events = index, 0
        events += size
    if len(sizes) > first:
        trips.append(range(first, len(sizes)))
    return trips


def _changed_devices(batches: Sequence[DeviceBatch], results: Sequence[ApplyResult]) -> list[str]:
    """The devices whose counts this batch changed (in order, once each)."""
    return list(
        dict.fromkeys(b.device_id for b, r in zip(batches, results, strict=True) if r.applied)
    )


def _client_cuts(calls: Sequence[ClientCall]) -> list[range]:
    """The client aggregates' calls grouped into round trips (``cut``)."""
    return cut([c.events for c in calls])


def _call_keys(calls: Sequence[ClientCall], cuts: list[range]) -> list[list[str]]:
    """The key each client call is routed by, per round trip (its client's slot)."""
    return [[keys.client_devices_index(calls[i].client_id) for i in trip] for trip in cuts]


def _nothing_sent_back(trip: int, replies: list[Any], progress: ApplyProgress) -> None:
    """Calls of one segment per offset decide every segment (apply_client.lua)."""
    if any(r is not DEFERRED and int(r) for r in replies):
        raise RuntimeError("a one-offset segment was left undecided")


class _Deferred:
    """The reply of a command not sent: its Redis Cluster primary could not be reached."""

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = _Deferred()


class _ScriptsMissing(Exception):
    """Redis answered NOSCRIPT (a restart emptied its script cache)."""


_MARKER_TTL_MS = 86_400_000
"""The batch marker is a few bytes per worker; a day outlives any batch."""


class Writer:
    """Applies device batches. Safe to call again with the same events: replays are skipped."""

    def __init__(self, redis: Redis, *, fleet: bool = True) -> None:
        self._redis = redis
        self._fleet = fleet
        self._scripts = Scripts.register(redis)
        self._known_devices: set[tuple[str, str]] = set()
        self._marker = keys.batch_marker(uuid.uuid4().hex)

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        """Encode the device batches' script calls (CPU only: done while Redis is still busy
        with the previous batch)."""
        sha = self._scripts.apply_device.sha
        commands = [_evalsha(sha, *_script_call(b)) for b in batches]
        clients = client_calls(self._scripts.apply_client.sha, batches) if self._fleet else []
        return PackedBatch(batches, commands, cut_trips(batches), clients)

    async def apply(self, batches: Sequence[DeviceBatch], positions: Positions) -> BatchResult:
        return await self.apply_packed(self.pack(batches), positions)

    async def apply_packed(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress | None = None
    ) -> BatchResult:
        """Apply every device batch, in order, then the clients' aggregates, then register new
        devices and advance the partitions' applied positions.

        Each device batch is one atomic script call; they go in round trips bounded by work
        (``cut_trips``), two in flight at a time on one connection (``resp.stream_patiently``).
        The clients' aggregate calls follow (state/fleet.py: they need to know which devices
        were accepted), cut the same way, and a last round trip registers devices and advances
        the positions. Redis runs a
        pipeline in order and its AOF logs it in order, so a position that survives a crash
        implies the device scripts before it did. Each round trip ends by setting this writer's
        batch marker and the next one starts by reading it back: a marker that is not the
        previous round trip's means Redis lost that round trip's writes, and
        :class:`LostWrites` asks for the batch again from its start. Otherwise a failure
        part-way is resumed from ``progress``; scripts skip what they already applied.
        """
        progress = progress or ApplyProgress()
        loaded = reconnected = False
        with unavailable_on_failure():
            while True:
                try:
                    await self._apply_rest(packed, positions, progress)
                    break
                except _ScriptsMissing:  # a restarted Redis: load them, resume
                    if loaded:
                        raise NoScriptError("scripts missing right after loading them") from None
                    loaded = True
                    await self._scripts.load(self._redis)
                except (RedisConnectionError, OSError):
                    # A pooled connection that died with a Redis restart: once more at once.
                    if reconnected:
                        raise
                    reconnected = True
        assert progress.previous is not None
        return BatchResult(list(progress.devices), progress.previous)

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the highest offset whose batch is fully applied (None: nothing)."""
        if not partitions:
            return {}
        command = resp.command("MGET", *(keys.applied(topic, p) for p in partitions))
        with unavailable_on_failure():
            (values,) = await resp.send_patiently(self._redis, [command])
        return {p: None if v is None else int(v) for p, v in zip(partitions, values, strict=True)}

    async def _apply_rest(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress
    ) -> None:
        """The round trips not yet answered: the device scripts', then the client aggregates'
        (state/fleet.py; they need to know which devices were accepted), then the last."""
        device_trips = [packed.commands[t.start : t.stop] for t in packed.trips]
        device_keys = [
            [keys.device_meta(b.device_id) for b in packed.batches[t.start : t.stop]]
            for t in packed.trips
        ]
        await self._stream(device_trips, device_keys, 0, progress, self._record_devices)
        done = len(device_trips)
        if self._holding(progress):
            # Some devices' results are not known: the clients' calls wait for the re-read
            # that applies those devices (state/cluster_writer.py).
            if progress.previous is None:
                await self._last_trip(packed, positions, progress, progress.trips_done)
            return
        calls = packed.clients
        refused = {i for i, r in enumerate(progress.devices) if r.rejected}
        sha = self._scripts.apply_client.sha
        if refused and self._fleet:
            calls = client_calls(sha, packed.batches, refused)
        client_cuts = _client_cuts(calls)

        def record_clients(trip: int, replies: list[Any], progress: ApplyProgress) -> None:
            for call, undecided in zip((calls[i] for i in client_cuts[trip]), replies, strict=True):
                if undecided is not DEFERRED and int(undecided):
                    progress.finer.add(call.client_id)

        client_trips = [[calls[i].command for i in trip] for trip in client_cuts]
        await self._stream(client_trips, _call_keys(calls, client_cuts), done, progress,
                           record_clients)  # fmt: skip
        done += len(client_trips)
        if progress.finer:  # one segment per offset: nothing is sent back this time
            finer = client_calls(sha, packed.batches, refused, progress.finer)
            finer_cuts = _client_cuts(finer)
            finer_trips = [[finer[i].command for i in trip] for trip in finer_cuts]
            await self._stream(finer_trips, _call_keys(finer, finer_cuts), done, progress,
                               _nothing_sent_back)  # fmt: skip
            done += len(finer_trips)
        if progress.previous is None:
            await self._last_trip(packed, positions, progress, done)

    async def _stream(
        self,
        trips: list[list[bytes]],
        trip_keys: list[list[str]],
        first: int,
        progress: ApplyProgress,
        record: Callable[[int, list[Any], ApplyProgress], None],
    ) -> None:
        """Send the round trips (numbered from ``first`` in the batch) not yet answered.
        ``trip_keys``: the key each script is routed by (used on a cluster only)."""
        start = progress.trips_done - first
        if not 0 <= start < len(trips):
            return
        segments = [self._trip(first + i, trips[i], progress) for i in range(start, len(trips))]

        def answered(offset: int, replies: list[Any]) -> None:
            index = first + start + offset
            if index > 0:
                self._check_marker(replies[0], index, progress)
                replies = replies[1:]
            scripts = replies[:-1]  # the last: setting the marker
            if any(isinstance(r, NoScriptError) for r in scripts):
                raise _ScriptsMissing
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            record(start + offset, scripts, progress)
            progress.trips_done = index + 1

        await resp.stream_patiently(self._redis, segments, answered)

    def _trip(self, index: int, scripts: list[bytes], progress: ApplyProgress) -> list[bytes]:
        """Round trip ``index``: check the marker, the scripts, set the marker."""
        commands = [resp.command("GET", self._marker)] if index > 0 else []
        commands += scripts
        marker = f"{progress.batch_id}:{index}"
        commands.append(resp.command("SET", self._marker, marker, "PX", _MARKER_TTL_MS))
        return commands

    def _holding(self, progress: ApplyProgress) -> bool:
        """Whether the clients' aggregate calls wait (never on one Redis)."""
        return False

    def leaving_out(self) -> bool:
        """Whether a part of the store is left out, unreachable (never on one Redis)."""
        return False

    @staticmethod
    def _record_devices(trip: int, replies: list[Any], progress: ApplyProgress) -> None:
        progress.devices += [
            ApplyResult(deferred=True)
            if r is DEFERRED
            else ApplyResult(applied=int(r[1]), skipped=int(r[2]))
            if int(r[0]) == 1
            else ApplyResult(owner=str(r[1]))
            for r in replies
        ]

    def _check_marker(self, found: object, index: int, progress: ApplyProgress) -> None:
        """Round trip ``index - 1`` is still in Redis: the marker names it or a later round trip
        of the same batch (one that was in flight when a connection broke)."""
        batch, _, trip = str(found).partition(":")
        if batch != progress.batch_id or not trip.isdigit() or int(trip) < index - 1:
            progress.restart()
            raise LostWrites(f"batch marker {found!r}: round trip {index - 1} is not in Redis")

    async def _last_trip(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress, index: int
    ) -> None:
        """Register new devices and advance the positions, once every other trip is done."""
        commands = [resp.command("GET", self._marker)] if index > 0 else []
        new_devices = self._new_devices(packed.batches, progress.devices)
        commands += [
            resp.command("SADD", keys.client_devices(client_id), device_id)
            for client_id, device_id in sorted(new_devices)
        ]
        partitions = sorted(positions.spans)
        commands += self._advances(positions)
        commands.append(resp.command("DEL", self._marker))  # nothing left at rest
        changed = _changed_devices(packed.batches, progress.devices)
        if changed:
            # One message per batch, whatever its size: live streams (api/live.py) re-read the
            # devices they watch. Sent after the positions: the counts are in Redis by then.
            commands.append(resp.command("PUBLISH", keys.CHANGES_CHANNEL, " ".join(changed)))
        replies = await self._scripts.send(self._redis, resp.send_patiently, commands)
        if index > 0:
            self._check_marker(replies[0], index, progress)
            replies = replies[1:]
        self._remember(new_devices)
        advanced = replies[len(new_devices) : len(new_devices) + len(partitions)]
        progress.previous = {
            p: None if int(found) < 0 else int(found)
            for p, found in zip(partitions, advanced, strict=True)
        }
        progress.trips_done = index + 1

    def _advances(self, positions: Positions) -> list[bytes]:
        advance_sha = self._scripts.advance_applied.sha
        return [
            _evalsha(
                advance_sha,
                [keys.applied(positions.topic, p)],
                [span.first, span.last, int(span.force), -2 if span.after is None else span.after],
            )
            for p, span in sorted(positions.spans.items())
        ]

    def _new_devices(
        self, batches: Sequence[DeviceBatch], results: Sequence[ApplyResult]
    ) -> set[tuple[str, str]]:
        """Devices to add to their client's device set (another slot than the device's). They
        are added in the last round trip, before the positions advance: a position that
        survives a crash implies them too."""
        return {
            (b.client_id, b.device_id)
            for b, r in zip(batches, results, strict=True)
            if not r.rejected
            and not r.deferred
            and (b.client_id, b.device_id) not in self._known_devices
        }

    def _remember(self, devices: set[tuple[str, str]]) -> None:
        if len(self._known_devices) + len(devices) > _KNOWN_DEVICES_LIMIT:
            self._known_devices.clear()
        self._known_devices |= devices
