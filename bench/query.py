"""Queries and memory (issue 4, items 3 and 4): the API against the seed's SQL, on the same events.

Data: devices heartbeating every 5 minutes through an 8-hour working day (09:00-16:55 local, 96
heartbeats a weekday), a few heartbeats on some weekend days, 90 days, 1 to 10 users a day out of
a small pool per device; several clients in timezones with DST and odd offsets. Deterministic for
a seed and a start date (the 90 days end a week before today, so Redis's retention keeps them).

The events reach Redis through the worker's own code (``BatchProcessor.process``, without Kafka:
one JSON array of heartbeats per message and device-day, consecutive offsets per partition) and
PostgreSQL through COPY into the seed's ``heartbeats`` table, both in the order they happen.
Memory: Redis ``used_memory`` growth over the
load, and PostgreSQL's table and index size, per device-day. Queries: ``wrk`` at 32 connections
against the API (one process, then one per core) and the SQL baseline (bench/sql_api.py), after
checking both answer the same for a sample of devices.

Standalone: ``python -m bench.query [--quick]`` starts its own Redis and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
from redis.asyncio import Redis

from bench.postgres import PostgresServer
from bench.sql_api import DSN_ENV, INDEX, SCHEMA
from devact.services.process import ServiceError, ensure_apt_package, free_port
from devact.services.redis import RedisServer
from state import keys
from state.connection import connect
from state.registry import Registry
from state.settings import StoreSettings
from state.writer import Writer
from stream.dlq import DeadLetterRecord
from stream.plan import Message
from stream.processor import BatchProcessor

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "activity.lua"
SEED = 4
TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "UTC")
DAYS = 90
SLOTS = 96
"""Heartbeats of a working day: every 5 minutes from 09:00 to 16:55 local time."""
DAY_OFF = 0.05
"""Chance that a device is not used on a weekday (holidays, repairs)."""
WEEKEND_USE = 0.25
"""Chance that a device is used on a weekend day, then for 1 to 12 heartbeats."""
NOBODY = 0.03
"""Chance that a heartbeat has no user signed in (it counts toward activity only)."""
PARTITIONS = 6
TOPIC = "heartbeats"
MESSAGES_PER_BATCH = 500
"""Messages (device-days) per ``process`` call: about 45,000 heartbeats."""
PG_ROWS_PER_COPY = 200_000
CONNECTIONS, THREADS = 32, 2
READY_DEADLINE_S = 30
CHECKED_DEVICES = 6
SAMPLED_DEVICES = 20
"""Devices whose keys' ``MEMORY USAGE`` is summed (about 1,400 device-days)."""
MS = 1000.0  # wrk reports microseconds


class BenchError(RuntimeError):
    """The bench found something wrong: a dead letter, different answers, failed requests."""


@dataclass(frozen=True)
class Mode:
    devices: int
    duration_s: int
    warmup_s: int
    extra_runs: bool
    """Also the daily-and-weekly mix, and the SQL baseline with one process per core."""


FULL = Mode(devices=500, duration_s=15, warmup_s=3, extra_runs=True)
QUICK = Mode(devices=25, duration_s=4, warmup_s=1, extra_runs=False)


# --- The data set -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    client_id: str
    device_id: str
    timezone: str
    partition: int


@dataclass(frozen=True)
class Dataset:
    seed: int
    first_day: date
    devices: list[Device]
    clients: dict[str, str] = field(default_factory=dict)

    @property
    def last_day(self) -> date:
        return self.day(DAYS - 1)

    def day(self, n: int) -> date:
        return self.first_day + timedelta(days=n)


