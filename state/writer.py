"""Applying a batch of heartbeats to Redis: counters, user sketches, ownership, TTLs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import keys, resp
from state.encoding import EXACT_USERS_LIMIT, user_member
from state.errors import StoreUnavailable
from state.resp import evalsha as _evalsha
from state.scripts import Scripts

_KNOWN_DEVICES_LIMIT = 200_000
"""Bound of the writer's memory of (client, device) pairs already in their client's set."""


@dataclass(slots=True)
class Contribution:
    """One heartbeat's part of a device-day, with the Kafka position it came from. (Not frozen:
    one is made per heartbeat, and a frozen dataclass costs several times as much to create.)"""

    partition: int
    offset: int
    count: int
    user_id: str | None


@dataclass(slots=True)
class DayBatch:
    expire_at: int
    """Unix time at which the day leaves the retention window (EXPIREAT of its keys)."""
    contributions: list[Contribution] = field(default_factory=list)


@dataclass(slots=True)
class DeviceBatch:
    """Everything a batch adds to one device on behalf of one client, by local day."""

    client_id: str
    device_id: str
    days: dict[date, DayBatch] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int = 0
    """Events counted now."""
    skipped: int = 0
    """Events found already applied (a replay); they change nothing."""
    owner: str | None = None
    """Set when the device belongs to another client: nothing of the batch was applied."""

    @property
    def rejected(self) -> bool:
        return self.owner is not None


def _script_call(batch: DeviceBatch) -> tuple[list[str], list[str | int]]:
    script_keys = [keys.device_meta(batch.device_id)]
    args: list[str | int] = [batch.client_id, EXACT_USERS_LIMIT, len(batch.days)]
    for day, day_batch in batch.days.items():
        script_keys += [
            keys.day_counter(batch.device_id, day),
            keys.day_users(batch.device_id, day),
        ]
        args += [day_batch.expire_at, len(day_batch.contributions)]
        for c in day_batch.contributions:
            user = "" if c.user_id is None else user_member(c.user_id)
            args += [c.partition, c.offset, c.count, user]
    return script_keys, args


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's messages in a batch."""

    first: int
    last: int
    force: bool = False
    """Advance even if ``first`` does not follow the stored position (the caller knows the log
    holds nothing readable in between)."""


@dataclass(frozen=True, slots=True)
class Positions:
    """What a batch covers, per partition; once it is applied, the applied positions advance."""

    topic: str
    spans: dict[int, Span]


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Device batches with their script calls already encoded."""

    batches: Sequence[DeviceBatch]
    commands: list[bytes]


@dataclass(frozen=True, slots=True)
class BatchResult:
    devices: list[ApplyResult]
    """One per device batch, in order."""
    previous: dict[int, int | None]
    """Per partition, the applied position Redis held before this batch (None: nothing). When
    a span's first offset is past it + 1, Redis lost writes and the position did not move."""


class Writer:
    """Applies device batches. Safe to call again with the same events: replays are skipped."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts.register(redis)
        self._known_devices: set[tuple[str, str]] = set()

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        """Encode the device batches' script calls (CPU only: done while Redis is still busy
        with the previous batch)."""
        sha = self._scripts.apply_device.sha
        return PackedBatch(batches, [_evalsha(sha, *_script_call(b)) for b in batches])

    async def apply(self, batches: Sequence[DeviceBatch], positions: Positions) -> BatchResult:
        return await self.apply_packed(self.pack(batches), positions)

    async def apply_packed(self, packed: PackedBatch, positions: Positions) -> BatchResult:
        """Apply every device batch, in order, then advance the partitions' applied positions,
        all in one round trip.

        Each device batch is one atomic script call. Redis runs a pipeline in order and its AOF
        logs it in order, so a position that survives a crash implies the batches before it did.
        A failure part-way leaves some devices applied and others not; calling again with the
        same batches completes the rest.
        """
        try:
            result = await self._apply_scripts(packed, positions)
            await self._register_devices(packed.batches, result.devices)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return result

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the highest offset whose batch is fully applied (None: nothing)."""
        if not partitions:
            return {}
        try:
            values = await self._redis.mget([keys.applied(topic, p) for p in partitions])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return {p: None if v is None else int(v) for p, v in zip(partitions, values, strict=True)}

    async def _apply_scripts(self, packed: PackedBatch, positions: Positions) -> BatchResult:
        partitions = sorted(positions.spans)
        commands = list(packed.commands)
        advance_sha = self._scripts.advance_applied.sha
        for p in partitions:
            span = positions.spans[p]
            position_key = [keys.applied(positions.topic, p)]
            commands.append(
                _evalsha(advance_sha, position_key, [span.first, span.last, int(span.force)])
            )
        replies = await self._pipeline(commands)
        count = len(packed.batches)
        device_replies, position_replies = replies[:count], replies[count:]
        devices = [
            ApplyResult(applied=int(r[1]), skipped=int(r[2]))
            if int(r[0]) == 1
            else ApplyResult(owner=str(r[1]))
            for r in device_replies
        ]
        previous = {
            p: None if int(found) < 0 else int(found)
            for p, found in zip(partitions, position_replies, strict=True)
        }
        return BatchResult(devices, previous)

    async def _pipeline(self, commands: Sequence[bytes]) -> list[Any]:
        """Send packed commands in one write and read every reply, on one pooled connection.

        Why not redis-py's pipeline: it spends about ten microseconds of Python per command
        (argument encoding, the command stack, a SCRIPT EXISTS round trip per execute), and a
        batch is a few thousand script calls. Scripts the server does not know (a restarted
        Redis) are loaded and the whole pipeline is sent again: the scripts skip what they
        already applied.
        """
        for attempt in (1, 2):
            replies = await resp.send(self._redis, commands)
            if not any(isinstance(r, NoScriptError) for r in replies):
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                return replies
            if attempt == 1:
                await self._scripts.load(self._redis)
        raise NoScriptError("scripts missing right after loading them")

    async def _register_devices(
        self, batches: Sequence[DeviceBatch], results: Sequence[ApplyResult]
    ) -> None:
        """Add newly seen devices to their client's device set (another slot than the device)."""
        new = {
            (b.client_id, b.device_id)
            for b, r in zip(batches, results, strict=True)
            if not r.rejected and (b.client_id, b.device_id) not in self._known_devices
        }
        if not new:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for client_id, device_id in sorted(new):
                pipe.sadd(keys.client_devices(client_id), device_id)
            await pipe.execute()
        if len(self._known_devices) + len(new) > _KNOWN_DEVICES_LIMIT:
            self._known_devices.clear()
        self._known_devices |= new
