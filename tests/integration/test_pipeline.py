"""End to end: heartbeats into Kafka, numbers out of the API, checked against the oracle.

One worker and one API serve the whole module. A seeded generator sends a few thousand events
for six clients in several timezones (one never registered), shuffled so that they arrive late
and out of order, some batched in JSON arrays, with mixed-case UUIDs and timestamp offsets. Hand
written scenarios sit among them, each on its own device, so that a rule has its own test.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from .harness.kafka import Message, encode, heartbeat_message
from .harness.stack import Stack
from .oracle import GRANULARITIES, LABELS, METRICS, DeviceKey, Granularity, Metric, Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

SEED = 20261127
RANDOM_EVENTS = 3000
DEVICES_PER_CLIENT = 5
CATCH_UP_TIMEOUT_S = 90.0
MAX_RANGE_DAYS = 90
# Clients by role; None: never registered, so it is counted in DEVACT_DEFAULT_TIMEZONE (UTC).
CLIENT_ZONES: dict[str, str | None] = {
    "utc": "UTC",
    "new_york": "America/New_York",
    "kathmandu": "Asia/Kathmandu",
    "chatham": "Pacific/Chatham",
    "berlin": "Europe/Berlin",
    "unregistered": None,
}
OFFSETS = ["+05:45", "-04:00", "+13:45", "-09:30", "+01:00", "-11:00", "+14:00", "+00:00"]
USER_NAMES = [f"u-{n}" for n in range(40)] + ["ana.müller@example.com", "李雷", "kiosk user 7"]
NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class Dataset:
    now: datetime
    today: date
    clients: dict[str, str]  # role -> client id (lower-case)
    zones: dict[str, str]  # client id -> the IANA zone the oracle buckets it in
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    arrayed: list[dict[str, Any]] = field(default_factory=list)  # already in a message
    scenario: dict[str, DeviceKey] = field(default_factory=dict)  # scenario -> its device
    dst_days: list[date] = field(default_factory=list)  # New York's recent DST change days
    ranges: list[tuple[date, date]] = field(default_factory=list)  # cover every event's day
    sub_ranges: list[tuple[date, date]] = field(default_factory=list)  # mid-week, mid-month
    # Devices with a day of more than 500 users: their user counts are only within 2%.
    approximate: set[DeviceKey] = field(default_factory=set)


def local_instant(day: date, wall: time, zone: str) -> datetime:
    """The UTC instant of a wall-clock time on ``day`` in ``zone``."""
    return datetime.combine(day, wall, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def zulu(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wire_timestamp(rng: random.Random, instant: datetime) -> str:
    """The same instant written the ways producers write it: Z, offsets, no offset, fractions."""
    spec = "milliseconds" if rng.random() < 0.1 else "seconds"
    style = rng.random()
    if style < 0.4:
        return instant.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
    if style < 0.55:
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec)
    written = rng.choice(OFFSETS)
    hours, minutes = written[1:].split(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if written[0] == "-" else 1)
    return instant.astimezone(timezone(offset)).isoformat(timespec=spec)


def random_case(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.2:
        return text.upper()
    if roll < 0.3:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    return text


def dst_change_days(zone: ZoneInfo, first: date, last: date) -> list[date]:
    """Days whose noon offset differs from the previous day's: the days a DST change happens."""

    def noon_offset(day: date) -> timedelta | None:
        return datetime.combine(day, time(12), tzinfo=zone).utcoffset()

    return [
        d
        for d in (first + timedelta(n) for n in range((last - first).days + 1))
        if noon_offset(d) != noon_offset(d - timedelta(days=1))
    ]


