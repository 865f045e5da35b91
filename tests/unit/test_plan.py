"""docs/events.md bucketing and dead-lettering, through ``stream.plan``.

Local days come from known UTC offsets (New York is UTC-5 until 2026-03-08 07:00 UTC, UTC-4
after; Kathmandu is UTC+05:45), and retention boundaries from "a day is kept for
``retention_days`` full days after it ends", worked out by hand in each test.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from state.batch import Contribution, DayBatch, DeviceBatch
from stream.model import Heartbeat, Rejection
from stream.plan import Judged, Message, Plan, client_ids, decode_batch, plan_batch

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RETENTION_DAYS = 400

CLIENT_NY = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
CLIENT_UTC = "bb000000-0000-4000-8000-000000000001"
CLIENT_KTM = "cc000000-0000-4000-8000-000000000002"
TIMEZONES = {CLIENT_NY: "America/New_York", CLIENT_UTC: "UTC", CLIENT_KTM: "Asia/Kathmandu"}

DEVICE_A = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
DEVICE_B = "0b8e3c1a-1111-4222-8333-944455556666"
DEVICE_C = "d0d0d0d0-2222-4333-8444-955566667777"


def heartbeat(
    client: str = CLIENT_UTC,
    device: str = DEVICE_A,
    at: str = "2026-03-09T12:00:00Z",
    count: int = 1,
    user: str | None = None,
) -> dict[str, Any]:
    return {
        "client_id": client,
        "device_id": device,
        "user_id": user,
        "generated_at_utc": at,
        "total_activity_count": count,
    }


def message(partition: int, offset: int, doc: Any, key: bytes | None = None) -> Message:
    value = doc if isinstance(doc, bytes) else json.dumps(doc).encode("utf-8")
    return Message("heartbeats", partition, offset, key, value)


def plan(
    *messages: Message,
    now: datetime = NOW,
    retention_days: int = RETENTION_DAYS,
    timezones: dict[str, str] = TIMEZONES,
) -> Plan:
    return plan_batch(decode_batch(messages, now), timezones, now, retention_days)


def utc_ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def only_day(result: Plan) -> date:
    assert len(result.device_batches) == 1
    (day,) = result.device_batches[0].days
    return day


# --- local day ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "at", "expected"),
    [
        # 04:30 UTC is 23:30 EST on the 7th (New York springs forward at 07:00 UTC that day).
        pytest.param(CLIENT_NY, "2026-03-08T04:30:00Z", date(2026, 3, 7), id="ny-0430Z"),
        # 04:30 UTC on the 9th is 00:30 EDT on the 9th: the offset is now -4.
        pytest.param(CLIENT_NY, "2026-03-09T04:30:00Z", date(2026, 3, 9), id="ny-edt"),
        pytest.param(CLIENT_UTC, "2026-03-08T04:30:00Z", date(2026, 3, 8), id="utc"),
        # 18:30 UTC is 00:15 the next day at +05:45.
        pytest.param(CLIENT_KTM, "2026-03-07T18:30:00Z", date(2026, 3, 8), id="ktm-1830Z"),
        pytest.param(CLIENT_KTM, "2026-03-07T18:14:00Z", date(2026, 3, 7), id="ktm-1814Z"),
        # The event's own offset does not matter, only the instant: 23:30-05:00 is 04:30Z.
        pytest.param(CLIENT_NY, "2026-03-07T23:30:00-05:00", date(2026, 3, 7), id="ny-offset"),
        pytest.param(CLIENT_UTC, "2026-03-07T23:30:00-05:00", date(2026, 3, 8), id="utc-offset"),
    ],
)
def test_events_are_bucketed_by_the_clients_local_day(client: str, at: str, expected: date) -> None:
    assert only_day(plan(message(0, 1, heartbeat(client=client, at=at)))) == expected


def test_a_day_batch_expires_retention_days_after_its_local_day_ends() -> None:
    result = plan(message(0, 1, heartbeat(client=CLIENT_NY, at="2026-03-08T04:30:00Z")))
    day_batch = result.device_batches[0].days[date(2026, 3, 7)]
    # 2026-03-07 + 1 + 400 days = 2027-04-12; New York midnight then is EDT, 04:00 UTC.
    assert day_batch.expire_at == utc_ts(2027, 4, 12, 4)


# --- grouping -------------------------------------------------------------------------------


def test_contributions_are_grouped_per_device_in_first_seen_order_and_batch_order() -> None:
    result = plan(
        message(0, 10, heartbeat(device=DEVICE_A, count=5, user="ann")),
        message(1, 5, heartbeat(device=DEVICE_B, count=7)),
        message(0, 11, heartbeat(device=DEVICE_A, count=0, user="bob")),
        message(0, 12, heartbeat(device=DEVICE_C, count=9, user="cy")),
        message(1, 6, heartbeat(device=DEVICE_B, count=1, user="ann")),
    )
    # UTC client, 2026-03-09: kept until 2026-03-10 + 400 days = 2027-04-14 00:00 UTC.
    expire = utc_ts(2027, 4, 14)
    day = date(2026, 3, 9)

    def batch(device: str, *contributions: Contribution) -> DeviceBatch:
        return DeviceBatch(CLIENT_UTC, device, {day: DayBatch(expire, list(contributions))})

    assert result.device_batches == [
        batch(DEVICE_A, Contribution(0, 10, 5, "ann"), Contribution(0, 11, 0, "bob")),
        batch(DEVICE_B, Contribution(1, 5, 7, None), Contribution(1, 6, 1, "ann")),
        batch(DEVICE_C, Contribution(0, 12, 9, "cy")),
    ]
    assert result.dead_letters == []


def test_a_devices_events_on_several_local_days_form_one_day_batch_per_day() -> None:
    result = plan(
        message(0, 1, heartbeat(at="2026-03-09T10:00:00Z", count=1)),
        message(0, 2, heartbeat(at="2026-03-08T10:00:00Z", count=2)),
        message(0, 3, heartbeat(at="2026-03-09T23:59:59Z", count=3)),
    )
    (device_batch,) = result.device_batches
    assert list(device_batch.days) == [date(2026, 3, 9), date(2026, 3, 8)]
    assert device_batch.days[date(2026, 3, 9)].contributions == [
        Contribution(0, 1, 1, None),
        Contribution(0, 3, 3, None),
    ]
    assert device_batch.days[date(2026, 3, 8)].contributions == [Contribution(0, 2, 2, None)]


def test_uuid_case_does_not_split_a_device_batch() -> None:
    result = plan(
        message(0, 1, heartbeat(client=CLIENT_UTC.upper(), device=DEVICE_A.upper())),
        message(0, 2, heartbeat(client=CLIENT_UTC, device=DEVICE_A)),
    )
    (device_batch,) = result.device_batches
    assert (device_batch.client_id, device_batch.device_id) == (CLIENT_UTC, DEVICE_A)
    assert [c.offset for c in device_batch.days[date(2026, 3, 9)].contributions] == [1, 2]


def test_elements_of_an_array_message_share_its_partition_and_offset() -> None:
    gateway = message(
        4,
        77,
        [
            heartbeat(device=DEVICE_A, count=1, user="ann"),
            heartbeat(device=DEVICE_B, count=2),
            heartbeat(device=DEVICE_A, count=3, user="bob"),
        ],
        key=b"gateway-1",
    )
    result = plan(gateway)
    day = date(2026, 3, 9)
    assert [b.device_id for b in result.device_batches] == [DEVICE_A, DEVICE_B]
    assert result.device_batches[0].days[day].contributions == [
        Contribution(4, 77, 1, "ann"),
        Contribution(4, 77, 3, "bob"),
    ]
    assert result.device_batches[1].days[day].contributions == [Contribution(4, 77, 2, None)]


def test_a_second_client_naming_the_same_device_gets_its_own_device_batch() -> None:
    result = plan(
        message(0, 1, heartbeat(client=CLIENT_UTC, device=DEVICE_A, count=1)),
        message(0, 2, heartbeat(client=CLIENT_NY, device=DEVICE_A, count=2)),
        message(0, 3, heartbeat(client=CLIENT_UTC, device=DEVICE_A, count=3)),
    )
    assert [(b.client_id, b.device_id) for b in result.device_batches] == [
        (CLIENT_UTC, DEVICE_A),
        (CLIENT_NY, DEVICE_A),
    ]
    counts = [
        [c.count for d in b.days.values() for c in d.contributions] for b in result.device_batches
    ]
    assert counts == [[1, 3], [2]]
    assert result.dead_letters == []  # ownership is for state/ to decide


def test_members_line_up_with_device_batches() -> None:
    messages = [
        message(0, 1, heartbeat(device=DEVICE_A)),
        message(0, 2, [heartbeat(device=DEVICE_B), heartbeat(device=DEVICE_A, user="x")]),
        message(0, 3, b"not json"),
        message(0, 4, heartbeat(client=CLIENT_NY, device=DEVICE_A)),
    ]
    result = plan(*messages)

    assert len(result.members) == len(result.device_batches) == 3
    expected_positions = [[(1, None), (2, 1)], [(2, 0)], [(4, None)]]
    for batch, members, positions in zip(
        result.device_batches, result.members, expected_positions, strict=True
    ):
        assert [(j.message.offset, j.element.index) for j in members] == positions
        for j in members:
            verdict = j.element.verdict
            assert isinstance(verdict, Heartbeat)
            assert (verdict.client_id, verdict.device_id) == (batch.client_id, batch.device_id)


# --- dead letters ---------------------------------------------------------------------------


def test_rejections_become_dead_letters_with_their_message_and_element_index() -> None:
    not_json = message(0, 1, b"{", key=b"k1")
    mixed_array = message(0, 2, [heartbeat(), heartbeat(count=-1), 7])
    missing_device = message(0, 3, {"client_id": CLIENT_UTC, "total_activity_count": 1})
    result = plan(not_json, mixed_array, missing_device)

    got = [(d.message, d.index, d.rejection.reason, d.rejection.field) for d in result.dead_letters]
    assert got == [
        (not_json, None, "invalid_json", None),
        (mixed_array, 1, "invalid_field", "total_activity_count"),
        (mixed_array, 2, "not_an_object", None),
        (missing_device, None, "missing_field", "device_id"),
    ]
    assert [c.offset for c in result.device_batches[0].days[date(2026, 3, 9)].contributions] == [2]


@pytest.mark.parametrize(
    ("client", "at", "kept"),
    [
        # Retention 3 days, now 2026-03-10 00:00 UTC. A UTC day D is kept until D + 4 days 00:00:
        # 03-07 until 03-11 (kept); 03-06 until 03-10 00:00, which is now (gone).
        pytest.param(CLIENT_UTC, "2026-03-07T00:00:00Z", True, id="utc-boundary-day-kept"),
        pytest.param(CLIENT_UTC, "2026-03-06T23:59:59Z", False, id="utc-day-before-too-old"),
        # New York: day 03-06 is kept until 03-10 00:00 EDT = 04:00 UTC, after now (kept);
        # 03-05 until 03-09 00:00 EDT = 03-09 04:00 UTC (gone). 03-06 00:00 EST = 05:00 UTC.
        pytest.param(CLIENT_NY, "2026-03-06T05:00:00Z", True, id="ny-boundary-day-kept"),
        pytest.param(CLIENT_NY, "2026-03-06T04:59:59Z", False, id="ny-day-before-too-old"),
    ],
)
def test_events_older_than_retention_are_event_too_old(client: str, at: str, kept: bool) -> None:
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    result = plan(message(0, 1, heartbeat(client=client, at=at)), now=midnight, retention_days=3)
    if kept:
        assert result.dead_letters == []
        assert len(result.device_batches) == 1
    else:
        assert result.device_batches == []
        assert result.members == []
        (letter,) = result.dead_letters
        assert (letter.rejection.reason, letter.index) == ("event_too_old", None)


def test_an_event_older_than_the_calendar_in_a_western_timezone_is_event_too_old() -> None:
    # Year 1 in UTC is still year 0 in New York: no date to bucket, but surely too old.
    ancient = message(0, 1, heartbeat(client=CLIENT_NY, at="0001-01-01T00:30:00Z"))
    result = plan(ancient)
    assert [(d.message, d.rejection.reason) for d in result.dead_letters] == [
        (ancient, "event_too_old")
    ]


def test_every_element_is_either_planned_or_dead_lettered() -> None:
    messages = [
        message(0, 1, [heartbeat(), heartbeat(at="2020-01-01T00:00:00Z"), {}]),
        message(0, 2, b"\xff"),
        message(0, 3, heartbeat(client=CLIENT_NY, device=DEVICE_B)),
        message(0, 4, []),
        message(0, 5, heartbeat(at="2026-03-20T00:00:00Z")),
    ]
    result = plan(*messages)
    planned = sum(len(d.contributions) for b in result.device_batches for d in b.days.values())
    assert planned == sum(len(m) for m in result.members) == 2
    assert [(d.message.offset, d.index) for d in result.dead_letters] == [
        (1, 1),
        (1, 2),
        (2, None),
        (4, None),
        (5, None),
    ]


# --- decode_batch and client_ids ------------------------------------------------------------


def test_decode_batch_judges_every_element_of_every_message_in_order() -> None:
    first = message(0, 1, heartbeat())
    second = message(0, 2, [heartbeat(), "x", heartbeat()])
    judged = decode_batch([first, second], NOW)
    assert [(j.message, j.element.index) for j in judged] == [
        (first, None),
        (second, 0),
        (second, 1),
        (second, 2),
    ]
    assert [type(j.element.verdict) for j in judged] == [Heartbeat, Heartbeat, Rejection, Heartbeat]


def test_client_ids_names_the_lower_cased_clients_of_valid_events_only() -> None:
    judged: list[Judged] = decode_batch(
        [
            message(0, 1, heartbeat(client=CLIENT_NY.upper())),
            message(0, 2, [heartbeat(client=CLIENT_KTM), heartbeat(client=CLIENT_NY)]),
            message(0, 3, {"client_id": CLIENT_UTC}),  # rejected: its client is not looked up
        ],
        NOW,
    )
    assert client_ids(judged) == {CLIENT_NY, CLIENT_KTM}


def test_a_batch_of_only_rejections_plans_no_device_batch() -> None:
    empty = message(0, 1, b"[]")
    result = plan(empty, timezones={})
    assert result.device_batches == []
    assert result.members == []
    assert [(d.message, d.index, d.rejection.reason) for d in result.dead_letters] == [
        (empty, None, "empty_array")
    ]


# --- local days and expiries around DST changes, against zoneinfo ---------------------------

CLIENT_ZONED = "ee000000-0000-4000-8000-000000000004"


def zoneinfo_day_and_expiry(at: datetime, key: str, retention_days: int) -> tuple[date, int]:
    """The oracle: the instant's date in the zone, and the zone's midnight ``retention_days + 1``
    days later as Unix time, straight from zoneinfo."""
    tz = ZoneInfo(key)
    day = at.astimezone(tz).date()
    expiry = datetime.combine(day + timedelta(days=1 + retention_days), time(0), tzinfo=tz)
    return day, int(expiry.timestamp())


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


DST_CHANGES = [
    pytest.param("Europe/Berlin", datetime(2026, 3, 29, 1, tzinfo=UTC), id="berlin-spring"),
    pytest.param("Europe/Berlin", datetime(2026, 10, 25, 1, tzinfo=UTC), id="berlin-autumn"),
    pytest.param("America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC), id="new-york-spring"),
    pytest.param("America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC), id="new-york-autumn"),
]


@pytest.mark.parametrize(("key", "change"), DST_CHANGES)
@pytest.mark.parametrize("retention_days", [0, 1, 400])
def test_day_batches_on_both_sides_of_a_dst_change_match_zoneinfo(
    key: str, change: datetime, retention_days: int
) -> None:
    step = timedelta(minutes=17, seconds=3, microseconds=7)
    instants = [change - timedelta(hours=30) + n * step for n in range(212)]
    instants += [change - timedelta(microseconds=1), change]
    now = change + timedelta(hours=31)  # all in the past; with 0 or 1 days kept, some too old
    messages = [
        message(0, n, heartbeat(client=CLIENT_ZONED, at=iso(t))) for n, t in enumerate(instants)
    ]

    result = plan(*messages, now=now, retention_days=retention_days, timezones={CLIENT_ZONED: key})

    expected: dict[date, DayBatch] = {}
    too_old = []
    for n, at in enumerate(instants):
        day, expire_at = zoneinfo_day_and_expiry(at, key, retention_days)
        if expire_at <= now.timestamp():
            too_old.append(n)
            continue
        contribution = Contribution(0, n, 1, None)
        expected.setdefault(day, DayBatch(expire_at)).contributions.append(contribution)
    assert len(expected) + bool(too_old) >= 2  # the sample spans more than the change's day
    (device_batch,) = result.device_batches
    assert list(device_batch.days.items()) == list(expected.items())
    assert [(d.message.offset, d.rejection.reason) for d in result.dead_letters] == [
        (n, "event_too_old") for n in too_old
    ]


@pytest.mark.parametrize(
    ("key", "at"),
    [
        # The last instant of 2026-10-24 in Berlin; its day expires at midnight CEST.
        pytest.param("Europe/Berlin", datetime(2026, 10, 24, 21, 59, 59, tzinfo=UTC), id="berlin"),
        # The 25-hour day of the change; it expires at midnight CET, an hour later in UTC.
        pytest.param("Europe/Berlin", datetime(2026, 10, 25, 22, 59, tzinfo=UTC), id="berlin-25h"),
        # The 23-hour day of New York's spring change.
        pytest.param("America/New_York", datetime(2026, 3, 8, 12, tzinfo=UTC), id="new-york-23h"),
        pytest.param("America/New_York", datetime(2026, 11, 1, 5, 30, tzinfo=UTC), id="new-york"),
    ],
)
@pytest.mark.parametrize("retention_days", [0, 3])
def test_an_event_is_too_old_from_the_instant_its_day_expires(
    key: str, at: datetime, retention_days: int
) -> None:
    _, expire_at = zoneinfo_day_and_expiry(at, key, retention_days)
    expiry = datetime.fromtimestamp(expire_at, UTC)
    event = message(0, 1, heartbeat(client=CLIENT_ZONED, at=iso(at)))

    def planned_at(now: datetime) -> Plan:
        return plan(event, now=now, retention_days=retention_days, timezones={CLIENT_ZONED: key})

    just_before = planned_at(expiry - timedelta(microseconds=1))
    assert just_before.dead_letters == []
    assert [b.expire_at for b in just_before.device_batches[0].days.values()] == [expire_at]
    for now in (expiry, expiry + timedelta(seconds=1)):
        assert [d.rejection.reason for d in planned_at(now).dead_letters] == ["event_too_old"]


def test_an_event_of_a_client_without_a_timezone_is_unknown_client() -> None:
    """The worker leaves out the timezones of clients nobody registered when it registers none
    itself (DEVACT_UNKNOWN_CLIENTS=dead_letter): their events are dead letters, the others'
    are planned."""
    stranger = "ee000000-0000-4000-8000-000000000009"
    known = message(0, 1, heartbeat(client=CLIENT_UTC))
    unknown = message(0, 2, [heartbeat(client=stranger), heartbeat(client=CLIENT_NY)])
    result = plan(known, unknown)
    got = [(d.message, d.index, d.rejection.reason, d.rejection.field) for d in result.dead_letters]
    assert got == [(unknown, 0, "unknown_client", "client_id")]
    assert sorted(b.client_id for b in result.device_batches) == sorted([CLIENT_UTC, CLIENT_NY])


# --- the record's time, not the reader's clock (docs/events.md) ---------------------------


def stamped(offset: int, doc: Any, received: datetime, partition: int = 0) -> Message:
    """A message whose Kafka record was stamped at ``received``."""
    return replace(message(partition, offset, doc), timestamp=int(received.timestamp() * 1000))


def reasons(result: Plan) -> list[str]:
    return [d.rejection.reason for d in result.dead_letters]


@pytest.mark.parametrize("read_after", [timedelta(0), timedelta(seconds=30), timedelta(days=40)])
def test_an_event_more_than_a_day_after_its_record_is_in_the_future_whenever_it_is_read(
    read_after: timedelta,
) -> None:
    received = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    ahead = stamped(1, heartbeat(at=iso(received + timedelta(hours=24, seconds=25))), received)
    inside = stamped(2, heartbeat(at=iso(received + timedelta(hours=24))), received)
    result = plan(ahead, inside, now=received + read_after)
    assert reasons(result) == ["event_in_future"]
    assert [d.message for d in result.dead_letters] == [ahead]
    assert [j.message for j in result.members[0]] == [inside]


def test_each_message_is_judged_against_its_own_record() -> None:
    first = datetime(2026, 3, 8, tzinfo=UTC)
    at = iso(first + timedelta(hours=30))  # 30 h after the first record, 6 h after the second
    early = stamped(1, heartbeat(at=at), first)
    late = stamped(2, heartbeat(at=at), first + timedelta(hours=24))
    result = plan(early, late, now=first + timedelta(days=3))
    assert [d.message for d in result.dead_letters] == [early]
    assert [j.message for j in result.members[0]] == [late]


@pytest.mark.parametrize("read_after", [timedelta(0), timedelta(days=2), timedelta(days=30)])
def test_retention_is_judged_at_the_records_time(read_after: timedelta) -> None:
    """Retention 3 days: a UTC day D is kept until D + 4 days 00:00."""
    received = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    kept = stamped(1, heartbeat(at="2026-03-07T00:00:00Z"), received)
    old = stamped(2, heartbeat(at="2026-03-06T23:59:59Z"), received)
    result = plan(kept, old, now=received + read_after, retention_days=3)
    assert [d.message for d in result.dead_letters] == [old]
    assert reasons(result) == ["event_too_old"]
    if read_after < timedelta(days=1):  # 03-07 is kept until 03-11 00:00
        assert [j.message for j in result.members[0]] == [kept]
        assert result.expired == 0
    else:  # valid when received, its day gone since: not written, not a dead letter
        assert result.device_batches == []
        assert result.expired == 1


def test_a_raised_retention_accepts_at_the_records_time_what_a_shorter_one_refused() -> None:
    received = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    event = stamped(1, heartbeat(at="2026-03-05T12:00:00Z"), received)
    later = received + timedelta(days=3)
    assert reasons(plan(event, now=later, retention_days=3)) == ["event_too_old"]
    raised = plan(event, now=later, retention_days=30)
    assert raised.dead_letters == []
    assert len(raised.device_batches) == 1


def test_a_record_without_a_time_is_judged_against_the_readers_clock() -> None:
    at = heartbeat(at=iso(NOW + timedelta(hours=25)))
    for timestamp in (None, -1):
        event = replace(message(0, 1, at), timestamp=timestamp)
        assert reasons(plan(event, now=NOW)) == ["event_in_future"]
        assert reasons(plan(event, now=NOW + timedelta(hours=2))) == []


def test_events_refused_before_are_neither_counted_nor_dead_lettered_again() -> None:
    received = datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    single = stamped(5, heartbeat(device=DEVICE_A), received)
    array = stamped(6, [heartbeat(device=DEVICE_B), heartbeat(device=DEVICE_C), {}], received)
    elsewhere = stamped(5, heartbeat(device=DEVICE_C), received, partition=1)
    refused = {(0, 5, None), (0, 6, 1), (0, 6, 2), (3, 9, None)}
    messages = decode_batch([single, array, elsewhere], received)
    result = plan_batch(messages, TIMEZONES, received, RETENTION_DAYS, refused)
    assert result.refused_before == 3
    assert result.dead_letters == []
    planned = [(j.message.partition, j.message.offset, j.element.index)
               for members in result.members for j in members]  # fmt: skip
    assert planned == [(0, 6, 0), (1, 5, None)]
