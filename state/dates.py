"""Calendar math shared by the writer (stream/) and the reader (api/).

Pure functions only: time always comes in as a parameter, never from a clock read in here.
``LocalDays`` memoises two of them for the writer's hot path, with the same results.

Terms:
- *local day*: the calendar date of an instant in the client's IANA timezone.
- *bucket*: a calendar period (ISO week, month, quarter, or a single day) clipped to the
  requested range; its first day is the point's ``date`` in the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo

Granularity = Literal["daily", "weekly", "monthly", "quarterly"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)


@dataclass(frozen=True, slots=True)
class Bucket:
    """An inclusive run of local days ``[first, last]``."""

    first: date
    last: date

    def days(self) -> list[date]:
        return [self.first + timedelta(n) for n in range((self.last - self.first).days + 1)]


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    """The calendar date of an aware ``instant`` in ``tz`` (DST and sub-hour offsets included)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(tz).date()


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``, as an aware UTC datetime.

    Midnight may not exist (a DST jump at 00:00, as in America/Santiago); zoneinfo then resolves
    the wall time with fold=0, which lands after the gap, and that is the day's first instant.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def day_expires_at(day: date, tz: ZoneInfo, retention_days: int) -> int:
    """Unix time at which a local day's data leaves the retention window.

    A day is kept for ``retention_days`` full days after it ends, so an event is accepted exactly
    while its day's keys would still be alive, and the same number sets the keys' EXPIREAT.
    """
    return int(day_start(day + timedelta(days=1 + retention_days), tz).timestamp())


def month_expires_at(day: date, day_expire_at: int) -> int:
    """When the device-month key holding ``day`` expires, from the day's own expiry: as its
    month's last day leaves the retention window, give or take the hour a DST change may move
    that day's end (an hour later at most: a month's data is never dropped early). Worked out
    from the day's expiry alone, so the writer needs no timezone."""
    last = _last_of_month(day)
    return day_expire_at + (last - day).days * 86_400 + 3_600


def _last_of_month(day: date) -> date:
    if day.month == 12:
        return date(day.year, 12, 31)
    return date(day.year, day.month + 1, 1) - timedelta(days=1)


DayAndExpiry = tuple[date, int]
"""A local day and its ``day_expires_at``."""

_LAST_MICROSECOND = timedelta(days=1, microseconds=-1)
_MEMO_LIMIT = 4096
"""Entries a ``LocalDays`` keeps per table before starting afresh: over 11 years of days."""


@dataclass(frozen=True, slots=True)
class _UtcDay:
    """The local days of the instants of one UTC day: ``before`` up to ``change``, then ``after``
    (the same pair twice when the whole UTC day falls on one local day)."""

    change: datetime
    before: DayAndExpiry | None
    after: DayAndExpiry | None


