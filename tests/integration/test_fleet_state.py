"""The client-day aggregates against a real Redis (state/fleet.py, apply_client.lua): what a
batch adds to a client's day, across its devices, counted once whatever is replayed."""

from __future__ import annotations

import random
import struct
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.client import NEVER_DECODE

from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.encoding import EXACT_USERS_LIMIT
from state.fleet import FILLER
from state.writer import ApplyProgress, Positions, Span, new_writer

from .harness.store import run_with_redis as run

pytestmark = pytest.mark.backends("redis", "cluster")

EXPIRE_AT = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
D1, D2 = date(2026, 11, 2), date(2026, 11, 3)


def new_id() -> str:
    return str(uuid.uuid4())


def device(client: str, device_id: str, days: dict[date, list[Contribution]]) -> DeviceBatch:
    out = DeviceBatch(client, device_id)
    for day, contributions in days.items():
        out.days[day] = DayBatch(EXPIRE_AT, list(contributions))
    return out


async def aggregate(redis: Redis, client: str, day: date) -> tuple[dict[str, str], int]:
    """The day's hash fields, with each device's activity of the day (above zero) read from
    the activity vector, and the day's users."""
    fields = await redis.hgetall(keys.client_day(client, day))
    index = await redis.hgetall(keys.client_devices_index(client))
    index.pop(FILLER, None)
    vector = await redis.execute_command(
        "GET", keys.client_day_activity(client, day), **{NEVER_DECODE: True}
    )
    for device_id, position in index.items():
        at = 8 * int(position)
        if vector and at + 8 <= len(vector):
            (activity,) = struct.unpack_from(">q", vector, at)
            if activity:
                fields[device_id] = str(activity)
    users_key = keys.client_day_users(client, day)
    kind = await redis.type(users_key)
    users = await (redis.scard(users_key) if kind == "set" else redis.pfcount(users_key))
    return fields, int(users)


def test_a_client_day_sums_its_devices_and_counts_a_user_on_two_devices_once(
    services: Any,
) -> None:
    client, a, b = new_id(), new_id(), new_id()
    batches = [
        device(client, a, {D1: [Contribution(0, 1, 5, "ann"), Contribution(0, 2, 7, "bob")]}),
        device(client, b, {D1: [Contribution(1, 1, 3, "ann"), Contribution(1, 2, 1, None)]}),
        device(client, b, {D2: [Contribution(1, 3, 4, "cy")]}),
    ]
    batches[1].days[D2] = batches.pop().days[D2]

    async def body(redis: Redis) -> tuple[Any, Any]:
        await new_writer(redis).apply(batches, Positions("t", {}))
        return await aggregate(redis, client, D1), await aggregate(redis, client, D2)

    (day1, users1), (day2, users2) = run(services, body)
    assert day1["n"] == str(5 + 7 + 3 + 1)
    assert (day1[a], day1[b]) == ("12", "4")
    assert users1 == 2  # ann (on both devices) and bob
    assert day2["n"] == "4"
    assert day2[b] == "4"
    assert a not in day2
    assert users2 == 1


def test_replaying_a_batch_changes_no_aggregate(services: Any) -> None:
    """The same events again, cut into other batches (a replay after a crash): nothing moves."""
    client = new_id()
    rng = random.Random(7)
    devices = [new_id() for _ in range(6)]
    events = [
        (
            rng.choice(devices),
            Contribution(rng.randrange(2), n, rng.randint(0, 9), f"u{rng.randrange(9)}"),
        )
        for n in range(200)
    ]

    def batches(part: list[tuple[str, Contribution]]) -> list[DeviceBatch]:
        by_device: dict[str, DeviceBatch] = {}
        for device_id, contribution in part:
            entry = by_device.setdefault(device_id, device(client, device_id, {D1: []}))
            entry.days[D1].contributions.append(contribution)
        return list(by_device.values())

    async def body(redis: Redis) -> tuple[Any, Any]:
        writer = new_writer(redis)
        await writer.apply(batches(events[:120]), Positions("t", {}))
        await writer.apply(batches(events[120:]), Positions("t", {}))
        once = await aggregate(redis, client, D1)
        for first in range(0, 200, 70):  # other boundaries than the first time
            await writer.apply(batches(events[first : first + 70]), Positions("t", {}))
        return once, await aggregate(redis, client, D1)

    once, again = run(services, body)
    assert once == again
    fields, users = once
    assert fields["n"] == str(sum(c.count for _, c in events))
    for device_id in devices:
        want = sum(c.count for d, c in events if d == device_id)
        assert int(fields.get(device_id, "0")) == want
    assert users == len({c.user_id for _, c in events})


