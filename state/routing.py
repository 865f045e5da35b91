"""Packed commands sent to a Redis Cluster: each to the primary that owns its key's slot.

The slot map, the nodes and their connections are redis-py's (``redis.asyncio.RedisCluster``):
this module only groups already packed commands (``state/resp.py``) by the node the library
names for their slot, sends each group in one write on one of that node's connections, all
groups at once, and puts the replies back in order. Redirects are the library's too: a
``MOVED`` updates its slot map (``NodesManager.move_slot``) and the command goes again to the
new owner; an ``ASK`` (a slot being migrated) sends ``ASKING`` and the command to the node named,
once, without changing the map. A command that was redirected was not executed, so sending it
again is safe for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, RedisError

from state import resp
from state.errors import UNREACHABLE

REDIRECTS = 3
"""Redirects one command may follow before the send fails (a slot moved twice meanwhile)."""


class TooManyRedirects(RuntimeError):
    """A command was still redirected after ``REDIRECTS`` tries."""


@dataclass(frozen=True, slots=True)
class Routed:
    """One packed command and the key whose slot decides where it goes."""

    key: str
    command: bytes


async def send_routed(
    cluster: RedisCluster, commands: Sequence[Routed], raw_from: int | None = None
) -> list[Any]:
    """Every reply of ``commands``, in order (error replies in their place), each command sent
    to the primary of its key's slot; one round trip per node, the nodes at the same time. The
    replies from index ``raw_from`` on are bytes as Redis sent them (``resp.send``'s). The
    commands of a node that cannot be reached get its error (a ``ConnectionError`` or
    ``TimeoutError``) as their reply: the others' replies still count."""
    await cluster.initialize()  # a no-op once the library has its slot map
    replies: list[Any] = [None] * len(commands)
    pending: list[tuple[int, ClusterNode | None]] = [(i, None) for i in range(len(commands))]
    manager = cluster.nodes_manager
    for _ in range(1 + REDIRECTS):
        groups: dict[ClusterNode, list[int]] = {}
        asking: dict[ClusterNode, list[int]] = {}
        for index, ask_node in pending:
            if ask_node is not None:
                asking.setdefault(ask_node, []).append(index)
                continue
            node = manager.get_node_from_slot(cluster.keyslot(commands[index].key))
            groups.setdefault(node, []).append(index)
        sends = [(node, indexes, False) for node, indexes in groups.items()]
        sends += [(node, indexes, True) for node, indexes in asking.items()]
        answers = await _gather(sends, commands, raw_from)
        failures = [found for found in answers if isinstance(found, BaseException)]
        for failure in failures:
            if not isinstance(failure, UNREACHABLE):
                raise failure
        if failures:
            # A primary gone (killed, frozen, or failed over to its replica): the next send
            # must learn the new map from the nodes still there.
            await _refresh_map(cluster)
        pending = []
        moved = False
        for (_, indexes, _), found in zip(sends, answers, strict=True):
            if isinstance(found, BaseException):  # the node's commands: its failure, each
                for index in indexes:
                    replies[index] = found
                continue
            for index, reply in zip(indexes, found, strict=True):
                if isinstance(reply, MovedError):
                    await manager.move_slot(reply)
                    pending.append((index, None))
                    moved = True
                elif isinstance(reply, AskError):
                    pending.append((index, _node_named(cluster, reply.host, reply.port)))
                else:
                    replies[index] = reply
        if moved:
            # A slot moved (a failover, a resharding): its neighbours most likely too. The
            # library's move_slot fixed the one slot; the whole map is asked for again, so the
            # next round trip does not learn the rest one redirect at a time.
            await _refresh_map(cluster)
        if not pending:
            return replies
    raise TooManyRedirects(f"{len(pending)} commands still redirected after {REDIRECTS} tries")


async def _gather(
    sends: list[tuple[ClusterNode, list[int], bool]],
    commands: Sequence[Routed],
    raw_from: int | None,
) -> list[list[Any] | BaseException]:
    """Each node's part of a send, all at once; a node that fails gives its exception."""
    return await asyncio.gather(
        *(
            _exchange(
                node,
                [commands[i].command for i in indexes],
                ask,
                [raw_from is not None and i >= raw_from for i in indexes],
            )
            for node, indexes, ask in sends
        ),
        return_exceptions=True,
    )


async def _refresh_map(cluster: RedisCluster) -> None:
    """Ask the nodes still reachable for the slot map again (the library's own refresh); when
    none answers, the next send tries again."""
    with contextlib.suppress(RedisError, OSError):
        await cluster.nodes_manager.initialize()


def _node_named(cluster: RedisCluster, host: str, port: int) -> ClusterNode:
    """The library's node for ``host:port`` (one it does not know yet is added to its cache)."""
    node = cluster.get_node(host=host, port=port)
    if node is None:
        manager = cluster.nodes_manager
        node = ClusterNode(host, port, **manager.connection_kwargs)
        manager.set_nodes(manager.nodes_cache, {node.name: node})
    return node


_ASKING = resp.command("ASKING")
_PING = resp.command("PING")


async def answers(node: ClusterNode) -> bool:
    """Whether ``node`` answers a ``PING`` within its connections' timeout."""
    try:
        (reply,) = await _exchange(node, [_PING], False, [False])
    except (RedisError, OSError):
        return False
    return not isinstance(reply, Exception)


async def _exchange(
    node: ClusterNode, commands: list[bytes], ask: bool, raw: list[bool]
) -> list[Any]:
    """One write of ``commands`` on one of the node's connections, and their replies, within
    the connection's socket timeout (``raw``: which to leave undecoded), as ``resp.send``
    exchanges them. With ``ask``, each command follows an ``ASKING`` (whose reply is
    dropped)."""
    if ask:
        commands = [part for c in commands for part in (_ASKING, c)]
        raw = [part for undecoded in raw for part in (False, undecoded)]
    replies: list[Any] = []

    def answered(_: int, found: list[Any]) -> None:
        replies.extend(found[1::2] if ask else found)

    async def read(connection: Any, count: int, found: list[Any]) -> None:
        await resp.read_within_timeout(connection, count, found, raw)

    connection = node.acquire_connection()
    await resp.exchange_on(connection, node.release, 1, lambda _: commands, answered, read)
    return replies
