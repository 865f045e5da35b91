"""The SQL baseline: the seed page's query on PostgreSQL, behind the real API's route and body.

The seed answers ``SUM(total_activity_count)`` / ``COUNT(DISTINCT user_id)`` ``GROUP BY
DATE(generated_at_utc) WHERE device_id = ?`` over a ``heartbeats`` table. Here the day is the
client's local day (docs/events.md), so the query reads the client's timezone from a ``clients``
table in the same statement, bounds the index scan on ``(device_id, generated_at_utc)`` by the
range's local midnights, and groups by local date (weekly and coarser: ``date_trunc`` of the local
time).
``generated_at_utc`` is a ``timestamp`` holding UTC, as the seed's column name says.

Parameters are validated by the real API's own code, the body is built as the real API builds it
(orjson, empty buckets as 0). Nothing is cached. Unlike the real API it checks no token (one
Redis round trip there): the baseline gets that work for free.

Run: ``BENCH_PG_DSN=postgresql://... uvicorn --factory bench.sql_api:app_factory``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from api.errors import NotFound, install_error_handlers
from bench.baseline_body import series_params, series_response
from state.dates import Granularity

DSN_ENV = "BENCH_PG_DSN"
POOL_SIZE = 16
"""Connections per API process: several per core of a 2-core machine keeps PostgreSQL busy
while the event loop parses and serialises; more would only queue inside PostgreSQL."""

_LOCAL_TIME = "h.generated_at_utc AT TIME ZONE 'UTC' AT TIME ZONE c.timezone"
_BUCKET: dict[Granularity, str] = {
    "daily": f"DATE({_LOCAL_TIME})",  # the seed's GROUP BY DATE(generated_at_utc), made local
    "weekly": f"date_trunc('week', {_LOCAL_TIME})::date",  # ISO weeks: Monday first
    "monthly": f"date_trunc('month', {_LOCAL_TIME})::date",
    "quarterly": f"date_trunc('quarter', {_LOCAL_TIME})::date",
}
_VALUE = {
    "activity-count": "SUM(h.total_activity_count)",
    "user-count": "COUNT(DISTINCT h.user_id)",  # NULL (nobody signed in) is not a user
}

SCHEMA = """
CREATE TABLE clients (client_id uuid PRIMARY KEY, timezone text NOT NULL);
CREATE TABLE heartbeats (
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    user_id text,
    generated_at_utc timestamp NOT NULL,
    total_activity_count integer NOT NULL
);
"""
INDEX = "CREATE INDEX heartbeats_device_time ON heartbeats (device_id, generated_at_utc)"


def series_sql(metric: str, granularity: Granularity) -> str:
    """The buckets of one device and range. No row: unknown client; one row with a NULL bucket:
    no heartbeat in the range. $1 client, $2 device, $3 first and $4 last local day."""
    return f"""
        SELECT s.bucket, s.value
        FROM clients c
        LEFT JOIN LATERAL (
            SELECT {_BUCKET[granularity]} AS bucket, {_VALUE[metric]} AS value
            FROM heartbeats h
            WHERE h.device_id = $2 AND h.client_id = c.client_id
              AND h.generated_at_utc >= ($3::date)::timestamp AT TIME ZONE c.timezone
                                        AT TIME ZONE 'UTC'
              AND h.generated_at_utc < ($4::date + 1)::timestamp AT TIME ZONE c.timezone
                                       AT TIME ZONE 'UTC'
            GROUP BY 1
        ) s ON true
        WHERE c.client_id = $1
    """


def create_app(dsn: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="device-activity SQL baseline", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/v2/clients/{client_id}/analytics/devices/{device_id}/activity")
    async def device_activity(
        request: Request,
        client_id: str,
        device_id: str,
        metric: Annotated[str | None, Query()] = None,
        start_date: Annotated[str | None, Query()] = None,
        end_date: Annotated[str | None, Query()] = None,
        granularity: Annotated[str | None, Query()] = None,
    ) -> Response:
        parsed = series_params(client_id, device_id, metric, start_date, end_date, granularity)
        params = parsed.query
        rows = await request.app.state.pool.fetch(
            series_sql(params.metric, params.granularity),
            params.client,
            params.device,
            params.first,
            params.last,
        )
        if not rows:
            raise NotFound(f"Unknown client: {client_id}", {"client_id": client_id})
        found = {row["bucket"]: int(row["value"]) for row in rows if row["bucket"] is not None}
        return series_response(parsed, found)

    return app


def app_factory() -> FastAPI:
    return create_app(os.environ[DSN_ENV])
