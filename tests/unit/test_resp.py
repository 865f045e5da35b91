"""The hand-packed Redis protocol of ``state/resp.py``, against redis-py's own packer, and the
one-connection exchange against a fake pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import resp

SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff831"


def redis_py(*args: str | int | bytes) -> bytes:
    """The same command as redis-py packs it (the oracle)."""
    return b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize(
    "args",
    [
        ("HGETALL", "da:token:ab12"),
        ("HGET", "da:{d:f1e2}:meta", "client"),
        ("EXISTS", "da:client:Ünïcødé-ключ"),  # lengths count UTF-8 bytes, not characters
        ("SET", b"raw\r\nbytes", 0, -12, 10**12),
        ("PING",),
    ],
)
def test_a_command_is_packed_as_redis_py_packs_it(args: tuple[str | int | bytes, ...]) -> None:
    assert resp.command(*args) == redis_py(*args)


def test_an_evalsha_is_packed_as_redis_py_packs_it() -> None:
    script_keys, args = ["da:{d:x}:2026-01-01", "dä:{d:x}:2026-01-02"], [3, "ü", -1]
    assert resp.evalsha(SHA, script_keys, args) == redis_py(
        "EVALSHA", SHA, len(script_keys), *script_keys, *args
    )
    assert resp.evalsha(SHA, [], []) == redis_py("EVALSHA", SHA, 0)


@pytest.mark.parametrize(
    "suffixes",
    [
        [":2026-01-01", ":2026-01-02", ":2026-01-03"],  # one length: packed with a single join
        [":1", ":22", ":ü", ""],  # several lengths
        [":2026-01-01"],
        [],
    ],
)
def test_prefixed_bulks_are_the_bulk_strings_of_prefix_plus_suffix(suffixes: list[str]) -> None:
    packed = resp.PrefixedBulks(suffixes)
    assert len(packed) == len(suffixes)
    for prefix in ("da:{d:f1e2d3c4}", "ключ", ""):
        whole = [prefix + s for s in suffixes]
        assert packed.pack(prefix.encode()) == resp.bulks(whole)
        if whole:
            assert resp.header(len(whole)) + packed.pack(prefix.encode()) == redis_py(*whole)


# --- The exchange on one pooled connection -------------------------------------------------------


class FakeConnection:
    """Replays scripted replies; an Exception reply is raised like redis-py raises it."""

    socket_timeout = 0.05

    def __init__(self, replies: Sequence[Any], hang_after: int | None = None) -> None:
        self.replies = list(replies)
        self.hang_after = hang_after
        self.sent: list[bytes] = []
        self.disconnected = False
        self.reads = 0

    async def send_packed_command(self, command: bytes, check_health: bool = True) -> None:
        self.sent.append(command)

    async def read_response(self, **_: Any) -> Any:
        if self.hang_after is not None and self.reads >= self.hang_after:
            await asyncio.Event().wait()  # a server that never answers
        self.reads += 1
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def disconnect(self) -> None:
        self.disconnected = True


class FakePool:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.in_use = 0

    async def get_connection(self) -> FakeConnection:
        self.in_use += 1
        return self.connection

    async def release(self, connection: FakeConnection) -> None:
        assert connection is self.connection
        self.in_use -= 1


class FakeRedis:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection_pool = FakePool(connection)


def exchange(connection: FakeConnection, commands: Sequence[bytes]) -> list[Any]:
    redis = FakeRedis(connection)
    try:
        return asyncio.run(resp.send(redis, commands))  # type: ignore[arg-type]
    finally:
        assert redis.connection_pool.in_use == 0  # always back in the pool


def test_commands_go_out_in_one_write_and_every_reply_comes_back_in_order() -> None:
    connection = FakeConnection([{"clients": "*"}, 1, None, [3, 0]])
    commands = [resp.command("HGETALL", "t"), resp.command("EXISTS", "c"), b"x", b"y"]
    assert exchange(connection, commands) == [{"clients": "*"}, 1, None, [3, 0]]
    assert connection.sent == [b"".join(commands)]
    assert not connection.disconnected


def test_an_error_reply_takes_its_place_and_the_rest_is_still_read() -> None:
    noscript = NoScriptError("NOSCRIPT No matching script")
    connection = FakeConnection([noscript, 7])
    assert exchange(connection, [b"a", b"b"]) == [noscript, 7]
    assert not connection.disconnected  # still in step: it may be used again


def test_a_broken_connection_is_disconnected_and_the_exchange_made_once_more() -> None:
    # A pooled connection that died with a Redis restart: the request must not fail for it.
    connection = FakeConnection([1, RedisConnectionError("reset by peer"), 1, 2, 3])
    assert exchange(connection, [b"a", b"b", b"c"]) == [1, 2, 3]
    assert connection.disconnected  # before it went back to the pool
    assert connection.sent == [b"abc", b"abc"]


def test_a_connection_broken_twice_raises() -> None:
    connection = FakeConnection([RedisConnectionError("refused"), RedisConnectionError("refused")])
    with pytest.raises(RedisConnectionError):
        exchange(connection, [b"a"])
    assert connection.disconnected
    assert len(connection.sent) == 2  # one retry, no more


def test_a_silent_server_times_out_as_a_redis_timeout_and_is_disconnected() -> None:
    connection = FakeConnection([1, 2], hang_after=1)  # the second reply never comes
    with pytest.raises(RedisTimeoutError):
        exchange(connection, [b"a", b"b"])
    assert connection.disconnected


def test_a_stream_keeps_its_window_unanswered_and_builds_each_segment_when_it_is_sent() -> None:
    connection = FakeConnection(list(range(6)))  # three segments of two commands
    redis = FakeRedis(connection)
    seen: list[tuple[str, int, int]] = []  # (what, segment, writes made by then)

    def segment(index: int) -> list[bytes]:
        seen.append(("built", index, len(connection.sent)))
        return [b"a%d" % index, b"b%d" % index]

    def answered(index: int, replies: list[Any]) -> None:
        assert replies == [2 * index, 2 * index + 1]
        seen.append(("answered", index, len(connection.sent)))

    asyncio.run(resp.stream_patiently(redis, 3, segment, answered, window=2))  # type: ignore[arg-type]
    assert seen == [
        ("built", 0, 0),
        ("built", 1, 1),  # the second goes out before the first is answered
        ("answered", 0, 2),
        ("built", 2, 2),  # the third only once the first is answered: two unanswered at most
        ("answered", 1, 3),
        ("answered", 2, 3),
    ]
    assert connection.sent == [b"a0b0", b"a1b1", b"a2b2"]  # one write per segment
    assert redis.connection_pool.in_use == 0
    assert not connection.disconnected


class SlowConnection(FakeConnection):
    """Reply ``n`` is ready ``due[n]`` seconds after the commands went out (a busy server);
    reading is cancel-safe, as redis-py's parser is."""

    def __init__(self, due: Sequence[float]) -> None:
        super().__init__(list(range(len(due))))
        self.due = list(due)
        self.sent_at = 0.0

    async def send_packed_command(self, command: bytes, check_health: bool = True) -> None:
        self.sent.append(command)
        self.sent_at = asyncio.get_running_loop().time()

    async def read_response(self, **_: Any) -> Any:
        ready_at = self.sent_at + self.due[self.reads]
        await asyncio.sleep(max(0.0, ready_at - asyncio.get_running_loop().time()))
        self.reads += 1
        return self.replies.pop(0)


