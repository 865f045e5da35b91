"""The writer's round trips against a real Redis: a retry resumes after what Redis answered,
and a Redis that lost an answered round trip is caught before the positions advance."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from state import keys, resp, writer
from state.batch import Contribution, DayBatch, DeviceBatch
from state.errors import LostWrites, StoreUnavailable
from state.scripts import Scripts
from state.writer import ApplyProgress, Positions, Span, Writer

from .harness.store import run_with_redis as run

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "it breaks and flushes the one-Redis transport's round trips; a cluster's are broken "
        "the same way in test_cluster_writer.py"
    ),
)

T = TypeVar("T")
DAY = date(2026, 12, 1)
EXPIRE_AT = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
SCRIPTS_PER_TRIP = 7


@pytest.fixture(autouse=True)
def small_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "SCRIPTS_PER_TRIP", SCRIPTS_PER_TRIP)


class HookedStream:
    """``resp.stream_patiently`` that calls ``hook(self)`` right after each round trip it
    answers; records how many round trips each call was given and how many were answered (over
    every call)."""

    def __init__(self, hook: Callable[[HookedStream], None]) -> None:
        self.hook = hook
        self.calls: list[int] = []
        self.answered = 0
        self.real = resp.stream_patiently

    async def __call__(
        self,
        redis: Redis,
        count: int,
        segment: Callable[[int], Sequence[bytes]],
        answered: Callable[[int, list[Any]], None],
        window: int = 2,
    ) -> None:
        self.calls.append(count)

        def counting(index: int, replies: list[Any]) -> None:
            answered(index, replies)
            self.answered += 1
            self.hook(self)

        await self.real(redis, count, segment, counting, window)


@pytest.fixture
def breaking(monkeypatch: pytest.MonkeyPatch) -> Callable[[set[int]], HookedStream]:
    """A stream whose connection breaks right after the n-th round trip it answers, for each
    n in ``break_after``."""

    def install(break_after: set[int]) -> HookedStream:
        def hook(stream: HookedStream) -> None:
            if stream.answered in break_after:
                raise RedisConnectionError("connection reset (injected)")

        stream = HookedStream(hook)
        monkeypatch.setattr(resp, "stream_patiently", stream)
        return stream

    return install


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
            pipe.hget(keys.device_month(b.device_id, DAY), str(DAY.day))
        values = await pipe.execute()
    return [int(v or 0) for v in values]


def positions(topic: str, count: int) -> Positions:
    return Positions(topic, {0: Span(0, count - 1)})


def test_a_retry_resumes_after_the_round_trips_redis_answered(
    services: Any, breaking: Callable[[set[int]], HookedStream]
) -> None:
    """The connection breaks after round trips 2 and 3 are answered (the first break is retried
    at once, the second is an outage): the next call sends only what was not answered."""
    batches = devices(30, seed=1)  # 30 devices: trips of 7, 7, 7, 7, 2, then positions
    topic = f"trips-{uuid.uuid4().hex}"

    async def body(redis: Redis) -> tuple[list[int], list[int], list[int]]:
        w = Writer(redis)
        await Scripts.register(redis).load(redis)  # no NOSCRIPT resend among what is counted
        packed = w.pack(batches)
        assert len(packed.trips) == 5
        stream = breaking({2, 3})
        progress = ApplyProgress()
        with pytest.raises(StoreUnavailable):
            await w.apply_packed(packed, positions(topic, 30), progress)
        assert progress.trips_done == 3
        after_failure = await counts(redis, batches)
        result = await w.apply_packed(packed, positions(topic, 30), progress)
        # All five trips, the three after the first break, the two after the second (never an
        # answered round trip again), then the client aggregates' round trip and the last.
        assert stream.calls == [5, 3, 2, 1, 1]
        assert all(r.applied + r.skipped == 3 for r in result.devices)
        return after_failure, await counts(redis, batches), [r.applied for r in result.devices]

    after_failure, final, applied = run(services, body)
    want = expected(batches)
    assert after_failure[:21] == want[:21]  # what three answered round trips applied stays
    assert after_failure[28:] == [0, 0]  # the fifth was never sent (two in flight at most)
    assert final == want
    # Round trip 3 was in flight at the first break and ran: resent, its events were skipped.
    assert applied[:14] == [3] * 14
    assert applied[14:21] == [0] * 7


def test_round_trips_lost_by_redis_are_applied_again_from_the_batch_start(
    services: Any, breaking: Callable[[set[int]], HookedStream]
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
        breaking({1, 2})
        progress = ApplyProgress()
        with pytest.raises(StoreUnavailable):
            await w.apply_packed(packed, positions(topic, 20), progress)
        assert progress.trips_done == 2
        # The loss: the first trip's keys (each device's month and its offsets, in its meta)
        # and the marker that vouched for them.
        lost = [
            key
            for b in batches[:SCRIPTS_PER_TRIP]
            for key in (keys.device_month(b.device_id, DAY), keys.device_meta(b.device_id))
        ]
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


def test_scripts_redis_forgot_mid_batch_are_loaded_again_and_every_device_counted_once(
    services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis empties its script cache (``SCRIPT FLUSH``, what a restart does) once the first
    round trip is answered: the round trips after it answer NOSCRIPT, the scripts are loaded
    once, and the batch resumes after what was answered."""
    batches = devices(30, seed=3)
    topic = f"trips-{uuid.uuid4().hex}"
    flusher = SyncRedis.from_url(services.redis_url)

    def flush_after_the_first(stream: HookedStream) -> None:
        if stream.answered == 1:
            flusher.script_flush()

    stream = HookedStream(flush_after_the_first)
    monkeypatch.setattr(resp, "stream_patiently", stream)

    async def body(redis: Redis) -> tuple[list[int], list[int], str | None]:
        result = await Writer(redis).apply(batches, positions(topic, 30))
        applied = [r.applied + r.skipped for r in result.devices]
        return await counts(redis, batches), applied, await redis.get(keys.applied(topic, 0))

    try:
        final, applied, position = run(services, body)
    finally:
        flusher.close()
    assert stream.calls[0] == 5
    assert stream.calls[1] in (3, 4)  # resumed after the trips answered before the NOSCRIPT
    assert final == expected(batches)
    # Every heartbeat is accounted for, and counted once (a script of the round trip that met
    # the flush may have run before it: sent again, it skips its events).
    assert applied == [3] * 30
    assert position == "29"
