"""The writer's round trips against a real Redis: a retry resumes after what Redis answered,
and a Redis that lost an answered round trip is caught before the positions advance."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from state import keys, resp, writer
from state.connection import connect
from state.errors import LostWrites, StoreUnavailable
from state.scripts import Scripts
from state.settings import StoreSettings
from state.writer import (
    ApplyProgress,
    Contribution,
    DayBatch,
    DeviceBatch,
    Positions,
    Span,
    Writer,
)

T = TypeVar("T")
DAY = date(2026, 12, 1)
EXPIRE_AT = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
SCRIPTS_PER_TRIP = 7


@pytest.fixture(autouse=True)
def small_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "SCRIPTS_PER_TRIP", SCRIPTS_PER_TRIP)


class FailingSend:
    """``resp.send_patiently`` that breaks the connection on chosen calls (counted from 1),
    before anything is sent, and records what each call carried."""

    def __init__(self, fail_on: set[int]) -> None:
        self.fail_on = fail_on
        self.calls: list[Sequence[bytes]] = []
        self.real = resp.send_patiently

    async def __call__(self, redis: Redis, commands: Sequence[bytes]) -> list[Any]:
        self.calls.append(commands)
        if len(self.calls) in self.fail_on:
            raise RedisConnectionError("connection reset (injected)")
        return await self.real(redis, commands)


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Callable[[set[int]], FailingSend]:
    def install(fail_on: set[int]) -> FailingSend:
        send = FailingSend(fail_on)
        monkeypatch.setattr(resp, "send_patiently", send)
        return send

    return install


def run(services: Any, body: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = connect(StoreSettings(redis_url=services.redis_url))
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def devices(count: int, seed: int) -> list[DeviceBatch]:
    rng = random.Random(seed)
    client = str(uuid.uuid4())
    out = []
    for n in range(count):
        batch = DeviceBatch(client, str(uuid.uuid4()))
        batch.days[DAY] = DayBatch(
            EXPIRE_AT,
            [Contribution(0, n, rng.randint(1, 50), f"u{rng.randrange(5)}") for _ in range(3)],
        )
        out.append(batch)
    return out


def expected(batches: list[DeviceBatch]) -> list[int]:
    return [sum(c.count for c in b.days[DAY].contributions) for b in batches]


async def counts(redis: Redis, batches: list[DeviceBatch]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for b in batches:
            pipe.hget(keys.day_counter(b.device_id, DAY), keys.COUNT_FIELD)
        values = await pipe.execute()
    return [int(v or 0) for v in values]


def positions(topic: str, count: int) -> Positions:
    return Positions(topic, {0: Span(0, count - 1)})


def test_a_retry_resumes_after_the_round_trips_redis_answered(
    services: Any, failing: Callable[[set[int]], FailingSend]
) -> None:
    batches = devices(30, seed=1)  # 30 devices: trips of 7, 7, 7, 7, 2, then positions
    topic = f"trips-{uuid.uuid4().hex}"

    async def body(redis: Redis) -> tuple[list[int], list[int]]:
        w = Writer(redis)
        await Scripts.register(redis).load(redis)  # no NOSCRIPT resend among the counted calls
        packed = w.pack(batches)
        assert len(packed.trips) == 5
        send = failing({3})  # the third round trip breaks
        progress = ApplyProgress()
        with pytest.raises(StoreUnavailable):
            await w.apply_packed(packed, positions(topic, 30), progress)
        assert progress.trips_done == 2
        after_failure = await counts(redis, batches)
        result = await w.apply_packed(packed, positions(topic, 30), progress)
        # Sent: trips 1, 2, 3 (broken), then 3 again, 4, 5 and the positions; never 1 or 2 again.
        scripts = [sum(b"EVALSHA" in c[:16] for c in call) for call in send.calls]
        assert scripts == [7, 7, 7, 7, 7, 2, 1]  # the last: advancing the position
        assert [r.applied for r in result.devices] == [3] * 30
        return after_failure, await counts(redis, batches)

    after_failure, final = run(services, body)
    want = expected(batches)
    assert after_failure == want[:14] + [0] * 16  # what two answered round trips applied stays
    assert final == want


def test_round_trips_lost_by_redis_are_applied_again_from_the_batch_start(
    services: Any, failing: Callable[[set[int]], FailingSend]
) -> None:
    """Redis forgets the first round trip after answering it (a restart replaying an AOF that
    misses its last second): the next round trip finds the marker gone, and the positions do
    not advance until the whole batch is in Redis again."""
    batches = devices(20, seed=2)
    topic = f"trips-{uuid.uuid4().hex}"

    async def body(redis: Redis) -> tuple[list[int], str | None]:
        w = Writer(redis)
        await Scripts.register(redis).load(redis)
        packed = w.pack(batches)
        failing({2})
        progress = ApplyProgress()
        with pytest.raises(StoreUnavailable):
            await w.apply_packed(packed, positions(topic, 20), progress)
        assert progress.trips_done == 1
        # The loss: the first trip's keys and the marker that vouched for them.
        lost = [keys.day_counter(b.device_id, DAY) for b in batches[:SCRIPTS_PER_TRIP]]
        markers = [
            k
            for k in await redis.keys(keys.batch_marker("*"))
            if (await redis.get(k) or "").startswith(progress.batch_id)
        ]
        assert len(markers) == 1
        await redis.delete(*lost, *markers)
        with pytest.raises(LostWrites):
            await w.apply_packed(packed, positions(topic, 20), progress)
        assert progress.trips_done == 0
        assert await redis.get(keys.applied(topic, 0)) is None  # no position vouches for it
        await w.apply_packed(packed, positions(topic, 20), progress)
        return await counts(redis, batches), await redis.get(keys.applied(topic, 0))

    final, position = run(services, body)
    assert final == expected(batches)
    assert position == "19"
