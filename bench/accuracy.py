"""Accuracy, for the record: the user-count error table of devtools/accuracy.py.

The same scenarios tests/integration/test_accuracy.py holds to the rule (days of 1 to 100,000
users, and weeks and quarters made of them), written through state/'s Writer and read back
through its Reader, against the exact set union. Run here on the bench's Redis so that the
report carries the table.
"""

from __future__ import annotations

from dataclasses import asdict

from bench.common import waiting
from devtools.accuracy import REDIS_TIMEOUT_S, TOLERANCE, measure, render
from devtools.services import Endpoints
from state.connection import connect
from state.encoding import EXACT_USERS_LIMIT
from state.settings import StoreSettings


async def run(endpoints: Endpoints) -> dict[str, object]:
    redis = connect(StoreSettings(redis_url=endpoints.redis_url, redis_timeout_s=REDIS_TIMEOUT_S))
    try:
        await redis.flushall()
        rows = await waiting("accuracy: user-count error table", measure(redis))
    finally:
        await redis.aclose()
    estimated = [r for r in rows if not r.must_be_exact]
    worst = max(estimated, key=lambda r: r.relative_error)
    return {
        "accuracy_worst_error_above_limit": round(worst.relative_error, 6),
        "accuracy_exact_buckets_all_exact": all(
            r.answered == r.true for r in rows if r.must_be_exact
        ),
        "accuracy_tolerance": TOLERANCE,
        "accuracy_exact_users_limit": EXACT_USERS_LIMIT,
        "accuracy_table": render(rows),
        "accuracy_rows": [asdict(r) | {"relative_error": r.relative_error} for r in rows],
    }
