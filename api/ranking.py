"""The ranking's body: the first ``limit`` of a client's devices, as state/ ranks them
(docs/api.md)."""

from __future__ import annotations

from typing import Any

from state.queries import Ranking, RankingQuery

RANKING_QUERY = {
    "metric": "activity-count or user-count",
    "start_date": "YYYY-MM-DD, inclusive",
    "end_date": "YYYY-MM-DD, inclusive",
    "order": "desc (default: the most used first) or asc (the least used first)",
    "limit": "1 to 1000, default 10",
}


def ranking_body(query: RankingQuery, ranking: Ranking) -> dict[str, Any]:
    return {
        "metric": query.metric,
        "label": "Total Activity" if query.metric == "activity-count" else "Users",
        "period": {"start": query.first.isoformat(), "end": query.last.isoformat()},
        "order": query.order,
        "limit": query.limit,
        "total_devices": ranking.total_devices,
        "devices": [{"device_id": device, "value": value} for device, value in ranking.devices],
    }
