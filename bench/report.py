"""Writing a run's results: ``latest.json`` (flat figures), ``details.json``, the Markdown report
and its charts, all in ``bench/results/``."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
LATEST_KEYS = (
    "ingest_eps",
    "ingest_worker_cpu_us",
    "ingest_redis_cpu_us",
    "ingest_raw_eps",
    "ingest_quix_eps",
    "ingest_2w_eps",
    "ingest_batched_eps",
    "ingest_nofleet_eps",
    "fresh_p50_ms",
    "fresh_p99_ms",
    "query_rps",
    "query_p50_ms",
    "query_p99_ms",
    "query_cpu_ms",
    "api_server",
    "query_uvicorn_rps",
    "query_granian_rps",
    "sql_rps",
    "sql_p50_ms",
    "sql_p99_ms",
    "redis_bytes_per_device_day",
    "pg_bytes_per_device_day",
    "ch_ingest_eps",
    "ch_ingest_cpu_us_per_event",
    "ch_raw_rps",
    "ch_raw_p50_ms",
    "ch_raw_p99_ms",
    "ch_raw_server_cpu_ms_per_request",
    "ch_raw_bytes_per_device_day",
    "ch_raw_memory_bytes_per_device_day",
    "ch_rollup_rps",
    "ch_rollup_p50_ms",
    "ch_rollup_p99_ms",
    "ch_rollup_server_cpu_ms_per_request",
    "ch_rollup_bytes_per_device_day",
    "ch_rollup_memory_bytes_per_device_day",
    "rank_activity_p99_ms",
    "rank_users_p99_ms",
    "fleet_series_p99_ms",
    "live_p99_ms",
    "fleet_bytes_per_device_day",
    "crowd_256_rps",
    "crowd_1024_rps",
    "crowd_1024_p99_ms",
    "crowd_1024_errors",
    "live_1000_p99_ms",
    "live_1000_reads_per_change",
    "machine",
)

# (figure, goal, higher is better): the targets, for the summary table.
TARGETS: tuple[tuple[str, str, float, bool], ...] = (
    ("ingest_eps", "events/s, one worker, one heartbeat per message", 50_000, True),
    ("ingest_worker_cpu_us", "worker CPU per event (us), one worker", 10, False),
    ("ingest_redis_cpu_us", "Redis CPU per event (us), one worker", 8, False),
    ("ingest_vs_raw", "worker / bare aiokafka loop", 0.95, True),
    ("ingest_vs_quix", "worker / Quix Streams app", 1.0, True),
    ("ingest_batched_eps", "events/s, arrays of 100", 200_000, True),
    ("ingest_fleet_vs_nofleet", "worker / the same without fleet aggregates", 0.85, True),
    ("ingest_fleet_cpu_ratio", "CPU per event, worker + Redis: with / without fleet", 1.15, False),
    ("fresh_p99_ms", "freshness p99 (ms) at 5,000 events/s", 1_000, False),
    ("query_p99_ms", "API p99 (ms), 32 connections", 10, False),
    ("query_rps", "API req/s, one process, 90-day daily series", 4_000, True),
    ("query_vs_sql", "API req/s / SQL baseline req/s", 10, True),
    ("redis_bytes_per_device_day", "Redis bytes per device-day", 400, False),
    ("pg_vs_redis_bytes", "PostgreSQL bytes / Redis bytes per device-day", 20, True),
    ("query_vs_ch_rollup_rps", "API req/s / ClickHouse rollup req/s", 5, True),
    ("ch_rollup_vs_query_p99", "ClickHouse rollup p99 / API p99 (above 1: API lower)", 1, True),
    ("ch_rollup_disk_vs_redis_bytes", "ClickHouse rollup on disk / Redis, bytes", 1, True),
    ("rank_activity_p99_ms", "ranking p99 (ms), activity, 10,000 devices, 90 days", 50, False),
    ("rank_users_p99_ms", "ranking p99 (ms), users, 10,000 devices, 90 days", 250, False),
    ("fleet_series_p99_ms", "client-wide 90-day series p99 (ms)", 10, False),
    ("live_p99_ms", "live: change in Redis to SSE event, p99 (ms)", 1_000, False),
)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB, Linux "
        f"{platform.release()}, Python {platform.python_version()}, {_redis_version()}; "
        "Kafka, Redis and PostgreSQL on the same machine"
    )


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    except OSError:
        return "Redis ?"
    found = re.search(r"v=(\S+)", out.stdout)
    return f"Redis {found.group(1) if found else '?'}"


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The side-by-side ratios the targets are about (only those whose figures were run)."""
    pairs = {
        "ingest_vs_raw": ("ingest_eps", "ingest_raw_eps"),
        "ingest_vs_quix": ("ingest_eps", "ingest_quix_eps"),
        "ingest_2w_vs_1w": ("ingest_2w_eps", "ingest_eps"),
        "ingest_fleet_vs_nofleet": ("ingest_eps", "ingest_nofleet_eps"),
        "query_vs_sql": ("query_rps", "sql_rps"),
        "pg_vs_redis_bytes": ("pg_bytes_per_device_day", "redis_bytes_per_device_day"),
        "query_vs_ch_rollup_rps": ("query_rps", "ch_rollup_rps"),
        "query_vs_ch_raw_rps": ("query_rps", "ch_raw_rps"),
        "ch_rollup_vs_query_p99": ("ch_rollup_p99_ms", "query_p99_ms"),
        "ch_rollup_disk_vs_redis_bytes": (
            "ch_rollup_bytes_per_device_day",
            "redis_bytes_per_device_day",
        ),
        "ingest_vs_ch_ingest": ("ingest_eps", "ch_ingest_eps"),
    }
    return {
        name: round(results[a] / results[b], 2)
        for name, (a, b) in pairs.items()
        if _is_figure(results.get(a)) and _is_figure(results.get(b))
    }