def random_heartbeat(
    rng: random.Random,
    data: Dataset,
    key: DeviceKey,
    zone: str,
    days: list[date],
    pool: list[str],
) -> dict[str, Any]:
    day = rng.choice(days)
    midnight = local_instant(day, time(0), zone)
    if rng.random() < 0.3:  # near a local midnight, where a wrong zone shows
        instant = midnight + timedelta(seconds=rng.choice([-1, 1]) * rng.randint(0, 900))
    else:
        instant = midnight + timedelta(seconds=rng.randint(0, 86_399))
    instant += timedelta(milliseconds=rng.randint(0, 999))
    if instant > data.now - timedelta(minutes=1):
        instant = data.now - timedelta(seconds=rng.randint(60, 6 * 3600))
    roll = rng.random()
    count = rng.randint(1, 50) if roll < 0.85 else 0 if roll < 0.95 else rng.randint(1, 1_000_000)
    event: dict[str, Any] = {
        "client_id": random_case(rng, key[0]),
        "device_id": random_case(rng, key[1]),
        "generated_at_utc": wire_timestamp(rng, instant),
        "total_activity_count": count,
    }
    roll = rng.random()
    if roll < 0.15:
        event["user_id"] = None
    elif roll >= 0.2:  # else: no user_id key at all
        event["user_id"] = rng.choice(pool)
    if rng.random() < 0.1:
        event |= {"app_version": "3.2.1", "battery": 0.87, "tags": ["lab", {"floor": 2}]}
    items = list(event.items())
    rng.shuffle(items)
    return dict(items)


def add_scenarios(data: Dataset, rng: random.Random) -> None:
    """Hand-written events whose expected numbers the tests state directly."""
    today, clients = data.today, data.clients

    def device(name: str, role: str) -> DeviceKey:
        data.scenario[name] = (clients[role], str(uuid.uuid4()))
        return data.scenario[name]

    def hb(key: DeviceKey, at: str, count: int, user: str | None = None) -> dict[str, Any]:
        event = {
            "client_id": key[0],
            "device_id": key[1],
            "generated_at_utc": at,
            "total_activity_count": count,
        }
        return event | ({"user_id": user} if user is not None else {})

    monday = today - timedelta(days=21 + (today - timedelta(days=21)).weekday())
    key = device("weekly_user", "utc")
    for offset, hour, user, count in [
        (0, 10, "u-weekly", 1),
        (2, 10, "u-weekly", 2),
        (2, 11, "u-other", 3),
        (4, 10, "u-weekly", 4),
    ]:
        at = zulu(datetime.combine(monday + timedelta(days=offset), time(hour), tzinfo=UTC))
        data.events.append(hb(key, at, count, user))

    key = device("anonymous", "berlin")
    noon = zulu(local_instant(today - timedelta(days=5), time(12), "Europe/Berlin"))
    data.events += [hb(key, noon, 5) | {"user_id": None}, hb(key, noon, 7)]

    key = device("new_york_dst", "new_york")
    for change in data.dst_days:
        for day, wall, count, user in [
            (change - timedelta(days=1), time(23, 30), 1, "dst-a"),
            (change, time(0, 30), 10, "dst-b"),
            (change, time(23, 30), 100, "dst-c"),
            (change + timedelta(days=1), time(0, 30), 1000, "dst-d"),
        ]:
            at = zulu(local_instant(day, wall, "America/New_York"))
            data.events.append(hb(key, at, count, user))

    # Nepal is UTC+05:45 all year: 18:15Z is local midnight.
    d = today - timedelta(days=9)
    key = device("kathmandu_edges", "kathmandu")
    data.events += [
        hb(key, f"{d}T18:14:59Z", 1),
        hb(key, f"{d}T18:15:00Z", 10),
        hb(key, f"{d + timedelta(days=1)}T00:30:00+05:45", 100),
    ]  # = d 18:45Z

    key = device("no_offset_timestamp", "kathmandu")
    data.events += [hb(key, f"{d}T20:00:00", 5)]  # UTC, so 01:45 of d+1 in Kathmandu

    d = today - timedelta(days=12)
    key = device("chatham_edges", "chatham")
    data.events += [
        hb(key, zulu(local_instant(d - timedelta(days=1), time(23, 59, 59), "Pacific/Chatham")), 1),
        hb(key, zulu(local_instant(d, time(0), "Pacific/Chatham")), 10),
    ]

    d = today - timedelta(days=7)
    key = device("offset_in_timestamp", "utc")
    data.events += [
        hb(key, f"{d + timedelta(days=1)}T02:00:00+05:45", 7),  # = d 20:15Z
        hb(key, f"{d}T23:30:00-01:00", 70),
    ]  # = d+1 00:30Z

    d = today - timedelta(days=6)
    key = device("unregistered_edges", "unregistered")
    data.events += [hb(key, f"{d}T23:59:59Z", 1), hb(key, f"{d + timedelta(days=1)}T00:00:00Z", 10)]

    at = zulu(local_instant(today - timedelta(days=4), time(9), "UTC"))
    key = device("upper_case_ids", "utc")
    data.events += [
        hb((key[0].upper(), key[1].upper()), at, 3, "u-1"),
        hb((key[0], key[1].upper()), at, 4, "u-2"),
    ]

    key = device("json_array", "utc")
    batch = [hb(key, at, 11, "u-1"), hb(key, at, 22, "u-2"), hb(key, at, 33)]
    data.events += batch
    data.arrayed += batch
    data.messages.append(Message(encode(batch)))

    key = device("extra_fields", "kathmandu")
    data.events.append(hb(key, at, 9, "u-1") | {"firmware": {"version": [1, 2]}, "note": None})

    # 300 users on 3 days each: a quarter of ~300 distinct users, at most ~30 on any day.
    key = device("busy_kiosk", "chatham")
    recent = [today - timedelta(days=n) for n in range(1, 76)]
    for n in range(300):
        for day in rng.sample(recent, 3):
            wall = time(rng.randint(0, 23), rng.randint(0, 59))
            at = zulu(local_instant(day, wall, "Pacific/Chatham"))
            data.events.append(hb(key, at, rng.randint(1, 5), f"kiosk-user-{n}"))

    # 700 users on one day, then 100 (50 of them seen the day before) the next day.
    crowded = next(d for d in recent[14:] if d.weekday() < 6)  # both days in one ISO week
    key = device("crowded_day", "utc")
    data.approximate.add(key)
    for n in range(700):
        at = zulu(datetime.combine(crowded, time(12), tzinfo=UTC) + timedelta(seconds=n))
        data.events.append(hb(key, at, 1, f"crowd-{n}"))
    for n in range(100):
        at = zulu(datetime.combine(crowded, time(12), tzinfo=UTC) + timedelta(days=1, seconds=n))
        data.events.append(hb(key, at, 1, f"crowd-{n}" if n < 50 else f"crowd-new-{n}"))


