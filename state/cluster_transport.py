"""The transport on a Redis Cluster: each round trip split by the primary that owns each key's
slot (``state/routing.py``); the batches, scripts and guarantees are the writer's
(``state/writer.py``) and the reader's (``state/reader.py``), the same as on one Redis.

What changes on a cluster, and why:

- *A batch marker per primary.* A marker vouches for the scripts sent before it on the same
  node only: Redis logs one node's writes in order, not the cluster's. Each round trip reads
  and sets a marker on every primary in use (``da:{n:<k>}:batch:<writer>``, with ``k`` searched
  so that the key's slot is that primary's, ``Primary.tag``), so a primary that restarted
  without its last second, or a replica promoted without the primary's last writes, is caught
  like one Redis is.
- *Applied positions on every primary.* A position vouches for the writes of its own node
  only, so each batch advances the partition's position on every primary
  (``da:{n:<k>}:applied:<topic>:<p>``), and the position the worker resumes from is the lowest
  a primary holds: a node that lost writes holds an older one, and the gap repair re-reads
  from there (the scripts skip what the other nodes still hold). A primary that holds none
  (one that lost every write since its position was created, or one new to the cluster) sends
  the worker back to the start of the partition: slow, once, and exact.
- *Round trips one after the other* (``window`` 1). Each goes to every primary at once; the
  next is sent once all have answered (one Redis overlaps two).
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
- *A registry read may be answered from memory.* The reader's round trips (``send``) read a
  device's keys and, beside them, its client's (whether it exists, its device set), which live
  in another slot: when the primary of those cannot be reached, their last answer, up to
  ``STALE_S`` old, stands in, so that a device on a healthy node still answers while the node
  of its client is down. One Redis needs none: it answers whole or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from state import keys
from state.errors import UNREACHABLE, StoreUnavailable
from state.routing import Routed, answers, send_routed
from state.transport import DEFERRED, Answered, OneRedis, Primary, Transport, Trip

log = logging.getLogger(__name__)

_TAG_SEARCH = 100_000
"""Tags tried for a primary's keys: with 16,384 slots over a few primaries, a few dozen do."""
_PROBE_EVERY_S = 0.5
"""How often a primary left out is sent a ``PING`` to see whether it is back (at the start of
a batch: between batches nothing needs it)."""
_PROBE_TIMEOUT_S = 0.2
"""How long that ``PING`` may take."""
STALE_S = 60.0
"""How old a read's last answer may be to stand in while its primary is unreachable."""
_STALE_KEPT = 4096
"""Reads whose last answer is kept (the oldest kept is dropped first)."""


