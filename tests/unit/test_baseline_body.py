"""The baselines' series body (bench/baseline_body.py): the real API's shape, with each value at
its bucket's first day inside the range and 0 where a baseline found nothing."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import orjson

from api.params import ActivityParams, PathId, parse_activity_params
from bench.baseline_body import series_response


def _params(start: date, end: date, granularity: str) -> ActivityParams:
    parsed = parse_activity_params(
        PathId.of("client_id", str(uuid.uuid4())),
        PathId.of("device_id", str(uuid.uuid4())),
        "activity-count",
        start.isoformat(),
        end.isoformat(),
        granularity,
        90,
    )
    assert isinstance(parsed, ActivityParams)
    return parsed


def test_a_week_begun_before_the_range_is_dated_at_the_ranges_first_day() -> None:
    start, end = date(2026, 3, 4), date(2026, 3, 24)  # a Wednesday to a Tuesday
    monday_before = start - timedelta(days=start.weekday())
    body = orjson.loads(
        series_response(
            _params(start, end, "weekly"), {monday_before: 7, date(2026, 3, 16): 3}
        ).body
    )
    # The oracle: ISO weeks clipped to the range, by hand.
    assert body["data"] == [
        {"date": "2026-03-04", "value": 7},
        {"date": "2026-03-09", "value": 0},
        {"date": "2026-03-16", "value": 3},
        {"date": "2026-03-23", "value": 0},
    ]
    assert body["period"] == {"start": "2026-03-04", "end": "2026-03-24"}
    assert (body["metric"], body["granularity"]) == ("activity-count", "weekly")


def test_every_day_of_a_daily_range_has_a_point() -> None:
    start = date(2026, 2, 26)
    body = orjson.loads(series_response(_params(start, date(2026, 3, 2), "daily"), {}).body)
    assert [p["date"] for p in body["data"]] == [
        "2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"
    ]  # fmt: skip
    assert {p["value"] for p in body["data"]} == {0}