def build_dataset() -> Dataset:
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    today = now.date()
    # Fresh ids on every run, so that a Redis that outlives the session cannot leak into it.
    clients = {role: str(uuid.uuid4()) for role in CLIENT_ZONES}
    zones = {clients[role]: zone or "UTC" for role, zone in CLIENT_ZONES.items()}
    data = Dataset(now=now, today=today, clients=clients, zones=zones)
    data.dst_days = dst_change_days(NEW_YORK, today - timedelta(days=300), today - timedelta(2))

    recent = [today - timedelta(days=n) for n in range(1, 76)]
    around_dst = sorted(
        {
            d + timedelta(days=n)
            for d in data.dst_days
            for n in range(-10, 11)
            if d + timedelta(days=n) < today
        }
    )
    data.ranges = [(today - timedelta(days=80), today + timedelta(days=9))]
    data.ranges += [
        (d - timedelta(days=45), d + timedelta(days=44))
        for d in data.dst_days
        if d - timedelta(days=10) < today - timedelta(days=75)
    ]

    keyed: list[tuple[DeviceKey, str, list[date], list[str]]] = []
    for role, client in clients.items():
        zone = zones[client]
        days = recent + around_dst if role == "new_york" else recent
        for _ in range(DEVICES_PER_CLIENT):
            pool = rng.sample(USER_NAMES, rng.randint(3, 12))  # keeps every bucket <= 12 users
            keyed.append(((client, str(uuid.uuid4())), zone, days, pool))
    for _ in range(RANDOM_EVENTS):
        key, zone, days, pool = rng.choice(keyed)
        data.events.append(random_heartbeat(rng, data, key, zone, days, pool))

    add_scenarios(data, rng)
    singles = [e for e in data.events if all(e is not a for a in data.arrayed)]
    rng.shuffle(singles)
    while singles:
        if rng.random() < 0.1:
            size = rng.randint(2, 5)
            batch, singles = singles[:size], singles[size:]
            key = rng.choice([None, str(batch[0]["device_id"]).encode()])
            data.messages.append(Message(encode(batch), key))
        else:
            data.messages.append(heartbeat_message(singles.pop()))
    rng.shuffle(data.messages)

    wed = next(
        today - timedelta(days=n)
        for n in range(70, 0, -1)
        if (today - timedelta(days=n)).weekday() == 2 and (today - timedelta(n)).day != 1
    )
    the_17th = next(
        today - timedelta(days=n) for n in range(75, 0, -1) if (today - timedelta(days=n)).day == 17
    )
    data.sub_ranges = [
        (wed, wed + timedelta(days=44)),
        (the_17th, the_17th + timedelta(days=50)),
        (today - timedelta(days=10), today - timedelta(days=10)),
        (today - timedelta(days=33), today - timedelta(days=21)),
    ]
    data.sub_ranges += [(d - timedelta(days=3), d + timedelta(days=25)) for d in data.dst_days]
    return data


