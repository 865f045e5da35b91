"""Calendar math shared by the writer (stream/) and the reader (api/).

Pure functions only: time always comes in as a parameter, never from a clock read in here.

Terms:
- *local day*: the calendar date of an instant in the client's IANA timezone.
- *bucket*: a calendar period (ISO week, month, quarter, or a single day) clipped to the
  requested range; its first day is the point's ``date`` in the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
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


def _next_bucket_first_day(first: date, granularity: Granularity) -> date:
    if granularity == "daily":
        return first + timedelta(days=1)
    if granularity == "weekly":
        return first + timedelta(days=7)
    months = 1 if granularity == "monthly" else 3
    month_index = first.year * 12 + (first.month - 1) + months
    return date(month_index // 12, month_index % 12 + 1, 1)


def buckets(first: date, last: date, granularity: Granularity) -> list[Bucket]:
    """Calendar buckets covering ``[first, last]``, each clipped to the range, in order.

    The first bucket always starts at ``first``; empty ranges (``first > last``) give no buckets.
    """
    out: list[Bucket] = []
    start = first
    while start <= last:
        following = _next_bucket_first_day(bucket_first_day(start, granularity), granularity)
        end = min(following - timedelta(days=1), last)
        out.append(Bucket(start, end))
        start = following
    return out
