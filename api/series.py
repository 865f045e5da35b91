"""What a series request reads and answers: the series, and with compare=previous_period the
previous period's series and both totals (docs/api.md). Shared by the device and the client
routes; all of it is read in the request's one round trip."""

from __future__ import annotations

from typing import Any

from api.params import ActivityParams, label
from state.reader import SeriesPlan, SeriesQuery, whole_plan


def _points(plan: SeriesPlan, values: list[int]) -> list[dict[str, Any]]:
    return [{"date": day, "value": v} for day, v in zip(plan.dates, values, strict=True)]


class SeriesRequest:
    """The queries of one request, in the order their values come back, and its body."""

    def __init__(self, params: ActivityParams) -> None:
        self.params = params
        metric, previous = params.metric, params.previous
        self.queries = [SeriesQuery(metric, params.plan)]
        if params.compare and previous is not None:
            self.queries.append(SeriesQuery(metric, previous.plan))
        if params.compare and metric == "user-count":
            # Distinct users over a whole range: not the sum of its buckets' users.
            self.queries.append(SeriesQuery(metric, whole_plan(params.start, params.end)))
            if previous is not None:
                self.queries.append(SeriesQuery(metric, whole_plan(previous.start, previous.end)))

    def body(self, values: list[list[int]]) -> dict[str, Any]:
        params = self.params
        body: dict[str, Any] = {
            "metric": params.metric,
            "label": label(params.metric, params.granularity),
            "granularity": params.granularity,
            "period": {"start": params.start.isoformat(), "end": params.end.isoformat()},
            "data": _points(params.plan, values[0]),
        }
        if not params.compare:
            return body
        previous = params.previous
        series = values[1] if previous is not None else []
        if params.metric == "activity-count":
            total, before = sum(values[0]), sum(series)
        else:
            totals = values[2:] if previous is not None else values[1:]
            total, before = totals[0][0], totals[1][0] if previous is not None else 0
        body["total"] = total
        body["previous"] = {
            "period": None
            if previous is None
            else {"start": previous.start.isoformat(), "end": previous.end.isoformat()},
            "total": before,
            "data": [] if previous is None else _points(previous.plan, series),
        }
        body["change"] = None if before == 0 else (total - before) / before
        return body
