"""How state/ reaches the store: one contract, for one Redis (here) and for a Redis Cluster
(``state/cluster_transport.py``; ``transport_for`` picks one), used by the writer and the reader.

A transport sends round trips of packed commands (``state/resp.py``), each command with the
key that routes it, and hands back their replies in order, error replies in their place. It
knows "the primaries in use": one Redis is one primary; a cluster's are those it can reach.
A command of the writer whose primary cannot be reached gets ``DEFERRED`` as its reply (only
on a cluster: one Redis is reached whole or raises), and its part of the store is added to the
batch's ``left_out`` set: the batch leaves it alone until it restarts. A command of the reader
(``send``) whose primary cannot be reached gets that primary's error as its reply (one of
``state.errors.UNREACHABLE``), or, for a read whose last answer may stand in, that answer.
The round-trip protocol itself (batch markers, positions) is the writer's, written once over
the primaries (``state/writer.py``); the NOSCRIPT reload, the error replies and the bound on
round trips in flight are the reader's, written once over ``send`` (``state/reader.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from state import keys, resp


class _Deferred:
    """The reply of a command not sent: its primary could not be reached."""

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = _Deferred()


@dataclass(frozen=True, slots=True)
class Trip:
    """One round trip: packed commands, and the key that routes each (its slot's primary)."""

    commands: list[bytes]
    keys: list[str]


@dataclass(frozen=True, slots=True)
class Primary:
    """A primary of the store and the writer's own keys on it: a cluster's carry a hash tag
    of one of its slots (``keys.node_tag``); one Redis's carry none."""

    name: str
    tag: str | None = None

    def batch_marker(self, writer_id: str) -> str:
        if self.tag is None:
            return keys.batch_marker(writer_id)
        return keys.node_batch_marker(self.tag, writer_id)

    def applied(self, topic: str, partition: int) -> str:
        if self.tag is None:
            return keys.applied(topic, partition)
        return keys.node_applied(self.tag, topic, partition)


Answered = Callable[[int, list[Any]], None]
"""``answered(index, replies)``: a round trip's replies, in the order of its commands."""


class Transport(Protocol):
    """Sends the writer's and the reader's round trips to one Redis or to a cluster's
    primaries."""

    @property
    def store(self) -> Redis | RedisCluster:
        """The client (the scripts are registered and loaded through it)."""
        ...

    @property
    def window(self) -> int:
        """Round trips in flight at a time: the next is sent before the last is answered."""
        ...

    def in_use(self, left_out: set[int]) -> list[Primary]:
        """The primaries a batch that left out ``left_out`` still writes to."""
        ...

    async def stream(
        self, count: int, trip: Callable[[int], Trip], answered: Answered, left_out: set[int]
    ) -> None:
        """Send ``count`` round trips in order (``trip(index)``, asked for just before it is
        sent, at most ``window`` unanswered), and hand each one's replies to ``answered``.
        Patient: slow is not down (``resp.send_patiently``)."""
        ...

    async def read_primaries(self, command: Callable[[Primary], bytes]) -> list[Any]:
        """``command(primary)`` on every primary that can be reached, and the replies of those
        that answered; ``StoreUnavailable`` when none does."""
        ...

    def leaving_out(self) -> bool:
        """Whether a primary is left out for now, unreachable."""
        ...

    async def send(
        self,
        commands: Sequence[bytes],
        routes: Sequence[str],
        raw_from: int | None = None,
        stale_ok: Sequence[int] = (),
    ) -> list[Any]:
        """Every reply of ``commands``, each routed by its key in ``routes``, sent at once and
        read within the socket timeout (``resp.send``: for small, bounded requests, the API's
        503 within 2 s); the replies from ``raw_from`` on are bytes as Redis sent them. The
        commands of a primary that cannot be reached get its error as their reply (an
        ``UNREACHABLE``), but those at ``stale_ok`` (reads of what seldom changes: the
        registry) get their last answer instead while it is recent enough. Nothing is left
        out by it: it is the reader's, not a batch's."""
        ...


class OneRedis:
    """The transport of one Redis: one primary, two round trips in flight on one connection
    (Redis works on the next while the worker reads the last one's replies)."""

    window = 2

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._primaries = [Primary("redis")]

    @property
    def store(self) -> Redis:
        return self._redis

    def in_use(self, left_out: set[int]) -> list[Primary]:
        return self._primaries

    async def stream(
        self, count: int, trip: Callable[[int], Trip], answered: Answered, left_out: set[int]
    ) -> None:
        def commands(index: int) -> Sequence[bytes]:
            return trip(index).commands

        await resp.stream_patiently(self._redis, count, commands, answered, self.window)

    async def read_primaries(self, command: Callable[[Primary], bytes]) -> list[Any]:
        return await resp.send_patiently(self._redis, [command(p) for p in self._primaries])

    def leaving_out(self) -> bool:
        return False

    async def send(
        self,
        commands: Sequence[bytes],
        routes: Sequence[str],
        raw_from: int | None = None,
        stale_ok: Sequence[int] = (),
    ) -> list[Any]:
        """One Redis is reached whole or not at all (``resp.send`` raises): the routes have no
        use, and no last answer could stand in for a part of it."""
        return await resp.send(self._redis, commands, raw_from)
