"""The body of a series answer, and with compare=previous_period the previous period's series,
both totals and the change (docs/api.md). Shared by the device and the client routes."""

from __future__ import annotations

from typing import Any

from api.params import label
from state.queries import Comparison, Period, Series, SeriesQuery


def _points(series: Series) -> list[dict[str, Any]]:
    return [{"date": day, "value": v} for day, v in zip(series.dates, series.values, strict=True)]


def series_body(query: SeriesQuery, series: Series) -> dict[str, Any]:
    return {
        "metric": query.metric,
        "label": label(query.metric, query.granularity),
        "granularity": query.granularity,
        "period": {"start": query.first.isoformat(), "end": query.last.isoformat()},
        "data": _points(series),
    }


def _period(period: Period) -> dict[str, str]:
    return {"start": period.first.isoformat(), "end": period.last.isoformat()}


def compare_body(query: SeriesQuery, comparison: Comparison) -> dict[str, Any]:
    current, previous = comparison.current, comparison.previous
    body = series_body(query, current.series)
    total, before = current.total, 0 if previous is None else previous.total
    body["total"] = total
    body["previous"] = {
        "period": None if previous is None else _period(previous),
        "total": before,
        "data": [] if previous is None else _points(previous.series),
    }
    body["change"] = None if before == 0 else (total - before) / before
    return body
