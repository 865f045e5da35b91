"""The user-count accuracy measurement (docs/api.md, issue 3): exact while every day of a bucket
holds at most 500 distinct users, within 2% otherwise.

Days of 1 to 100,000 distinct users, and ISO weeks and calendar quarters made of such days (users
overlapping across days), are written through state/'s Writer and read back through its Reader
with the production bucket math; the exact answer is a Python set union computed here. Shared by
tests/integration/test_accuracy.py, which holds the rule to it, and bench/accuracy.py, which puts
the table in the report.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from redis.asyncio import Redis

from state.batch import Contribution, DayBatch, DeviceBatch
from state.dates import Granularity, buckets
from state.encoding import EXACT_USERS_LIMIT
from state.errors import LostWrites, StoreUnavailable
from state.queries import SeriesQuery
from state.reader import Reader
from state.writer import BatchResult, Positions, Writer, new_writer

SEED = 20_260_105
TOLERANCE = 0.02  # docs/api.md: within 2% once a day of the bucket holds more than 500 users
CHUNK = 5_000  # contributions per DeviceBatch: one Lua call each, bounded
BATCHES_PER_ROUND_TRIP = 10
REDIS_TIMEOUT_S = 60.0  # a 100,000-user day is written in 20 script calls; reads merge sketches
NO_POSITIONS = Positions("", {})
RETRY_DEADLINE_S = 120.0
DAY_SIZES = [1, 10, 100, 499, 500, 501, 1_000, 10_000, 100_000]
QUARTER_FIRST = date(2026, 1, 1)  # Q1 2026: 90 days, the longest range the API serves
WEEK_MONDAY = date(2026, 6, 1)


@dataclass(frozen=True)
class Scenario:
    """One device: consecutive days from ``first``, each with its set of user ids."""

    name: str
    granularity: Granularity
    first: date
    days: list[list[str]]


@dataclass(frozen=True)
class Row:
    bucket: str
    granularity: str
    largest_day: int
    true: int
    answered: int

    @property
    def relative_error(self) -> float:
        return abs(self.answered - self.true) / self.true if self.true else float(self.answered)

    @property
    def must_be_exact(self) -> bool:
        return self.largest_day <= EXACT_USERS_LIMIT


def day_users(rng: random.Random, pool: str, pool_size: int, size: int) -> list[str]:
    """``size`` distinct users drawn from a pool shared by the days of a scenario (overlap)."""
    return [f"{pool}-{n}" for n in rng.sample(range(pool_size), size)]


def scenarios() -> list[Scenario]:
    rng = random.Random(SEED)
    out = [
        Scenario(
            "single days",
            "daily",
            date(2026, 3, 2),
            [day_users(rng, "days", 150_000, n) for n in DAY_SIZES],
        )
    ]
    weeks: list[tuple[str, list[int], int]] = [
        ("week of days of 1 to 500", [1, 10, 100, 499, 500, 500, 499], 1_200),
        ("week of 7 days of 500", [500] * 7, 2_000),
        ("week with one day of 501", [501, 500, 499, 100, 10, 1, 500], 1_500),
        ("week of 7 days of 1,000", [1_000] * 7, 3_000),
        ("week of 7 days of 10,000", [10_000] * 7, 30_000),
        ("week with a day of 100,000", [100_000, 10_000, 10_000, 1_000, 1_000, 500, 1], 150_000),
    ]
    for name, sizes, pool in weeks:
        out.append(
            Scenario(name, "weekly", WEEK_MONDAY, [day_users(rng, name, pool, n) for n in sizes])
        )
    small = [rng.choice([1, 10, 100, 250, 499, 500]) for _ in range(90)]
    mixed = [*small[:80], 501, 1_000, 10_000, 501, 1_000, 10_000, 2_000, 5_000, 501, 800]
    big = [100_000, *[10_000] * 10, *small[:79]]
    quarters: list[tuple[str, list[int], int]] = [
        ("quarter of days of 1 to 500", small, 20_000),
        ("quarter of 90 days of 500", [500] * 90, 50_000),
        ("quarter with 10 days of 501 to 10,000", mixed, 40_000),
        ("quarter with days of 100,000 and 10,000", big, 200_000),
    ]
    for name, sizes, pool in quarters:
        out.append(
            Scenario(
                name, "quarterly", QUARTER_FIRST, [day_users(rng, name, pool, n) for n in sizes]
            )
        )
    return out


def device_batches(client: str, device: str, scenario: Scenario) -> Iterator[DeviceBatch]:
    """The scenario's heartbeats (one per user and day, offsets ascending on partition 0), in
    DeviceBatches of at most CHUNK contributions."""
    expire_at = int(time.time()) + 2 * 86_400  # gone soon after the test, in a shared Redis
    offset = 0
    current, size = DeviceBatch(client, device), 0
    for n, users in enumerate(scenario.days):
        day = scenario.first + timedelta(days=n)
        for user in users:
            if size == CHUNK:
                yield current
                current, size = DeviceBatch(client, device), 0
            day_batch = current.days.setdefault(day, DayBatch(expire_at))
            day_batch.contributions.append(Contribution(0, offset, 1, user))
            offset += 1
            size += 1
    if size:
        yield current


def chunked(items: Iterator[DeviceBatch], size: int) -> Iterator[list[DeviceBatch]]:
    group: list[DeviceBatch] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def expected_rows(scenario: Scenario, answers: Sequence[int]) -> list[Row]:
    last = scenario.first + timedelta(days=len(scenario.days) - 1)
    periods = buckets(scenario.first, last, scenario.granularity)
    assert len(periods) == len(answers)
    rows = []
    for period, answered in zip(periods, answers, strict=True):
        days = [
            scenario.days[(d - scenario.first).days]
            for d in period.days()
            if 0 <= (d - scenario.first).days < len(scenario.days)
        ]
        largest = max(len(users) for users in days)
        true = len(set().union(*days))
        name = f"day of {true:,} users" if scenario.granularity == "daily" else scenario.name
        rows.append(Row(name, scenario.granularity, largest, true, answered))
    return rows


async def apply_as_the_worker_does(writer: Writer, group: list[DeviceBatch]) -> BatchResult:
    """``writer.apply``, sent again (the scripts skip what Redis holds) when Redis lost some of
    it or could not be reached, as the worker does: on the local cluster a primary busy with
    the largest days can be failed over to its replica, which may lack its last writes."""
    deadline = time.monotonic() + RETRY_DEADLINE_S
    while True:
        try:
            return await writer.apply(group, NO_POSITIONS)
        except (LostWrites, StoreUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # a failover under way: poll until it is done


async def measure(redis: Redis) -> list[Row]:
    writer, reader = new_writer(redis), Reader(redis)
    rows: list[Row] = []
    for scenario in scenarios():
        client, device = str(uuid.uuid4()), str(uuid.uuid4())
        for group in chunked(device_batches(client, device, scenario), BATCHES_PER_ROUND_TRIP):
            result = await apply_as_the_worker_does(writer, group)
            assert all(not r.rejected for r in result.devices)
        last = scenario.first + timedelta(days=len(scenario.days) - 1)
        granularity = scenario.granularity
        query = SeriesQuery(client, device, "user-count", scenario.first, last, granularity)
        rows += expected_rows(scenario, (await reader.series(query)).series.values)
    return rows


def render(rows: Sequence[Row]) -> str:
    lines = [f"{'bucket':<42} {'largest day':>11} {'true':>8} {'answered':>8} {'rel. error':>10}"]
    for r in rows:
        lines.append(
            f"{r.bucket:<42} {r.largest_day:>11,} {r.true:>8,} {r.answered:>8,} "
            f"{r.relative_error:>10.4%}"
        )
    return "\n".join(lines)
