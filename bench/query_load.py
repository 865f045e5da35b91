"""The query section's HTTP servers and load: the API and the SQL baseline as child processes,
``wrk`` against them, and the CPU that wrk, each server and its store spend meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from bench.common import waiting
from bench.postgres import PostgresServer
from bench.query_data import BenchError
from bench.sql_api import DSN_ENV
from devtools.services.process import ServiceError, ensure_apt_package, free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "activity.lua"
CONNECTIONS, THREADS = 32, 2
READY_DEADLINE_S = 30
MS = 1000.0  # wrk reports microseconds


@dataclass(frozen=True)
class Mode:
    devices: int
    duration_s: int
    warmup_s: int
    extra_runs: bool
    """Also the daily-and-weekly mix, and the SQL baseline with one process per core."""


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


def api_server(
    redis_url: str, workers: int, log_dir: Path, server: str | None = None
) -> HttpServer:
    """`devact api` under ``server`` (uvicorn or granian: `devact api --server`; None: its
    default)."""
    devact = str(Path(sys.executable).parent / "devact")
    port = free_port()
    argv = [devact, "api", "--port", str(port), "--workers", str(workers)]
    argv += [] if server is None else ["--server", server]
    name = f"api-{workers}" if server is None else f"api-{server}-{workers}"
    return HttpServer(name, argv, {"DEVACT_REDIS_URL": redis_url}, port, log_dir)


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
    return await waiting(
        f"query: wrk against {server.name}, {env['BENCH_MIX']}",
        _drive(server, env, mode, store_cpu),
        seconds=mode.warmup_s + mode.duration_s,
    )


async def _drive(
    server: HttpServer,
    env: dict[str, str],
    mode: Mode,
    store_cpu: Callable[[], Awaitable[float]],
) -> WrkResult:
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


def pg_cpu(postgres: PostgresServer) -> Callable[[], Awaitable[float]]:
    pid = postgres.pid
    assert pid is not None

    async def seconds() -> float:
        return _tree_cpu_s(pid)

    return seconds


def redis_cpu(redis_url: str) -> Callable[[], Awaitable[float]]:
    async def seconds() -> float:
        redis = Redis.from_url(redis_url)
        try:
            info = await redis.info("cpu")
        finally:
            await redis.aclose()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return seconds
