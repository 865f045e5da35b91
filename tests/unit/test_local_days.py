"""``state.dates.LocalDays``, the writer's memo of local day and expiry, against zoneinfo itself.

The oracle is the straightforward computation the worker did per event before the memo: the
instant converted with ``astimezone`` for the day, and the local midnight ``retention_days + 1``
days later for the expiry, or None where either leaves the calendar. Instants are sampled densely
around DST changes, local midnights and retention boundaries, where a memo would go wrong first.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, available_timezones

import pytest

import state.dates
from state.dates import LocalDays, local_days

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
RETENTION_DAYS = 400

MICROSECOND = timedelta(microseconds=1)
DAY = timedelta(days=1)


def reference(instant: datetime, tz: ZoneInfo, retention_days: int) -> tuple[date, int] | None:
    try:
        day = instant.astimezone(tz).date()
        expiry = datetime.combine(day + timedelta(days=1 + retention_days), time(0), tzinfo=tz)
        return day, int(expiry.astimezone(UTC).timestamp())
    except OverflowError:
        return None


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def around(instant: datetime, hours: int) -> Iterator[datetime]:
    """Instants every 7 min 13.000321 s over ``hours`` either side of ``instant`` (so minutes,
    seconds and microseconds vary), plus the instant itself and its neighbours 1 us and 1 s off."""
    step = timedelta(minutes=7, seconds=13, microseconds=321)
    t = instant - timedelta(hours=hours)
    while t < instant + timedelta(hours=hours):
        yield t
        t += step
    for delta in (timedelta(0), MICROSECOND, timedelta(seconds=1)):
        yield instant - delta
        yield instant + delta


def local_midnights(tz: ZoneInfo, first: date, days: int) -> Iterator[datetime]:
    """The UTC instants of the local midnights of ``days`` days from ``first``, and 1 us before."""
    for n in range(days):
        midnight = datetime.combine(first + timedelta(days=n), time(0), tzinfo=tz).astimezone(UTC)
        yield midnight - MICROSECOND
        yield midnight


def assert_matches_reference(days: LocalDays, instants: list[datetime]) -> None:
    for instant in instants:
        assert days.of(instant) == reference(instant, days.tz, days.retention_days), instant


# --- DST changes ----------------------------------------------------------------------------

H = timedelta(hours=1)
DST_CHANGES = [
    # Berlin: 02:00 CET -> 03:00 CEST at 01:00 UTC; 03:00 CEST -> 02:00 CET at 01:00 UTC.
    pytest.param(BERLIN, utc(2026, 3, 29, 1), 1 * H, 2 * H, id="berlin-spring"),
    pytest.param(BERLIN, utc(2026, 10, 25, 1), 2 * H, 1 * H, id="berlin-autumn"),
    # New York: 02:00 EST -> 03:00 EDT at 07:00 UTC; 02:00 EDT -> 01:00 EST at 06:00 UTC.
    pytest.param(NEW_YORK, utc(2026, 3, 8, 7), -5 * H, -4 * H, id="new-york-spring"),
    pytest.param(NEW_YORK, utc(2026, 11, 1, 6), -4 * H, -5 * H, id="new-york-autumn"),
]
CHANGE_PARAMS = ("tz", "change", "offset_before", "offset_after")


@pytest.mark.parametrize(CHANGE_PARAMS, DST_CHANGES)
def test_day_and_expiry_on_both_sides_of_a_dst_change_match_zoneinfo(
    tz: ZoneInfo, change: datetime, offset_before: timedelta, offset_after: timedelta
) -> None:
    assert (change - MICROSECOND).astimezone(tz).utcoffset() == offset_before
    assert change.astimezone(tz).utcoffset() == offset_after
    instants = [*around(change, 72), *local_midnights(tz, change.date() - 3 * DAY, 7)]
    assert_matches_reference(LocalDays(tz, RETENTION_DAYS), instants)


@pytest.mark.parametrize(CHANGE_PARAMS, DST_CHANGES)
def test_the_memo_answers_the_same_in_any_order(
    tz: ZoneInfo, change: datetime, offset_before: timedelta, offset_after: timedelta
) -> None:
    instants = [*around(change, 72), *local_midnights(tz, change.date() - 3 * DAY, 7)]
    random.Random(7).shuffle(instants)
    assert_matches_reference(LocalDays(tz, RETENTION_DAYS), instants)


def test_the_local_day_of_a_berlin_autumn_night_by_hand() -> None:
    days = LocalDays(BERLIN, 0)
    # 2026-10-24 21:59:59.999999 UTC is 23:59:59.999999 CEST; 22:00 UTC is midnight CEST.
    assert days.of(utc(2026, 10, 24, 21, 59, 59, 999_999)) == (
        date(2026, 10, 24),
        int(utc(2026, 10, 24, 22).timestamp()),  # its day ends at midnight CEST
    )
    # The day of the change has 25 hours: it ends at midnight CET, 2026-10-25 23:00 UTC.
    assert days.of(utc(2026, 10, 24, 22)) == (
        date(2026, 10, 25),
        int(utc(2026, 10, 25, 23).timestamp()),
    )
    assert days.of(utc(2026, 10, 25, 22, 59)) == (
        date(2026, 10, 25),
        int(utc(2026, 10, 25, 23).timestamp()),
    )
    assert days.of(utc(2026, 10, 25, 23))[0] == date(2026, 10, 26)  # type: ignore[index]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("retention_days", [0, 1, 30, 146, 147, 148, 400])
def test_expiry_that_crosses_a_dst_change_matches_zoneinfo(
    tz: ZoneInfo, retention_days: int
) -> None:
    # Days of a whole year, so every retention above ends on either side of some DST change.
    instants = list(local_midnights(tz, date(2026, 1, 1), 366))
    assert_matches_reference(LocalDays(tz, retention_days), instants)


# --- zones with unusual offsets and changes -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "around_instant"),
    [
        pytest.param("Asia/Kathmandu", utc(2026, 6, 1), id="kathmandu-plus-0545"),
        pytest.param("Asia/Kathmandu", utc(1985, 12, 31, 18, 30), id="kathmandu-0530-to-0545"),
        pytest.param("Pacific/Chatham", utc(2026, 4, 4, 14, 0), id="chatham-plus-1245-dst"),
        pytest.param("Australia/Lord_Howe", utc(2026, 4, 4, 15, 0), id="lord-howe-30-min-dst"),
        pytest.param("America/St_Johns", utc(2026, 11, 1, 4, 30), id="st-johns-minus-0330"),
        pytest.param("America/Santiago", utc(2026, 9, 6, 4, 0), id="santiago-midnight-gap"),
        pytest.param("America/Sao_Paulo", utc(2018, 2, 18, 2, 0), id="sao-paulo-midnight-fold"),
        pytest.param("Pacific/Apia", utc(2011, 12, 30, 10, 0), id="apia-skips-a-day"),
        pytest.param("Pacific/Kiritimati", utc(1994, 12, 31, 10, 0), id="kiritimati-skips-a-day"),
        pytest.param("America/Juneau", utc(1867, 10, 19, 9, 0), id="juneau-repeats-a-day"),
        pytest.param("Europe/Amsterdam", utc(1937, 7, 1), id="amsterdam-plus-0020"),
        pytest.param("Africa/Monrovia", utc(1972, 1, 7), id="monrovia-minus-004430"),
    ],
)
def test_zones_with_unusual_offsets_match_zoneinfo(key: str, around_instant: datetime) -> None:
    tz = ZoneInfo(key)
    instants = [*around(around_instant, 60), *local_midnights(tz, around_instant.date(), 4)]
    assert_matches_reference(LocalDays(tz, 30), instants)


def test_random_instants_over_three_centuries_match_zoneinfo() -> None:
    rng = random.Random(2026)
    keys = sorted(available_timezones())
    first, span = utc(1850, 1, 1), (utc(2150, 1, 1) - utc(1850, 1, 1)).total_seconds()
    for key in rng.sample(keys, 60):
        days = LocalDays(ZoneInfo(key), rng.choice([0, 7, 400]))
        instants = [first + timedelta(seconds=rng.uniform(0, span)) for _ in range(300)]
        assert_matches_reference(days, instants)


# --- the ends of the calendar, other instants, the bound ------------------------------------


@pytest.mark.parametrize(
    ("key", "instant", "retention_days"),
    [
        # 00:30 UTC on 0001-01-01 is still year 0 in New York: no local day.
        pytest.param("America/New_York", utc(1, 1, 1, 0, 30), 400, id="year-0-in-new-york"),
        pytest.param("America/New_York", utc(1, 1, 1, 5, 30), 400, id="year-1-in-new-york"),
        # +14:00 pushes the last hours of 9999 into year 10000.
        pytest.param("Pacific/Kiritimati", utc(9999, 12, 31, 10, 0), 0, id="year-10000"),
        pytest.param("Pacific/Kiritimati", utc(9999, 12, 31, 9, 59), 0, id="last-day"),
        pytest.param("UTC", utc(9999, 12, 30, 12), 0, id="expiry-on-the-last-day"),
        pytest.param("UTC", utc(9999, 12, 30, 12), 1, id="expiry-past-the-calendar"),
        pytest.param("UTC", utc(9999, 12, 31, 23, 59, 59, 999_999), 0, id="last-microsecond"),
        pytest.param("UTC", utc(1, 1, 1), 400, id="first-microsecond"),
    ],
)
def test_the_ends_of_the_calendar_match_zoneinfo(
    key: str, instant: datetime, retention_days: int
) -> None:
    days = LocalDays(ZoneInfo(key), retention_days)
    assert days.of(instant) == reference(instant, days.tz, retention_days)
    assert days.of(instant) == reference(instant, days.tz, retention_days)  # from the memo


def test_instants_in_other_timezones_match_zoneinfo() -> None:
    days = LocalDays(BERLIN, RETENTION_DAYS)
    plus_two = timezone(timedelta(hours=2))
    instants = [t.astimezone(plus_two) for t in around(utc(2026, 10, 25, 1), 30)]
    assert_matches_reference(days, instants)


def test_the_memo_stays_bounded_and_right_when_it_starts_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state.dates, "_MEMO_LIMIT", 3)
    days = LocalDays(NEW_YORK, RETENTION_DAYS)
    instants = [utc(2026, 3, 1, 12) + timedelta(days=n, minutes=37 * n) for n in range(20)]
    assert_matches_reference(days, instants + instants)
    assert len(days._utc_days) <= 3
    assert len(days._expiries) <= 3


def test_the_process_shares_one_memo_per_timezone_and_retention() -> None:
    assert local_days(BERLIN, 400) is local_days(ZoneInfo("Europe/Berlin"), 400)
    assert local_days(BERLIN, 400) is not local_days(BERLIN, 30)
    assert local_days(BERLIN, 30).retention_days == 30


# --- what the memo relies on ----------------------------------------------------------------


def tzif(key: str) -> bytes:
    for root in TZPATH:
        path = Path(root, key)
        if path.is_file():
            return path.read_bytes()
    pytest.fail(f"no TZif file for {key} on TZPATH: the tz database (Debian tzdata) is missing")


def utc_offset_changes(data: bytes) -> list[int]:
    """The Unix times at which a zone changes its UTC offset, read from the 64-bit section of its
    TZif file (RFC 8536); transitions that change only the abbreviation or DST flag are left out."""

    def counts(header: bytes) -> list[int]:
        return [int.from_bytes(header[20 + 4 * i : 24 + 4 * i], "big") for i in range(6)]

    isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt = counts(data)
    v2 = data[44 + 5 * timecnt + 6 * typecnt + charcnt + 8 * leapcnt + isstdcnt + isutcnt :]
    assert v2[:4] == b"TZif"
    assert v2[4:5] >= b"2"
    _, _, _, timecnt, typecnt, _ = counts(v2)
    times_at, kinds_at, types_at = 44, 44 + 8 * timecnt, 44 + 9 * timecnt
    times = [int.from_bytes(v2[times_at + 8 * i : times_at + 8 * i + 8], "big", signed=True)
             for i in range(timecnt)]  # fmt: skip
    kinds = v2[kinds_at : kinds_at + timecnt]
    offsets = [int.from_bytes(v2[types_at + 6 * i : types_at + 6 * i + 4], "big", signed=True)
               for i in range(typecnt)]  # fmt: skip
    changes, current = [], offsets[0]
    for at, kind in zip(times, kinds, strict=True):
        if offsets[kind] != current:
            changes.append(at)
            current = offsets[kind]
    return changes


def test_no_timezone_changes_its_utc_offset_twice_within_24_hours() -> None:
    """``LocalDays`` takes an offset equal at both ends of a UTC day to hold all day long."""
    too_close = []
    for key in sorted(available_timezones()):
        changes = utc_offset_changes(tzif(key))
        too_close += [(key, a) for a, b in itertools.pairwise(changes) if b - a <= 86_400]
    assert too_close == []


def test_no_timezone_rule_changes_its_utc_offset_twice_within_24_hours() -> None:
    """The same for the years after a file's last transition, which zoneinfo derives from the
    zone's rule (the TZif footer). A rule with DST switches twice a year: at noon every day of
    2037 to 2040, its offset must be seen to change at least twice a year (Gaza's Ramadan breaks
    add two), and at least two days apart (a DST or standard time shorter than a day would go
    unseen, or be seen one day apart)."""
    days = [utc(2037, 1, 1, 12) + timedelta(days=n) for n in range(4 * 365 + 1)]
    wrong = []
    for key in sorted(available_timezones()):
        rule = tzif(key).rstrip(b"\n").rsplit(b"\n", 1)[-1]
        if b"," not in rule:
            continue  # no DST: one offset for ever after the last transition
        tz = ZoneInfo(key)
        offsets = [day.astimezone(tz).utcoffset() for day in days]
        changes = [n for n in range(1, len(days)) if offsets[n] != offsets[n - 1]]
        per_year = [sum(days[n].year == year for n in changes) for year in range(2037, 2041)]
        if min(per_year) < 2 or any(b - a < 2 for a, b in itertools.pairwise(changes)):
            wrong.append((key, rule, per_year))
    assert wrong == []
