"""The columnar peer (issue 22): ClickHouse in-process (chdb), a raw table and a per-device-day
rollup, on both paths.

Ingest: the ingest section's heartbeats (the same generator, seed and count: 1,000,000, 100,000
with --quick), one JSON object each as in Kafka, inserted ``INGEST_BATCH_ROWS`` at a time as
``JSONEachRow`` into a ``Null`` table whose materialized view fills the rollup: the rollup alone
is written, the most favourable way for the peer. Rate: rows over the inserts' wall time; CPU: the
whole process's (chdb runs in it, with its parsing and merge threads), per event. Checked: the
rollup's activity adds up to the events'.

Queries: the query section's data set (the same ``Dataset``, its heartbeats generated again by
the same per-device generators) into the raw ``MergeTree`` and, through the view, the rollup;
then ``OPTIMIZE FINAL``, bytes per device-day from ``system.parts``, and each table behind
bench/ch_api.py as a uvicorn process, checked against the API's answers and loaded by the same
wrk run as the API and the SQL baseline. chdb is in the server process, so there is no store
CPU apart: the server's CPU is all of it.

A process hosts one chdb engine bound to one path: the bench's session is closed before a server
opens the path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import chdb  # type: ignore[import-untyped]
import httpx

from bench import dataset as ingest_data
from bench.ch_api import DATABASE, PATH_ENV, TABLE_ENV, Table, schema_sql
from bench.common import ROOT, waiting
from bench.query import Context, check_same_answers
from bench.query_data import DAYS, BenchError, Dataset, DeviceHistory, SlotGrid
from bench.query_load import HttpServer, api_server, drive, flat, serving
from devact.progress import Meter
from devtools.services.process import free_port

log = logging.getLogger(__name__)

INGEST_BATCH_ROWS = 10_000
"""Rows per INSERT: ClickHouse's advice is thousands or more per insert, never one."""
INGEST_SEED = 4
INGEST_DEVICES = 10_000
ONE_CLIENT_REQUESTS = 200
"""Requests of the one-client latency, one after the other (the issue's hand measurement)."""
NULL = "\\N"
"""NULL in ClickHouse's TSV."""


@dataclass(frozen=True)
class PartBytes:
    """Sums over a table's active parts (``system.parts``)."""

    on_disk: int
    uncompressed: int
    in_memory: int
    """Primary key and marks: what the engine keeps resident to find a device's rows."""


def per_device_day(total: int, device_days: int) -> float:
    if device_days <= 0:
        raise BenchError("no device-day to divide by")
    return round(total / device_days, 1)


def _session(path: Path) -> Any:
    return chdb.connect(str(path))


def _create(connection: Any, clients: dict[str, str], raw_engine: str) -> None:
    for statement in schema_sql(clients.values(), raw_engine):
        connection.query(statement)
    values = ",".join(f"('{client}', '{zone}')" for client, zone in clients.items())
    connection.query(f"INSERT INTO {DATABASE}.clients VALUES {values}")
    connection.query(f"SYSTEM RELOAD DICTIONARY {DATABASE}.client_zones")


def part_bytes(connection: Any, table: str) -> PartBytes:
    row = connection.query(
        "SELECT sum(bytes_on_disk), sum(data_uncompressed_bytes),"
        " sum(primary_key_bytes_in_memory_allocated) + sum(marks_bytes) FROM system.parts"
        f" WHERE database = '{DATABASE}' AND table = '{table}' AND active",
        "TSV",
    ).bytes()
    on_disk, uncompressed, in_memory = (int(v) for v in row.split(b"\t"))
    return PartBytes(on_disk, uncompressed, in_memory)


def _scalar(connection: Any, sql: str) -> int:
    return int(connection.query(sql, "TSV").bytes().strip())


# --- Ingest -------------------------------------------------------------------------------------


