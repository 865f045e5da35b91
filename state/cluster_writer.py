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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import keys, resp
from state.errors import unavailable_on_failure
from state.routing import Routed, send_routed
from state.writer import (
    _MARKER_TTL_MS,
    ApplyProgress,
    PackedBatch,
    Positions,
    Writer,
    _changed_devices,
    _ScriptsMissing,
)

_TAG_SEARCH = 100_000
"""Tags tried for a primary's keys: with 16,384 slots over a few primaries, a few dozen do."""


class ClusterWriter(Writer):
    """``Writer`` for a Redis Cluster (``state/connection.connect`` picks it)."""

    def __init__(self, redis: RedisCluster, *, fleet: bool = True) -> None:
        super().__init__(redis, fleet=fleet)  # type: ignore[arg-type]
        self._cluster = redis
        self._writer_id = self._marker.rsplit(":", 1)[1]
        self._tags: dict[str, str] = {}

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the lowest position a primary holds (None: none holds one)."""
        if not partitions:
            return {}
        await self._cluster.initialize()
        commands = [
            Routed(
                tag, resp.command("MGET", *(keys.node_applied(tag, topic, p) for p in partitions))
            )
            for tag in self._primary_tags().values()
        ]
        with unavailable_on_failure():
            per_node = await send_routed(self._cluster, commands)
            _raise_unreachable(per_node)
        return {p: _lowest(values[i] for values in per_node) for i, p in enumerate(partitions)}

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
        """Round trip ``index`` on every primary: read its marker back (after the first round
        trip), ``commands``, then set its marker; or, for the batch's last round trip (with
        ``closing``, maybe empty), those commands, then delete it. The replies of ``commands``
        (and ``closing``), in order."""
        markers = [
            keys.node_batch_marker(tag, self._writer_id) for tag in self._primary_tags().values()
        ]
        checks = [Routed(m, resp.command("GET", m)) for m in markers] if index > 0 else []
        if closing is not None:
            ends = [Routed(m, resp.command("DEL", m)) for m in markers]
        else:
            value = f"{progress.batch_id}:{index}"
            ends = [Routed(m, resp.command("SET", m, value, "PX", _MARKER_TTL_MS)) for m in markers]
        replies = await send_routed(self._cluster, [*checks, *commands, *(closing or []), *ends])
        _raise_unreachable(replies)
        for found in replies[: len(checks)]:
            self._check_marker(found, index, progress)
        return replies[len(checks) : len(replies) - len(ends)]

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
        tags = list(self._primary_tags().values())
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
        self._remember(new_devices)
        advanced = replies[len(new_devices) : len(new_devices) + len(tags) * len(partitions)]
        progress.previous = {
            p: _lowest(advanced[n * len(partitions) + i] for n in range(len(tags)))
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


def _raise_errors(replies: list[Any]) -> None:
    """Scripts Redis does not know (it restarted: they are loaded, and the batch resumes), or
    the first error reply."""
    if any(isinstance(r, NoScriptError) for r in replies):
        raise _ScriptsMissing
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _raise_unreachable(replies: list[Any]) -> None:
    """A primary that could not be reached fails the round trip (its error is raised)."""
    for reply in replies:
        if isinstance(reply, (RedisConnectionError, RedisTimeoutError, OSError)):
            raise reply


def _owner(cluster: RedisCluster, tag: str) -> ClusterNode:
    return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(tag))


def _tag_for(cluster: RedisCluster, node: ClusterNode) -> str:
    for number in range(_TAG_SEARCH):
        tag = keys.node_tag(number)
        if _owner(cluster, tag) == node:
            return tag
    raise RuntimeError(f"no hash tag found for {node.name}")


def _lowest(values: Any) -> int | None:
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
