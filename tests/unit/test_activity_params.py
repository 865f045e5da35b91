"""docs/api.md parameter rules of the activity endpoint, through ``api.params``.

Day counts and bucket edges are worked out by hand from the calendar (2026-01-01 is a Thursday;
2026 is not a leap year, 2024 and 2028 are).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from api.errors import InvalidParameter
from api.params import ActivityParams, PathId, label, parse_activity_params
from state.dates import GRANULARITIES, Bucket, Granularity, buckets
from state.queries import Metric, SeriesQuery

CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"

VALID: dict[str, Any] = {
    "client_id": CLIENT,
    "device_id": DEVICE,
    "metric": "activity-count",
    "start_date": "2026-01-01",
    "end_date": "2026-01-15",
    "granularity": None,
    "max_range_days": 90,
}


def parse(**changes: Any) -> ActivityParams | InvalidParameter:
    args = {**VALID, **changes}
    client = PathId.of("client_id", args.pop("client_id"))
    device = PathId.of("device_id", args.pop("device_id"))
    return parse_activity_params(client, device, **args)


def accepted(**changes: Any) -> ActivityParams:
    result = parse(**changes)
    assert isinstance(result, ActivityParams), result
    return result


def refused(**changes: Any) -> InvalidParameter:
    result = parse(**changes)
    assert isinstance(result, InvalidParameter), result
    assert (result.status, result.code) == (400, "invalid_parameter")
    return result


def test_valid_parameters_are_parsed() -> None:
    params = accepted(metric="user-count", granularity="weekly")
    assert (params.query.metric, params.query.granularity) == ("user-count", "weekly")
    assert (params.query.first, params.query.last) == (date(2026, 1, 1), date(2026, 1, 15))


# --- metric ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_both_metrics_are_accepted(metric: str) -> None:
    assert accepted(metric=metric).query.metric == metric


def test_unknown_metric_gives_the_specs_message_and_details() -> None:
    error = refused(metric="invalid-metric")
    assert (
        error.message == "Unknown metric: invalid-metric. Valid values: activity-count, user-count"
    )
    assert error.details == {"metric": "invalid-metric"}


@pytest.mark.parametrize("metric", ["", "Activity-Count", "activity_count", " user-count"])
def test_metric_must_match_a_valid_value_exactly(metric: str) -> None:
    assert refused(metric=metric).details == {"metric": metric}


def test_missing_metric_is_named_with_null() -> None:
    assert refused(metric=None).details == {"metric": None}


# --- granularity ----------------------------------------------------------------------------


def test_granularity_defaults_to_daily() -> None:
    params = accepted(granularity=None)
    assert params.query.granularity == "daily"
    assert len(params.buckets) == 15  # 2026-01-01 .. 2026-01-15, one point per day


@pytest.mark.parametrize("granularity", ["daily", "weekly", "monthly", "quarterly"])
def test_each_granularity_is_accepted(granularity: str) -> None:
    assert accepted(granularity=granularity).query.granularity == granularity


@pytest.mark.parametrize("granularity", ["hourly", "Daily", "week", ""])
def test_unknown_granularity_is_refused_naming_it(granularity: str) -> None:
    assert refused(granularity=granularity).details == {"granularity": granularity}


# --- dates ----------------------------------------------------------------------------------

NOT_CALENDAR_DATES = [
    pytest.param("2026-02-30", id="no-such-day"),
    pytest.param("2026-02-29", id="not-a-leap-year"),
    pytest.param("2026-13-01", id="month-13"),
    pytest.param("2026-1-5", id="unpadded"),
    pytest.param("20260105", id="basic-format"),
    pytest.param("2026-01-05T00:00", id="with-time"),
    pytest.param("2026-W02-1", id="iso-week-date"),
    pytest.param(" 2026-01-05", id="leading-space"),
    pytest.param("2026-01-05\n", id="trailing-newline"),
    pytest.param("\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0665", id="arabic-indic-digits"),
    pytest.param("\uff12\uff10\uff12\uff16-\uff10\uff11-\uff10\uff15", id="fullwidth-digits"),
    pytest.param("", id="empty"),
    pytest.param("yesterday", id="word"),
]


@pytest.mark.parametrize("name", ["start_date", "end_date"])
@pytest.mark.parametrize("value", NOT_CALENDAR_DATES)
def test_dates_that_are_not_yyyy_mm_dd_calendar_dates_are_refused(name: str, value: str) -> None:
    assert refused(**{name: value}).details == {name: value}


@pytest.mark.parametrize("name", ["start_date", "end_date"])
def test_missing_date_is_named_with_null(name: str) -> None:
    assert refused(**{name: None}).details == {name: None}


def test_leap_day_of_a_leap_year_is_a_date() -> None:
    params = accepted(start_date="2028-02-29", end_date="2028-03-01")
    assert (params.query.first, params.query.last) == (date(2028, 2, 29), date(2028, 3, 1))


def test_start_after_end_is_refused_naming_both() -> None:
    error = refused(start_date="2026-01-16", end_date="2026-01-15")
    assert error.details == {"start_date": "2026-01-16", "end_date": "2026-01-15"}


def test_start_equal_to_end_is_a_one_day_range() -> None:
    params = accepted(start_date="2026-01-15", end_date="2026-01-15")
    assert params.buckets == [Bucket(date(2026, 1, 15), date(2026, 1, 15))]


# --- range ----------------------------------------------------------------------------------


def test_range_of_90_days_is_accepted() -> None:
    # January 31 + February 28 + March 31 = 90 days.
    params = accepted(start_date="2026-01-01", end_date="2026-03-31")
    assert len(params.buckets) == 90


def test_range_of_91_days_is_refused_naming_both_dates() -> None:
    error = refused(start_date="2026-01-01", end_date="2026-04-01")
    assert error.details == {"start_date": "2026-01-01", "end_date": "2026-04-01"}


@pytest.mark.parametrize(
    ("max_range_days", "start_date", "end_date", "ok"),
    [
        pytest.param(7, "2026-01-01", "2026-01-07", True, id="7-of-7"),
        pytest.param(7, "2026-01-01", "2026-01-08", False, id="8-of-7"),
        pytest.param(1, "2026-01-01", "2026-01-01", True, id="1-of-1"),
        pytest.param(1, "2026-01-01", "2026-01-02", False, id="2-of-1"),
        pytest.param(366, "2024-01-01", "2024-12-31", True, id="leap-year-of-366"),
        pytest.param(366, "2024-01-01", "2025-01-01", False, id="367-of-366"),
    ],
)
def test_a_different_max_range_days_is_honoured(
    max_range_days: int, start_date: str, end_date: str, ok: bool
) -> None:
    result = parse(start_date=start_date, end_date=end_date, max_range_days=max_range_days)
    if ok:
        assert isinstance(result, ActivityParams)
    else:
        assert isinstance(result, InvalidParameter)
        assert result.details == {"start_date": start_date, "end_date": end_date}


# --- path -----------------------------------------------------------------------------------

MALFORMED_UUIDS = [
    pytest.param("aa7cf8409ca946a397789015d6580d50", id="no-hyphens"),
    pytest.param("{aa7cf840-9ca9-46a3-9778-9015d6580d50}", id="braces"),
    pytest.param("urn:uuid:aa7cf840-9ca9-46a3-9778-9015d6580d50", id="urn"),
    pytest.param("aa7cf840-9ca9-46a3-9778-9015d6580d5", id="short"),
    pytest.param("za7cf840-9ca9-46a3-9778-9015d6580d50", id="non-hex"),
    pytest.param("not-a-uuid", id="word"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("name", ["client_id", "device_id"])
@pytest.mark.parametrize("value", MALFORMED_UUIDS)
def test_malformed_uuid_in_the_path_is_refused_naming_it(name: str, value: str) -> None:
    assert refused(**{name: value}).details == {name: value}


def test_upper_case_uuids_in_the_path_are_accepted_and_asked_for_in_lower_case() -> None:
    params = accepted(client_id=CLIENT.upper(), device_id="F1E2d3c4-B5A6-7890-ABCD-ef1234567890")
    assert (params.query.client, params.query.device) == (CLIENT, DEVICE)


def test_a_valid_request_asks_state_for_its_series_by_meaning() -> None:
    params = accepted(metric="user-count", granularity="monthly", compare="previous_period")
    assert params.query == SeriesQuery(
        CLIENT, DEVICE, "user-count", date(2026, 1, 1), date(2026, 1, 15), "monthly"
    )
    assert params.compare


# --- order of checks ------------------------------------------------------------------------

BAD_EVERYTHING: dict[str, Any] = {
    "client_id": "bad-client",
    "device_id": "bad-device",
    "metric": "bad-metric",
    "granularity": "hourly",
    "start_date": "2026-02-30",
    "end_date": "2026-1-5",
}


@pytest.mark.parametrize(
    ("fixed", "winner"),
    [
        pytest.param((), {"client_id": "bad-client"}, id="client_id-first"),
        pytest.param(("client_id",), {"device_id": "bad-device"}, id="then-device_id"),
        pytest.param(("client_id", "device_id"), {"metric": "bad-metric"}, id="then-metric"),
        pytest.param(
            ("client_id", "device_id", "metric"), {"granularity": "hourly"}, id="then-granularity"
        ),
        pytest.param(
            ("client_id", "device_id", "metric", "granularity"),
            {"start_date": "2026-02-30"},
            id="then-start_date",
        ),
        pytest.param(
            ("client_id", "device_id", "metric", "granularity", "start_date"),
            {"end_date": "2026-1-5"},
            id="then-end_date",
        ),
    ],
)
def test_checks_run_path_then_metric_then_granularity_then_dates(
    fixed: tuple[str, ...], winner: dict[str, Any]
) -> None:
    """Every parameter is wrong except those in ``fixed``; the first check in order reports."""
    changes = {name: value for name, value in BAD_EVERYTHING.items() if name not in fixed}
    assert refused(**changes).details == winner


def test_missing_metric_is_reported_before_a_bad_granularity_and_dates() -> None:
    error = refused(metric=None, granularity="hourly", start_date="2026-02-30")
    assert error.details == {"metric": None}


def test_bad_dates_are_reported_before_the_range() -> None:
    # Valid start, invalid end: whatever the range would be, the date itself is named.
    assert refused(start_date="2020-01-01", end_date="2026-02-30").details == {
        "end_date": "2026-02-30"
    }


def test_range_is_checked_last() -> None:
    error = refused(granularity="quarterly", start_date="2026-01-01", end_date="2026-12-31")
    assert error.details == {"start_date": "2026-01-01", "end_date": "2026-12-31"}


# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "granularity", "expected"),
    [
        ("activity-count", "daily", "Total Activity"),
        ("activity-count", "weekly", "Total Activity"),
        ("activity-count", "monthly", "Total Activity"),
        ("activity-count", "quarterly", "Total Activity"),
        ("user-count", "daily", "Daily Users"),
        ("user-count", "weekly", "Weekly Users"),
        ("user-count", "monthly", "Monthly Users"),
        ("user-count", "quarterly", "Quarterly Users"),
    ],
)
def test_label_follows_metric_and_granularity(
    metric: Metric, granularity: Granularity, expected: str
) -> None:
    assert label(metric, granularity) == expected


# --- buckets --------------------------------------------------------------------------------


def test_weekly_buckets_are_iso_weeks_clipped_to_the_range() -> None:
    # Thursday 2026-01-01 .. Tuesday 2026-01-20; ISO weeks start on Mondays 01-05, 01-12, 01-19.
    params = accepted(granularity="weekly", start_date="2026-01-01", end_date="2026-01-20")
    assert [(b.first, b.last) for b in params.buckets] == [
        (date(2026, 1, 1), date(2026, 1, 4)),
        (date(2026, 1, 5), date(2026, 1, 11)),
        (date(2026, 1, 12), date(2026, 1, 18)),
        (date(2026, 1, 19), date(2026, 1, 20)),
    ]


def test_monthly_and_quarterly_buckets_are_calendar_periods_clipped_to_the_range() -> None:
    monthly = accepted(granularity="monthly", start_date="2026-02-15", end_date="2026-05-10")
    quarterly = accepted(granularity="quarterly", start_date="2026-02-15", end_date="2026-05-10")
    assert [(b.first, b.last) for b in monthly.buckets] == [
        (date(2026, 2, 15), date(2026, 2, 28)),
        (date(2026, 3, 1), date(2026, 3, 31)),
        (date(2026, 4, 1), date(2026, 4, 30)),
        (date(2026, 5, 1), date(2026, 5, 10)),
    ]
    assert [(b.first, b.last) for b in quarterly.buckets] == [
        (date(2026, 2, 15), date(2026, 3, 31)),
        (date(2026, 4, 1), date(2026, 5, 10)),
    ]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_buckets_are_those_of_the_shared_calendar_module(granularity: Granularity) -> None:
    params = accepted(granularity=granularity, start_date="2026-01-01", end_date="2026-03-31")
    assert params.buckets == buckets(date(2026, 1, 1), date(2026, 3, 31), granularity)
