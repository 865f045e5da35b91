"""The columnar peer's SQL (bench/ch_api.py): the local day per client timezone, the series
queries' parameters, and the parsing of their rows. The SQL is also run, when chdb is installed
(the bench extra), on instants where the day differs between zones."""

from __future__ import annotations

from datetime import date

import pytest

from bench.ch_api import local_day_sql, parse_rows, series_sql


def test_local_day_has_one_constant_zone_branch_per_timezone() -> None:
    sql = local_day_sql(["Pacific/Chatham", "UTC", "Pacific/Chatham"], "t", "zone")
    assert sql.count("toDate(t, 'Pacific/Chatham')") == 1
    assert sql.startswith("multiIf(zone = 'Pacific/Chatham', toDate(t, 'Pacific/Chatham'), ")
    assert sql.endswith("toDate(t, 'UTC'))")


def test_raw_series_bounds_by_the_clients_local_midnights() -> None:
    sql = series_sql("raw", "user-count", "weekly")
    assert "toMonday(toDate(generated_at_utc, {tz:String}))" in sql
    assert "uniqExact(user_id)" in sql
    assert "generated_at_utc < toDateTime({last:Date} + 1, {tz:String})" in sql


def test_rollup_series_merges_states_without_a_timezone() -> None:
    sql = series_sql("rollup", "activity-count", "quarterly")
    assert "sumMerge(activity)" in sql
    assert "toStartOfQuarter(day)" in sql
    assert "{tz:String}" not in sql


def test_rows_parse_as_bucket_and_value() -> None:
    assert parse_rows(b"2026-03-02\t17\n2026-03-09\t0\n") == {
        date(2026, 3, 2): 17,
        date(2026, 3, 9): 0,
    }
    assert parse_rows(b"") == {}


def test_local_day_sql_runs_per_row_zone() -> None:
    chdb = pytest.importorskip("chdb")
    zones = ["Europe/Berlin", "Pacific/Chatham", "America/New_York"]
    day = local_day_sql(zones, "toDateTime(at, 'UTC')", "zone")
    rows = (
        "SELECT * FROM values('zone String, at String',"
        " ('Europe/Berlin', '2026-01-01 23:30:00'), ('Pacific/Chatham', '2026-01-01 10:30:00'),"
        " ('America/New_York', '2026-01-01 03:00:00'), ('Asia/Tokyo', '2026-01-01 23:30:00'))"
    )
    got = chdb.query(f"SELECT toString({day}) FROM ({rows})", "TSV").bytes().split()
    assert got == [b"2026-01-02", b"2026-01-02", b"2025-12-31", b"2026-01-01"]