def test_a_device_of_another_client_adds_nothing_to_the_claimer(services: Any) -> None:
    owner, claimer, shared = new_id(), new_id(), new_id()

    async def body(redis: Redis) -> tuple[Any, bool]:
        writer = new_writer(redis)
        await writer.apply(
            [device(owner, shared, {D1: [Contribution(0, 1, 5, "ann")]})], Positions("t", {})
        )
        result = await writer.apply(
            [
                device(claimer, shared, {D1: [Contribution(0, 2, 9, "eve")]}),
                device(claimer, new_id(), {D1: [Contribution(0, 3, 1, "bob")]}),
            ],
            Positions("t", {0: Span(1, 3)}),
        )
        assert result.devices[0].owner == owner
        return await aggregate(redis, claimer, D1), shared in (
            await redis.hgetall(keys.client_devices_index(claimer))
        )

    (fields, users), listed = run(services, body)
    assert fields["n"] == "1"
    assert users == 1
    assert shared not in fields
    assert not listed


def test_a_busy_client_day_keeps_an_estimate_past_the_exact_limit(services: Any) -> None:
    client = new_id()
    count = EXACT_USERS_LIMIT + 300
    devices = [
        device(client, new_id(), {D1: [Contribution(0, n, 1, f"user-{n}")]}) for n in range(count)
    ]

    async def body(redis: Redis) -> tuple[Any, str]:
        await new_writer(redis).apply(devices, Positions("t", {}))
        return await aggregate(redis, client, D1), await redis.type(
            keys.client_day_users(client, D1)
        )

    (fields, users), kind = run(services, body)
    assert fields["n"] == str(count)
    assert kind == "string"  # a HyperLogLog
    assert abs(users - count) <= 0.02 * count


def test_a_client_with_thousands_of_devices_in_one_batch_is_applied_whole(services: Any) -> None:
    """More fields than Lua can unpack at once (about 8,000): read and written in chunks."""
    client = new_id()
    count = 9_000
    devices = [device(client, new_id(), {D1: [Contribution(0, n, 2, None)]}) for n in range(count)]

    async def body(redis: Redis) -> dict[str, str]:
        await new_writer(redis).apply(devices, Positions("t", {}))
        fields, _ = await aggregate(redis, client, D1)
        return fields

    fields = run(services, body)
    assert fields["n"] == str(2 * count)
    assert sum(1 for f in fields if len(f) == 36) == count


def test_a_partly_replayed_day_is_sent_again_one_offset_at_a_time(services: Any) -> None:
    """A batch whose offsets straddle what the client's aggregates counted already: the script
    leaves that partition's activity alone and says so; the writer sends the call again, one
    segment per offset, and only the new heartbeats count."""
    client, a, b = new_id(), new_id(), new_id()
    first = [
        device(client, a, {D1: [Contribution(0, n, n, "ann") for n in range(0, 10)]}),
        device(client, b, {D2: [Contribution(0, 4, 100, "bob")]}),  # in a's message 4
    ]
    straddling = [
        device(client, a, {D1: [Contribution(0, n, n, "cy") for n in range(5, 15)]}),
        device(client, b, {D2: [Contribution(0, 20, 1000, "bob")]}),
    ]

    async def body(redis: Redis) -> tuple[Any, Any, ApplyProgress]:
        writer = new_writer(redis)
        await writer.apply(first, Positions("t", {}))
        progress = ApplyProgress()
        await writer.apply_packed(writer.pack(straddling), Positions("t", {}), progress)
        return await aggregate(redis, client, D1), await aggregate(redis, client, D2), progress

    (day1, users1), (day2, users2), progress = run(services, body)
    assert progress.finer == {client}
    assert day1[a] == day1["n"] == str(sum(range(15)))
    assert users1 == 2  # ann, and cy of the replayed part as well (a set: no double count)
    assert day2[b] == day2["n"] == "1100"
    assert users2 == 1
