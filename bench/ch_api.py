"""The columnar peer: the same route and body as the SQL baseline, answered by ClickHouse (chdb).

Two tables hold the same heartbeats (bench/clickhouse.py loads them): ``heartbeats``, a raw
``MergeTree`` ordered by ``(device_id, generated_at_utc)``, and ``device_days``, an
``AggregatingMergeTree`` of ``sumState(total_activity_count)`` and ``uniqExactState(user_id)`` per
client, device and local day, filled from the raw table by a materialized view. ``BENCH_CH_TABLE``
picks which one a server reads: ``raw`` groups the device's heartbeats by local day (the bounds
and the day in the client's timezone, as the baseline does); ``rollup`` merges the states of the
range's days.

The local day: ``toDate(t, tz)`` takes only a constant timezone, also with
``allow_nonconst_timezone_arguments`` (``toTimeZone`` with a column silently answers in the first
row's zone), so the view picks among the data set's timezones with ``multiIf`` over the client's
zone from a dictionary (``local_day_sql``): a client in a new timezone needs the view made again.

Concurrency: a chdb connection serialises its queries under an internal mutex, while separate
connections to the same path run in parallel (chdb's docs; measured here: 4 threads on 4
connections answer more queries a second than 1, 4 threads on one connection fewer). So each
process holds ``POOL_SIZE`` connections and runs each query on a free one in a thread.

The clients' timezones are read once at start-up (a handful of rows): a favour to the peer, as
the baseline's skipped token check is. Nothing else is cached.

Run: ``BENCH_CH_PATH=<dir> BENCH_CH_TABLE=rollup uvicorn --factory bench.ch_api:app_factory``.
"""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import Response

from api.errors import NotFound, install_error_handlers
from bench.baseline_body import series_params, series_response
from state.dates import Granularity

PATH_ENV = "BENCH_CH_PATH"
TABLE_ENV = "BENCH_CH_TABLE"
POOL_SIZE = 4
"""Connections per process: two per core of a 2-core machine, as more only queue in the engine."""
DATABASE = "bench"
FALLBACK_TIMEZONE = "UTC"
"""The day of a client missing from the view's timezones: UTC, as the worker's default."""

Table = Literal["raw", "rollup"]

_BUCKET_OF_DAY: dict[Granularity, str] = {
    "daily": "{day}",
    "weekly": "toMonday({day})",  # ISO weeks: Monday first
    "monthly": "toStartOfMonth({day})",
    "quarterly": "toStartOfQuarter({day})",
}
_RAW_VALUE = {
    "activity-count": "sum(total_activity_count)",
    "user-count": "uniqExact(user_id)",  # NULL (nobody signed in) is not a user
}
_ROLLUP_VALUE = {"activity-count": "sumMerge(activity)", "user-count": "uniqExactMerge(users)"}


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def local_day_sql(timezones: Iterable[str], at: str, zone: str) -> str:
    """The local date of the instant ``at`` in the zone named by the expression ``zone``, for a
    zone among ``timezones`` (else UTC): one constant-zone ``toDate`` per timezone."""
    branches = [
        f"{zone} = {_quote(tz)}, toDate({at}, {_quote(tz)})" for tz in sorted(set(timezones))
    ]
    fallback = f"toDate({at}, {_quote(FALLBACK_TIMEZONE)})"
    return f"multiIf({', '.join(branches)}, {fallback})" if branches else fallback


def schema_sql(timezones: Iterable[str], raw_engine: str = "MergeTree") -> list[str]:
    """The statements making the database: clients, their timezone dictionary, the raw table
    (``raw_engine``: ``Null`` keeps only the rollup), the rollup and the view filling it."""
    zone = f"dictGet('{DATABASE}.client_zones', 'timezone', client_id)"
    order = " ORDER BY (device_id, generated_at_utc)" if raw_engine != "Null" else ""
    return [
        f"CREATE DATABASE {DATABASE}",
        f"CREATE TABLE {DATABASE}.clients (client_id UUID, timezone String)"
        " ENGINE = MergeTree ORDER BY client_id",
        f"CREATE DICTIONARY {DATABASE}.client_zones (client_id UUID, timezone String)"
        f" PRIMARY KEY client_id SOURCE(CLICKHOUSE(TABLE 'clients' DB '{DATABASE}'))"
        " LAYOUT(COMPLEX_KEY_HASHED()) LIFETIME(0)",
        f"CREATE TABLE {DATABASE}.heartbeats (client_id UUID, device_id UUID,"
        " user_id Nullable(String), generated_at_utc DateTime('UTC'),"
        f" total_activity_count UInt32) ENGINE = {raw_engine}{order}",
        f"CREATE TABLE {DATABASE}.device_days (client_id UUID, device_id UUID, day Date,"
        " activity AggregateFunction(sum, UInt32),"
        " users AggregateFunction(uniqExact, Nullable(String)))"
        " ENGINE = AggregatingMergeTree ORDER BY (client_id, device_id, day)",
        f"CREATE MATERIALIZED VIEW {DATABASE}.device_days_view TO {DATABASE}.device_days AS"
        f" SELECT client_id, device_id, {local_day_sql(timezones, 'generated_at_utc', zone)}"
        " AS day, sumState(total_activity_count) AS activity, uniqExactState(user_id) AS users"
        f" FROM {DATABASE}.heartbeats GROUP BY client_id, device_id, day",
    ]


