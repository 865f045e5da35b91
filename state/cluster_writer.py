"""The writer on a Redis Cluster: the same batches, scripts and guarantees as ``Writer``, each
round trip split by the primary that owns each key's slot (``state/routing.py``).

What changes on a cluster, and why:

- *A batch marker per primary.* A marker vouches for the scripts sent before it on the same
  node only: Redis logs one node's writes in order, not the cluster's. Each round trip reads
  and sets a marker on every primary (``da:{n:<k>}:batch:<writer>``, with ``k`` searched so
  that the key's slot is that primary's), so a primary that restarted without its last second,
  or a replica promoted without the primary's last writes, is caught like one Redis is.
- *Applied positions on every primary.* A position vouches for the writes of its own node
  only, so each batch advances the partition's position on every primary
  (``da:{n:<k>}:applied:<topic>:<p>``), and the position the worker resumes from is the lowest
  a primary holds: a node that lost writes holds an older one, and the gap repair re-reads
  from there (the scripts skip what the other nodes still hold). A primary that holds none
  (one that lost every write since its position was created, or one new to the cluster) sends
  the worker back to the start of the partition: slow, once, and exact.
- *Round trips one after the other.* Each goes to every primary at once; the next is sent once
  all have answered (one Redis overlaps two).
- *A primary that cannot be reached pauses only its own slots.* Its commands are not sent (their
  devices are *deferred*), the batch goes on with the other primaries, and the positions on the
  unreachable primary (and on any primary that owns one of its slots meanwhile) do not advance:
  when it answers again, its position is behind the batches that went on without it, and the
  gap repair reads them again from Kafka; every other primary skips what it holds. The clients'
  aggregate calls wait too, while any slot is deferred: their offsets are kept per client, so a
  later call counted before an earlier one would make the earlier one look like a replay. A
  primary found unreachable is left out of the following batches until it answers a ``PING``
  (``_take_back``), so a frozen node costs one timeout, not one per batch. Only when every
  primary is unreachable does the batch wait, as on one Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import keys, resp
from state.errors import StoreUnavailable, unavailable_on_failure
from state.routing import Routed, answers, send_routed
from state.writer import (
    _MARKER_TTL_MS,
    DEFERRED,
    ApplyProgress,
    PackedBatch,
    Positions,
    Writer,
    _changed_devices,
    _ScriptsMissing,
)

log = logging.getLogger(__name__)

_TAG_SEARCH = 100_000
"""Tags tried for a primary's keys: with 16,384 slots over a few primaries, a few dozen do."""
_PROBE_EVERY_S = 0.5
"""How often a primary left out is sent a ``PING`` to see whether it is back (at the start of
a batch: between batches nothing needs it)."""
_PROBE_TIMEOUT_S = 0.2
"""How long that ``PING`` may take."""
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError)
"""Replies that say a command's primary cannot be reached now (or no node serves its slot)."""


