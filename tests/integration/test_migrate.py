"""``devact migrate`` on real data: a Redis written by the writer of the layout before
device-months (its Lua script, kept in tests/integration/legacy/ as it was at commit 5ef4a4d),
moved in place by the command, then read through the product and checked against an oracle
computed here from the events.

The data: 24 devices over 75 days across three months, of several kinds: shared devices with a
handful of regulars (their months keep a dictionary), a busy device of 150 users a month (its
months turn wide: day sets), a crowded day of 700 users (a HyperLogLog), days of nobody, and
heartbeats from three partitions.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.dates import Bucket
from state.encoding import EXACT_USERS_LIMIT, user_member
from state.migrate import LEGACY_DAY_PATTERN
from state.queries import SeriesQuery
from state.reader import Reader
from state.registry import Registry
from state.writer import Positions, new_writer

from .harness.processes import devact_executable
from .harness.store import run_with_redis as run

pytestmark = pytest.mark.backends("redis", "cluster")

LEGACY = Path(__file__).parent / "legacy"
FIRST = date(2026, 8, 20)
DAYS = 75
CROWDED = FIRST + timedelta(days=30)


def legacy_script() -> str:
    return (
        (LEGACY / "lib_days_v1.lua").read_text()
        + "\n"
        + (LEGACY / "apply_device_v1.lua").read_text()
    )


def legacy_call(batch: DeviceBatch) -> tuple[list[str], list[str | int]]:
    """The old writer's call: per day its hash and users key, expiry, and events."""
    script_keys = [keys.device_meta(batch.device_id)]
    args: list[str | int] = [batch.client_id, EXACT_USERS_LIMIT, len(batch.days)]
    for day, day_batch in batch.days.items():
        script_keys += [
            keys.legacy_day_counter(batch.device_id, day),
            keys.day_users(batch.device_id, day),
        ]
        args += [day_batch.expire_at, len(day_batch.contributions)]
        for c in day_batch.contributions:
            args += [
                c.partition,
                c.offset,
                c.count,
                "" if c.user_id is None else user_member(c.user_id),
            ]
    return script_keys, args