class LocalDays:
    """``local_day`` and ``day_expires_at`` in one timezone, memoised: the same answers at a
    fraction of the cost, for the writer, which asks once per event.

    Memo by UTC day: on a UTC day over which the timezone's UTC offset stays the same, the local
    day changes at most once, at a local midnight found from that offset, so one comparison
    answers for every instant of the UTC day. A UTC day over which the offset changes (a DST
    switch) is answered by ``local_day`` itself. An offset equal at both ends of a UTC day stays
    the same in between, because no timezone changes it twice within 24 hours (the tz database
    is checked for this in the unit tests). Expiries are memoised by local day; they depend on
    nothing else.
    """

    __slots__ = ("_expiries", "_utc_days", "retention_days", "tz")

    def __init__(self, tz: ZoneInfo, retention_days: int) -> None:
        self.tz = tz
        self.retention_days = retention_days
        self._utc_days: dict[int, _UtcDay | None] = {}
        """By proleptic ordinal of the UTC date; None for a day the memo does not answer."""
        self._expiries: dict[date, DayAndExpiry | None] = {}

    def of(self, instant: datetime) -> DayAndExpiry | None:
        """``(local_day(instant, tz), day_expires_at(that day, tz, retention_days))``, or None
        when either falls outside the calendar (years 1 to 9999)."""
        if instant.tzinfo is not UTC:  # the memo is keyed by the UTC date
            return self._exact(instant)
        ordinal = instant.toordinal()
        try:
            utc_day = self._utc_days[ordinal]
        except KeyError:
            utc_day = self._remember_utc_day(ordinal)
        if utc_day is None:
            return self._exact(instant)
        return utc_day.before if instant < utc_day.change else utc_day.after

    def _exact(self, instant: datetime) -> DayAndExpiry | None:
        try:
            day = local_day(instant, self.tz)
        except OverflowError:  # before year 1 (or after 9999) in the timezone
            return None
        return self._with_expiry(day)

    def _with_expiry(self, day: date) -> DayAndExpiry | None:
        try:
            return self._expiries[day]
        except KeyError:
            pass
        try:
            found: DayAndExpiry | None = (day, day_expires_at(day, self.tz, self.retention_days))
        except OverflowError:  # the day's expiry is past year 9999
            found = None
        if len(self._expiries) >= _MEMO_LIMIT:
            self._expiries.clear()
        self._expiries[day] = found
        return found

    def _remember_utc_day(self, ordinal: int) -> _UtcDay | None:
        if len(self._utc_days) >= _MEMO_LIMIT:
            self._utc_days.clear()
        utc_day = self._utc_days[ordinal] = self._utc_day(ordinal)
        return utc_day

    def _utc_day(self, ordinal: int) -> _UtcDay | None:
        """The memo entry of a UTC day, or None when its offset changes or it meets the ends of
        the calendar (those instants are then answered one by one)."""
        try:
            start = datetime.combine(date.fromordinal(ordinal), time(0), UTC)
            first = start.astimezone(self.tz)
            last = (start + _LAST_MICROSECOND).astimezone(self.tz)
            offset = first.utcoffset()
            if offset is None or offset != last.utcoffset():
                return None
            before, after = first.date(), last.date()
            if before == after:
                change = start + timedelta(days=1)
            else:
                # With a constant offset, local time is UTC time plus it: the local day turns
                # at the midnight that starts ``after``, which is that midnight minus the offset.
                change = datetime.combine(after, time(0), UTC) - offset
        except OverflowError:
            return None
        return _UtcDay(change, self._with_expiry(before), self._with_expiry(after))


@lru_cache(maxsize=256)
def local_days(tz: ZoneInfo, retention_days: int) -> LocalDays:
    """The process's ``LocalDays`` of ``tz``, shared by batches so its memo outlives them
    (bounded: a few hundred timezones, each with bounded tables)."""
    return LocalDays(tz, retention_days)


def days_inclusive(first: date, last: date) -> int:
    """Number of calendar days in ``[first, last]``; 1 when ``first == last``."""
    return (last - first).days + 1


def bucket_first_day(day: date, granularity: Granularity) -> date:
    """The first day of the calendar bucket containing ``day`` (unclipped)."""
    if granularity == "daily":
        return day
    if granularity == "weekly":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if granularity == "monthly":
        return day.replace(day=1)
    quarter_first_month = 3 * ((day.month - 1) // 3) + 1
    return date(day.year, quarter_first_month, 1)


def _next_bucket_first_day(first: date, granularity: Granularity) -> date | None:
    """The first day of the bucket after the one starting at ``first``; None past 9999-12-31
    (the last bucket of the calendar is clipped there, never an overflow)."""
    if granularity in ("daily", "weekly"):
        step = timedelta(days=1 if granularity == "daily" else 7)
        return first + step if date.max - first >= step else None
    months = 1 if granularity == "monthly" else 3
    month_index = first.year * 12 + (first.month - 1) + months
    year = month_index // 12
    return date(year, month_index % 12 + 1, 1) if year <= date.max.year else None


def buckets(first: date, last: date, granularity: Granularity) -> list[Bucket]:
    """Calendar buckets covering ``[first, last]``, each clipped to the range, in order.

    The first bucket always starts at ``first``; empty ranges (``first > last``) give no buckets.
    """
    out: list[Bucket] = []
    if first > last:
        return out
    start = first
    while True:
        following = _next_bucket_first_day(bucket_first_day(start, granularity), granularity)
        if following is None or following > last:
            out.append(Bucket(start, last))
            return out
        out.append(Bucket(start, following - timedelta(days=1)))
        start = following


def previous_range(first: date, last: date) -> tuple[date, date] | None:
    """The range a comparison sets beside ``[first, last]``: as many days, ending the day before
    ``first``; clipped at 0001-01-01, and None when ``first`` is that day (docs/api.md)."""
    if first == date.min:
        return None
    days = days_inclusive(first, last)
    start = date.min if (first - date.min).days < days else first - timedelta(days=days)
    return start, first - timedelta(days=1)