def make_dataset(devices: int, seed: int, today: date) -> Dataset:
    """Clients in every timezone of TIMEZONES, devices spread over them. The 90 days start on a
    Monday and end at least a week before ``today``."""
    latest_first = today - timedelta(days=DAYS + 6)
    first = latest_first - timedelta(days=latest_first.weekday())
    names = uuid.UUID(int=seed)
    clients = {str(uuid.uuid5(names, f"client/{tz}")): tz for tz in TIMEZONES}
    ids = list(clients)
    out = []
    for n in range(devices):
        client = ids[n % len(ids)]
        device = str(uuid.uuid5(names, f"device/{n}"))
        partition = zlib.crc32(device.encode()) % PARTITIONS  # the message key picks it
        out.append(Device(client, device, clients[client], partition))
    return Dataset(seed, first, out, clients)


Record = tuple[str, str, str | None, datetime, int]
"""A ``heartbeats`` row: client_id, device_id, user_id, generated_at_utc (naive UTC), count."""
Beat = tuple[int, str | None, int]
"""A heartbeat of a device-day: working-day slot, user (None: nobody signed in), count."""


class SlotGrid:
    """The working-day instants of each (timezone, day): as JSON text and as naive UTC."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, date], tuple[list[str], list[datetime]]] = {}

    def slots(self, timezone: str, day: date) -> tuple[list[str], list[datetime]]:
        found = self._cache.get((timezone, day))
        if found is None:
            # 09:00 local then 5-minute steps of wall time; no DST change falls within 9 to 17 h.
            start = datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo(timezone))
            utc = [(start + timedelta(minutes=5 * k)).astimezone(UTC) for k in range(SLOTS)]
            iso = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in utc]
            found = self._cache[(timezone, day)] = (iso, [t.replace(tzinfo=None) for t in utc])
        return found


class DeviceHistory:
    """One device's heartbeats, day after day, from a generator seeded for that device alone (so
    one device's history can be generated again on its own, for the correctness check)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.device = dataset.devices[n]
        self._rng = random.Random(f"{dataset.seed}/{n}")
        self._pool = [
            f"user-{self._rng.randrange(100_000):05d}@example.org"
            for _ in range(self._rng.randint(4, 15))
        ]

    def next_day(self, day: date) -> list[Beat]:
        """The heartbeats of ``day``; call for every day of the range, in order. On a weekday the
        day's users take turns in contiguous sessions; on a weekend day there may be a few
        heartbeats of one user."""
        rng, pool = self._rng, self._pool
        plan: list[tuple[int, str | None]]
        if day.weekday() >= 5:
            if rng.random() >= WEEKEND_USE:
                return []
            user = rng.choice(pool)
            plan = [(s, user) for s in sorted(rng.sample(range(SLOTS), rng.randint(1, 12)))]
        elif rng.random() < DAY_OFF:
            return []
        else:
            users = rng.sample(pool, rng.randint(1, min(10, len(pool))))
            bounds = [0, *sorted(rng.sample(range(1, SLOTS), len(users) - 1)), SLOTS]
            plan = [
                (slot, None if rng.random() < NOBODY else user)
                for user, begin, end in zip(users, bounds, bounds[1:], strict=False)
                for slot in range(begin, end)
            ]
        counts = rng.choices(range(41), k=len(plan))
        return [(slot, user, count) for (slot, user), count in zip(plan, counts, strict=True)]


def generated_total(dataset: Dataset, n: int) -> int:
    """The activity count of the ``n``-th device over the whole range."""
    history = DeviceHistory(dataset, n)
    return sum(c for d in range(DAYS) for _, _, c in history.next_day(dataset.day(d)))


# --- Loading ------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    rows: int = 0
    device_days: int = 0
    generate_s: float = 0.0
    redis_s: float = 0.0
    pg_s: float = 0.0


