"""Validation of the activity endpoint's parameters (docs/api.md). Pure.

Errors are returned, not raised: the contract checks 401 and 403 before 400, so the route holds on
to a parameter error until the token has been judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import get_args

from api.errors import InvalidParameter
from state.dates import GRANULARITIES, Bucket, Granularity, days_inclusive
from state.reader import Metric, RankingPlan, SeriesPlan, ranking_plan, series_plan

METRICS: tuple[Metric, ...] = get_args(Metric)
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

LABELS: dict[Granularity, str] = {
    "daily": "Daily Users",
    "weekly": "Weekly Users",
    "monthly": "Monthly Users",
    "quarterly": "Quarterly Users",
}


_GRANULARITY_OF: dict[str, Granularity] = {g: g for g in GRANULARITIES}


def label(metric: Metric, granularity: Granularity) -> str:
    return "Total Activity" if metric == "activity-count" else LABELS[granularity]


COMPARES = ("previous_period",)


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    plan: SeriesPlan
    """The range's buckets and their days, shared by every request of the same range."""


@dataclass(frozen=True, slots=True)
class ActivityParams:
    metric: Metric
    granularity: Granularity
    start: date
    end: date
    plan: SeriesPlan
    """The range's buckets and their days, shared by every request of the same range."""
    compare: bool = False
    previous: Period | None = None
    """With ``compare``: the same number of days ending the day before ``start``, bucketed by
    the same rules; clipped at 0001-01-01, and None when ``start`` is that day."""

    @property
    def buckets(self) -> list[Bucket]:
        return list(self.plan.buckets)


def _uuid(name: str, value: str) -> str | InvalidParameter:
    if not _UUID.fullmatch(value):
        return InvalidParameter(f"Invalid {name}: {value}. Expected a UUID", {name: value})
    return value.lower()


def _date(name: str, value: str | None) -> date | InvalidParameter:
    if value is None:
        return InvalidParameter(f"Missing required parameter: {name}", {name: None})
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        return InvalidParameter(
            f"Invalid {name}: {value}. Expected a calendar date as YYYY-MM-DD", {name: value}
        )


def previous_period(start: date, end: date, granularity: Granularity) -> Period | None:
    """The period a compare=previous_period answer sets beside ``[start, end]``."""
    if start == date.min:
        return None
    days = days_inclusive(start, end)
    last = start - timedelta(days=1)
    first = date.min if (start - date.min).days < days else start - timedelta(days=days)
    return Period(first, last, series_plan(first, last, granularity))


def parse_activity_params(
    client_id: str,
    device_id: str | None,
    metric: str | None,
    start_date: str | None,
    end_date: str | None,
    granularity: str | None,
    max_range_days: int,
    compare: str | None = None,
) -> ActivityParams | InvalidParameter:
    """The first invalid parameter wins, in the order of the contract's table: path, metric,
    granularity, dates, the range, then compare. ``device_id`` None: a client-wide series."""
    path = [("client_id", client_id)] + ([] if device_id is None else [("device_id", device_id)])
    for name, value in path:
        checked = _uuid(name, value)
        if isinstance(checked, InvalidParameter):
            return checked
    typed_metric = _metric(metric)
    if isinstance(typed_metric, InvalidParameter):
        return typed_metric
    chosen = "daily" if granularity is None else granularity
    if chosen not in GRANULARITIES:
        return InvalidParameter(
            f"Unknown granularity: {chosen}. Valid values: {', '.join(GRANULARITIES)}",
            {"granularity": chosen},
        )
    start = _date("start_date", start_date)
    if isinstance(start, InvalidParameter):
        return start
    end = _date("end_date", end_date)
    if isinstance(end, InvalidParameter):
        return end
    both = {"start_date": start_date, "end_date": end_date}
    if start > end:
        return InvalidParameter("start_date must not be after end_date", both)
    days = days_inclusive(start, end)
    if days > max_range_days:
        return InvalidParameter(
            f"Range of {days} days exceeds the limit of {max_range_days} days", both
        )
    if compare is not None and compare not in COMPARES:
        return InvalidParameter(
            f"Unknown compare: {compare}. Valid values: {', '.join(COMPARES)}",
            {"compare": compare},
        )
    typed_granularity = _GRANULARITY_OF[chosen]
    return ActivityParams(
        typed_metric,
        typed_granularity,
        start,
        end,
        series_plan(start, end, typed_granularity),
        compare=compare is not None,
        previous=previous_period(start, end, typed_granularity) if compare else None,
    )


def parse_live_params(
    client_id: str, device_id: str, metric: str | None
) -> Metric | InvalidParameter:
    """The live stream's parameters: the path ids and the metric, checked as for the series."""
    for name, value in (("client_id", client_id), ("device_id", device_id)):
        checked = _uuid(name, value)
        if isinstance(checked, InvalidParameter):
            return checked
    return _metric(metric)


def _metric(metric: str | None) -> Metric | InvalidParameter:
    if metric is None:
        return InvalidParameter("Missing required parameter: metric", {"metric": None})
    if metric not in METRICS:
        return InvalidParameter(
            f"Unknown metric: {metric}. Valid values: {', '.join(METRICS)}", {"metric": metric}
        )
    return "activity-count" if metric == "activity-count" else "user-count"


ORDERS = ("desc", "asc")
LIMIT_DEFAULT, LIMIT_MAX = 10, 1000
_LIMIT = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True, slots=True)
class RankingParams:
    metric: Metric
    start: date
    end: date
    order: str
    limit: int
    plan: RankingPlan


def parse_ranking_params(
    client_id: str,
    metric: str | None,
    start_date: str | None,
    end_date: str | None,
    order: str | None,
    limit: str | None,
    max_range_days: int,
) -> RankingParams | InvalidParameter:
    """The ranking's parameters; the first invalid one wins, in the contract's order: path,
    metric, dates, the range, order, limit."""
    ranged = parse_activity_params(
        client_id, None, metric, start_date, end_date, None, max_range_days
    )
    if isinstance(ranged, InvalidParameter):
        return ranged
    chosen = "desc" if order is None else order
    if chosen not in ORDERS:
        return InvalidParameter(
            f"Unknown order: {chosen}. Valid values: {', '.join(ORDERS)}", {"order": chosen}
        )
    count = LIMIT_DEFAULT
    if limit is not None:
        if not _LIMIT.fullmatch(limit) or not 1 <= int(limit) <= LIMIT_MAX:
            return InvalidParameter(
                f"Invalid limit: {limit}. Expected an integer from 1 to {LIMIT_MAX}",
                {"limit": limit},
            )
        count = int(limit)
    return RankingParams(
        ranged.metric,
        ranged.start,
        ranged.end,
        chosen,
        count,
        ranking_plan(ranged.start, ranged.end),
    )