def _ingest(path: Path, events: int, now: datetime, progress: Meter) -> dict[str, object]:
    data = ingest_data.generate(events, INGEST_DEVICES, 1, now, seed=INGEST_SEED)
    connection = _session(path)
    try:
        _create(connection, data.clients, raw_engine="Null")
        wall, cpu = 0.0, 0.0
        for start in range(0, len(data.messages), INGEST_BATCH_ROWS):
            rows = b"\n".join(v for _, v in data.messages[start : start + INGEST_BATCH_ROWS])
            statement = f"INSERT INTO {DATABASE}.heartbeats FORMAT JSONEachRow\n{rows.decode()}"
            wall_before, cpu_before = time.perf_counter(), time.process_time()
            connection.query(statement)
            wall += time.perf_counter() - wall_before
            cpu += time.process_time() - cpu_before
            progress.advance(min(INGEST_BATCH_ROWS, len(data.messages) - start))
        total = _scalar(connection, f"SELECT sumMerge(activity) FROM {DATABASE}.device_days")
        expected = sum(data.activity_by_device.values())
        if total != expected:
            raise BenchError(f"ClickHouse rollup holds activity {total}, the events {expected}")
        device_days = _scalar(connection, f"SELECT count() FROM {DATABASE}.device_days FINAL")
    finally:
        connection.close()
    return {
        "ch_ingest_events": events,
        "ch_ingest_eps": round(events / wall),
        "ch_ingest_s": round(wall, 2),
        "ch_ingest_cpu_s": round(cpu, 2),
        "ch_ingest_cpu_us_per_event": round(1e6 * cpu / events, 2),
        "ch_ingest_batch_rows": INGEST_BATCH_ROWS,
        "ch_ingest_device_days": device_days,
    }


async def ingest(run_dir: Path, quick: bool, now: datetime) -> dict[str, object]:
    """The ingest figures (``ch_ingest_*``), in a chdb path of their own, removed afterwards."""
    events = 100_000 if quick else 1_000_000
    path = run_dir / "clickhouse-ingest"
    try:
        with Meter("clickhouse: ingest into the rollup", events, "heartbeats") as meter:
            results = await asyncio.to_thread(_ingest, path, events, now, meter)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    log.info("clickhouse ingest: %s", results)
    return results


# --- Queries ------------------------------------------------------------------------------------


def heartbeat_rows(dataset: Dataset) -> Iterator[str]:
    """The data set's heartbeats, a day at a time in the order they happen (as the query section
    feeds PostgreSQL), as ClickHouse TSV: one string per day."""
    grid = SlotGrid()
    histories = [DeviceHistory(dataset, n) for n in range(len(dataset.devices))]
    for d in range(DAYS):
        day = dataset.day(d)
        rows: list[tuple[datetime, str]] = []
        for history in histories:
            device = history.device
            _, naive = grid.slots(device.timezone, day)
            for slot, user, count in history.next_day(day):
                at = naive[slot]
                rows.append(
                    (
                        at,
                        f"{device.client_id}\t{device.device_id}\t{user or NULL}\t"
                        f"{at:%Y-%m-%d %H:%M:%S}\t{count}\n",
                    )
                )
        rows.sort(key=lambda r: r[0])
        yield "".join(text for _, text in rows)


def _load(path: Path, dataset: Dataset, progress: Meter) -> dict[str, object]:
    connection = _session(path)
    try:
        _create(connection, dataset.clients, raw_engine="MergeTree")
        started = time.perf_counter()
        for text in heartbeat_rows(dataset):
            if text:  # a weekend day of a small data set may have none
                connection.query(f"INSERT INTO {DATABASE}.heartbeats FORMAT TSV\n{text}")
            progress.advance(1)
        load_s = time.perf_counter() - started
        for table in ("heartbeats", "device_days"):
            connection.query(f"OPTIMIZE TABLE {DATABASE}.{table} FINAL")
        device_days = _scalar(connection, f"SELECT count() FROM {DATABASE}.device_days")
        rows = _scalar(connection, f"SELECT count() FROM {DATABASE}.heartbeats")
        raw, rollup = part_bytes(connection, "heartbeats"), part_bytes(connection, "device_days")
    finally:
        connection.close()
    results: dict[str, object] = {
        "ch_rows": rows,
        "ch_device_days": device_days,
        "ch_load_s": round(load_s, 1),
    }
    for name, bytes_ in (("raw", raw), ("rollup", rollup)):
        results[f"ch_{name}_bytes_per_device_day"] = per_device_day(bytes_.on_disk, device_days)
        results[f"ch_{name}_uncompressed_bytes_per_device_day"] = per_device_day(
            bytes_.uncompressed, device_days
        )
        results[f"ch_{name}_memory_bytes_per_device_day"] = per_device_day(
            bytes_.in_memory, device_days
        )
    return results


