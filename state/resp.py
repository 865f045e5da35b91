"""Redis commands packed ahead in the Redis protocol (RESP), and sent in one write.

Why not redis-py's command objects and pipeline: they spend microseconds of Python per command
(the command stack, response callbacks), and a pipeline's ``execute`` asks ``SCRIPT EXISTS`` for
its scripts first, a second round trip. The writer sends thousands of script calls per batch and
the API a few per request, so both pack their commands here, with hiredis's ``pack_command``
(the packer redis-py itself uses), and send them at once, to one Redis here or to a cluster's
primaries through ``state/routing.py``. Only the read plans' day keys (``PrefixedBulks``) are
packed by hand: once per range, for any device.

A command is an array of bulk strings: ``*<count>\\r\\n`` then ``$<bytes>\\r\\n<data>\\r\\n`` per
argument, the length in bytes of the UTF-8 encoding.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

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
    """One whole command, e.g. ``command("HGET", key, "client")``, packed by hiredis (the
    packer redis-py uses): measured 0.32 us for an HGETALL against 1.20 us for ``bulks``."""
    packed: bytes = pack_command(args)  # type: ignore[arg-type]  # its stub types one argument
    return packed


def evalsha(sha: str, script_keys: Sequence[str], args: Sequence[Arg]) -> bytes:
    """One EVALSHA (``command``): a device script's call packs in 2.2 us this way, 6.3 us by
    hand (``python -m timeit``-style, 2026-12-02), and the bytes are the same."""
    return command("EVALSHA", sha, len(script_keys), *script_keys, *args)


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


async def send(redis: Redis, commands: Sequence[bytes], raw_from: int | None = None) -> list[Any]:
    """Send packed commands in one write on one pooled connection, and read every reply, within
    the client's socket timeout: for small, bounded requests (the API's 503 within 2 s). The
    replies from index ``raw_from`` on are bytes as Redis sent them (binary values), not text.

    A connection that breaks (not one that times out) is replaced and the exchange made once
    more at once, as the client's own one immediate retry does (state/connection.py): a pooled
    connection that died with a Redis restart must not cost a request. Sending again is safe for
    what state/ sends: reads, and scripts that skip what they have already applied.
    """
    raw = None if raw_from is None else [i >= raw_from for i in range(len(commands))]
    return await _exchange(redis, commands, patient=False, raw=raw)


async def send_patiently(redis: Redis, commands: Sequence[bytes]) -> list[Any]:
    """:func:`send` for work whose duration grows with what it carries (the writer's round
    trips): slow is not down. The socket timeout bounds silence, not the whole exchange; when
    no reply has come for that long, a ``PING`` on another connection tells a busy Redis (it
    answers, or answers BUSY or LOADING) from one that is gone. A busy one is waited for; only
    an unreachable one raises (``TimeoutError``), and so does a connection that stays silent
    for ``PATIENCE_S`` while Redis answers others."""
    return await _exchange(redis, commands, patient=True)


PATIENCE_S = 120.0
"""Longest silence of one connection waited out while Redis answers PINGs on others: far longer
than any round trip of ours (milliseconds) or a Redis fork or AOF rewrite stall (seconds), short
enough that a connection silently lost in the network is replaced within minutes."""
_RESCHEDULE_EVERY_S = 0.01
"""Replies read within this long of the last deadline update leave the deadline as it is:
moving a timer per reply would cost more than reading small replies."""

Read = Callable[[Any, int, list[Any]], Awaitable[None]]
"""``read(connection, count, replies)``: read until ``count`` replies are in ``replies``."""


async def stream_patiently(
    redis: Redis,
    count: int,
    segment: Callable[[int], Sequence[bytes]],
    answered: Callable[[int, list[Any]], None],
    window: int = 2,
) -> None:
    """Send ``count`` segments (``segment(index)``, asked for just before it is sent) in order
    on one connection, at most ``window`` of them unanswered at a time, and call
    ``answered(index, replies)`` as each one's replies are all in (error replies in their
    place). Patient as :func:`send_patiently`. Redis works on the next segment while the caller
    looks at the last one's replies, so cutting work into segments costs no idle round trip;
    what ``answered`` recorded before a failure stays recorded, and the caller resumes from
    there. A broken connection is not retried here (the caller resumes), and an exception
    raised by ``answered`` ends the stream (the connection is dropped with it)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]

    async def read(connection: Any, count: int, replies: list[Any]) -> None:
        await _read(redis, connection, count, replies, patient=True)

    await exchange_on(connection, pool.release, count, segment, answered, read, window)


async def exchange_on(
    connection: Any,
    release: Callable[[Any], Awaitable[None] | None],
    count: int,
    segment: Callable[[int], Sequence[bytes]],
    answered: Callable[[int, list[Any]], None],
    read: Read,
    window: int = 1,
) -> None:
    """The one way state/ talks to a connection: send ``count`` segments of packed commands
    (``segment(index)``, each in one write, at most ``window`` unanswered), ``read`` each one's
    replies (error replies in their place: the connection is still in step) and hand them to
    ``answered``; then ``release`` the connection. Any failure (a timeout, a broken connection,
    a cancellation) disconnects it first, so that replies left unread never reach its next
    user; a timeout is raised as a Redis ``TimeoutError`` that says how far the reading got.

    The pool has just checked the connection (it reconnects one the server closed), so the
    periodic health-check PING, another round trip, is not sent."""
    replies: list[Any] = []
    sizes: list[int] = []
    reading = 0
    try:
        for index in range(count):
            while len(sizes) < min(index + window, count):
                commands = segment(len(sizes))
                sizes.append(len(commands))
                await connection.send_packed_command(b"".join(commands), check_health=False)
            replies, reading = [], sizes[index]
            await read(connection, reading, replies)
            answered(index, replies)
    except TimeoutError as exc:
        await connection.disconnect()
        raise _timeout(connection, replies, reading) from exc
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        released = release(connection)
        if released is not None:
            await released


