"""How many device scripts one round trip of the writer should carry (state/writer.py).

Applies the same device batches through ``Writer`` against a Redis of its own, once per cap of
scripts per round trip, and reports events per second and Redis's CPU per event (from /proc).
Two shapes: one heartbeat per device (gateway arrays of distinct devices) and five per device.
Not part of ``make bench``; run it when the writer's round trips change:

    .venv/bin/python -m bench.trips
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from devtools.services import free_port
from state import writer as writer_module
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import connect
from state.settings import StoreSettings
from state.writer import Positions, Span, Writer

CAPS = (32, 128, 256, 1024, 4096, 100_000)
DEVICES = 20_000
ROUNDS = 3
_TICKS = os.sysconf("SC_CLK_TCK")


def _batches(rng: random.Random, per_device: int, offset: int) -> list[DeviceBatch]:
    today = date(2026, 12, 1)
    expire = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
    out = []
    for _ in range(DEVICES):
        batch = DeviceBatch(str(uuid.uuid4()), str(uuid.uuid4()))
        day = today - timedelta(days=rng.randrange(3))
        batch.days[day] = DayBatch(
            expire,
            [
                Contribution(0, offset + n, rng.randint(1, 60), f"u{rng.randrange(8)}")
                for n in range(per_device)
            ],
        )
        out.append(batch)
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def _measure(url: str, pid: int, per_device: int, cap: int, seed: int) -> tuple[float, float]:
    writer_module.SCRIPTS_PER_TRIP = cap
    writer_module.EVENTS_PER_TRIP = cap * per_device
    redis = connect(StoreSettings(redis_url=url, redis_timeout_s=30))
    try:
        writer = Writer(redis)
        batches = _batches(random.Random(seed), per_device, 0)
        packed = writer.pack(batches)
        positions = Positions("trips", {0: Span(0, per_device, force=True)})
        cpu, started = _cpu_s(pid), time.perf_counter()
        await writer.apply_packed(packed, positions)
        elapsed, cpu_used = time.perf_counter() - started, _cpu_s(pid) - cpu
    finally:
        await redis.aclose()
    events = DEVICES * per_device
    return events / elapsed, cpu_used / events * 1e6


@contextmanager
def scratch_redis(prefix: str) -> Iterator[tuple[str, int]]:
    """A redis-server of its own (no persistence) for a standalone measurement: its URL and
    pid (for its CPU from /proc), stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        asyncio.run(_wait(url))
        yield url, server.pid
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    with scratch_redis("trips-") as (url, pid):
        print(f"{'events/device':>13} {'cap':>7} {'events/s':>10} {'redis us/event':>15}")
        for per_device in (1, 5):
            for cap in CAPS:
                runs = [
                    asyncio.run(_measure(url, pid, per_device, cap, seed)) for seed in range(ROUNDS)
                ]
                rate = sorted(r for r, _ in runs)[ROUNDS // 2]
                cpu = sorted(c for _, c in runs)[ROUNDS // 2]
                print(f"{per_device:>13} {cap:>7} {rate:>10.0f} {cpu:>15.1f}")


async def _wait(url: str) -> None:
    redis = connect(StoreSettings(redis_url=url))
    try:
        for _ in range(200):
            try:
                await redis.ping()
                return
            except Exception:  # not up yet
                await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")
    finally:
        await redis.aclose()


if __name__ == "__main__":
    main()