class Data:
    """The events, cut into batches as a worker would (by device, a few days at a time), and the
    oracle: each device-day's activity and users."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.client = str(uuid.uuid4())
        self.devices = [str(uuid.uuid4()) for _ in range(24)]
        self.activity: dict[tuple[str, date], int] = {}
        self.users: dict[tuple[str, date], set[str]] = {}
        self.batches: list[DeviceBatch] = []
        expire_at = int(time.time()) + 7 * 86_400  # gone soon after the test, in a shared Redis
        offsets = [0, 0, 0]
        for n, device in enumerate(self.devices):
            busy = n == 0
            pool = [f"{device}-u{k}" for k in range(150 if busy else rng.randint(1, 12))]
            for first in range(0, DAYS, 10):
                batch = DeviceBatch(self.client, device)
                for d in range(first, min(first + 10, DAYS)):
                    day = FIRST + timedelta(days=d)
                    if rng.random() < 0.3 and not (busy and day == CROWDED):
                        continue
                    if busy and day == CROWDED:
                        names: list[str | None] = [f"{device}-crowd{k}" for k in range(700)]
                    else:
                        names = [
                            rng.choice(pool) if rng.random() > 0.1 else None
                            for _ in range(rng.randint(1, 30))
                        ]
                    partition = rng.randrange(3)
                    contributions = []
                    for name in names:
                        offsets[partition] += 1
                        count = rng.randint(0, 40)
                        contributions.append(
                            Contribution(partition, offsets[partition], count, name)
                        )
                        self.activity[(device, day)] = self.activity.get((device, day), 0) + count
                        users = self.users.setdefault((device, day), set())
                        if name is not None:
                            users.add(name)
                    batch.days[day] = DayBatch(expire_at, contributions)
                if batch.days:
                    self.batches.append(batch)

    def series(self, device: str, first: date, last: date, metric: str) -> int:
        days = [first + timedelta(days=k) for k in range((last - first).days + 1)]
        if metric == "activity-count":
            return sum(self.activity.get((device, d), 0) for d in days)
        return len(set().union(*(self.users.get((device, d), set()) for d in days)))


def buckets_of(granularity: str) -> list[Bucket]:
    last = FIRST + timedelta(days=DAYS - 1)
    if granularity == "daily":
        return [Bucket(FIRST + timedelta(days=k), FIRST + timedelta(days=k)) for k in range(DAYS)]
    # One bucket over the whole range: users across months and kinds of month.
    return [Bucket(FIRST, last)]


async def read_all(redis: Redis, data: Data) -> dict[tuple[str, str, str], list[int]]:
    reader = Reader(redis)
    out = {}
    for device in data.devices:
        for metric in ("activity-count", "user-count"):
            for granularity in ("daily", "whole"):
                query = SeriesQuery(
                    data.client,
                    device,
                    metric,  # type: ignore[arg-type]
                    FIRST,
                    FIRST + timedelta(days=DAYS - 1),
                )
                if granularity == "daily":
                    values = (await reader.series(query)).series.values
                else:  # the whole range's total, as a comparison reads it
                    values = [(await reader.compare(query)).current.total]
                out[(device, metric, granularity)] = values
    return out


def expected_of(data: Data) -> dict[tuple[str, str, str], list[int]]:
    out = {}
    for device in data.devices:
        for metric in ("activity-count", "user-count"):
            for granularity in ("daily", "whole"):
                out[(device, metric, granularity)] = [
                    data.series(device, b.first, b.last, metric) for b in buckets_of(granularity)
                ]
    return out


def legacy_keys(found: list[str], data: Data) -> list[str]:
    return [k for k in found if any(d in k for d in data.devices)]


@pytest.fixture(scope="module")
def data() -> Data:
    return Data(seed=11)


@pytest.fixture(scope="module")
def migrated(services: Any, data: Data) -> Iterator[dict[str, Any]]:
    """The legacy writer's Redis, then ``devact migrate`` run twice over it."""

    async def write_legacy(redis: Redis) -> tuple[int, str]:
        script = redis.register_script(legacy_script())
        for batch in data.batches:
            script_keys, args = legacy_call(batch)
            await script(keys=script_keys, args=args)
        token = await Registry(redis).create_token([data.client], all_clients=False, name="m")
        found = [k async for k in redis.scan_iter(match=LEGACY_DAY_PATTERN, count=5000)]
        return len(legacy_keys(found, data)), token

    legacy_days, token = run(services, write_legacy)
    env = {**os.environ, "DEVACT_REDIS_URL": services.redis_url}
    runs = [
        subprocess.run(
            [devact_executable(), "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        for _ in range(2)
    ]

    async def after(redis: Redis) -> tuple[list[str], dict[tuple[str, str, str], list[int]]]:
        found = [k async for k in redis.scan_iter(match=LEGACY_DAY_PATTERN, count=5000)]
        return legacy_keys(found, data), await read_all(redis, data)

    left, values = run(services, after)
    return {
        "legacy_days": legacy_days,
        "runs": runs,
        "left": left,
        "values": values,
        "token": token,
    }


def test_the_old_writer_wrote_every_device_day(migrated: dict[str, Any], data: Data) -> None:
    assert migrated["legacy_days"] == len(data.activity)


def test_migrate_moves_every_device_day_and_a_second_run_moves_none(
    migrated: dict[str, Any], data: Data
) -> None:
    first, second = migrated["runs"]
    assert f"moved {len(data.activity)} device-days" in first.stdout, first.stdout + first.stderr
    assert "moved 0 device-days" in second.stdout, second.stdout
    assert migrated["left"] == []


def test_after_migrate_every_series_equals_the_oracle(migrated: dict[str, Any], data: Data) -> None:
    expected = expected_of(data)
    crowded = data.devices[0]
    for key, values in migrated["values"].items():
        device, metric, _granularity = key
        if device == crowded and metric == "user-count":
            continue  # the crowded day's HyperLogLog: below
        assert values == expected[key], key
    # The crowded day is a sketch (within 2%), and so is every bucket that holds it.
    daily = migrated["values"][(crowded, "user-count", "daily")]
    wanted = expected[(crowded, "user-count", "daily")]
    for k, (got, want) in enumerate(zip(daily, wanted, strict=True)):
        if FIRST + timedelta(days=k) == CROWDED:
            assert abs(got - want) <= 0.02 * want
        else:
            assert got == want, FIRST + timedelta(days=k)
    (whole,) = migrated["values"][(crowded, "user-count", "whole")]
    (want_whole,) = expected[(crowded, "user-count", "whole")]
    assert abs(whole - want_whole) <= 0.02 * want_whole


def test_after_migrate_the_offsets_guard_the_device(
    services: Any, migrated: dict[str, Any], data: Data
) -> None:
    """Every event again through today's writer: all of them are skipped as applied."""

    async def replay(redis: Redis) -> tuple[int, int]:
        writer = new_writer(redis, fleet=False)
        results = (await writer.apply(data.batches, Positions("", {}))).devices
        return sum(r.applied for r in results), sum(r.skipped for r in results)

    applied, skipped = run(services, replay)
    assert applied == 0
    assert skipped == sum(len(d.contributions) for b in data.batches for d in b.days.values())


def test_a_migration_stopped_half_way_ends_the_same(services: Any) -> None:
    """A second data set: half its days moved by hand (as a run stopped after some steps
    would leave it), then ``migrate`` finishes: the series equal the oracle's."""
    data = Data(seed=12)

    async def body(redis: Redis) -> dict[tuple[str, str, str], list[int]]:
        from state.migrate import Migrated, _move
        from state.migrate import migrate as migrate_all
        from state.scripts import Scripts

        script = redis.register_script(legacy_script())
        for batch in data.batches:
            await script(*legacy_call(batch))
        found = legacy_keys(
            [k async for k in redis.scan_iter(match=LEGACY_DAY_PATTERN, count=5000)], data
        )
        done = Migrated()
        await _move(redis, Scripts.register(redis).migrate_month, found[::2], done, lambda _: None)
        assert done.days == len(found[::2])
        await migrate_all(redis)
        return await read_all(redis, data)

    values = run(services, body)
    expected = expected_of(data)
    for key, got in values.items():
        if key[0] == data.devices[0] and key[1] == "user-count":
            continue  # the crowded day's sketch: checked above
        assert got == expected[key], key