def series_sql(table: Table, metric: str, granularity: Granularity) -> str:
    """The buckets holding heartbeats, one ``bucket<TAB>value`` row each. Parameters: client and
    device (UUID), first and last local day (Date), and for ``raw`` the client's timezone."""
    if table == "raw":
        day = "toDate(generated_at_utc, {tz:String})"
        return (
            f"SELECT {_BUCKET_OF_DAY[granularity].format(day=day)} AS bucket,"
            f" {_RAW_VALUE[metric]} AS value FROM {DATABASE}.heartbeats"
            " WHERE device_id = {device:UUID} AND client_id = {client:UUID}"
            " AND generated_at_utc >= toDateTime({first:Date}, {tz:String})"
            " AND generated_at_utc < toDateTime({last:Date} + 1, {tz:String})"
            " GROUP BY bucket"
        )
    return (
        f"SELECT {_BUCKET_OF_DAY[granularity].format(day='day')} AS bucket,"
        f" {_ROLLUP_VALUE[metric]} AS value FROM {DATABASE}.device_days"
        " WHERE client_id = {client:UUID} AND device_id = {device:UUID}"
        " AND day BETWEEN {first:Date} AND {last:Date} GROUP BY bucket"
    )


def parse_rows(tsv: bytes) -> dict[date, int]:
    """``bucket<TAB>value`` lines (ClickHouse's TSV) as a mapping."""
    found: dict[date, int] = {}
    for line in tsv.splitlines():
        bucket, value = line.split(b"\t")
        found[date.fromisoformat(bucket.decode())] = int(value)
    return found


class Pool:
    """chdb connections to one path, each lent to one thread at a time."""

    def __init__(self, path: str, size: int) -> None:
        import chdb  # type: ignore[import-untyped]  # the bench extra's: the SQL stays importable

        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all = [chdb.connect(path) for _ in range(size)]
        for connection in self._all:
            self._free.put(connection)

    def query(self, sql: str, params: Mapping[str, str] | None = None) -> bytes:
        """Blocking: call from a worker thread."""
        connection = self._free.get()
        try:
            return bytes(connection.query(sql, "TSV", params=dict(params or {})).bytes())
        finally:
            self._free.put(connection)

    def close(self) -> None:
        for connection in self._all:
            connection.close()


def create_app(path: str, table: Table) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = pool = Pool(path, POOL_SIZE)
        rows = pool.query(f"SELECT client_id, timezone FROM {DATABASE}.clients")
        app.state.zones = dict(line.decode().split("\t") for line in rows.splitlines())
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title=f"device-activity ClickHouse peer ({table})", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/v2/clients/{client_id}/analytics/devices/{device_id}/activity")
    async def device_activity(
        client_id: str,
        device_id: str,
        metric: Annotated[str | None, Query()] = None,
        start_date: Annotated[str | None, Query()] = None,
        end_date: Annotated[str | None, Query()] = None,
        granularity: Annotated[str | None, Query()] = None,
    ) -> Response:
        parsed = series_params(client_id, device_id, metric, start_date, end_date, granularity)
        params = parsed.query
        zone = app.state.zones.get(params.client)
        if zone is None:
            raise NotFound(f"Unknown client: {client_id}", {"client_id": client_id})
        values = {
            "client": params.client,
            "device": params.device,
            "first": params.first.isoformat(),
            "last": params.last.isoformat(),
        }
        if table == "raw":
            values["tz"] = zone
        sql = series_sql(table, params.metric, params.granularity)
        rows = parse_rows(await asyncio.to_thread(app.state.pool.query, sql, values))
        return series_response(parsed, rows)

    return app


def app_factory() -> FastAPI:
    table = os.environ[TABLE_ENV]
    if table not in ("raw", "rollup"):
        raise ValueError(f"{TABLE_ENV} must be raw or rollup, not {table!r}")
    return create_app(os.environ[PATH_ENV], "raw" if table == "raw" else "rollup")