async def _exchange(
    redis: Redis, commands: Sequence[bytes], *, patient: bool, raw: Sequence[bool] | None = None
) -> list[Any]:
    """:func:`send` or :func:`send_patiently`: one segment on a pooled connection, made once
    more at once when the connection breaks."""

    async def read(connection: Any, count: int, replies: list[Any]) -> None:
        await _read(redis, connection, count, replies, patient=patient, raw=raw)

    async def attempt() -> list[Any]:
        out: list[Any] = []
        pool = redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        await exchange_on(
            connection, pool.release, 1, lambda _: commands, lambda _, r: out.extend(r), read
        )
        return out

    try:
        return await attempt()
    except (RedisConnectionError, OSError):
        return await attempt()


def _timeout(connection: Any, replies: list[Any], count: int) -> RedisTimeoutError:
    return RedisTimeoutError(
        f"No answer from Redis within {connection.socket_timeout} s "
        f"({len(replies)} of {count} replies)"
    )


async def read_within_timeout(
    connection: Any, count: int, replies: list[Any], raw: Sequence[bool] | None = None
) -> None:
    """Read until ``count`` replies are in ``replies``, within the connection's socket timeout
    in all (one timer, not one per reply); ``raw``: which replies to leave undecoded."""
    async with asyncio.timeout(connection.socket_timeout):
        await _read_replies(connection, count, replies, raw=raw)


async def _read(
    redis: Redis,
    connection: Any,
    count: int,
    replies: list[Any],
    *,
    patient: bool,
    raw: Sequence[bool] | None = None,
) -> None:
    """Read until ``count`` replies are in ``replies``. Impatient: ``read_within_timeout``.
    Patient: the timeout bounds silence; when it runs out, Redis is asked whether it is
    reachable, and a reachable one is waited for."""
    if not patient:
        await read_within_timeout(connection, count, replies, raw)
        return
    timeout = connection.socket_timeout
    loop = asyncio.get_running_loop()
    silent_since = loop.time()
    while len(replies) < count:
        read = len(replies)
        try:
            async with asyncio.timeout(timeout) as deadline:
                await _read_replies(connection, count, replies, deadline, raw)
        except TimeoutError:
            now = loop.time()
            if len(replies) > read:
                silent_since = now
            if now - silent_since >= PATIENCE_S or not await _reachable(redis):
                raise
            log.warning(
                "Redis busy: %d of %d replies after %.1f s of silence; it answers PING, "
                "so waiting", len(replies), count, now - silent_since,
            )  # fmt: skip


async def _read_replies(
    connection: Any,
    count: int,
    replies: list[Any],
    deadline: asyncio.Timeout | None = None,
    raw: Sequence[bool] | None = None,
) -> None:
    """Read replies until ``count`` are in ``replies``; push ``deadline`` on while they come.

    ``timeout=math.inf``: no timer per reply (redis-py's way to ask for none); the caller's
    bounds them. ``disconnect_on_error=False``: a read cancelled by that timer leaves the
    connection in step (the parser keeps what it has buffered, as for pub/sub reads with a
    timeout), so a patient caller can read on; an impatient one disconnects it.
    """
    loop = asyncio.get_running_loop()
    moved = loop.time()
    while len(replies) < count:
        try:
            replies.append(
                await connection.read_response(
                    disable_decoding=raw is not None and raw[len(replies)],
                    timeout=math.inf,
                    disconnect_on_error=False,
                )
            )
        except ResponseError as error:  # a reply (NOSCRIPT, MOVED...), not a broken connection
            replies.append(error)
        if deadline is not None and (now := loop.time()) - moved > _RESCHEDULE_EVERY_S:
            deadline.reschedule(now + (connection.socket_timeout or 0.0))
            moved = now


PROBE_WINDOW_S = 2.0
"""How long PINGs that time out are tried again before Redis counts as unreachable: Redis
answers nobody while it runs one script, and a script of ours may take tens of milliseconds on
a busy host, longer than a small ``DEVACT_REDIS_TIMEOUT_S``. A refused connection is an answer
at once: Redis is down."""


async def _reachable(redis: Redis) -> bool:
    """Whether Redis answers a PING on another connection, trying for ``PROBE_WINDOW_S`` while
    PINGs time out. A BUSY (a long script) or LOADING (a restart reading its data) error is an
    answer too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROBE_WINDOW_S
    while True:
        try:
            await redis.ping()
        except (BusyLoadingError, ResponseError):
            return True
        except RedisTimeoutError:
            if loop.time() >= deadline:
                return False
            continue  # each PING waits out its own timeout: no pause needed between them
        except (RedisConnectionError, OSError):
            return False
        return True