def ch_server(path: Path, table: Table, log_dir: Path) -> HttpServer:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "bench.ch_api:app_factory"]
    argv += ["--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"]
    env = {PATH_ENV: str(path), TABLE_ENV: table, "PYTHONPATH": str(ROOT)}
    return HttpServer(f"clickhouse-{table}", argv, env, port, log_dir)


async def _no_store_cpu() -> float:
    """chdb runs inside the server process: its CPU is counted there."""
    return 0.0


async def one_client_ms(server: HttpServer, ctx: Context) -> tuple[float, float]:
    """p50 and p99 of ``ONE_CLIENT_REQUESTS`` 90-day daily series of random devices (both
    metrics in turn), asked by one client one after the other: latency without queueing."""
    rng = random.Random(ctx.dataset.seed)
    took = []
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(ONE_CLIENT_REQUESTS):
            device = rng.choice(ctx.dataset.devices)
            metric = ("activity-count", "user-count")[n % 2]
            path = (
                f"/v2/clients/{device.client_id}/analytics/devices/{device.device_id}/activity"
                f"?metric={metric}&granularity=daily"
                f"&start_date={ctx.dataset.first_day}&end_date={ctx.dataset.last_day}"
            )
            started = time.perf_counter()
            (await http.get(server.url + path)).raise_for_status()
            took.append(1000 * (time.perf_counter() - started))
    cuts = statistics.quantiles(took, n=100)
    return round(cuts[49], 3), round(cuts[98], 3)


async def measure(ctx: Context, device_days: int) -> dict[str, object]:
    """Load the query data set (``device_days`` device-days in Redis), then put each table's
    server under the query section's load.

    Figures: ``ch_raw_*`` and ``ch_rollup_*`` as the query section's (rps, p50, p99, CPU per
    request, latency curve), ``ch_*_bytes_per_device_day`` on disk, ``..._memory_...`` (primary
    key and marks), ``..._uncompressed_...``; ``ch_*_one_client_p50_ms`` and ``_p99_ms``;
    ``ch_checked_requests``.
    """
    path = ctx.run_dir / "clickhouse"
    results: dict[str, object] = {}
    try:
        with Meter("clickhouse: loading the query data set", DAYS, "days") as meter:
            results |= await asyncio.to_thread(_load, path, ctx.dataset, meter)
        if results["ch_device_days"] != device_days:
            raise BenchError(
                f"ClickHouse holds {results['ch_device_days']} device-days, Redis {device_days}"
            )
        daily = ctx.env("daily")
        async with serving(api_server(ctx.redis_url, 1, ctx.run_dir), "/readyz", ctx.auth) as api:
            checked = 0
            for table in ("raw", "rollup"):
                server = ch_server(path, table, ctx.run_dir)
                async with serving(server, ctx.sql_probe, {}) as ch:
                    checked += await waiting(
                        f"clickhouse: checking {table} answers",
                        check_same_answers(api, ch, ctx.token, ctx.dataset),
                    )
                    results |= flat(f"ch_{table}", await drive(ch, daily, ctx.mode, _no_store_cpu))
                    p50, p99 = await one_client_ms(ch, ctx)
                    results[f"ch_{table}_one_client_p50_ms"] = p50
                    results[f"ch_{table}_one_client_p99_ms"] = p99
        results["ch_checked_requests"] = checked
    finally:
        shutil.rmtree(path, ignore_errors=True)
    log.info("clickhouse queries: %s", {k: v for k, v in results.items() if "curve" not in k})
    return results
