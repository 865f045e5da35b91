"""docs/api.md calendar rules, checked against oracles computed here.

Expected values come from known UTC offsets, ``datetime`` arithmetic, brute-force day iteration and
``date.isocalendar()``; never from another function of ``state.dates``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.dates import (
    GRANULARITIES,
    Bucket,
    Granularity,
    buckets,
    day_expires_at,
    day_start,
    days_inclusive,
    local_day,
    previous_range,
)

NEW_YORK = ZoneInfo("America/New_York")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
CHATHAM = ZoneInfo("Pacific/Chatham")

ONE_DAY = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def offset(hours: int, minutes: int = 0) -> timedelta:
    """A fixed UTC offset; the sign of ``hours`` applies to ``minutes`` too."""
    sign = -1 if hours < 0 else 1
    return timedelta(hours=hours, minutes=sign * minutes)


def wall_date(instant: datetime, utc_offset: timedelta) -> date:
    """The local calendar date of a UTC instant under a known fixed offset."""
    return (instant + utc_offset).date()


def day_range(first: date, last: date) -> list[date]:
    """Every day of ``[first, last]`` by brute-force iteration."""
    out: list[date] = []
    day = first
    while day <= last:
        out.append(day)
        day += ONE_DAY
    return out


def iso_week(day: date) -> tuple[int, int]:
    iso = day.isocalendar()
    return iso.year, iso.week


def calendar_month(day: date) -> tuple[int, int]:
    return day.year, day.month


def calendar_quarter(day: date) -> tuple[int, int]:
    return day.year, (day.month - 1) // 3 + 1


def single_day(day: date) -> date:
    return day


PERIOD_OF: dict[Granularity, Callable[[date], Hashable]] = {
    "daily": single_day,
    "weekly": iso_week,
    "monthly": calendar_month,
    "quarterly": calendar_quarter,
}


# --- local day ------------------------------------------------------------------------------

EST, EDT = offset(-5), offset(-4)


@pytest.mark.parametrize(
    ("instant", "known_offset"),
    [
        pytest.param(utc(2026, 3, 8, 4, 59), EST, id="0459Z-is-03-07-2359-EST"),
        pytest.param(utc(2026, 3, 8, 5, 0), EST, id="0500Z-is-03-08-0000-EST"),
        pytest.param(utc(2026, 3, 8, 6, 59), EST, id="0659Z-is-03-08-0159-EST"),
        pytest.param(utc(2026, 3, 8, 7, 0), EDT, id="0700Z-is-03-08-0300-EDT"),
        pytest.param(utc(2026, 3, 9, 3, 59), EDT, id="03-09-0359Z-is-03-08-2359-EDT"),
        pytest.param(utc(2026, 3, 9, 4, 0), EDT, id="03-09-0400Z-is-03-09-0000-EDT"),
    ],
)
def test_local_day_follows_spring_forward_in_new_york(
    instant: datetime, known_offset: timedelta
) -> None:
    assert local_day(instant, NEW_YORK) == wall_date(instant, known_offset)


@pytest.mark.parametrize(
    ("instant", "known_offset"),
    [
        pytest.param(utc(2026, 11, 1, 3, 59), EDT, id="0359Z-is-10-31-2359-EDT"),
        pytest.param(utc(2026, 11, 1, 4, 0), EDT, id="0400Z-is-11-01-0000-EDT"),
        pytest.param(utc(2026, 11, 1, 5, 30), EDT, id="0530Z-is-11-01-0130-EDT-first"),
        pytest.param(utc(2026, 11, 1, 6, 30), EST, id="0630Z-is-11-01-0130-EST-second"),
        pytest.param(utc(2026, 11, 2, 4, 59), EST, id="11-02-0459Z-is-11-01-2359-EST"),
        pytest.param(utc(2026, 11, 2, 5, 0), EST, id="11-02-0500Z-is-11-02-0000-EST"),
    ],
)
def test_local_day_follows_fall_back_in_new_york(
    instant: datetime, known_offset: timedelta
) -> None:
    assert local_day(instant, NEW_YORK) == wall_date(instant, known_offset)


def test_local_day_puts_both_passes_of_the_repeated_hour_on_the_same_day() -> None:
    first_pass, second_pass = utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)
    # Both read 01:30 on the wall clock (EDT, then EST), one real hour apart.
    assert first_pass + EDT == second_pass + EST
    assert local_day(first_pass, NEW_YORK) == local_day(second_pass, NEW_YORK) == date(2026, 11, 1)


@pytest.mark.parametrize(
    ("tz", "instant", "known_offset"),
    [
        pytest.param(KATHMANDU, utc(2026, 5, 10, 18, 14), offset(5, 45), id="kathmandu-2359"),
        pytest.param(KATHMANDU, utc(2026, 5, 10, 18, 15), offset(5, 45), id="kathmandu-0000"),
        # Southern winter: standard time +12:45, so local midnight of 06-15 is 06-14 11:15Z.
        pytest.param(CHATHAM, utc(2026, 6, 14, 11, 14), offset(12, 45), id="chatham-winter-2359"),
        pytest.param(CHATHAM, utc(2026, 6, 14, 11, 15), offset(12, 45), id="chatham-winter-0000"),
        # Southern summer: daylight time +13:45, so local midnight of 01-15 is 01-14 10:15Z.
        pytest.param(CHATHAM, utc(2026, 1, 14, 10, 14), offset(13, 45), id="chatham-summer-2359"),
        pytest.param(CHATHAM, utc(2026, 1, 14, 10, 15), offset(13, 45), id="chatham-summer-0000"),
    ],
)
def test_local_day_honours_non_hour_offsets(
    tz: ZoneInfo, instant: datetime, known_offset: timedelta
) -> None:
    assert local_day(instant, tz) == wall_date(instant, known_offset)


def test_local_day_depends_on_the_instant_not_on_its_tzinfo() -> None:
    instant = utc(2026, 5, 10, 18, 15)
    same_instant_elsewhere = instant.astimezone(timezone(offset(-7)))
    assert local_day(same_instant_elsewhere, KATHMANDU) == wall_date(instant, offset(5, 45))


def test_local_day_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        local_day(datetime(2026, 3, 8, 12, 0), NEW_YORK)


# --- day start and retention -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        pytest.param(date(2026, 3, 8), 23, id="spring-forward"),
        pytest.param(date(2026, 11, 1), 25, id="fall-back"),
        pytest.param(date(2026, 7, 1), 24, id="ordinary"),
    ],
)
def test_day_length_in_new_york_follows_dst(day: date, hours: int) -> None:
    # Local midnights from the known offsets: EST before 03-08 and from 11-01 02:00, else EDT.
    known = {
        date(2026, 3, 8): utc(2026, 3, 8, 5),
        date(2026, 3, 9): utc(2026, 3, 9, 4),
        date(2026, 11, 1): utc(2026, 11, 1, 4),
        date(2026, 11, 2): utc(2026, 11, 2, 5),
        date(2026, 7, 1): utc(2026, 7, 1, 4),
        date(2026, 7, 2): utc(2026, 7, 2, 4),
    }
    assert day_start(day, NEW_YORK) == known[day]
    assert day_start(day + ONE_DAY, NEW_YORK) == known[day + ONE_DAY]
    assert known[day + ONE_DAY] - known[day] == timedelta(hours=hours)
    assert day_start(day + ONE_DAY, NEW_YORK) - day_start(day, NEW_YORK) == timedelta(hours=hours)


@pytest.mark.parametrize(
    ("tz_name", "day", "first_instant"),
    [
        # 00:00 -04 jumps to 01:00 -03 at 04:00Z: midnight does not exist.
        pytest.param("America/Santiago", date(2026, 9, 6), utc(2026, 9, 6, 4), id="santiago-gap"),
        # 00:00 CST jumps to 01:00 CDT at 05:00Z: midnight does not exist.
        pytest.param("America/Havana", date(2026, 3, 8), utc(2026, 3, 8, 5), id="havana-gap"),
        # 01:00 CDT falls back to 00:00 CST at 05:00Z: midnight happens twice, first at 04:00Z.
        pytest.param("America/Havana", date(2026, 11, 1), utc(2026, 11, 1, 4), id="havana-repeat"),
    ],
)
def test_day_start_is_the_first_instant_when_midnight_is_skipped_or_repeated(
    tz_name: str, day: date, first_instant: datetime
) -> None:
    assert day_start(day, ZoneInfo(tz_name)) == first_instant


@pytest.mark.parametrize(
    "tz_name",
    [
        "America/New_York",
        "America/Santiago",
        "America/Havana",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "Australia/Lord_Howe",  # 30-minute DST shift
    ],
)
def test_day_start_is_the_first_instant_of_every_local_day(tz_name: str) -> None:
    tz = ZoneInfo(tz_name)
    for day in day_range(date(2026, 1, 1), date(2026, 12, 31)):
        start = day_start(day, tz)
        assert start.utcoffset() == timedelta(0)
        assert start.astimezone(tz).date() == day
        assert (start - timedelta(microseconds=1)).astimezone(tz).date() == day - ONE_DAY


@pytest.mark.parametrize(
    ("tz", "day", "retention_days", "offset_of_expiry_midnight"),
    [
        pytest.param(NEW_YORK, date(2026, 3, 6), 0, EST, id="ny-expires-03-07-EST"),
        pytest.param(NEW_YORK, date(2026, 3, 7), 0, EST, id="ny-expires-03-08-EST"),
        pytest.param(NEW_YORK, date(2026, 3, 8), 0, EDT, id="ny-expires-03-09-EDT"),
        pytest.param(NEW_YORK, date(2026, 2, 20), 30, EDT, id="ny-expires-03-23-EDT"),
        pytest.param(NEW_YORK, date(2026, 10, 31), 0, EDT, id="ny-expires-11-01-EDT"),
        pytest.param(NEW_YORK, date(2026, 10, 31), 1, EST, id="ny-expires-11-02-EST"),
        pytest.param(NEW_YORK, date(2026, 12, 31), 90, EDT, id="ny-expires-2027-04-01-EDT"),
        pytest.param(KATHMANDU, date(2026, 1, 1), 7, offset(5, 45), id="kathmandu"),
        # Chatham leaves DST on 2026-04-05 at 03:45 local, after that day's midnight.
        pytest.param(CHATHAM, date(2026, 4, 1), 3, offset(13, 45), id="chatham-summer"),
        pytest.param(CHATHAM, date(2026, 4, 1), 4, offset(12, 45), id="chatham-winter"),
    ],
)
def test_day_expires_at_local_midnight_after_retention_full_days(
    tz: ZoneInfo, day: date, retention_days: int, offset_of_expiry_midnight: timedelta
) -> None:
    expiry_day = day + timedelta(days=retention_days + 1)
    midnight = datetime.combine(expiry_day, time(0), tzinfo=timezone(offset_of_expiry_midnight))
    expected = int(midnight.timestamp())

    got = day_expires_at(day, tz, retention_days)

    assert isinstance(got, int)
    assert got == expected


# --- range length ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "days"),
    [
        pytest.param(date(2026, 1, 1), date(2026, 3, 31), 90, id="90-days-accepted"),
        pytest.param(date(2026, 1, 1), date(2026, 4, 1), 91, id="91-days-refused"),
        pytest.param(date(2026, 1, 1), date(2026, 1, 1), 1, id="same-day"),
        pytest.param(date(2027, 12, 1), date(2028, 2, 28), 90, id="90-days-before-leap-day"),
        pytest.param(date(2027, 12, 1), date(2028, 2, 29), 91, id="91-days-with-leap-day"),
    ],
)
def test_days_inclusive_counts_both_ends(first: date, last: date, days: int) -> None:
    assert len(day_range(first, last)) == days
    assert days_inclusive(first, last) == days


# --- buckets ---------------------------------------------------------------------------------


def test_daily_buckets_include_the_leap_day() -> None:
    first, last = date(2028, 2, 1), date(2028, 3, 2)
    every_day = day_range(first, last)
    assert date(2028, 2, 29) in every_day

    assert buckets(first, last, "daily") == [Bucket(day, day) for day in every_day]


def test_monthly_february_of_a_leap_year_has_29_days() -> None:
    february = [day for day in day_range(date(2028, 1, 1), date(2028, 12, 31)) if day.month == 2]
    assert len(february) == 29

    got = buckets(date(2028, 1, 15), date(2028, 3, 10), "monthly")

    assert got[1] == Bucket(february[0], february[-1])
    assert got[1].days() == february


def test_quarterly_q1_of_a_leap_year_has_91_days() -> None:
    q1 = day_range(date(2028, 1, 1), date(2028, 3, 31))
    assert len(q1) == 31 + 29 + 31 == 91

    (only,) = buckets(date(2028, 1, 1), date(2028, 3, 31), "quarterly")

    assert only == Bucket(q1[0], q1[-1])
    assert len(only.days()) == 91


def test_weekly_buckets_start_on_monday_across_iso_week_53() -> None:
    assert date(2026, 12, 28).isocalendar()[1:] == (53, 1)  # Monday of ISO week 53 of 2026
    assert date(2027, 1, 3).isocalendar() == (2026, 53, 7)  # ...which ends on a Sunday in 2027

    got = buckets(date(2026, 12, 28), date(2027, 1, 10), "weekly")

    assert got == [
        Bucket(date(2026, 12, 28), date(2027, 1, 3)),
        Bucket(date(2027, 1, 4), date(2027, 1, 10)),
    ]
    assert [b.first.isocalendar().weekday for b in got] == [1, 1]
    assert [iso_week(b.first) for b in got] == [(2026, 53), (2027, 1)]


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        pytest.param(
            date(2026, 12, 31),
            date(2027, 1, 10),
            [
                Bucket(date(2026, 12, 31), date(2027, 1, 3)),
                Bucket(date(2027, 1, 4), date(2027, 1, 10)),
            ],
            id="2026-week-53",
        ),
        pytest.param(
            date(2020, 12, 31),
            date(2021, 1, 4),
            [
                Bucket(date(2020, 12, 31), date(2021, 1, 3)),
                Bucket(date(2021, 1, 4), date(2021, 1, 4)),
            ],
            id="2020-week-53",
        ),
    ],
)
def test_weekly_first_bucket_is_clipped_to_a_mid_week_start(
    first: date, last: date, expected: list[Bucket]
) -> None:
    assert first.isocalendar().weekday == 4  # Thursday
    assert iso_week(first) == iso_week(expected[0].last)  # same ISO week 53 across the year end
    assert iso_week(first)[1] == 53

    assert buckets(first, last, "weekly") == expected


def test_monthly_buckets_are_clipped_to_the_range() -> None:
    got = buckets(date(2026, 1, 15), date(2026, 4, 10), "monthly")

    assert [b.first for b in got] == [
        date(2026, 1, 15),
        date(2026, 2, 1),
        date(2026, 3, 1),
        date(2026, 4, 1),
    ]
    assert [b.last for b in got] == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 10),
    ]


def test_quarterly_buckets_are_clipped_to_the_range() -> None:
    got = buckets(date(2026, 2, 10), date(2026, 8, 5), "quarterly")

    assert got == [
        Bucket(date(2026, 2, 10), date(2026, 3, 31)),
        Bucket(date(2026, 4, 1), date(2026, 6, 30)),
        Bucket(date(2026, 7, 1), date(2026, 8, 5)),
    ]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_buckets_cover_the_range_exactly(granularity: Granularity) -> None:
    period_of = PERIOD_OF[granularity]
    rng = random.Random(f"buckets-cover-{granularity}")
    for _ in range(500):
        first = date(2019, 1, 1) + timedelta(days=rng.randrange(12 * 366))
        last = first + timedelta(days=rng.randrange(120))

        got = buckets(first, last, granularity)

        assert got, (first, last)
        assert got[0].first == first
        assert got[-1].last == last
        for bucket in got:
            assert bucket.first <= bucket.last
            assert len({period_of(day) for day in day_range(bucket.first, bucket.last)}) == 1
        for before, after in pairwise(got):
            assert after.first == before.last + ONE_DAY  # contiguous and non-overlapping
            assert period_of(before.last) != period_of(after.first)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_empty_range_has_no_buckets(granularity: Granularity) -> None:
    assert buckets(date(2026, 1, 2), date(2026, 1, 1), granularity) == []


@pytest.mark.parametrize(
    ("first", "last"),
    [
        pytest.param(date(2026, 1, 1), date(2026, 1, 1), id="one-day"),
        pytest.param(date(2026, 1, 30), date(2026, 2, 2), id="month-end"),
        pytest.param(date(2028, 2, 27), date(2028, 3, 1), id="leap-day"),
        pytest.param(date(2026, 12, 28), date(2027, 1, 3), id="year-end"),
    ],
)
def test_bucket_days_lists_every_day(first: date, last: date) -> None:
    assert Bucket(first, last).days() == day_range(first, last)


# --- the edges of the calendar ------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "granularity", "expected"),
    [
        ("9999-10-03", "9999-12-31", "quarterly", [("9999-10-03", "9999-12-31")]),
        ("9999-12-01", "9999-12-31", "monthly", [("9999-12-01", "9999-12-31")]),
        (
            "9999-12-25",
            "9999-12-31",
            "weekly",
            [("9999-12-25", "9999-12-26"), ("9999-12-27", "9999-12-31")],
        ),
        ("9999-12-31", "9999-12-31", "daily", [("9999-12-31", "9999-12-31")]),
        (
            "0001-01-01",
            "0001-01-08",
            "weekly",
            [("0001-01-01", "0001-01-07"), ("0001-01-08", "0001-01-08")],
        ),
    ],
)
def test_buckets_at_the_ends_of_the_calendar_are_clipped_not_overflowed(
    first: str, last: str, granularity: Granularity, expected: list[tuple[str, str]]
) -> None:
    got = buckets(date.fromisoformat(first), date.fromisoformat(last), granularity)
    assert [(b.first.isoformat(), b.last.isoformat()) for b in got] == expected


@settings(max_examples=400, deadline=None)
@given(
    first=st.dates(min_value=date.min, max_value=date.max),
    length=st.integers(min_value=0, max_value=400),
    granularity=st.sampled_from(["daily", "weekly", "monthly", "quarterly"]),
)
def test_buckets_tile_any_range_of_the_calendar_with_calendar_buckets(
    first: date, length: int, granularity: Granularity
) -> None:
    last = min(first + timedelta(days=min(length, (date.max - first).days)), date.max)
    got = buckets(first, last, granularity)
    assert got[0].first == first
    assert got[-1].last == last
    for before, after in pairwise(got):
        assert after.first == before.last + timedelta(days=1)
    for bucket in got:  # each lies in one calendar bucket
        assert _calendar_bucket(bucket.first, granularity) == _calendar_bucket(
            bucket.last, granularity
        )
    for before, after in pairwise(got):  # and no two share one
        assert _calendar_bucket(before.last, granularity) != _calendar_bucket(
            after.first, granularity
        )


def _calendar_bucket(day: date, granularity: Granularity) -> tuple[int, ...]:
    """The oracle's name of a day's calendar bucket: ISO week, month or quarter."""
    if granularity == "daily":
        return (day.toordinal(),)
    if granularity == "weekly":
        return tuple(day.isocalendar())[:2]
    if granularity == "monthly":
        return (day.year, day.month)
    return (day.year, (day.month - 1) // 3)


# --- the previous range of a comparison (docs/api.md, compare=previous_period) ---------------


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        # 90 days: 2026-01-01 .. 03-31; the 90 before end on 2025-12-31 and start on 10-03.
        (date(2026, 1, 1), date(2026, 3, 31), (date(2025, 10, 3), date(2025, 12, 31))),
        (date(2024, 3, 1), date(2024, 3, 1), (date(2024, 2, 29), date(2024, 2, 29))),
        # Where the calendar begins: clipped to its first day, or nothing before it.
        (date(1, 1, 3), date(1, 1, 7), (date(1, 1, 1), date(1, 1, 2))),
        (date(1, 1, 6), date(1, 1, 10), (date(1, 1, 1), date(1, 1, 5))),
        (date(1, 1, 1), date(1, 1, 10), None),
    ],
)
def test_the_previous_range_is_as_many_days_ending_the_day_before(
    first: date, last: date, expected: tuple[date, date] | None
) -> None:
    assert previous_range(first, last) == expected
