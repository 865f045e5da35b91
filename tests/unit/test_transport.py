"""The transports' one round trip (``Transport.send``, state/transport.py and
state/cluster_transport.py): one Redis sends the commands as they are; a cluster routes each
by its key, keeps an unreachable primary's error in its commands' place, and lets a registry
read's last answer stand in for it for ``STALE_S`` (with Redis replaced by a fake exchange)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import cluster_transport, resp
from state.cluster_transport import STALE_S, ClusterTransport, transport_for
from state.errors import UNREACHABLE
from state.routing import Routed
from state.transport import OneRedis

EXISTS = resp.command("EXISTS", "da:client:a")
HGET = resp.command("HGET", "da:{d:x}:meta", "client")
ROUTES = ["da:client:a", "da:{d:x}:meta"]


class FakeRouting:
    """Stands in for ``routing.send_routed``: records what is sent, answers from a script."""

    def __init__(self, *answers: list[Any]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[list[Routed], int | None]] = []

    async def __call__(
        self, _: RedisCluster, commands: Sequence[Routed], raw_from: int | None = None
    ) -> list[Any]:
        self.sent.append((list(commands), raw_from))
        return self.answers.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(clock: Clock) -> ClusterTransport:
    return ClusterTransport(RedisCluster(host="127.0.0.1", port=1), clock)  # never connects


def send(transport: ClusterTransport, stale_ok: Sequence[int] = (0,)) -> list[Any]:
    return asyncio.run(transport.send([EXISTS, HGET], ROUTES, None, stale_ok))


def test_the_transport_of_a_cluster_routes_and_the_transport_of_one_redis_does_not() -> None:
    assert isinstance(transport_for(RedisCluster(host="127.0.0.1", port=1)), ClusterTransport)
    assert isinstance(transport_for(Redis()), OneRedis)


def test_one_redis_sends_the_commands_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[list[bytes], int | None]] = []

    async def fake(_: Redis, commands: Sequence[bytes], raw_from: int | None = None) -> list[Any]:
        sent.append((list(commands), raw_from))
        return [1, "c"]

    monkeypatch.setattr(resp, "send", fake)
    replies = asyncio.run(OneRedis(Redis()).send([EXISTS, HGET], ROUTES, 1, (0,)))
    assert (replies, sent) == ([1, "c"], [([EXISTS, HGET], 1)])


def test_a_cluster_routes_each_command_by_its_key(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRouting([1, "c"])
    monkeypatch.setattr(cluster_transport, "send_routed", fake)
    replies = asyncio.run(cluster.send([EXISTS, HGET], ROUTES, 1))
    assert replies == [1, "c"]
    assert fake.sent == [([Routed(ROUTES[0], EXISTS), Routed(ROUTES[1], HGET)], 1)]


@pytest.mark.parametrize(
    "failure",
    [RedisConnectionError("refused"), RedisTimeoutError("slow"), ConnectionResetError(),
     ClusterDownError("CLUSTERDOWN"), TryAgainError("TRYAGAIN")],
)  # fmt: skip
def test_a_registry_read_whose_primary_is_unreachable_gets_its_last_answer(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch, clock: Clock, failure: Exception
) -> None:
    assert isinstance(failure, UNREACHABLE)
    monkeypatch.setattr(cluster_transport, "send_routed", FakeRouting([1, "c"], [failure, "d"]))
    send(cluster)
    clock.now += STALE_S
    assert send(cluster) == [1, "d"]


def test_a_last_answer_older_than_stale_s_does_not_stand_in(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    failure = RedisConnectionError("refused")
    monkeypatch.setattr(cluster_transport, "send_routed", FakeRouting([1, "c"], [failure, "c"]))
    send(cluster)
    clock.now += STALE_S + 0.001
    assert send(cluster) == [failure, "c"]


def test_only_the_reads_flagged_stale_ok_are_answered_from_memory(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = RedisConnectionError("refused")
    monkeypatch.setattr(cluster_transport, "send_routed", FakeRouting([1, "c"], [failure, failure]))
    send(cluster)
    assert send(cluster) == [1, failure]


def test_an_error_reply_is_neither_remembered_nor_replaced(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong, failure = ResponseError("WRONGTYPE"), RedisConnectionError("refused")
    monkeypatch.setattr(
        cluster_transport, "send_routed", FakeRouting([1, "c"], [wrong, "c"], [failure, "c"])
    )
    send(cluster)
    assert send(cluster) == [wrong, "c"]
    assert send(cluster) == [1, "c"]  # the answer before the error reply


def test_an_unreachable_read_never_answered_keeps_its_error(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = RedisConnectionError("refused")
    monkeypatch.setattr(cluster_transport, "send_routed", FakeRouting([failure, "c"]))
    assert send(cluster) == [failure, "c"]


def test_a_read_of_the_reader_does_not_leave_its_primary_out(
    cluster: ClusterTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = RedisConnectionError("refused")
    monkeypatch.setattr(cluster_transport, "send_routed", FakeRouting([failure, failure]))
    send(cluster)
    assert not cluster.leaving_out()
