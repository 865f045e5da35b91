"""state/ against a real Redis: applying batches, replays, ownership, TTLs, tokens, reading."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis
from redis.client import NEVER_DECODE

from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.dates import Bucket
from state.queries import SeriesQuery
from state.reader import Reader
from state.registry import Registry, hash_token
from state.writer import Positions, Span, new_writer

from .harness.store import run_with_redis as run

pytestmark = pytest.mark.backends("redis", "cluster")

T = TypeVar("T")
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
FAR_EXPIRY = int((NOW + timedelta(days=30)).timestamp())
NO_POSITIONS = Positions("", {})


def new_id() -> str:
    return str(uuid.uuid4())


def batch(client: str, device: str, days: dict[date, list[Contribution]]) -> DeviceBatch:
    out = DeviceBatch(client, device)
    for day, contributions in days.items():
        out.days[day] = DayBatch(FAR_EXPIRY, list(contributions))
    return out


async def series(redis: Redis, device: str, metric: str, buckets: list[Bucket]) -> list[int]:
    """The metric over each of ``buckets``: consecutive days, or one over a whole range (its
    total, as a comparison reads it: for user-count the distinct users over the range)."""
    first, last = buckets[0].first, buckets[-1].last
    query = SeriesQuery("any", device, metric, first, last)  # type: ignore[arg-type]
    if buckets == [Bucket(first, last)] and first != last:
        return [(await Reader(redis).compare(query)).current.total]
    assert buckets == [Bucket(day, day) for day in Bucket(first, last).days()]
    return (await Reader(redis).series(query)).series.values


D1, D2, D3 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)


def test_a_batch_is_counted_per_day_and_users_are_distinct_per_bucket(services: Any) -> None:
    client, device = new_id(), new_id()
    day_events = {
        D1: [
            Contribution(0, 1, 5, "ann"),
            Contribution(0, 2, 7, "bob"),
            Contribution(0, 3, 1, None),
        ],
        D2: [Contribution(0, 4, 2, "ann")],
        D3: [Contribution(0, 5, 0, "cy")],
    }

    async def body(redis: Redis) -> tuple[list[Any], list[int], list[int], list[int]]:
        results = (
            await new_writer(redis).apply([batch(client, device, day_events)], NO_POSITIONS)
        ).devices
        daily = [Bucket(d, d) for d in (D1, D2, D3)]
        whole = [Bucket(D1, D3)]
        return (
            results,
            await series(redis, device, "activity-count", daily),
            await series(redis, device, "user-count", daily),
            await series(redis, device, "user-count", whole),
        )

    results, activity, daily_users, bucket_users = run(services, body)
    assert results[0].applied == 5
    assert activity == [sum(c.count for c in day_events[d]) for d in (D1, D2, D3)]
    assert daily_users == [
        len({c.user_id for c in day_events[d] if c.user_id}) for d in (D1, D2, D3)
    ]
    assert bucket_users == [len({"ann", "bob", "cy"})]


def test_replaying_a_batch_changes_nothing(services: Any) -> None:
    client, device = new_id(), new_id()
    events = {D1: [Contribution(2, 10, 3, "ann"), Contribution(2, 11, 4, "bob")]}

    async def body(redis: Redis) -> tuple[int, int, list[int]]:
        writer = new_writer(redis)
        await writer.apply([batch(client, device, events)], NO_POSITIONS)
        again = (await writer.apply([batch(client, device, events)], NO_POSITIONS)).devices[0]
        return (
            again.applied,
            again.skipped,
            await series(redis, device, "activity-count", [Bucket(D1, D1)]),
        )

    applied, skipped, activity = run(services, body)
    assert (applied, skipped) == (0, 2)
    assert activity == [3 + 4]


def test_an_overlapping_replay_applies_only_the_new_offsets(services: Any) -> None:
    client, device = new_id(), new_id()
    first = {D1: [Contribution(1, 100, 10, None), Contribution(1, 101, 20, None)]}
    replay = {
        D1: [
            Contribution(1, 100, 10, None),
            Contribution(1, 101, 20, None),
            Contribution(1, 102, 40, None),
        ]
    }
    other_partition = {D1: [Contribution(3, 50, 80, None)]}  # a lower offset, another partition

    async def body(redis: Redis) -> list[int]:
        writer = new_writer(redis)
        await writer.apply([batch(client, device, first)], NO_POSITIONS)
        await writer.apply([batch(client, device, replay)], NO_POSITIONS)
        await writer.apply([batch(client, device, other_partition)], NO_POSITIONS)
        return await series(redis, device, "activity-count", [Bucket(D1, D1)])

    assert run(services, body) == [10 + 20 + 40 + 80]


def test_elements_of_one_array_message_share_an_offset_and_all_count(services: Any) -> None:
    client, device = new_id(), new_id()
    events = {
        D1: [Contribution(0, 7, 1, "a"), Contribution(0, 7, 2, "b"), Contribution(0, 7, 3, "c")]
    }

    async def body(redis: Redis) -> tuple[list[int], list[int]]:
        await new_writer(redis).apply([batch(client, device, events)], NO_POSITIONS)
        return (
            await series(redis, device, "activity-count", [Bucket(D1, D1)]),
            await series(redis, device, "user-count", [Bucket(D1, D1)]),
        )

    assert run(services, body) == ([6], [3])


def test_a_device_of_another_client_is_refused_and_unchanged(services: Any) -> None:
    owner, intruder, device = new_id(), new_id(), new_id()

    async def body(redis: Redis) -> tuple[Any, list[int], bool]:
        writer = new_writer(redis)
        await writer.apply(
            [batch(owner, device, {D1: [Contribution(0, 1, 5, "ann")]})], NO_POSITIONS
        )
        refused = (
            await writer.apply(
                [batch(intruder, device, {D1: [Contribution(0, 2, 9, "eve")]})], NO_POSITIONS
            )
        ).devices[0]
        listed = bool(await redis.sismember(keys.client_devices(intruder), device))
        return refused, await series(redis, device, "activity-count", [Bucket(D1, D1)]), listed

    refused, activity, listed = run(services, body)
    assert refused.owner == owner
    assert activity == [5]
    assert not listed


def test_a_month_key_expires_with_its_last_day_and_the_device_with_its_newest_month(
    services: Any,
) -> None:
    client, device = new_id(), new_id()
    early = int(time.time()) + 3_600
    late = early + 58 * 86_400  # the expiry of 30 December, 58 days after D1's
    december = date(2026, 12, 30)

    async def body(redis: Redis) -> tuple[int, int, int]:
        b = DeviceBatch(client, device)
        b.days[D1] = DayBatch(early, [Contribution(0, 1, 1, "ann")])
        b.days[D2] = DayBatch(early + 86_400, [Contribution(0, 2, 1, "ann")])
        b.days[december] = DayBatch(late, [Contribution(0, 3, 1, "ann")])
        await new_writer(redis).apply([b], NO_POSITIONS)
        return (
            await redis.expiretime(keys.device_month(device, D1)),
            await redis.expiretime(keys.device_month(device, december)),
            await redis.expiretime(keys.device_meta(device)),
        )

    # A month lives until its last day's expiry (30 November: 28 days after D1; 31 December:
    # one day after the 30th), plus an hour for a DST change (docs/key-schema.md).
    november_end = early + 28 * 86_400 + 3_600
    december_end = late + 86_400 + 3_600
    assert run(services, body) == (november_end, december_end, december_end)


def test_a_shared_device_keeps_its_users_in_the_month_dictionary(services: Any) -> None:
    client, device = new_id(), new_id()
    days = {D1: _users("u", 9, 0), D2: _users("u", 3, 100) + _users("v", 2, 200)}

    async def body(redis: Redis) -> tuple[dict[str, bytes], int, list[int], list[int]]:
        await new_writer(redis).apply([batch(client, device, days)], NO_POSITIONS)
        raw = await redis.execute_command(
            "HGETALL", keys.device_month(device, D1), **{NEVER_DECODE: True}
        )
        fields = {k.decode(): v for k, v in raw.items()}
        daily = await series(redis, device, "user-count", [Bucket(D1, D1), Bucket(D2, D2)])
        both = await series(redis, device, "user-count", [Bucket(D1, D2)])
        return fields, await redis.exists(keys.day_users(device, D1)), daily, both

    fields, day_key, daily, both = run(services, body)
    names = [f"u-{n}" for n in range(9)] + ["v-0", "v-1"]
    # The dictionary: each user's 64-bit BLAKE2b in order of first activity, 8 to a field.
    expected = [hashlib.blake2b(n.encode(), digest_size=8).digest() for n in names]
    assert [fields["u0"][i : i + 8] for i in range(0, 64, 8)] == expected[:8]
    assert [fields["u1"][i : i + 8] for i in range(0, 24, 8)] == expected[8:]
    assert fields[str(D1.day)] == b"9"
    assert "w" not in fields
    assert day_key == 0
    # Day 1's bitmap: users 0..8; day 2's: users 0..2, 9 and 10 of the dictionary.
    assert fields[f"{D1.day}u"] == bytes([0b1111_1111, 0b0000_0001])
    assert fields[f"{D2.day}u"] == bytes([0b0000_0111, 0b0000_0110])
    assert daily == [9, 5]
    assert both == [11]


def test_a_wide_month_holds_the_users_in_the_users_sets_decimal_form(services: Any) -> None:
    client, device = new_id(), new_id()
    names = [f"w-{n}" for n in range(70)]  # past the 64 of a dictionary

    async def body(redis: Redis) -> set[str]:
        contributions = [Contribution(0, n, 1, name) for n, name in enumerate(names)]
        await new_writer(redis).apply([batch(client, device, {D1: contributions})], NO_POSITIONS)
        return set(await redis.smembers(keys.day_users(device, D1)))

    # What state/encoding.py's user_member stores: the signed 64-bit BLAKE2b, in decimal.
    expected = {
        str(int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(), "big", signed=True))
        for n in names
    }
    assert run(services, body) == expected


def test_a_month_past_its_dictionary_turns_wide_and_stays_exact(services: Any) -> None:
    client, device = new_id(), new_id()
    first = {D1: _users("a", 40, 0), D2: _users("b", 20, 100)}
    second = {D2: _users("a", 5, 200), D3: _users("c", 30, 300)}  # 90 users in the month

    async def body(redis: Redis) -> tuple[dict[str, str], list[str], list[int], list[int]]:
        writer = new_writer(redis)
        await writer.apply([batch(client, device, first)], NO_POSITIONS)
        await writer.apply([batch(client, device, second)], NO_POSITIONS)
        fields = await redis.hgetall(keys.device_month(device, D1))
        kinds = [await redis.type(keys.day_users(device, d)) for d in (D1, D2, D3)]
        daily = await series(redis, device, "user-count", [Bucket(d, d) for d in (D1, D2, D3)])
        return fields, kinds, daily, await series(redis, device, "user-count", [Bucket(D1, D3)])

    fields, kinds, daily, whole = run(services, body)
    assert fields.get("w") == "1"
    assert not [f for f in fields if f.startswith("u") or f.endswith("u")]
    assert kinds == ["set", "set", "set"]
    assert daily == [40, 25, 30]
    assert whole == [90]


def test_unknown_clients_are_registered_with_the_default_timezone(services: Any) -> None:
    known, unknown = new_id(), new_id()

    async def body(redis: Redis) -> dict[str, str]:
        registry = Registry(redis)
        await registry.add_client(known, "Asia/Kathmandu", "k", NOW)
        return await registry.timezones([known, unknown], "UTC", NOW)

    assert run(services, body) == {known: "Asia/Kathmandu", unknown: "UTC"}


def test_tokens_grant_their_clients_until_revoked(services: Any) -> None:
    a, b = new_id(), new_id()

    async def body(redis: Redis) -> tuple[bool, bool, bool]:
        registry, reader = Registry(redis), Reader(redis)
        token = await registry.create_token([a], all_clients=False, name="t")
        grant = await reader.grant(hash_token(token))
        await registry.revoke_token(token)
        revoked = await reader.grant(hash_token(token))
        assert grant is not None
        return grant.allows(a), grant.allows(b), revoked is None

    assert run(services, body) == (True, False, True)


def test_tokens_are_stored_only_as_hashes(services: Any) -> None:
    async def body(redis: Redis) -> tuple[str, list[str]]:
        token = await Registry(redis).create_token([new_id()], all_clients=False, name="t")
        return token, [k async for k in redis.scan_iter(match=f"{keys.PREFIX}:token:*")]

    token, stored = run(services, body)
    assert stored
    assert all(token not in k for k in stored)


def _users(prefix: str, count: int, offset_base: int) -> list[Contribution]:
    return [Contribution(0, offset_base + n, 1, f"{prefix}-{n}") for n in range(count)]


def test_a_day_of_500_users_stays_an_exact_set(services: Any) -> None:
    client, device = new_id(), new_id()
    day1 = _users("u", 500, 0)
    day2 = _users("u", 250, 1000) + _users("v", 7, 2000)  # 250 seen on day 1, 7 new

    async def body(redis: Redis) -> tuple[str, list[int], list[int]]:
        await new_writer(redis).apply([batch(client, device, {D1: day1, D2: day2})], NO_POSITIONS)
        kind = await redis.type(keys.day_users(device, D1))
        daily = await series(redis, device, "user-count", [Bucket(D1, D1), Bucket(D2, D2)])
        return kind, daily, await series(redis, device, "user-count", [Bucket(D1, D2)])

    kind, daily, both = run(services, body)
    assert kind == "set"
    assert daily == [500, 257]
    assert both == [len({c.user_id for c in day1 + day2})]


def test_a_day_past_500_users_becomes_a_sketch_within_2_percent(services: Any) -> None:
    client, device = new_id(), new_id()
    big = _users("big", 5_000, 0)
    small = _users("small", 10, 10_000)

    async def body(redis: Redis) -> tuple[str, list[int], list[int]]:
        await new_writer(redis).apply([batch(client, device, {D1: big, D2: small})], NO_POSITIONS)
        kind = await redis.type(keys.day_users(device, D1))
        daily = await series(redis, device, "user-count", [Bucket(D1, D1), Bucket(D2, D2)])
        mixed = await series(redis, device, "user-count", [Bucket(D1, D2)])
        assert not await redis.exists(keys.device_scratch(device))
        return kind, daily, mixed

    kind, daily, mixed = run(services, body)
    assert kind == "string"
    assert abs(daily[0] - 5_000) <= 0.02 * 5_000
    assert daily[1] == 10
    assert abs(mixed[0] - 5_010) <= 0.02 * 5_010


def test_applied_position_advances_only_when_a_batch_continues_it(services: Any) -> None:
    topic = f"t-{new_id()}"

    async def body(redis: Redis) -> list[tuple[dict[int, int | None], int | None]]:
        writer, seen = new_writer(redis), []
        for span in (
            Span(0, 9),  # nothing stored yet, starts at the beginning: advances to 9
            Span(10, 19),  # continues: 19
            Span(5, 12),  # a re-delivery below: stays 19 (never moves back)
            Span(30, 39),  # a gap (Redis lost 20..29?): stays 19, and 19 is reported
            Span(25, 27, force=True),  # the caller knows nothing readable lies before 25: 27
        ):
            result = await writer.apply([], Positions(topic, {3: span}))
            seen.append((result.previous, (await writer.applied_positions(topic, [3]))[3]))
        return seen

    assert run(services, body) == [
        ({3: None}, 9),
        ({3: 9}, 19),
        ({3: 19}, 19),
        ({3: 19}, 19),
        ({3: 19}, 27),
    ]
