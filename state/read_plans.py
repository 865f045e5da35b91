"""The packed requests of a range, worked out once per range and shared by every request for it:
its buckets, their days and key suffixes, already in the Redis protocol (state/resp.py). Only
state/reader.py (and the operator's `devact inspect`) read them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from state import keys, resp
from state.dates import Bucket, Granularity, buckets, days_inclusive

_PLANS_KEPT = 256
"""Ranges whose ``SeriesPlan`` is remembered. A dashboard asks for a few ranges (the last 7, 30,
90 days, by granularity) that move once a day; one plan of 90 days takes about 30 KB."""


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The buckets of a range and what reading them takes, worked out once per range
    (``series_plan``): a request then only adds its device's key tag."""

    buckets: tuple[Bucket, ...]
    dates: tuple[str, ...]
    """The first day of each bucket, ISO: the ``date`` of each point."""
    sizes: tuple[int, ...]
    """The number of days of each bucket: the read scripts' arguments."""
    counter_keys: resp.PrefixedBulks
    """Every day's counter key, in order, given a client's tag (its day aggregates)."""
    users_keys: resp.PrefixedBulks
    """Every day's users key, in order, given a client's tag."""
    packed_sizes: bytes
    """``sizes`` as bulk strings."""
    month_keys: resp.PrefixedBulks
    """Every month's key, in order, given a device's tag (its device-months)."""
    month_spans: tuple[int, ...]
    """The device read scripts' first arguments: the number of months, then per month its
    first day in the range and how many of the range's days it holds."""

    @classmethod
    def of(cls, bucket_list: Sequence[Bucket]) -> SeriesPlan:
        days = [day for bucket in bucket_list for day in bucket.days()]
        sizes = tuple(days_inclusive(b.first, b.last) for b in bucket_list)
        months: dict[date, int] = {}
        """Each month's first day in the range -> the number of the range's days in it."""
        first = None
        for day in days:
            if first is None or (day.year, day.month) != (first.year, first.month):
                first = day
            months[first] = months.get(first, 0) + 1
        return cls(
            buckets=tuple(bucket_list),
            dates=tuple(b.first.isoformat() for b in bucket_list),
            sizes=sizes,
            counter_keys=resp.PrefixedBulks(keys.client_day_suffix(d) for d in days),
            users_keys=resp.PrefixedBulks(keys.client_day_users_suffix(d) for d in days),
            packed_sizes=resp.bulks(sizes),
            month_keys=resp.PrefixedBulks(keys.device_month_suffix(d) for d in months),
            month_spans=(len(months), *(x for d in months for x in (d.day, months[d]))),
        )


@lru_cache(maxsize=_PLANS_KEPT)
def whole_plan(first: date, last: date) -> SeriesPlan:
    """One bucket over the whole range: its total (distinct users over the range)."""
    return SeriesPlan.of([Bucket(first, last)])


@lru_cache(maxsize=_PLANS_KEPT)
def series_plan(first: date, last: date, granularity: Granularity) -> SeriesPlan:
    """``SeriesPlan.of(buckets(first, last, granularity))``, remembered per range."""
    return SeriesPlan.of(buckets(first, last, granularity))


@dataclass(frozen=True, slots=True)
class RankingPlan:
    """What ranking a client's devices over a range reads: the range's activity vectors
    (activity) or the device-users hashes of the months it touches, each with the bitmask of
    its days inside the range (users); state/fleet.py."""

    days: resp.PrefixedBulks
    months: tuple[tuple[date, int], ...]


@lru_cache(maxsize=_PLANS_KEPT)
def ranking_plan(first: date, last: date) -> RankingPlan:
    days = [first + timedelta(days=n) for n in range(days_inclusive(first, last))]
    masks: dict[date, int] = {}
    for day in days:
        month = day.replace(day=1)
        masks[month] = masks.get(month, 0) | 1 << (day.day - 1)
    return RankingPlan(
        days=resp.PrefixedBulks(keys.client_day_activity_suffix(d) for d in days),
        months=tuple(masks.items()),
    )