class ProbedRedis(FakeRedis):
    """Answers PING on another connection with ``answer`` (an Exception is raised)."""

    def __init__(self, connection: FakeConnection, answer: Any) -> None:
        super().__init__(connection)
        self.answer = answer
        self.pings = 0

    async def ping(self) -> Any:
        self.pings += 1
        answer = self.answer
        if isinstance(answer, list):  # one answer per PING, the last one repeated
            answer = answer[min(self.pings, len(answer)) - 1]
        if isinstance(answer, SlowPing):
            await asyncio.sleep(FakeConnection.socket_timeout)  # a timeout takes that long
            answer = answer.error
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class SlowPing:
    """A PING that times out after the client's socket timeout."""

    error: BaseException


def patient_exchange(redis: ProbedRedis, count: int) -> list[Any]:
    try:
        return asyncio.run(resp.send_patiently(redis, [b"c"] * count))  # type: ignore[arg-type]
    finally:
        assert redis.connection_pool.in_use == 0


def test_a_busy_redis_that_answers_ping_is_waited_for() -> None:
    """Silent for six times the timeout, but reachable: slow is not down."""
    connection = SlowConnection([0.0, 0.3, 0.3])
    redis = ProbedRedis(connection, True)
    assert patient_exchange(redis, 3) == [0, 1, 2]
    assert redis.pings >= 2
    assert not connection.disconnected
    assert len(connection.sent) == 1  # waited on the same connection, nothing sent again


def test_a_long_script_answering_busy_counts_as_reachable() -> None:
    connection = SlowConnection([0.2])
    redis = ProbedRedis(connection, ResponseError("BUSY Redis is busy running a script"))
    assert patient_exchange(redis, 1) == [0]
    assert redis.pings >= 1


def test_replies_that_keep_coming_need_no_probe_however_long_the_whole_takes() -> None:
    # 12 replies 0.03 s apart: 0.36 s in all, seven times the timeout, never 0.05 s of silence.
    connection = SlowConnection([0.03 * (n + 1) for n in range(12)])
    redis = ProbedRedis(connection, RedisTimeoutError("must not be asked"))
    assert patient_exchange(redis, 12) == list(range(12))
    assert redis.pings == 0


def test_a_silent_redis_that_does_not_answer_ping_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resp, "PROBE_WINDOW_S", 0.2)
    connection = SlowConnection([0.0, 10.0])
    redis = ProbedRedis(connection, SlowPing(RedisTimeoutError("Timeout reading from socket")))
    with pytest.raises(RedisTimeoutError, match="1 of 2 replies"):
        patient_exchange(redis, 2)
    assert redis.pings >= 2  # tried for the whole window, not once
    assert connection.disconnected  # its unread reply must never reach the next user


def test_a_refused_ping_means_unavailable_at_once() -> None:
    connection = SlowConnection([0.0, 10.0])
    redis = ProbedRedis(connection, RedisConnectionError("Connection refused"))
    with pytest.raises(RedisTimeoutError):
        patient_exchange(redis, 2)
    assert redis.pings == 1


def test_a_ping_that_times_out_once_then_answers_means_busy() -> None:
    """Redis answers nobody while one long script runs: a PING may time out, then answer."""
    connection = SlowConnection([0.0, 0.25])
    redis = ProbedRedis(connection, [RedisTimeoutError("Timeout reading"), True])
    assert patient_exchange(redis, 2) == [0, 1]
    assert not connection.disconnected


def test_the_impatient_send_gives_up_on_a_busy_redis() -> None:
    """The API's requests are small: its 503 within 2 s beats waiting."""
    connection = SlowConnection([0.2])
    with pytest.raises(RedisTimeoutError):
        exchange(connection, [b"c"])
    assert connection.disconnected
