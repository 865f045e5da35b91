"""Redis commands packed by hand in the Redis protocol (RESP), and sent in one write.

Why not redis-py's command builder and pipeline: they spend microseconds of Python per argument
(encoding, the command stack), and a pipeline's ``execute`` asks ``SCRIPT EXISTS`` for its
scripts first, a second round trip. The writer sends thousands of script arguments per batch and
the API about a hundred per request, so both pack their commands here and send them at once.

A command is an array of bulk strings: ``*<count>\\r\\n`` then ``$<bytes>\\r\\n<data>\\r\\n`` per
argument, the length in bytes of the UTF-8 encoding.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int | bytes
"""A command argument: text (sent as UTF-8), an integer (sent in decimal), or raw bytes."""


def header(count: int) -> bytes:
    """The start of a command of ``count`` arguments (its bulk strings follow)."""
    return b"*%d\r\n" % count


def bulk(item: Arg) -> bytes:
    data = (
        item.encode() if isinstance(item, str) else b"%d" % item if isinstance(item, int) else item
    )
    return b"$%d\r\n%s\r\n" % (len(data), data)


def bulks(items: Iterable[Arg]) -> bytes:
    return b"".join(map(bulk, items))


def command(*args: Arg) -> bytes:
    """One whole command, e.g. ``command("HGET", key, "client")``."""
    return header(len(args)) + bulks(args)


def evalsha(sha: str, script_keys: Sequence[str], args: Sequence[str | int]) -> bytes:
    """One EVALSHA in the Redis protocol (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n" % (3 + len(script_keys) + len(args))]
    parts.append(sha.encode())
    numkeys = b"%d" % len(script_keys)
    parts.append(b"\r\n$%d\r\n%s\r\n" % (len(numkeys), numkeys))
    for item in (*script_keys, *args):
        data = item.encode() if isinstance(item, str) else b"%d" % item
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PrefixedBulks:
    """The bulk strings ``prefix + suffix`` for each of a fixed list of suffixes, packed for any
    prefix: the day keys of one device, whose suffixes (the days) are known before the device.

    When every suffix has the same length (ISO days do), all the bulk strings share one length
    line, and a whole list is one ``bytes.join`` whatever its size.
    """

    __slots__ = ("_size", "_suffixes")

    def __init__(self, suffixes: Iterable[str]) -> None:
        self._suffixes = tuple(s.encode() for s in suffixes)
        sizes = {len(s) for s in self._suffixes}
        self._size = sizes.pop() if len(sizes) == 1 else None
        """The suffixes' common length in bytes; None when they differ (or there are none)."""

    def __len__(self) -> int:
        return len(self._suffixes)

    def pack(self, prefix: bytes) -> bytes:
        if self._size is None:
            return b"".join(
                b"$%d\r\n%s%s\r\n" % (len(prefix) + len(s), prefix, s) for s in self._suffixes
            )
        head = b"$%d\r\n%s" % (len(prefix) + self._size, prefix)
        return head + (b"\r\n" + head).join(self._suffixes) + b"\r\n"


async def send(redis: Redis, commands: Sequence[bytes]) -> list[Any]:
    """Send packed commands in one write on one pooled connection, and read every reply.

    A connection that breaks (not one that times out) is replaced and the exchange made once
    more at once, as the client's own one immediate retry does (state/connection.py): a pooled
    connection that died with a Redis restart must not cost a request. Sending again is safe for
    what state/ sends: reads, and scripts that skip what they have already applied.
    """
    try:
        return await _exchange(redis, commands)
    except (RedisConnectionError, OSError):
        return await _exchange(redis, commands)


async def _exchange(redis: Redis, commands: Sequence[bytes]) -> list[Any]:
    """One attempt of :func:`send`.

    An error reply (``ResponseError``, e.g. NOSCRIPT) is returned in its place, not raised: the
    connection is still in step. Any other failure (a timeout, a broken connection, a
    cancellation) disconnects the connection before it goes back to the pool, so that replies
    left unread never reach its next user; the error is raised.

    The client's socket timeout bounds the whole exchange, not each reply: one timer instead of
    one per reply.
    """
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        async with asyncio.timeout(connection.socket_timeout):
            # The pool has just checked the connection (it reconnects one the server closed),
            # so the periodic health-check PING, another round trip, is not needed.
            await connection.send_packed_command(b"".join(commands), check_health=False)
            replies: list[Any] = []
            # timeout=math.inf: no timer per reply (redis-py's way to ask for none); the one
            # above bounds them all, and a read it cancels disconnects the connection.
            for _ in commands:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:  # a reply, not a broken connection: read on
                    replies.append(error)
        return replies
    except TimeoutError as exc:
        await connection.disconnect()
        raise RedisTimeoutError(
            f"No answer from Redis within {connection.socket_timeout} s"
        ) from exc
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