class Loader:
    """Feeds the events, in the order they happen, to the worker's processor and to COPY.

    One Kafka message per device-day: a JSON array of its heartbeats (at most 96), offsets
    consecutive per partition; how events are packed into messages changes nothing in Redis.
    PostgreSQL gets each day's rows sorted by time, as they would arrive: its heap interleaves
    devices as a production table's would, instead of clustering each device's rows together.
    """

    def __init__(self, processor: BatchProcessor, pg: Any) -> None:
        self._processor, self._pg = processor, pg
        self._offsets = [0] * PARTITIONS
        self._messages: list[Message] = []
        self._records: list[Record] = []
        self.stats = LoadStats()

    async def load(self, dataset: Dataset) -> LoadStats:
        grid = SlotGrid()
        histories = [DeviceHistory(dataset, n) for n in range(len(dataset.devices))]
        for d in range(DAYS):
            started = time.perf_counter()
            day = dataset.day(d)
            records: list[Record] = []
            for history in histories:
                beats = history.next_day(day)
                if beats:
                    records += self._add_device_day(
                        history.device, beats, *grid.slots(history.device.timezone, day)
                    )
            records.sort(key=lambda r: r[3])
            self._records += records
            self.stats.generate_s += time.perf_counter() - started
            await self._flush(final=d == DAYS - 1)
        return self.stats

    def _add_device_day(
        self, device: Device, beats: list[Beat], iso: list[str], naive: list[datetime]
    ) -> list[Record]:
        value = orjson.dumps(
            [
                {
                    "client_id": device.client_id,
                    "device_id": device.device_id,
                    "user_id": user,
                    "generated_at_utc": iso[slot],
                    "total_activity_count": count,
                }
                for slot, user, count in beats
            ]
        )
        p = device.partition
        self._messages.append(Message(TOPIC, p, self._offsets[p], device.device_id.encode(), value))
        self._offsets[p] += 1
        self.stats.rows += len(beats)
        self.stats.device_days += 1
        return [(device.client_id, device.device_id, u, naive[s], c) for s, u, c in beats]

    async def _flush(self, final: bool) -> None:
        while len(self._messages) >= MESSAGES_PER_BATCH or (final and self._messages):
            batch = self._messages[:MESSAGES_PER_BATCH]
            del self._messages[:MESSAGES_PER_BATCH]
            started = time.perf_counter()
            await self._processor.process(batch)
            self.stats.redis_s += time.perf_counter() - started
        if len(self._records) >= PG_ROWS_PER_COPY or (final and self._records):
            started = time.perf_counter()
            await self._pg.copy_records_to_table("heartbeats", records=self._records)
            self.stats.pg_s += time.perf_counter() - started
            self._records = []


async def _no_reread(
    topic: str, partition: int, start: int, stop: int
) -> AsyncIterator[list[Message]]:
    """The processor's ``reread``: never needed, since every partition's offsets follow on."""
    raise BenchError(f"the load made the processor re-read {topic}[{partition}] {start}..{stop}")
    yield []  # unreachable; makes this an async generator, as ``Reread`` is


async def register(redis: Redis, dataset: Dataset) -> str:
    """The data set's clients with their timezones, and a token for all of them."""
    registry = Registry(redis)
    now = datetime.now(UTC)
    for client_id, timezone in dataset.clients.items():
        await registry.add_client(client_id, timezone, f"bench {timezone}", now)
    return await registry.create_token([], all_clients=True, name="bench")


async def redis_key_bytes(redis: Redis, dataset: Dataset, devices: int) -> tuple[int, int]:
    """``MEMORY USAGE`` summed over the day keys (counter and users) of the first ``devices``
    devices, and the number of their device-days: the keys' own bytes, without the keyspace's
    hash tables and expiry entries that ``used_memory`` also counts."""
    total, device_days = 0, 0
    for device in dataset.devices[:devices]:
        async with redis.pipeline(transaction=False) as pipe:
            for d in range(DAYS):
                pipe.memory_usage(keys.day_counter(device.device_id, dataset.day(d)), samples=0)
                pipe.memory_usage(keys.day_users(device.device_id, dataset.day(d)), samples=0)
            sizes = await pipe.execute()
        total += sum(s or 0 for s in sizes)
        device_days += sum(1 for s in sizes[::2] if s)
    return total, device_days


