"""The ranking's body: every device the client owns, ordered by its value over the range, ties
by device id, the first ``limit`` of them (docs/api.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from api.params import RankingParams

RANKING_QUERY = {
    "metric": "activity-count or user-count",
    "start_date": "YYYY-MM-DD, inclusive",
    "end_date": "YYYY-MM-DD, inclusive",
    "order": "desc (default: the most used first) or asc (the least used first)",
    "limit": "1 to 1000, default 10",
}


def ranking_body(
    params: RankingParams, devices: Sequence[str], values: np.ndarray
) -> dict[str, Any]:
    """``devices``: every device of the client, by id; ``values``: theirs, in that order."""
    key = values if params.order == "asc" else -values
    # Sorted by value, then by position: the devices are in id order already.
    ranked = np.lexsort((np.arange(len(devices)), key))[: params.limit]
    return {
        "metric": params.metric,
        "label": "Total Activity" if params.metric == "activity-count" else "Users",
        "period": {"start": params.start.isoformat(), "end": params.end.isoformat()},
        "order": params.order,
        "limit": params.limit,
        "total_devices": len(devices),
        "devices": [{"device_id": devices[i], "value": int(values[i])} for i in ranked],
    }
