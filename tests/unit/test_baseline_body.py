"""What the baselines share with the API (bench/baseline_body.py): its parameter checks, and its
body, with each value at its bucket's first day inside the range and 0 where a baseline found
nothing."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import orjson
import pytest

from api.errors import InvalidParameter
from api.params import ActivityParams
from bench.baseline_body import series_params, series_response


def _params(start: date, end: date, granularity: str) -> ActivityParams:
    return series_params(
        str(uuid.uuid4()), str(uuid.uuid4()), "activity-count", start.isoformat(),
        end.isoformat(), granularity,
    )  # fmt: skip


def test_a_request_the_api_refuses_is_refused_the_same_way() -> None:
    client, device = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(InvalidParameter) as refused:
        series_params(client, device, "activity-count", "2026-01-01", "2026-06-30", "daily")
    assert "90" in str(refused.value)  # the range's limit, named in the API's message
    with pytest.raises(InvalidParameter):
        series_params(client, device, "steps", "2026-01-01", "2026-01-02", "daily")


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