class ClusterWriter(Writer):
    """``Writer`` for a Redis Cluster (``state/connection.connect`` picks it)."""

    def __init__(self, redis: RedisCluster, *, fleet: bool = True) -> None:
        super().__init__(redis, fleet=fleet)  # type: ignore[arg-type]
        self._cluster = redis
        self._writer_id = self._marker.rsplit(":", 1)[1]
        self._tags: dict[str, str] = {}
        self._left_out: dict[str, _LeftOut] = {}
        """Primaries (by name) found unreachable, until a probe of theirs is answered."""

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the lowest position a reachable primary holds (None: one holds none).
        A primary left out (unreachable) does not count: its devices wait, and its position
        sends the worker back once it answers again."""
        if not partitions:
            return {}
        with unavailable_on_failure():
            await self._cluster.initialize()
        await self._take_back()
        tags = {n: t for n, t in self._primary_tags().items() if n not in self._left_out}
        commands = [
            Routed(
                tag, resp.command("MGET", *(keys.node_applied(tag, topic, p) for p in partitions))
            )
            for tag in tags.values()
        ]
        with unavailable_on_failure():
            per_node = await send_routed(self._cluster, commands)
        reachable = []
        for name, values in zip(tags, per_node, strict=True):
            if isinstance(values, _UNREACHABLE):
                self._leave_out(name, values)
            elif isinstance(values, Exception):
                raise values
            else:
                reachable.append(values)
        if not reachable:
            raise StoreUnavailable("no primary of the cluster can be reached")
        return {p: _lowest(values[i] for values in reachable) for i, p in enumerate(partitions)}

    async def _stream(
        self,
        trips: list[list[bytes]],
        trip_keys: list[list[str]],
        first: int,
        progress: ApplyProgress,
        record: Callable[[int, list[Any], ApplyProgress], None],
    ) -> None:
        start = progress.trips_done - first
        if not 0 <= start < len(trips):
            return
        await self._cluster.initialize()
        for i in range(start, len(trips)):
            index = first + i
            scripts = [Routed(k, c) for k, c in zip(trip_keys[i], trips[i], strict=True)]
            replies = await self._trip_on_primaries(index, scripts, progress)
            _raise_errors(replies)
            record(i, replies, progress)
            progress.trips_done = index + 1

    async def _trip_on_primaries(
        self,
        index: int,
        commands: list[Routed],
        progress: ApplyProgress,
        closing: list[Routed] | None = None,
    ) -> list[Any]:
        """Round trip ``index`` on every primary in use: read its marker back (after the first
        round trip), ``commands``, then set its marker; or, for the batch's last round trip
        (with ``closing``, maybe empty), those commands, then delete it. The replies of
        ``commands`` (and ``closing``), in order: ``DEFERRED`` for those of a slot left out."""
        tags = self._tags_in_use(progress)
        if not tags:  # nothing to do but wait, as on one Redis; then from the start
            progress.restart()
            raise StoreUnavailable("no primary of the cluster can be reached")
        markers = [keys.node_batch_marker(tag, self._writer_id) for tag in tags.values()]
        checks = [Routed(m, resp.command("GET", m)) for m in markers] if index > 0 else []
        if closing is not None:
            ends = [Routed(m, resp.command("DEL", m)) for m in markers]
        else:
            value = f"{progress.batch_id}:{index}"
            ends = [Routed(m, resp.command("SET", m, value, "PX", _MARKER_TTL_MS)) for m in markers]
        body = [*commands, *(closing or [])]
        sent: Sequence[int] = range(len(body))
        if down := progress.down_slots:
            sent = [i for i, c in enumerate(body) if self._cluster.keyslot(c.key) not in down]
        routed = [*checks, *(body[i] for i in sent), *ends]
        answered = await send_routed(self._cluster, routed)
        progress.down_slots |= self._failures(answered, routed)
        for found in answered[: len(checks)]:
            if not isinstance(found, _UNREACHABLE):
                self._check_marker(found, index, progress)
        replies: list[Any] = [DEFERRED] * len(body)
        for i, reply in zip(sent, answered[len(checks) : len(answered) - len(ends)], strict=True):
            replies[i] = DEFERRED if isinstance(reply, _UNREACHABLE) else reply
        return replies

    def _tags_in_use(self, progress: ApplyProgress) -> dict[str, str]:
        """The primaries (and their tags) this batch still uses: those owning no slot left out
        (``progress.down_slots``, to which the slots of the primaries left out are added)."""
        tags = self._primary_tags()
        if not self._left_out and not progress.down_slots:
            return tags
        slots = self._cluster.nodes_manager.slots_cache
        progress.down_slots |= {
            s for s, nodes in slots.items() if nodes and nodes[0].name in self._left_out
        }
        owners = {slots[s][0].name for s in progress.down_slots if slots.get(s)}
        return {name: tag for name, tag in tags.items() if name not in owners}

    def _failures(self, replies: list[Any], sent: list[Routed]) -> set[int]:
        """The slots of the commands whose primary could not be reached (now left out)."""
        failed: set[int] = set()
        slots = self._cluster.nodes_manager.slots_cache
        for routed, reply in zip(sent, replies, strict=True):
            if isinstance(reply, _UNREACHABLE):
                slot = self._cluster.keyslot(routed.key)
                failed.add(slot)
                if owner := slots.get(slot):
                    self._leave_out(owner[0].name, reply)
        return failed

    def leaving_out(self) -> bool:
        return bool(self._left_out)

    def _holding(self, progress: ApplyProgress) -> bool:
        """The clients' calls wait while a slot is left out: see the module's docstring."""
        return bool(progress.down_slots)

    def _leave_out(self, name: str, error: BaseException) -> None:
        if name not in self._left_out:
            log.warning(
                "Redis Cluster primary %s unreachable (%s): its devices wait, the others go on",
                name, error,
            )  # fmt: skip
            self._left_out[name] = _LeftOut()

    async def _take_back(self) -> None:
        """Take back the primaries left out that answer a ``PING`` now (one each
        ``_PROBE_EVERY_S`` at most, waiting ``_PROBE_TIMEOUT_S`` at most: a frozen node costs
        the batches that little) or own no slot any more (failed over: their slots' new owner
        is used, and its positions tell what it lacks)."""
        slots = self._cluster.nodes_manager.slots_cache
        for name, left in list(self._left_out.items()):
            node = next((nodes[0] for nodes in slots.values() if nodes and nodes[0].name == name),
                        None)  # fmt: skip
            if node is not None:
                if time.monotonic() - left.probed < _PROBE_EVERY_S:
                    continue
                left.probed = time.monotonic()
                try:
                    if not await asyncio.wait_for(answers(node), _PROBE_TIMEOUT_S):
                        continue
                except TimeoutError:
                    continue
            log.info("Redis Cluster primary %s is back: its devices catch up", name)
            del self._left_out[name]

    async def _last_trip(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress, index: int
    ) -> None:
        await self._cluster.initialize()
        new_devices = self._new_devices(packed.batches, progress.devices)
        commands = [
            Routed(keys.client_devices(c), resp.command("SADD", keys.client_devices(c), d))
            for c, d in sorted(new_devices)
        ]
        partitions = sorted(positions.spans)
        tags = list(self._tags_in_use(progress).values())
        sha = self._scripts.advance_applied.sha
        for tag in tags:
            for p in partitions:
                span = positions.spans[p]
                key = keys.node_applied(tag, positions.topic, p)
                after = -2 if span.after is None else span.after
                command = resp.command(
                    "EVALSHA", sha, 1, key, span.first, span.last, int(span.force), after
                )
                commands.append(Routed(key, command))
        closing: list[Routed] = []
        changed = _changed_devices(packed.batches, progress.devices)
        if changed:
            message = resp.command("PUBLISH", keys.CHANGES_CHANNEL, " ".join(changed))
            closing.append(Routed(keys.CHANGES_CHANNEL, message))
        replies = await self._trip_on_primaries(index, commands, progress, closing)
        _raise_errors(replies)
        added = replies[: len(new_devices)]
        self._remember({d for d, r in zip(sorted(new_devices), added, strict=True)
                        if r is not DEFERRED})  # fmt: skip
        advanced = replies[len(new_devices) : len(new_devices) + len(tags) * len(partitions)]
        progress.previous = {
            p: _lowest(
                found
                for n in range(len(tags))
                if (found := advanced[n * len(partitions) + i]) is not DEFERRED
            )
            for i, p in enumerate(partitions)
        }
        progress.trips_done = index + 1

    def _primary_tags(self) -> dict[str, str]:
        """Per primary (by name), a hash tag whose slot it owns now."""
        out = {}
        for node in self._cluster.get_primaries():
            tag = self._tags.get(node.name)
            if tag is None or _owner(self._cluster, tag) != node:
                tag = self._tags[node.name] = _tag_for(self._cluster, node)
            out[node.name] = tag
        return out


@dataclass(slots=True)
class _LeftOut:
    """A primary left out, and when a ``PING`` was last sent to see whether it is back."""

    probed: float = field(default_factory=time.monotonic)


def _raise_errors(replies: list[Any]) -> None:
    """Scripts Redis does not know (it restarted: they are loaded, and the batch resumes), or
    the first error reply."""
    if any(isinstance(r, NoScriptError) for r in replies):
        raise _ScriptsMissing
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _owner(cluster: RedisCluster, tag: str) -> ClusterNode:
    return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(tag))


def _tag_for(cluster: RedisCluster, node: ClusterNode) -> str:
    for number in range(_TAG_SEARCH):
        tag = keys.node_tag(number)
        if _owner(cluster, tag) == node:
            return tag
    raise RuntimeError(f"no hash tag found for {node.name}")


def _lowest(values: Iterable[Any]) -> int | None:
    """The lowest of positions as the primaries hold them; None (nothing applied) as soon as
    one holds none (-1 or None): a primary that lost every write, or one new to the cluster,
    is read again from the start of the partition (the scripts skip what it still has)."""
    found = [None if v is None or int(v) < 0 else int(v) for v in values]
    return None if not found or None in found else min(v for v in found if v is not None)


def new_writer(redis: Redis | RedisCluster, *, fleet: bool = True) -> Writer:
    """The writer for ``redis``: ``ClusterWriter`` on a Redis Cluster, else ``Writer``."""
    if isinstance(redis, RedisCluster):
        return ClusterWriter(redis, fleet=fleet)
    return Writer(redis, fleet=fleet)
