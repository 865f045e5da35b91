"""The body the real API gives for a series (docs/api.md), built from a baseline's values: the
SQL baseline (bench/sql_api.py) and the columnar peer (bench/ch_api.py) answer with it, so the
bench can compare their answers with the API's byte for byte."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import orjson
from fastapi.responses import Response

from api.params import ActivityParams, label


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