def _is_figure(value: Any) -> bool:
    """A measured number (not "did not finish", not missing, not zero)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value != 0


def write(results: dict[str, Any], quick: bool, started: datetime) -> Path:
    """Into bench/results/ (a quick run: bench/results/quick/, so that it never replaces the
    full run's report)."""
    out = RESULTS / "quick" if quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, **ratios(results), "machine": machine()}
    flat = {k: v for k, v in results.items() if isinstance(v, int | float | str | bool)}
    flat.pop("accuracy_table", None)
    latest = {k: results.get(k) for k in LATEST_KEYS} | flat
    latest |= {"quick": quick, "started": started.isoformat(timespec="seconds")}
    (out / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    (out / "details.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    charts = _charts(results, out)
    graphs = _flame_graphs(results, out)
    report = out / "report.md"
    report.write_text(_markdown(results, quick, started, charts, graphs))
    return report


def _charts(results: dict[str, Any], out: Path) -> list[str]:
    made = []
    runs = [r for r in results.get("ingest_runs") or [] if r.get("finished", True)]
    if runs:
        fig, ax = plt.subplots(figsize=(9, 1.6 + 0.45 * len(runs)))
        labels = [textwrap.fill(r["label"], 36) for r in runs]
        ax.barh(labels, [r["eps"] for r in runs], color="#3b6ea5")
        for n, r in enumerate(runs):
            ax.text(r["eps"], n, f" {r['eps']:,.0f}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.15 * max(r["eps"] for r in runs))  # room for the value labels
        ax.set_xlabel("events per second (first applied batch to all in Redis)")
        ax.set_title(f"Ingest of {results.get('ingest_events', 0):,} heartbeats")
        fig.tight_layout()
        fig.savefig(out / "ingest.png", dpi=110)
        plt.close(fig)
        made.append("ingest.png")
    api, sql = results.get("query_latency_curve"), results.get("sql_latency_curve")
    if api and sql:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        for curve, name in ((api, "API (Redis)"), (sql, "seed SQL (PostgreSQL)")):
            left.plot([p for p, _ in curve], [ms for _, ms in curve], label=name)
        left.set_yscale("log")
        left.set_xlabel("percentile")
        left.set_ylabel("latency (ms, log scale)")
        left.set_title("Latency at 32 connections")
        left.legend()
        names = ["API, 1 process", "API, 1 per core", "SQL, 1 process"]
        values = [results.get(k) or 0 for k in ("query_rps", "query_rps_per_core", "sql_rps")]
        right.bar(names, values, color=["#3b6ea5", "#6c9bd2", "#c0504d"])
        right.set_ylabel("requests per second")
        right.set_title("Throughput, 90-day daily series")
        fig.tight_layout()
        fig.savefig(out / "queries.png", dpi=110)
        plt.close(fig)
        made.append("queries.png")
    scaling = [r for r in runs if r.get("scales")]
    if len({r["processes"] for r in scaling}) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for partitions in sorted({r["partitions"] for r in scaling}):
            line = sorted(
                (r["processes"], r["eps"]) for r in scaling if r["partitions"] == partitions
            )
            ax.plot(*zip(*line, strict=True), marker="o", label=f"{partitions} partitions")
        ax.set_xticks(sorted({r["processes"] for r in scaling}))
        ax.set_xlabel("worker processes (one group)")
        ax.set_ylabel("events per second")
        ax.set_ylim(bottom=0)
        ax.set_title("Ingest against workers and partitions")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ingest_scaling.png", dpi=110)
        plt.close(fig)
        made.append("ingest_scaling.png")
    curve = results.get("query_range_curve")
    if curve:
        # CPU, not latency: at 32 connections one saturated process's latency is its queue.
        fig, ax = plt.subplots(figsize=(9, 3.8))
        names = [f"{p['days']} d\n{p['granularity']}" for p in curve]
        api_cpu = [p["server_cpu_ms"] for p in curve]
        ax.bar(names, api_cpu, color="#3b6ea5", label="API")
        ax.bar(names, [p["store_cpu_ms"] for p in curve], bottom=api_cpu, color="#c0504d",
               label="Redis")  # fmt: skip
        ax.set_ylabel("CPU per request (ms)")
        ax.set_title("What a series costs, by range and granularity")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "query_ranges.png", dpi=110)
        plt.close(fig)
        made.append("query_ranges.png")
    return made


def _flame_graphs(results: dict[str, Any], out: Path) -> dict[str, str]:
    """The flame graphs of the run (``bench/flame.py``), copied beside the report: a process's
    name -> the file's name there."""
    copied = {}
    made_by = [v for k, v in results.items() if k.startswith("flame_graphs_")]  # per section
    for name, made in ((n, m) for graphs in made_by for n, m in graphs.items()):
        target = out / f"flame-{name}.svg"
        shutil.copyfile(made, target)
        copied[name] = target.name
    return copied


def _markdown(
    results: dict[str, Any],
    quick: bool,
    started: datetime,
    charts: list[str],
    graphs: dict[str, str],
) -> str:
    out = [
        "# device-activity benchmark",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {'QUICK (smaller data)' if quick else 'full'} mode, "
        f"by `make bench{' QUICK=1' if quick else ''}`. Machine: {results['machine']}.",
        "",
        "Every ratio compares figures measured in this same run, on the same data. The machine is"
        " shared and noisy: absolute figures move between runs, the ratios much less.",
        "",
        "## Targets",
        "",
        "| figure | measured | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for key, text, goal, higher in TARGETS:
        value = results.get(key)
        if value is None:
            continue
        if not _is_figure(value):
            out.append(f"| {text} | {value} | {'≥' if higher else '≤'} {_num(goal)} | **no** |")
            continue
        met = value >= goal if higher else value <= goal
        out.append(
            f"| {text} | {_num(value)} | {'≥' if higher else '≤'} {_num(goal)} "
            f"| {'yes' if met else '**no**'} |"
        )
    out += _ingest_section(results) + _freshness_section(results) + _query_section(results)
    out += _memory_section(results) + _clickhouse_section(results)
    out += _pressure_section(results) + _accuracy_section(results)
    out += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    if graphs:
        out += [
            "## Flame graphs",
            "",
            "Where each process spends its CPU under the bench's load, sampled by py-spy in a"
            " pass of its own after the measured ones (open the SVG in a browser: a frame's width"
            " is its share of the samples; click to zoom):",
            "",
        ]
        out += [f"- [{name}]({file})" for name, file in graphs.items()] + [""]
    return "\n".join(out)


def _ingest_section(results: dict[str, Any]) -> list[str]:
    runs = results.get("ingest_runs")
    if not runs:
        return []
    out = [
        "",
        "## Ingest",
        "",
        f"{results['ingest_events']:,} heartbeats of 10,000 devices over 30 days, produced first"
        " into a 6-partition topic; each contender starts on an empty Redis with a group of its"
        " own. Rate: events from the first applied batch until Redis holds all of them (the"
        " applied positions state/ writes with the counters), divided by that time. Start-up"
        " (process start to first applied batch) is shown apart. Every run is checked against"
        " the oracle (per-device activity sums) before its figure is kept. CPU is the"
        " contender's own processes' (user and system, from /proc), per event applied.",
        "",
        "| contender | events/s | seconds | start-up s | consumer CPU s | CPU µs/event |"
        " Redis CPU µs/event |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r.get("finished", True):
            out.append(
                f"| {r['label']} | did not finish: {r['events_applied']:,} of"
                f" {results['ingest_events']:,} events applied by the deadline | {r['seconds']} |"
                f" | {r['cpu_s']} | | |"
            )
            continue
        out.append(
            f"| {r['label']} | {r['eps']:,.0f} | {r['seconds']} | {r['startup_s']} | {r['cpu_s']}"
            f" | {r.get('cpu_us_per_event', '')} | {r.get('redis_cpu_us_per_event', '')} |"
        )
    return [*out, "", *_scaling_lines(runs)]


def _scaling_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The one line of the chart of ingest against workers and partitions."""
    scaling = [r for r in runs if r.get("scales") and r.get("finished", True)]
    if len({r["processes"] for r in scaling}) < 2:
        return []
    rates = [
        f"{p} partitions: "
        + ", ".join(
            f"{r['processes']} process{'es' if r['processes'] > 1 else ''} {r['eps']:,.0f}"
            for r in sorted(scaling, key=lambda r: r["processes"])
            if r["partitions"] == p
        )
        for p in sorted({r["partitions"] for r in scaling})
    ]
    return [
        "Workers and partitions (events/s; ingest_scaling.png): " + "; ".join(rates) + ". Every"
        " process of this run shares the machine's cores with Kafka, Redis and the others, so"
        " what a process adds is bounded by the cores left, not by the partitions.",
        "",
    ]


def _freshness_section(results: dict[str, Any]) -> list[str]:
    if "fresh_p50_ms" not in results:
        return []
    return [
        "## Freshness",
        "",
        f"Live heartbeats at {results['fresh_rate']:,}/s (sent: {results['fresh_rate_sent']:,}/s)"
        f" for {results['fresh_seconds']:.0f} s, with {results['fresh_probes']} probes (a"
        " heartbeat of a new device each), each polled through the API every"
        f" {results['fresh_poll_ms']:.0f} ms from just before its send until it shows:"
        f" p50 {results['fresh_p50_ms']} ms, p99 {results['fresh_p99_ms']} ms,"
        f" max {results['fresh_max_ms']} ms.",
        "",
    ]


def _query_section(results: dict[str, Any]) -> list[str]:
    if "query_rps" not in results:
        return []
    out = ["## Queries", ""]
    if "query_note" in results:
        out += [str(results["query_note"]), ""]
    out += [
        "CPU per request: the server process (the API's under its HTTP server, uvicorn or"
        " granian; the main rows under api_server's) and its store (Redis or PostgreSQL), from"
        " their CPU time over the run; steadier than req/s on a shared machine.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | server CPU ms/req | store CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = (
        ("API (Redis), 1 process", "query"),
        ("API (Redis), 1 process per core", "query_per_core"),
        ("API under uvicorn, 1 process", "query_uvicorn"),
        ("API under granian, 1 process", "query_granian"),
        ("API under uvicorn, 1 process per core", "query_uvicorn_per_core"),
        ("API under granian, 1 process per core", "query_granian_per_core"),
        ("seed SQL (PostgreSQL), 1 process", "sql"),
        ("API, daily and weekly mix", "query_mix"),
        ("seed SQL, daily and weekly mix", "sql_mix"),
        ("seed SQL, 1 process per core", "sql_per_core"),
        ("ClickHouse raw MergeTree (chdb), 1 process", "ch_raw"),
        ("ClickHouse rollup (chdb), 1 process", "ch_rollup"),
    )
    for label, prefix in rows:
        if f"{prefix}_rps" not in results:
            continue
        cells = [
            _num(results[f"{prefix}_rps"]),
            *(str(results.get(f"{prefix}_{k}", "")) for k in ("p50_ms", "p99_ms")),
            *(
                str(results.get(f"{prefix}_{k}_cpu_ms_per_request", ""))
                for k in ("server", "store")
            ),
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if "loadgen_cpu_pct" in results:
        out += ["", f"Load generator (wrk) CPU: {results['loadgen_cpu_pct']}% of one core."]
    return [*out, "", *_range_lines(results.get("query_range_curve") or [])]


def _range_lines(curve: list[dict[str, Any]]) -> list[str]:
    """The table and the one line of the chart of cost against range and granularity."""
    if not curve:
        return []

    def cpu(point: dict[str, Any]) -> float:
        return float(point["server_cpu_ms"]) + float(point["store_cpu_ms"])

    out = [
        "How a request's cost grows with its range and granularity (one API process, both"
        " metrics in turn, the range ending on the data's last day, 5 s of load a point):",
        "",
        "| range | granularity | req/s | p50 ms | p99 ms | API CPU ms/req | Redis CPU ms/req |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in curve:
        out.append(
            f"| {p['days']} days | {p['granularity']} | {_num(p['rps'])} | {p['p50_ms']}"
            f" | {p['p99_ms']} | {p['server_cpu_ms']} | {p['store_cpu_ms']} |"
        )
    daily = [p for p in curve if p["granularity"] == "daily"]
    first, last = daily[0], daily[-1]
    wide = [p for p in curve if p["days"] == last["days"] and p is not last]
    coarser = [p["store_cpu_ms"] / last["store_cpu_ms"] for p in wide]
    out += [
        "",
        f"From {first['days']} to {last['days']} days, daily: Redis CPU per request goes from"
        f" {first['store_cpu_ms']} to {last['store_cpu_ms']} ms (a field read a day, a hash a"
        f" month), the API's from {first['server_cpu_ms']} to {last['server_cpu_ms']} ms (its"
        " fixed cost, HTTP, the token and the middleware, outweighs the points a range adds)."
        + (
            f" Coarser buckets over the same {last['days']} days cost Redis {min(coarser):.2f} to"
            f" {max(coarser):.2f} times the daily series: the read script merges each bucket's"
            " days (a week's users are a union, not a sum), and fewer points are sent."
            if coarser
            else ""
        ),
        "",
    ]
    return out


def _memory_section(results: dict[str, Any]) -> list[str]:
    if "redis_bytes_per_device_day" not in results:
        return []
    return [
        "## Memory",
        "",
        f"Redis: {results['redis_bytes_per_device_day']} bytes per device-day (`INFO memory`"
        " used_memory delta over the query data set). PostgreSQL, the same events as raw rows:"
        f" {results['pg_bytes_per_device_day']} bytes per device-day (table and index).",
        "",
    ]


def _clickhouse_section(results: dict[str, Any]) -> list[str]:
    if "ch_rollup_rps" not in results and "ch_ingest_eps" not in results:
        return []
    out = [
        "## The columnar peer (ClickHouse through chdb)",
        "",
        "The same events in ClickHouse, in-process (chdb): a raw `MergeTree` ordered by"
        " `(device_id, generated_at_utc)` and an `AggregatingMergeTree` per client, device and"
        " local day (`sumState`, `uniqExactState`) filled by a materialized view, each behind"
        " the SQL baseline's route and body (bench/ch_api.py), checked against the API's"
        " answers, under the same wrk load. chdb runs in the server process: its CPU per request"
        " is all of the peer's (in the server column). chdb serves concurrent requests: each"
        " process holds 4 connections to the same path, one query at a time each, in threads"
        " (a single connection serialises its queries).",
        "",
    ]
    if "ch_ingest_eps" in results:
        out += [
            f"Ingest: {results['ch_ingest_events']:,} heartbeats (the ingest section's), as JSON"
            f" rows in inserts of {results['ch_ingest_batch_rows']:,} into a `Null` table whose"
            f" view fills the rollup: {_num(results['ch_ingest_eps'])} events/s,"
            f" {results['ch_ingest_cpu_us_per_event']} µs CPU per event (the whole process)."
            + (
                f" Our worker: {_num(results['ingest_eps'])} events/s from Kafka (ratio"
                f" {results['ingest_vs_ch_ingest']}); no goal is set for this gap."
                if "ingest_vs_ch_ingest" in results
                else ""
            ),
            "",
        ]
    if "ch_rollup_bytes_per_device_day" in results:
        out += [
            "| table | bytes per device-day on disk | uncompressed | primary key and marks |",
            "|---|---:|---:|---:|",
        ]
        for name, prefix in (("raw MergeTree", "ch_raw"), ("rollup", "ch_rollup")):
            out.append(
                f"| {name} | {results[f'{prefix}_bytes_per_device_day']}"
                f" | {results[f'{prefix}_uncompressed_bytes_per_device_day']}"
                f" | {results[f'{prefix}_memory_bytes_per_device_day']} |"
            )
        out += [
            "",
            "On disk: `bytes_on_disk` of the active parts after `OPTIMIZE FINAL`; in memory: the"
            " parts' primary key and marks (what stays resident; the data is read through the"
            " page cache). Redis, for comparison: the Memory section.",
            "",
        ]
    if "ch_rollup_one_client_p50_ms" in results:
        out += [
            "One client asking one request after the other (no queueing), 90-day daily series:"
            f" raw p50 {results['ch_raw_one_client_p50_ms']} ms, p99"
            f" {results['ch_raw_one_client_p99_ms']} ms; rollup p50"
            f" {results['ch_rollup_one_client_p50_ms']} ms, p99"
            f" {results['ch_rollup_one_client_p99_ms']} ms.",
            "",
        ]
    return out


def _pressure_section(results: dict[str, Any]) -> list[str]:
    levels = results.get("crowd_connections")
    if not levels:
        return []
    out = [
        "## Under pressure",
        "",
        f"One API process (default limits) on Redis holding {results['pressure_devices']} devices"
        " of the query data set; the 90-day daily activity series of random devices. Each"
        " connection asks, waits for the answer, asks again (an answer 503 with Retry-After:"
        " after that wait); every request answered in the window or still in flight at its end"
        " is counted. req/s: answers within the window; errors: answers other than 200, by"
        " status; first answer: the slowest connection's wait for its first answer, all"
        " connections asking at once. CPU per answer: the API process and Redis."
        f" Load average as the section began: {results.get('pressure_load_average_1m')}.",
        "",
        "| connections | req/s | req/s (200) | p50 ms | p99 ms | max ms | errors |"
        " first answer ms | API CPU ms/req | Redis CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for n in levels:
        p = f"crowd_{n}"
        errors = results.get(f"{p}_errors_by_status") or {}
        shown = ", ".join(f"{k}: {v:,}" for k, v in errors.items()) or "none"
        out.append(
            f"| {n:,} | {_num(results[f'{p}_rps'])} | {_num(results[f'{p}_ok_rps'])}"
            f" | {results[f'{p}_p50_ms']} | {results[f'{p}_p99_ms']} | {results[f'{p}_max_ms']}"
            f" | {shown} | {results[f'{p}_first_answer_max_ms']}"
            f" | {results[f'{p}_api_cpu_ms_per_request']}"
            f" | {results[f'{p}_redis_cpu_ms_per_request']} |"
        )
    streams = results.get("live_streams")
    if streams:
        p = f"live_{streams}"
        out += [
            "",
            f"Live: {streams:,} streams on the same process over {results[f'{p}_devices']}"
            f" devices ({results[f'{p}_tokens']} tokens), a real worker consuming Kafka;"
            f" {results[f'{p}_rounds']} rounds of one heartbeat per device. Latency: from just"
            " before the produce call to the event at each stream; first stream: the round's"
            " earliest (Kafka, worker, Redis, one read), spread: its last less its first (the"
            " API writing the event to every stream), medians over the rounds. Redis reads per"
            " change: the"
            " `EVALSHA` calls of the rounds less the worker's own (the same rounds with no"
            " stream open, adjusted by the batches each took), per device change.",
            "",
            "| streams | events | p50 ms | p99 ms | max ms | first stream ms | spread ms | missed"
            " | EVALSHA: all / worker / API | Redis reads per device change | API CPU ms/event |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            f"| {streams:,} | {results[f'{p}_events']:,} | {results[f'{p}_p50_ms']}"
            f" | {results[f'{p}_p99_ms']} | {results[f'{p}_max_ms']}"
            f" | {results[f'{p}_first_stream_p50_ms']} | {results[f'{p}_spread_p50_ms']}"
            f" | {results[f'{p}_missed']}"
            f" | {results[f'{p}_evalsha']} / {results[f'{p}_worker_evalsha']}"
            f" / {results[f'{p}_api_reads']} | {results[f'{p}_reads_per_change']}"
            f" | {results[f'{p}_api_cpu_ms_per_event']} |",
        ]
    return [*out, ""]


def _accuracy_section(results: dict[str, Any]) -> list[str]:
    if "accuracy_table" not in results:
        return []
    return [
        "## Accuracy (user-count)",
        "",
        "Exact while every day of a bucket holds at most"
        f" {results['accuracy_exact_users_limit']} users; within"
        f" {results['accuracy_tolerance']:.0%} otherwise (docs/api.md).",
        "",
        "```",
        str(results["accuracy_table"]),
        "```",
        "",
    ]


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"