async def load_redis_and_pg(
    redis_url: str, pg_dsn: str, dataset: Dataset
) -> tuple[str, dict[str, object]]:
    """Flush Redis, register the clients, load both stores; returns the token and the figures."""
    redis = connect(StoreSettings(redis_url=redis_url, redis_timeout_s=60.0))
    pg = await asyncpg.connect(pg_dsn)
    try:
        await redis.flushall()
        token = await register(redis, dataset)
        await pg.execute(SCHEMA)
        await pg.executemany("INSERT INTO clients VALUES ($1, $2)", dataset.clients.items())
        dead: list[DeadLetterRecord] = []

        async def send(letters: Sequence[DeadLetterRecord]) -> None:
            dead.extend(letters)

        processor = BatchProcessor(
            Registry(redis),
            Writer(redis),
            send,
            clock=lambda: datetime.now(UTC),
            default_timezone="UTC",
            retention_days=400,
            reread=_no_reread,
        )
        used_before = int((await redis.info("memory"))["used_memory"])
        stats = await Loader(processor, pg).load(dataset)
        used = int((await redis.info("memory"))["used_memory"]) - used_before
        if dead:
            raise BenchError(f"{len(dead)} dead letters, e.g. {dead[0]!r:.300}")
        key_bytes, key_device_days = await redis_key_bytes(redis, dataset, SAMPLED_DEVICES)
        started = time.perf_counter()
        await pg.execute(INDEX)
        await pg.execute("ANALYZE heartbeats")
        stats.pg_s += time.perf_counter() - started
        pg_total = int(await pg.fetchval("SELECT pg_total_relation_size('heartbeats')"))
        pg_table = int(await pg.fetchval("SELECT pg_table_size('heartbeats')"))
    finally:
        await pg.close()
        await redis.aclose()
    figures: dict[str, object] = {
        "query_rows": stats.rows,
        "query_devices": len(dataset.devices),
        "query_device_days": stats.device_days,
        "query_first_day": dataset.first_day.isoformat(),
        "generate_s": round(stats.generate_s, 1),
        "redis_load_s": round(stats.redis_s, 1),
        "redis_load_events_per_s": round(stats.rows / stats.redis_s),
        "pg_load_s": round(stats.pg_s, 1),
        "redis_bytes_per_device_day": round(used / stats.device_days, 1),
        "redis_key_bytes_per_device_day": round(key_bytes / key_device_days, 1),
        "pg_bytes_per_device_day": round(pg_total / stats.device_days, 1),
        "pg_table_bytes_per_device_day": round(pg_table / stats.device_days, 1),
        "pg_to_redis_bytes_ratio": round(pg_total / used, 1),
        "pg_table_to_redis_bytes_ratio": round(pg_table / used, 1),
    }
    log.info("loaded: %s", figures)
    return token, figures


# --- Servers and load -----------------------------------------------------------------------------