class ClusterTransport:
    """The transport of a Redis Cluster (``state/transport.Transport``)."""

    window = 1

    def __init__(self, cluster: RedisCluster, clock: Callable[[], float] = time.monotonic) -> None:
        self._cluster = cluster
        self._clock = clock
        self._tags: dict[str, str] = {}
        self._left_out: dict[str, _LeftOut] = {}
        """Primaries (by name) found unreachable, until a probe of theirs is answered."""
        self._stale: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        """The reads sent with ``stale_ok``: a command -> its last answer and when (``send``)."""

    @property
    def store(self) -> RedisCluster:
        return self._cluster

    def in_use(self, left_out: set[int]) -> list[Primary]:
        """The primaries owning no slot left out (``left_out``, to which the slots of the
        primaries left out are added)."""
        tags = self._primary_tags()
        if self._left_out or left_out:
            slots = self._cluster.nodes_manager.slots_cache
            gone = self._left_out
            left_out |= {s for s, nodes in slots.items() if nodes and nodes[0].name in gone}
            owners = {slots[s][0].name for s in left_out if slots.get(s)}
            tags = {name: tag for name, tag in tags.items() if name not in owners}
        return [Primary(name, tag) for name, tag in tags.items()]

    async def stream(
        self, count: int, trip: Callable[[int], Trip], answered: Answered, left_out: set[int]
    ) -> None:
        await self._cluster.initialize()
        for index in range(count):
            answered(index, await self._send(trip(index), left_out))

    async def _send(self, trip: Trip, left_out: set[int]) -> list[Any]:
        """The replies of ``trip``: ``DEFERRED`` for the commands of a slot left out (not
        sent) or whose primary could not be reached (its slot is left out now)."""
        sent: Sequence[int] = range(len(trip.commands))
        if left_out:
            keyslot = self._cluster.keyslot
            sent = [i for i, key in enumerate(trip.keys) if keyslot(key) not in left_out]
        routed = [Routed(trip.keys[i], trip.commands[i]) for i in sent]
        answered = await send_routed(self._cluster, routed)
        left_out |= self._failures(answered, routed)
        replies: list[Any] = [DEFERRED] * len(trip.commands)
        for i, reply in zip(sent, answered, strict=True):
            replies[i] = DEFERRED if isinstance(reply, UNREACHABLE) else reply
        return replies

    async def read_primaries(self, command: Callable[[Primary], bytes]) -> list[Any]:
        """A primary left out (unreachable) is not asked: its devices wait, and its positions
        send the worker back once it answers again."""
        await self._cluster.initialize()
        await self._take_back()
        tags = {n: t for n, t in self._primary_tags().items() if n not in self._left_out}
        commands = [Routed(tag, command(Primary(name, tag))) for name, tag in tags.items()]
        per_node = await send_routed(self._cluster, commands)
        reachable = []
        for name, values in zip(tags, per_node, strict=True):
            if isinstance(values, UNREACHABLE):
                self._leave_out(name, values)
            else:
                reachable.append(values)
        if not reachable:
            raise StoreUnavailable("no primary of the cluster can be reached")
        return reachable

    def leaving_out(self) -> bool:
        return bool(self._left_out)

    async def send(
        self,
        commands: Sequence[bytes],
        routes: Sequence[str],
        raw_from: int | None = None,
        stale_ok: Sequence[int] = (),
    ) -> list[Any]:
        """A primary that cannot be reached is not left out by the reader's reads: the next
        request tries it again, as one Redis's would."""
        routed = [Routed(k, c) for k, c in zip(routes, commands, strict=True)]
        replies = await send_routed(self._cluster, routed, raw_from=raw_from)
        if stale_ok:
            self._stand_in(commands, replies, stale_ok)
        return replies

    def _stand_in(
        self, commands: Sequence[bytes], replies: list[Any], reads: Sequence[int]
    ) -> None:
        """Remember the answers of the ``reads`` (indexes in ``commands``), and put the last
        one, up to ``STALE_S`` old, in place of the error of a read whose primary could not be
        reached."""
        now = self._clock()
        for i in reads:
            known = self._stale.get(commands[i])
            if isinstance(replies[i], UNREACHABLE):
                if known is not None and now - known[1] <= STALE_S:
                    replies[i] = known[0]
            elif not isinstance(replies[i], Exception):
                self._stale[commands[i]] = (replies[i], now)
                if len(self._stale) > _STALE_KEPT:
                    self._stale.popitem(last=False)

    def _failures(self, replies: list[Any], sent: list[Routed]) -> set[int]:
        """The slots of the commands whose primary could not be reached (now left out)."""
        failed: set[int] = set()
        slots = self._cluster.nodes_manager.slots_cache
        for routed, reply in zip(sent, replies, strict=True):
            if isinstance(reply, UNREACHABLE):
                slot = self._cluster.keyslot(routed.key)
                failed.add(slot)
                if owner := slots.get(slot):
                    self._leave_out(owner[0].name, reply)
        return failed

    def _leave_out(self, name: str, error: BaseException) -> None:
        if name not in self._left_out:
            log.warning(
                "Redis Cluster primary %s unreachable (%s): its devices wait, the others go on",
                name, error,
            )  # fmt: skip
            self._left_out[name] = _LeftOut(self._clock())

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
                if self._clock() - left.probed < _PROBE_EVERY_S:
                    continue
                left.probed = self._clock()
                try:
                    if not await asyncio.wait_for(answers(node), _PROBE_TIMEOUT_S):
                        continue
                except TimeoutError:
                    continue
            log.info("Redis Cluster primary %s is back: its devices catch up", name)
            del self._left_out[name]

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

    probed: float


def _owner(cluster: RedisCluster, tag: str) -> ClusterNode:
    return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(tag))


def _tag_for(cluster: RedisCluster, node: ClusterNode) -> str:
    for number in range(_TAG_SEARCH):
        tag = keys.node_tag(number)
        if _owner(cluster, tag) == node:
            return tag
    raise RuntimeError(f"no hash tag found for {node.name}")


def transport_for(redis: Redis | RedisCluster) -> Transport:
    """The transport of ``redis``: a cluster's or one Redis's (the writer's and the reader's
    one choice between them)."""
    return ClusterTransport(redis) if isinstance(redis, RedisCluster) else OneRedis(redis)
