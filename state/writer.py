"""Applying a batch of heartbeats to Redis: counters, user sketches, ownership, TTLs.

``Writer`` is the one ``BatchWriter`` (state/write_types.py): the same round trips, batch
markers and applied positions on one Redis and on a Redis Cluster, written once over "the
primaries in use" of its transport (state/transport.py; one Redis is one primary, a cluster's
are in state/cluster_transport.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from state import keys, resp
from state.batch import DeviceBatch
from state.cluster_transport import transport_for
from state.dates import month_expires_at
from state.encoding import EXACT_USERS_LIMIT, user_hashes
from state.errors import LostWrites, StoreUnavailable, unavailable_on_failure
from state.fleet import ClientCall, client_calls
from state.scripts import Scripts, raise_errors
from state.transport import DEFERRED, Primary, Transport, Trip
from state.write_types import (
    ApplyProgress,
    ApplyResult,
    BatchResult,
    BatchWriter,
    PackedBatch,
    Positions,
    Span,
)

__all__ = [  # the write side's types, where their importers found them before write_types.py
    "ApplyProgress",
    "ApplyResult",
    "BatchResult",
    "BatchWriter",
    "PackedBatch",
    "Positions",
    "Span",
    "Writer",
    "new_writer",
]

Record = Callable[[int, list[Any], ApplyProgress], None]
"""What a round trip's replies tell (its index among its kind, the replies of its body)."""
Body = Callable[[int, list[Primary]], Trip]
"""The commands of round trip ``n`` (among its kind), for the primaries in use."""

_KNOWN_DEVICES_LIMIT = 200_000
"""Bound of the writer's memory of (client, device) pairs already in their client's set."""


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


def _client_trips(calls: Sequence[ClientCall], cuts: list[range]) -> Body:
    """The client calls' round trips, each call routed by its client's slot."""

    def trip(n: int, _: list[Primary]) -> Trip:
        chosen = [calls[i] for i in cuts[n]]
        return Trip([c.command for c in chosen],
                    [keys.client_devices_index(c.client_id) for c in chosen])  # fmt: skip

    return trip


def _nothing_sent_back(trip: int, replies: list[Any], progress: ApplyProgress) -> None:
    """Calls of one segment per offset decide every segment (apply_client.lua)."""
    if any(r is not DEFERRED and int(r) for r in replies):
        raise RuntimeError("a one-offset segment was left undecided")


_MARKER_TTL_MS = 86_400_000
"""The batch marker is a few bytes per worker; a day outlives any batch."""