class HttpServer:
    """An HTTP server as a child process in its own process group (uvicorn's workers included)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path):
        self.name, self.argv, self.port = name, argv, port
        self.env = {**os.environ, **env}
        self.log_file = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, probe_path: str, headers: dict[str, str]) -> None:
        """Until ``probe_path`` answers 200 (with several workers: one of them)."""
        assert self.process is not None
        deadline = time.monotonic() + READY_DEADLINE_S
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise ServiceError(f"{self.name} exited: see {self.log_file}")
                try:
                    if (await http.get(self.url + probe_path, headers=headers)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.name} not ready in {READY_DEADLINE_S} s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # the group of our own child: uvicorn and workers
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.asynccontextmanager
async def serving(
    server: HttpServer, probe_path: str, headers: dict[str, str]
) -> AsyncIterator[HttpServer]:
    server.spawn()
    try:
        await server.wait_ready(probe_path, headers)
        yield server
    finally:
        server.stop()


def api_server(redis_url: str, workers: int, log_dir: Path) -> HttpServer:
    devact = str(Path(sys.executable).parent / "devact")
    port = free_port()
    argv = [devact, "api", "--port", str(port), "--workers", str(workers)]
    return HttpServer(f"api-{workers}", argv, {"DEVACT_REDIS_URL": redis_url}, port, log_dir)


def sql_server(dsn: str, workers: int, log_dir: Path) -> HttpServer:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "bench.sql_api:app_factory"]
    argv += ["--port", str(port), "--workers", str(workers)]
    argv += ["--log-level", "warning", "--no-access-log"]
    env = {DSN_ENV: dsn, "PYTHONPATH": str(ROOT)}
    return HttpServer(f"sql-{workers}", argv, env, port, log_dir)


def _tree_cpu_s(root: int) -> float:
    """User and system CPU seconds of ``root`` and its live descendants."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parent:
            ancestor = parent[ancestor]
        if ancestor == root:
            total += seconds
    return total


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    curve: list[list[float]]
    loadgen_cpu_pct: float
    """Percent of one core, over the run's wall time; so are the next two."""
    server_cpu_pct: float
    store_cpu_pct: float
    server_cpu_ms: float
    """CPU per request: unlike req/s, it holds still when other work shares the machine."""
    store_cpu_ms: float


def _wrk(url: str, env: dict[str, str], duration_s: int) -> tuple[dict[str, Any], float, float]:
    """One wrk run: its JSON summary, wall seconds and CPU seconds (from the kernel's rusage of
    waited-for children; nothing else is reaped while wrk runs)."""
    wrk = ensure_apt_package("wrk", "wrk")
    argv = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--timeout", "5s"]
    argv += ["-s", str(WRK_SCRIPT), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCHJSON ")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}{done.stdout}")
    summary: dict[str, Any] = orjson.loads(lines[-1].removeprefix("BENCHJSON "))
    return summary, wall, cpu


async def drive(
    server: HttpServer,
    env: dict[str, str],
    mode: Mode,
    store_cpu: Callable[[], Awaitable[float]],
) -> WrkResult:
    """Warm up, then measure: req/s, latency, and the CPU of wrk, the server and its store."""
    assert server.process is not None
    await asyncio.to_thread(_wrk, server.url, env, mode.warmup_s)
    server_before, store_before = _tree_cpu_s(server.process.pid), await store_cpu()
    summary, wall, loadgen_cpu = await asyncio.to_thread(_wrk, server.url, env, mode.duration_s)
    server_cpu = _tree_cpu_s(server.process.pid) - server_before
    store_cpu_s = await store_cpu() - store_before
    errors = summary["errors"]
    if any(errors.values()):
        raise BenchError(f"{server.name}: wrk saw errors (status >= 400 or socket): {errors}")
    curve = [[p, round(us / MS, 3)] for p, us in summary["latency_us"]["curve"]]
    at = dict((p, ms) for p, ms in curve)
    result = WrkResult(
        rps=round(summary["requests"] / (summary["duration_us"] / 1e6), 1),
        p50_ms=at[50],
        p99_ms=at[99],
        curve=curve,
        loadgen_cpu_pct=round(100 * loadgen_cpu / wall, 1),
        server_cpu_pct=round(100 * server_cpu / wall, 1),
        store_cpu_pct=round(100 * store_cpu_s / wall, 1),
        server_cpu_ms=round(MS * server_cpu / summary["requests"], 3),
        store_cpu_ms=round(MS * store_cpu_s / summary["requests"], 3),
    )
    log.info("%s %s: %s", server.name, env["BENCH_MIX"], result)
    return result


def flat(prefix: str, result: WrkResult) -> dict[str, object]:
    return {
        f"{prefix}_rps": result.rps,
        f"{prefix}_p50_ms": result.p50_ms,
        f"{prefix}_p99_ms": result.p99_ms,
        f"{prefix}_latency_curve": result.curve,
        f"{prefix}_loadgen_cpu_pct": result.loadgen_cpu_pct,
        f"{prefix}_server_cpu_pct": result.server_cpu_pct,
        f"{prefix}_store_cpu_pct": result.store_cpu_pct,
        f"{prefix}_server_cpu_ms_per_request": result.server_cpu_ms,
        f"{prefix}_store_cpu_ms_per_request": result.store_cpu_ms,
    }


