"""What the baselines share with the real API: a series request's parameters, checked by the
API's own code, and the body it gives (docs/api.md), built from a baseline's values. The SQL
baseline (bench/sql_api.py) and the columnar peer (bench/ch_api.py) answer with them, so the
bench can compare their answers with the API's byte for byte."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import orjson
from fastapi.responses import Response

from api.errors import InvalidParameter
from api.params import ActivityParams, PathId, label, parse_activity_params

MAX_RANGE_DAYS = 90


def series_params(
    client_id: str,
    device_id: str,
    metric: str | None,
    start_date: str | None,
    end_date: str | None,
    granularity: str | None,
) -> ActivityParams:
    """A device's series request, checked as the real API checks it (its 400s raised)."""
    client, device = PathId.of("client_id", client_id), PathId.of("device_id", device_id)
    parsed = parse_activity_params(
        client, device, metric, start_date, end_date, granularity, MAX_RANGE_DAYS
    )
    if isinstance(parsed, InvalidParameter):
        raise parsed
    return parsed


def series_response(parsed: ActivityParams, values: Mapping[date, int]) -> Response:
    """The body the real API gives (docs/api.md) for ``values`` by the first day of each
    calendar bucket; a bucket that starts before the range is the range's first day, and a
    bucket without a value is 0."""
    params = parsed.query
    found = {max(bucket, params.first): value for bucket, value in values.items()}
    body = {
        "metric": params.metric,
        "label": label(params.metric, params.granularity),
        "granularity": params.granularity,
        "period": {"start": params.first.isoformat(), "end": params.last.isoformat()},
        "data": [
            {"date": b.first.isoformat(), "value": found.get(b.first, 0)} for b in parsed.buckets
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json")
