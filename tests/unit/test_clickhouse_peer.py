"""The columnar peer's SQL (bench/ch_api.py): the local day per client timezone, the series
queries' parameters, and the parsing of their rows. The SQL itself is checked where chdb runs
it: the bench compares the peer's answers with the API's, byte for byte, in every timezone of
its data set (bench/clickhouse.py)."""

from __future__ import annotations

from datetime import date

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
