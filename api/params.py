"""Validation of the activity endpoint's parameters (docs/api.md). Pure.

Errors are returned, not raised: the contract checks 401 and 403 before 400, so the route holds on
to a parameter error until the token has been judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import get_args

from api.errors import InvalidParameter
from state.dates import GRANULARITIES, Bucket, Granularity, buckets, days_inclusive
from state.queries import Metric, Order, RankingQuery, SeriesQuery

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


@dataclass(slots=True)  # not frozen: made per request (state/queries.py says why)
class PathId:
    """A client or device id of the path: as the request spelled it (for errors' details) and
    lower-case, as state/ knows it (docs/api.md). Made once per request, at its start: the
    token is judged on the id before the parameters are checked."""

    name: str
    given: str
    id: str

    @classmethod
    def of(cls, name: str, given: str) -> PathId:
        return cls(name, given, given.lower())


@dataclass(slots=True)  # not frozen: made per request (state/queries.py says why)
class ActivityParams:
    query: SeriesQuery
    compare: bool = False
    """compare=previous_period: the answer adds the total, the previous period and the change."""

    @property
    def buckets(self) -> list[Bucket]:
        query = self.query
        return buckets(query.first, query.last, query.granularity)


def _uuid(path_id: PathId) -> InvalidParameter | None:
    if _UUID.fullmatch(path_id.given):
        return None
    name, value = path_id.name, path_id.given
    return InvalidParameter(f"Invalid {name}: {value}. Expected a UUID", {name: value})


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


def parse_activity_params(
    client: PathId,
    device: PathId | None,
    metric: str | None,
    start_date: str | None,
    end_date: str | None,
    granularity: str | None,
    max_range_days: int,
    compare: str | None = None,
) -> ActivityParams | InvalidParameter:
    """The first invalid parameter wins, in the order of the contract's table: path, metric,
    granularity, dates, the range, then compare. ``device`` None: a client-wide series."""
    for path_id in (client,) if device is None else (client, device):
        if wrong := _uuid(path_id):
            return wrong
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
    device_id = None if device is None else device.id
    query = SeriesQuery(client.id, device_id, typed_metric, start, end, _GRANULARITY_OF[chosen])
    return ActivityParams(query, compare=compare is not None)


def parse_live_params(
    client: PathId, device: PathId, metric: str | None
) -> Metric | InvalidParameter:
    """The live stream's parameters: the path ids and the metric, checked as for the series."""
    return _uuid(client) or _uuid(device) or _metric(metric)


def _metric(metric: str | None) -> Metric | InvalidParameter:
    if metric is None:
        return InvalidParameter("Missing required parameter: metric", {"metric": None})
    if metric not in METRICS:
        return InvalidParameter(
            f"Unknown metric: {metric}. Valid values: {', '.join(METRICS)}", {"metric": metric}
        )
    return "activity-count" if metric == "activity-count" else "user-count"


ORDERS: tuple[Order, ...] = get_args(Order)
_ORDER_OF: dict[str, Order] = {o: o for o in ORDERS}
LIMIT_DEFAULT, LIMIT_MAX = 10, 1000
_LIMIT = re.compile(r"[0-9]{1,4}")


def parse_ranking_params(
    client: PathId,
    metric: str | None,
    start_date: str | None,
    end_date: str | None,
    order: str | None,
    limit: str | None,
    max_range_days: int,
) -> RankingQuery | InvalidParameter:
    """The ranking's parameters; the first invalid one wins, in the contract's order: path,
    metric, dates, the range, order, limit."""
    ranged = parse_activity_params(client, None, metric, start_date, end_date, None, max_range_days)
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
    query = ranged.query
    return RankingQuery(
        query.client, query.metric, query.first, query.last, _ORDER_OF[chosen], count
    )