# --- Correctness --------------------------------------------------------------------------------


async def check_same_answers(api: HttpServer, sql: HttpServer, token: str, dataset: Dataset) -> int:
    """For a sample of devices, the API and the SQL baseline give the same bodies (daily and
    weekly, both metrics; user counts are exact at 500 users a day or fewer), and the daily
    activity adds up to the device's generated heartbeats. Returns the requests compared."""
    rng = random.Random(dataset.seed)
    compared = 0
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for n in rng.sample(
            range(len(dataset.devices)), min(CHECKED_DEVICES, len(dataset.devices))
        ):
            device = dataset.devices[n]
            expected_total = generated_total(dataset, n)
            for metric in ("activity-count", "user-count"):
                for granularity in ("daily", "weekly"):
                    path = _series_path(device, dataset, metric, granularity)
                    ours = await http.get(api.url + path, headers=auth)
                    theirs = await http.get(sql.url + path)
                    if ours.status_code != 200 or ours.content != theirs.content:
                        raise BenchError(
                            f"different answers for {path}:\n"
                            f"API {ours.status_code} {ours.text}\n"
                            f"SQL {theirs.status_code} {theirs.text}"
                        )
                    compared += 1
                    total = sum(point["value"] for point in ours.json()["data"])
                    if metric == "activity-count" and total != expected_total:
                        raise BenchError(f"{path}: total {total}, generated {expected_total}")
    return compared


def _series_path(device: Device, dataset: Dataset, metric: str, granularity: str) -> str:
    return (
        f"/v2/clients/{device.client_id}/analytics/devices/{device.device_id}/activity"
        f"?metric={metric}&granularity={granularity}"
        f"&start_date={dataset.first_day}&end_date={dataset.last_day}"
    )


# --- The section --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    mode: Mode
    dataset: Dataset
    redis_url: str
    postgres: PostgresServer
    token: str
    devices_file: Path
    run_dir: Path

    def env(self, mix: str) -> dict[str, str]:
        """What the wrk script reads (bench/wrk/activity.lua)."""
        return {
            "BENCH_DEVICES": str(self.devices_file),
            "BENCH_START": self.dataset.first_day.isoformat(),
            "BENCH_END": self.dataset.last_day.isoformat(),
            "BENCH_TOKEN": self.token,
            "BENCH_SEED": str(SEED),
            "BENCH_MIX": mix,
        }

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def sql_probe(self) -> str:
        return _series_path(self.dataset.devices[0], self.dataset, "activity-count", "daily")