@dataclass
class Pipeline:
    stack: Stack
    data: Dataset
    oracle: Oracle
    token: str

    def get(
        self,
        key: DeviceKey,
        first: date,
        last: date,
        metric: str | None = "activity-count",
        granularity: str | None = "daily",
    ) -> Any:
        response = self.stack.activity(
            key[0],
            key[1],
            self.token,
            metric=metric,
            start_date=first.isoformat(),
            end_date=last.isoformat(),
            granularity=granularity,
        )
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def values(
        self,
        key: DeviceKey,
        first: date,
        last: date,
        metric: str = "activity-count",
        granularity: str = "daily",
    ) -> list[int]:
        return [p["value"] for p in self.get(key, first, last, metric, granularity)["data"]]


def wait_until_caught_up(stack: Stack, data: Dataset, oracle: Oracle, token: str) -> None:
    """Poll until every device's quarterly numbers over every range equal the oracle's."""
    pending = [
        (key, rng, metric) for key in oracle.devices() for rng in data.ranges for metric in METRICS
    ]
    last_seen: list[str] = []

    def caught_up() -> bool | None:
        while pending:
            key, (first, last), metric = pending[0]
            expected = oracle.series(key, first, last, metric, "quarterly")
            response = stack.activity(
                key[0],
                key[1],
                token,
                metric=metric,
                start_date=first.isoformat(),
                end_date=last.isoformat(),
                granularity="quarterly",
            )
            actual = response.json().get("data") if response.status_code == 200 else None
            tolerant = metric == "user-count" and key in data.approximate
            if not same_points(expected, actual, within_2_percent=tolerant):
                last_seen[:] = [
                    f"{key} {first}..{last} {metric}: expected {expected}, "
                    f"got {response.status_code} {response.text[:300]}"
                ]
                return None
            pending.pop(0)
        return True

    stack.wait_for(
        caught_up,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what=f"the worker to count all {len(data.events)} events",
        progress=lambda: f"{len(pending)} series still differ, the first: {last_seen}",
    )


@pytest.fixture(scope="module")
def pipeline(stack: Stack) -> Pipeline:
    data = build_dataset()
    for role, client in data.clients.items():
        if CLIENT_ZONES[role] is not None:
            stack.add_client(client, str(CLIENT_ZONES[role]), name=f"pipeline {role}")
    stack.start()
    token = stack.create_token(all_clients=True)
    oracle = Oracle(data.events, {c: z for c, z in data.zones.items()})
    every_day = set().union(*(set(days_of(first, last)) for first, last in data.ranges))
    assert oracle.local_days() <= every_day, "the generator put events outside the ranges"
    stack.produce(data.messages)
    wait_until_caught_up(stack, data, oracle, token)
    return Pipeline(stack, data, oracle, token)