class Writer:
    """Applies device batches. Safe to call again with the same events: replays are skipped."""

    def __init__(self, redis: Redis | RedisCluster, *, fleet: bool = True) -> None:
        self._transport: Transport = transport_for(redis)
        self._fleet = fleet
        self._scripts = Scripts.register(redis)
        self._known_devices: set[tuple[str, str]] = set()
        self._writer_id = uuid.uuid4().hex

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        """Encode the device batches' script calls (CPU only: done while Redis is still busy
        with the previous batch)."""
        sha = self._scripts.apply_device.sha
        commands = [resp.evalsha(sha, *_script_call(b)) for b in batches]
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
        (``cut_trips``), ``window`` in flight at a time (the transport's). The clients'
        aggregate calls follow (state/fleet.py: they need to know which devices were
        accepted), cut the same way, and a last round trip registers devices and advances the
        positions on every primary in use. Redis runs a pipeline in order and its AOF logs it in
        order, so a position that survives a crash implies the device scripts before it did.
        Each round trip ends by setting this writer's batch marker on every primary in use and
        the next one starts by reading them back: a marker that is not the previous round
        trip's means Redis lost that round trip's writes, and :class:`LostWrites` asks for the
        batch again from its start. Otherwise a failure part-way is resumed from ``progress``;
        scripts skip what they already applied.
        """
        progress = progress or ApplyProgress()

        async def rest() -> None:
            try:
                await self._apply_rest(packed, positions, progress)
            except (RedisConnectionError, OSError):
                # A pooled connection that died with a Redis restart: once more at once.
                await self._apply_rest(packed, positions, progress)

        with unavailable_on_failure():
            await self._scripts.reloading(self._transport.store, rest)
        assert progress.previous is not None
        return BatchResult(list(progress.devices), progress.previous)

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the highest offset whose batch is fully applied (None: nothing): the
        lowest a reachable primary holds (None as soon as one holds none)."""
        if not partitions:
            return {}

        def mget(primary: Primary) -> bytes:
            return resp.command("MGET", *(primary.applied(topic, p) for p in partitions))

        with unavailable_on_failure():
            per_primary = await self._transport.read_primaries(mget)
        raise_errors(per_primary)
        return {p: _lowest(values[i] for values in per_primary) for i, p in enumerate(partitions)}

    def leaving_out(self) -> bool:
        """Whether a part of the store is left out, unreachable (a cluster's primary)."""
        return self._transport.leaving_out()

    async def _apply_rest(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress
    ) -> None:
        """The round trips not yet answered: the device scripts', then the client aggregates'
        (state/fleet.py; they need to know which devices were accepted), then the last."""

        def device_trip(n: int, _: list[Primary]) -> Trip:
            t = packed.trips[n]
            meta = [keys.device_meta(b.device_id) for b in packed.batches[t.start : t.stop]]
            return Trip(packed.commands[t.start : t.stop], meta)

        done = len(packed.trips)
        await self._stream(done, device_trip, 0, progress, self._record_devices)
        if progress.left_out:
            # Some devices' results are not known: the clients' calls wait for the re-read
            # that applies those devices (state/cluster_transport.py).
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

        client_trips = _client_trips(calls, client_cuts)
        await self._stream(len(client_cuts), client_trips, done, progress, record_clients)
        done += len(client_cuts)
        if progress.finer:  # one segment per offset: nothing is sent back this time
            finer = client_calls(sha, packed.batches, refused, progress.finer)
            finer_cuts = _client_cuts(finer)
            finer_trips = _client_trips(finer, finer_cuts)
            await self._stream(len(finer_cuts), finer_trips, done, progress, _nothing_sent_back)
            done += len(finer_cuts)
        if progress.previous is None:
            await self._last_trip(packed, positions, progress, done)

    async def _stream(
        self,
        count: int,
        body: Body,
        first: int,
        progress: ApplyProgress,
        record: Record,
        *,
        last: bool = False,
    ) -> None:
        """Send the round trips (numbered from ``first`` in the batch) not yet answered, each
        on every primary in use: read its batch marker back (after the batch's first round
        trip), the trip's ``body``, then set its marker, or delete it (the ``last``)."""
        start = progress.trips_done - first
        if not 0 <= start < count:
            return
        markers: dict[int, int] = {}
        """Per round trip sent, the markers it reads back and sets (one per primary)."""

        def trip(n: int) -> Trip:
            index = first + start + n
            primaries = self._transport.in_use(progress.left_out)
            if not primaries:  # nothing to do but wait, as on one Redis; then from the start
                progress.restart()
                raise StoreUnavailable("no primary of the store can be reached")
            names = [p.batch_marker(self._writer_id) for p in primaries]
            markers[n] = len(names)
            inner = body(start + n, primaries)
            checks = [resp.command("GET", m) for m in names] if index > 0 else []
            if last:
                ends = [resp.command("DEL", m) for m in names]  # nothing left at rest
            else:
                value = f"{progress.batch_id}:{index}"
                ends = [resp.command("SET", m, value, "PX", _MARKER_TTL_MS) for m in names]
            return Trip([*checks, *inner.commands, *ends],
                        [*(names if checks else ()), *inner.keys, *names])  # fmt: skip

        def answered(n: int, replies: list[Any]) -> None:
            index = first + start + n
            checked = markers[n] if index > 0 else 0
            for found in replies[:checked]:
                if found is not DEFERRED:
                    self._check_marker(found, index, progress)
            raise_errors(replies[checked:])
            record(start + n, replies[checked : len(replies) - markers.pop(n)], progress)
            progress.trips_done = index + 1

        await self._transport.stream(count - start, trip, answered, progress.left_out)

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
        """Register new devices, advance the positions on every primary in use and tell the
        live streams, once every other trip is done."""
        new_devices = sorted(self._new_devices(packed.batches, progress.devices))
        partitions = sorted(positions.spans)
        sha = self._scripts.advance_applied.sha
        advancing: list[int] = []
        """The primaries the positions advance on (one round trip: one entry)."""

        def body(_: int, primaries: list[Primary]) -> Trip:
            commands = [resp.command("SADD", keys.client_devices(c), d) for c, d in new_devices]
            routes = [keys.client_devices(c) for c, _ in new_devices]
            for primary in primaries:
                for p in partitions:
                    span, key = positions.spans[p], primary.applied(positions.topic, p)
                    after = -2 if span.after is None else span.after
                    commands.append(resp.evalsha(sha, [key], [span.first, span.last,
                                                              int(span.force), after]))  # fmt: skip
                    routes.append(key)
            changed = _changed_devices(packed.batches, progress.devices)
            if changed:
                # One message per batch, whatever its size: live streams (api/live.py) re-read
                # the devices they watch. Sent after the positions: the counts are there by then.
                commands.append(resp.command("PUBLISH", keys.CHANGES_CHANNEL, " ".join(changed)))
                routes.append(keys.CHANGES_CHANNEL)
            advancing.append(len(primaries))
            return Trip(commands, routes)

        def record(_: int, replies: list[Any], progress: ApplyProgress) -> None:
            added = zip(new_devices, replies[: len(new_devices)], strict=True)
            self._remember({d for d, r in added if r is not DEFERRED})
            advanced = replies[len(new_devices) :]
            width = len(partitions)
            progress.previous = {
                p: _lowest(
                    found
                    for n in range(advancing[-1])
                    if (found := advanced[n * width + i]) is not DEFERRED
                )
                for i, p in enumerate(partitions)
            }

        await self._stream(1, body, index, progress, record, last=True)

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


def _lowest(values: Iterable[Any]) -> int | None:
    """The lowest of positions as the primaries hold them; None (nothing applied) as soon as
    one holds none (-1 or None): a primary that lost every write, or one new to the cluster,
    is read again from the start of the partition (the scripts skip what it still has)."""
    found = [None if v is None or int(v) < 0 else int(v) for v in values]
    return None if not found or None in found else min(v for v in found if v is not None)


def new_writer(redis: Redis | RedisCluster, *, fleet: bool = True) -> Writer:
    """The writer for ``redis``, one Redis or a Redis Cluster (its transport tells them apart)."""
    return Writer(redis, fleet=fleet)