async def measure_queries(ctx: Context) -> dict[str, object]:
    """Same answers first, then each server under the same load: one process of each, then one
    per core. The server not under load meanwhile sits idle."""
    redis_cpu, pg_cpu = _redis_cpu(ctx.redis_url), _pg_cpu(ctx.postgres)
    daily, mix, extra = ctx.env("daily"), ctx.env("mix"), ctx.mode.extra_runs
    cores = os.cpu_count() or 1
    # Other work on the machine slows every figure but the CPU per request; this says how much.
    results: dict[str, object] = {"query_load_average_1m": round(os.getloadavg()[0], 2)}
    runs: list[WrkResult] = []

    def record(prefix: str, result: WrkResult) -> None:
        runs.append(result)
        results.update(flat(prefix, result))

    async with (
        serving(api_server(ctx.redis_url, 1, ctx.run_dir), "/readyz", ctx.auth) as api,
        serving(sql_server(ctx.postgres.dsn, 1, ctx.run_dir), ctx.sql_probe, {}) as sql,
    ):
        results["query_checked_requests"] = await check_same_answers(
            api, sql, ctx.token, ctx.dataset
        )
        record("query", await drive(api, daily, ctx.mode, redis_cpu))
        if extra:
            record("query_mix", await drive(api, mix, ctx.mode, redis_cpu))
        record("sql", await drive(sql, daily, ctx.mode, pg_cpu))
        if extra:
            record("sql_mix", await drive(sql, mix, ctx.mode, pg_cpu))
    async with serving(api_server(ctx.redis_url, cores, ctx.run_dir), "/readyz", ctx.auth) as api:
        record("query_per_core", await drive(api, daily, ctx.mode, redis_cpu))
    if extra:
        async with serving(
            sql_server(ctx.postgres.dsn, cores, ctx.run_dir), ctx.sql_probe, {}
        ) as sql:
            record("sql_per_core", await drive(sql, daily, ctx.mode, pg_cpu))
    results["query_rps_per_core"] = results["query_per_core_rps"]
    if extra:
        results["sql_rps_per_core"] = results["sql_per_core_rps"]
    results["query_per_core_workers"] = cores
    results["query_series"] = "query_*, sql_*: 90-day daily series of both metrics, in turn"
    results["query_mix_series"] = "query_mix_*, sql_mix_*: 90-day daily and weekly of both"
    results["loadgen_cpu_pct"] = max(r.loadgen_cpu_pct for r in runs)
    return results


async def run(redis_url: str, run_dir: Path, quick: bool) -> dict[str, object]:
    """The query and memory section. Flushes the Redis at ``redis_url`` (the bench's own).

    Figures (flat): ``query_rps``, ``query_p50_ms``, ``query_p99_ms`` (one API process, 90-day
    daily series of both metrics), ``query_rps_per_core`` (all workers of the API with one
    worker per core, together), ``sql_*`` the same for the SQL baseline, ``*_latency_curve``
    as [percentile, ms], ``redis_bytes_per_device_day`` (``used_memory`` growth over the load),
    ``pg_bytes_per_device_day`` (table and index), ``query_rows``, ``query_device_days``,
    ``loadgen_cpu_pct`` (wrk's CPU, percent of one core, the highest of all runs).
    """
    mode = QUICK if quick else FULL
    dataset = make_dataset(mode.devices, SEED, datetime.now(UTC).date())
    devices_file = _write_devices(run_dir, dataset)
    postgres = PostgresServer(run_dir, free_port())
    try:
        await asyncio.to_thread(postgres.start)
        token, results = await load_redis_and_pg(redis_url, postgres.dsn, dataset)
        ctx = Context(mode, dataset, redis_url, postgres, token, devices_file, run_dir)
        results.update(await measure_queries(ctx))
    finally:
        postgres.stop()
        shutil.rmtree(postgres.data_dir, ignore_errors=True)  # about 0.5 GB at full size
    results["query_vs_sql_rps"] = round(
        float(str(results["query_rps"])) / float(str(results["sql_rps"])), 1
    )
    return results


def _write_devices(run_dir: Path, dataset: Dataset) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "query-devices.txt"
    path.write_text("".join(f"{d.client_id} {d.device_id}\n" for d in dataset.devices))
    return path


def _pg_cpu(postgres: PostgresServer) -> Callable[[], Awaitable[float]]:
    pid = postgres.pid
    assert pid is not None

    async def seconds() -> float:
        return _tree_cpu_s(pid)

    return seconds


def _redis_cpu(redis_url: str) -> Callable[[], Awaitable[float]]:
    async def seconds() -> float:
        redis = Redis.from_url(redis_url)
        try:
            info = await redis.info("cpu")
        finally:
            await redis.aclose()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small data set, short runs")
    parser.add_argument("--run-dir", type=Path, help="default: a new directory under /tmp")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="devact-bench-query-"))
    redis = RedisServer(run_dir, free_port())
    redis.start()
    try:
        results = asyncio.run(run(redis.url, run_dir, args.quick))
    finally:
        redis.stop()
    sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