def days_of(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def same_points(expected: list[dict[str, Any]], actual: Any, *, within_2_percent: bool) -> bool:
    """Equal series; or, for a bucket with a day above 500 users, equal dates, values within 2%."""
    if not within_2_percent or not isinstance(actual, list) or len(actual) != len(expected):
        return bool(actual == expected)
    return all(
        a.get("date") == e["date"] and abs(a.get("value", -1) - e["value"]) <= 0.02 * e["value"]
        for e, a in zip(expected, actual, strict=True)
    )


def describe_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    parts = [
        f"{k}: expected {expected[k]!r}, got {actual.get(k)!r}"
        for k in expected
        if k != "data" and actual.get(k) != expected[k]
    ]
    got = {p.get("date"): p.get("value") for p in actual.get("data") or []}
    want = {p["date"]: p["value"] for p in expected["data"]}
    if list(got) != list(want):
        pairs = itertools.zip_longest(want, got)
        index, (w, g) = next((i, p) for i, p in enumerate(pairs) if p[0] != p[1])
        return f"point {index}: expected date {w}, got {g} ({len(want)} vs {len(got)} points)"
    parts += [f"{d}: expected {v}, got {got.get(d)}" for d, v in want.items() if got.get(d) != v]
    return "; ".join(parts[:6])


# --- the numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("metric", METRICS)
def test_every_device_series_equals_the_oracle(
    pipeline: Pipeline, metric: Metric, granularity: Granularity
) -> None:
    data, oracle = pipeline.data, pipeline.oracle
    mismatches, compared = [], 0
    for key in oracle.devices():
        for first, last in data.ranges + data.sub_ranges:
            expected = oracle.body(key, first, last, metric, granularity)
            response = pipeline.stack.activity(
                key[0],
                key[1],
                pipeline.token,
                metric=metric,
                start_date=first.isoformat(),
                end_date=last.isoformat(),
                granularity=granularity,
            )
            compared += 1
            if response.status_code != 200:
                mismatches.append(f"{key} {first}..{last}: {response.status_code} {response.text}")
                continue
            actual = response.json()
            tolerant = metric == "user-count" and key in data.approximate
            same_data = same_points(expected["data"], actual.get("data"), within_2_percent=tolerant)
            rest = {k: v for k, v in expected.items() if k != "data"}
            if not same_data or {k: actual.get(k) for k in rest} != rest:
                mismatches.append(
                    f"{key} {first}..{last}: " + describe_difference(expected, actual)
                )
    assert not mismatches, (
        f"{len(mismatches)} of {compared} responses differ from the oracle:\n"
        + "\n".join(mismatches[:15])
    )


def test_user_active_on_three_days_counts_once_in_the_week(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["weekly_user"]
    monday = min(pipeline.oracle.local_days(key))
    sunday = monday + timedelta(days=6)
    assert pipeline.values(key, monday, sunday, "user-count") == [1, 0, 2, 0, 1, 0, 0]
    assert pipeline.values(key, monday, sunday, "user-count", "weekly") == [2]
    assert pipeline.values(key, monday, sunday, "activity-count", "weekly") == [10]


def test_events_without_user_count_activity_but_no_users(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["anonymous"]
    day = pipeline.data.today - timedelta(days=5)
    assert pipeline.values(key, day, day) == [12]
    assert pipeline.values(key, day, day, "user-count") == [0]


def test_new_york_days_follow_daylight_saving_time(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["new_york_dst"]
    assert pipeline.data.dst_days, "no DST change in New York within the last 300 days"
    for change in pipeline.data.dst_days:
        first, last = change - timedelta(days=1), change + timedelta(days=1)
        assert pipeline.values(key, first, last) == [1, 110, 1000], change
        assert pipeline.values(key, first, last, "user-count") == [1, 2, 1], change


def test_kathmandu_day_starts_at_18_15_utc(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["kathmandu_edges"]
    d = pipeline.data.today - timedelta(days=9)
    assert pipeline.values(key, d, d + timedelta(days=1)) == [1, 110]


def test_chatham_day_starts_at_local_midnight(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["chatham_edges"]
    d = pipeline.data.today - timedelta(days=12)
    assert pipeline.values(key, d - timedelta(days=1), d) == [1, 10]


def test_explicit_offset_in_timestamp_is_honoured(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["offset_in_timestamp"]
    d = pipeline.data.today - timedelta(days=7)
    assert pipeline.values(key, d, d + timedelta(days=1)) == [7, 70]


def test_timestamp_without_offset_is_utc(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["no_offset_timestamp"]
    d = pipeline.data.today - timedelta(days=9)
    assert pipeline.values(key, d, d + timedelta(days=1)) == [0, 5]


def test_unregistered_client_is_registered_in_utc_and_counted(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["unregistered_edges"]
    d = pipeline.data.today - timedelta(days=6)
    assert pipeline.values(key, d, d + timedelta(days=1)) == [1, 10]
    listing = pipeline.stack.cli("client", "list")
    line = next((li for li in listing.splitlines() if key[0] in li), "")
    assert "UTC" in line.split(), listing


def test_registered_clients_are_listed_with_their_timezones(pipeline: Pipeline) -> None:
    listing = pipeline.stack.cli("client", "list").splitlines()
    for role, zone in CLIENT_ZONES.items():
        if zone is not None:
            line = next((li for li in listing if pipeline.data.clients[role] in li), "")
            assert zone in line.split(), (role, listing)


def test_re_adding_a_client_updates_its_timezone_and_name(pipeline: Pipeline) -> None:
    client = str(uuid.uuid4())
    pipeline.stack.add_client(client, "Asia/Tokyo", name="before")
    pipeline.stack.add_client(client, "America/Sao_Paulo", name="after")
    lines = [li for li in pipeline.stack.cli("client", "list").splitlines() if client in li]
    assert len(lines) == 1, lines
    assert "America/Sao_Paulo" in lines[0].split(), lines
    assert "after" in lines[0], lines


def test_upper_case_event_ids_count_toward_the_lower_case_device(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["upper_case_ids"]
    day = pipeline.data.today - timedelta(days=4)
    assert pipeline.values(key, day, day) == [7]
    assert pipeline.values(key, day, day, "user-count") == [2]


def test_upper_case_path_uuids_are_accepted(pipeline: Pipeline) -> None:
    client, device = pipeline.data.scenario["upper_case_ids"]
    day = pipeline.data.today - timedelta(days=4)
    lower = pipeline.get((client, device), day, day)
    for path_key in [(client.upper(), device.upper()), (client, device.upper())]:
        assert pipeline.get(path_key, day, day) == lower


def test_json_array_elements_are_each_counted(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["json_array"]
    day = pipeline.data.today - timedelta(days=4)
    assert pipeline.values(key, day, day) == [66]
    assert pipeline.values(key, day, day, "user-count") == [2]


def test_unknown_extra_fields_are_ignored(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["extra_fields"]
    day = pipeline.oracle.local_days(key).pop()
    assert pipeline.values(key, day, day) == [9]


# --- the shape of the answer ------------------------------------------------------------------


def busiest_device(pipeline: Pipeline) -> DeviceKey:
    first, last = pipeline.data.ranges[0]
    return max(
        pipeline.oracle.devices(),
        key=lambda k: len(pipeline.oracle.local_days(k) & set(days_of(first, last))),
    )


def test_granularity_defaults_to_daily(pipeline: Pipeline) -> None:
    key = busiest_device(pipeline)
    first, last = pipeline.data.today - timedelta(days=20), pipeline.data.today
    for metric in METRICS:
        body = pipeline.get(key, first, last, metric, granularity=None)
        assert body["granularity"] == "daily"
        assert body == pipeline.get(key, first, last, metric, "daily")
        assert body["data"] == pipeline.oracle.series(key, first, last, metric, "daily")


@pytest.mark.parametrize(
    ("metric", "granularity", "label"),
    [("activity-count", g, "Total Activity") for g in GRANULARITIES]
    + [
        ("user-count", "daily", "Daily Users"),
        ("user-count", "weekly", "Weekly Users"),
        ("user-count", "monthly", "Monthly Users"),
        ("user-count", "quarterly", "Quarterly Users"),
    ],
)
def test_label_follows_metric_and_granularity(
    pipeline: Pipeline, metric: str, granularity: str, label: str
) -> None:
    first, last = pipeline.data.today - timedelta(days=40), pipeline.data.today
    body = pipeline.get(busiest_device(pipeline), first, last, metric, granularity)
    assert (body["metric"], body["label"], body["granularity"]) == (metric, label, granularity)
    assert LABELS[(metric, granularity)] == label  # type: ignore[index]


def test_period_echoes_the_requested_range(pipeline: Pipeline) -> None:
    first, last = pipeline.data.today - timedelta(days=17), pipeline.data.today + timedelta(days=3)
    body = pipeline.get(busiest_device(pipeline), first, last, "user-count", "monthly")
    assert body["period"] == {"start": first.isoformat(), "end": last.isoformat()}


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_every_bucket_is_present_zeros_and_future_dates_included(
    pipeline: Pipeline, granularity: Granularity
) -> None:
    today = pipeline.data.today
    first, last = today - timedelta(days=40), today + timedelta(days=30)
    key = busiest_device(pipeline)
    body = pipeline.get(key, first, last, "activity-count", granularity)
    dates = [p["date"] for p in body["data"]]
    assert dates[0] == first.isoformat()
    assert dates == [
        p["date"] for p in pipeline.oracle.series(key, first, last, "activity-count", granularity)
    ]
    tomorrow_but_one = (today + timedelta(days=2)).isoformat()
    assert all(p["value"] == 0 for p in body["data"] if p["date"] > tomorrow_but_one)
    if granularity == "daily":
        assert dates == [d.isoformat() for d in days_of(first, last)]


def test_quiet_device_gets_all_zero_points(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["anonymous"]
    first, last = pipeline.data.today - timedelta(days=90), pipeline.data.today - timedelta(days=6)
    assert pipeline.values(key, first, last) == [0] * 85
    assert pipeline.values(key, first, last, "user-count", "weekly") == [0] * len(
        pipeline.oracle.series(key, first, last, "user-count", "weekly")
    )


def test_range_of_90_days_is_accepted_and_91_refused(pipeline: Pipeline) -> None:
    key = busiest_device(pipeline)
    first = pipeline.data.today - timedelta(days=80)
    last = first + timedelta(days=MAX_RANGE_DAYS - 1)
    assert len(pipeline.values(key, first, last)) == MAX_RANGE_DAYS
    refused = pipeline.stack.activity(
        key[0],
        key[1],
        pipeline.token,
        metric="activity-count",
        start_date=first.isoformat(),
        end_date=(last + timedelta(days=1)).isoformat(),
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_parameter"


def test_inspect_prints_json_naming_the_device(pipeline: Pipeline) -> None:
    client, device = pipeline.data.scenario["weekly_user"]
    day = min(pipeline.oracle.local_days((client, device)))
    for extra in ([], ["--date", day.isoformat()]):
        out = pipeline.stack.cli("inspect", "--client", client, "--device", device, *extra)
        found = json.loads(out)
        assert found["device"]["owner"] == client
        (shown,) = [d for d in found["days"] if d["date"] == day.isoformat()]
        for metric, name in (("activity-count", "activity_count"), ("user-count", "user_count")):
            (point,) = pipeline.oracle.series((client, device), day, day, metric, "daily")
            assert shown[name] == point["value"], (metric, shown)


def test_user_count_is_exact_for_a_busy_kiosk(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["busy_kiosk"]
    first, last = pipeline.data.ranges[0]
    for granularity in ("monthly", "quarterly"):
        expected = pipeline.oracle.series(key, first, last, "user-count", granularity)
        assert pipeline.get(key, first, last, "user-count", granularity)["data"] == expected
    assert max(pipeline.values(key, first, last, "user-count", "quarterly")) > 100


def test_user_count_is_within_2_percent_above_500_users_a_day(pipeline: Pipeline) -> None:
    key = pipeline.data.scenario["crowded_day"]
    crowded = min(pipeline.oracle.local_days(key))
    monday = crowded - timedelta(days=crowded.weekday())
    sunday = monday + timedelta(days=6)
    daily = pipeline.values(key, monday, sunday, "user-count")
    assert abs(daily[crowded.weekday()] - 700) <= 0.02 * 700, daily
    assert daily[crowded.weekday() + 1] == 100, daily  # that day alone holds <= 500: exact
    weekly = pipeline.values(key, monday, sunday, "user-count", "weekly")
    assert abs(weekly[0] - 750) <= 0.02 * 750, weekly
    assert pipeline.values(key, monday, sunday, "activity-count", "weekly") == [800]
