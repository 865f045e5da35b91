"""The ranking's body: every device the client owns, ordered by its value over the range, ties
by device id, the first ``limit`` of them (docs/api.md)."""

from __future__ import annotations

from typing import Any

from api.params import RankingParams

RANKING_QUERY = {
    "metric": "activity-count or user-count",
    "start_date": "YYYY-MM-DD, inclusive",
    "end_date": "YYYY-MM-DD, inclusive",
    "order": "desc (default: the most used first) or asc (the least used first)",
    "limit": "1 to 1000, default 10",
}


def ranking_body(
    params: RankingParams, devices: set[str], values: dict[str, int]
) -> dict[str, Any]:
    """``devices``: every device of the client; ``values``: those with a value above zero."""
    owned = devices | set(values)  # a device counted before its set entry (never at rest)
    if params.order == "desc":
        ranked = sorted(owned, key=lambda d: (-values.get(d, 0), d))
    else:
        ranked = sorted(owned, key=lambda d: (values.get(d, 0), d))
    return {
        "metric": params.metric,
        "label": "Total Activity" if params.metric == "activity-count" else "Users",
        "period": {"start": params.start.isoformat(), "end": params.end.isoformat()},
        "order": params.order,
        "limit": params.limit,
        "total_devices": len(owned),
        "devices": [{"device_id": d, "value": values.get(d, 0)} for d in ranked[: params.limit]],
    }
