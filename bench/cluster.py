"""Redis Cluster at scale (docs/scaling.md): memory and the 90-day series as the data grow, and
one Redis against the cluster, side by side.

A local cluster of three primaries with a replica each (``devtools.services.redis_cluster``) is
loaded through the worker's own apply path (``state.writer.new_writer``: the device
scripts, the batch markers and positions), without Kafka, as the query section's loader does.
Devices of shared use: each has 4 to 15 regulars, and on a day it is used (85% of the days of
the last 300) 1 to 10 of them; a heartbeat per user and day carries its activity. The fleet
aggregates are left out: they are measured apart (bench/fleet.py).

At a small size (100,000 device-days) and a large one (5,000,000; quick: 10,000 and 100,000):
``used_memory`` growth summed over the primaries per device-day, each node's ``used_memory``,
and the p50/p99 of a 90-day daily series of a random device, each metric, through ``Reader``
(the API's request path without HTTP, one request at a time). The small size is also loaded
into one Redis and timed the same way, for the cost of the cluster client against one Redis.
The load's rate (heartbeats/s through the apply path, a device's whole history a script) is
``cluster_apply_eps`` (one Redis: ``single_apply_eps``); the worker's rate through Kafka on a
cluster is the ingest section's ``cluster_ingest_eps``.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from devact.progress import Meter
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import Store, connect, connect_cluster
from state.dates import day_expires_at
from state.queries import SeriesQuery
from state.reader import Reader
from state.registry import Registry
from state.settings import StoreSettings
from state.writer import Positions, new_writer

log = logging.getLogger(__name__)

WINDOW_DAYS = 300
USED_SHARE = 0.85
DEVICES_PER_APPLY = 100
REQUESTS = 300
UTC_ZONE = ZoneInfo("UTC")


def _percentile(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


class Fleet:
    """Devices generated one by one from their own seed: a device's batch is made when it is
    loaded, never all at once (5 million device-days would not fit as objects)."""

    def __init__(self, today: date) -> None:
        self.client = str(uuid.uuid4())
        self.today = today
        self.devices: list[str] = []
        self.device_days = 0
        self.heartbeats = 0
        self._offset = 0
        self._expiries = {
            today - timedelta(days=n): day_expires_at(today - timedelta(days=n), UTC_ZONE, 400)
            for n in range(WINDOW_DAYS)
        }

    def grow(self, device_days: int) -> Iterator[list[DeviceBatch]]:
        """New devices' batches, ``DEVICES_PER_APPLY`` at a time, until ``device_days`` more."""
        target = self.device_days + device_days
        per_device = WINDOW_DAYS * USED_SHARE
        while self.device_days < target:
            wanted = math.ceil((target - self.device_days) / per_device)
            yield [self._device() for _ in range(min(DEVICES_PER_APPLY, wanted))]

    def _device(self) -> DeviceBatch:
        device = str(uuid.uuid4())
        rng = random.Random(device)
        self.devices.append(device)
        regulars = [f"{device}/u{n}" for n in range(rng.randint(4, 15))]
        batch = DeviceBatch(self.client, device)
        for day, expire_at in self._expiries.items():
            if rng.random() >= USED_SHARE:
                continue
            contributions = []
            for user in rng.sample(regulars, rng.randint(1, min(10, len(regulars)))):
                self._offset += 1
                contributions.append(Contribution(0, self._offset, rng.randint(1, 400), user))
            batch.days[day] = DayBatch(expire_at, contributions)
            self.heartbeats += len(contributions)
        self.device_days += len(batch.days)
        return batch


async def _used_memory(nodes: Sequence[Redis]) -> list[int]:
    return [int((await n.info("memory"))["used_memory"]) for n in nodes]


async def _load(store: Store, fleet: Fleet, device_days: int, description: str) -> float:
    """Apply ``device_days`` more; returns heartbeats per second."""
    writer = new_writer(store, fleet=False)
    before, days_before = fleet.heartbeats, fleet.device_days
    with Meter(description, device_days, "device-days") as loaded:
        started = time.perf_counter()
        for batches in fleet.grow(device_days):
            await writer.apply(batches, Positions("bench-cluster", {}))
            # A script is a device's whole history: one report for about 25,000 device-days.
            loaded.update(min(device_days, fleet.device_days - days_before))
        return (fleet.heartbeats - before) / (time.perf_counter() - started)


async def _series_times(store: Store, fleet: Fleet, description: str) -> dict[str, float]:
    reader, rng = Reader(store), random.Random(7)
    first, last = fleet.today - timedelta(days=89), fleet.today
    out: dict[str, float] = {}
    for metric in ("activity-count", "user-count"):
        warm = SeriesQuery(fleet.client, fleet.devices[0], metric, first, last)  # type: ignore[arg-type]
        await reader.series(warm)  # scripts loaded
        samples = []
        with Meter(f"{description}, {metric}", REQUESTS, "requests") as asked:
            for _ in range(REQUESTS):
                device = rng.choice(fleet.devices)
                asking = SeriesQuery(fleet.client, device, metric, first, last)  # type: ignore[arg-type]
                started = time.perf_counter()
                answer = await reader.series(asking)
                samples.append((time.perf_counter() - started) * 1000)
                asked.advance()
                assert answer.missing is None
        name = "activity" if metric == "activity-count" else "users"
        out[f"{name}_p50_ms"] = _percentile(samples, 50)
        out[f"{name}_p99_ms"] = _percentile(samples, 99)
    return out


async def _register(store: Store, fleet: Fleet) -> None:
    await Registry(store).add_client(fleet.client, "UTC", "bench cluster", datetime.now(UTC))


async def _single(redis_url: str, small: int) -> dict[str, Any]:
    """The small size on one Redis: its rate and series times, beside the cluster's."""
    store = connect(StoreSettings(redis_url=redis_url, redis_timeout_s=60.0))
    try:
        await store.flushall()
        fleet = Fleet(datetime.now(UTC).date())
        await _register(store, fleet)
        rate = await _load(store, fleet, small, "cluster: loading one Redis")
        times = await _series_times(store, fleet, "cluster: series on one Redis")
        await store.flushall()
    finally:
        await store.aclose()
    return {"single_apply_eps": round(rate), **{f"single_{k}": v for k, v in times.items()}}


async def run(redis_url: str, run_dir: Path, quick: bool) -> dict[str, Any]:
    small, large = (10_000, 100_000) if quick else (100_000, 5_000_000)
    results: dict[str, Any] = await _single(redis_url, small)
    cluster = LocalRedisCluster(run_dir / "cluster", consecutive_free_ports(6))
    with Meter("cluster: starting a Redis Cluster"):
        cluster.start()
    store: RedisCluster | None = None
    nodes: list[Redis] = []
    try:
        store = connect_cluster(StoreSettings(redis_url=cluster.url, redis_timeout_s=60.0))
        await store.initialize()
        primaries = [n for n in store.get_nodes() if n.server_type == "primary"]
        nodes = [Redis(host=n.host, port=n.port) for n in primaries]
        all_nodes = [Redis(host="127.0.0.1", port=n.port) for n in cluster.nodes]
        fleet = Fleet(datetime.now(UTC).date())
        await _register(store, fleet)
        base = await _used_memory(nodes)
        for size, label in ((small, "small"), (large, "large")):
            rate = await _load(
                store, fleet, size - fleet.device_days, f"cluster: loading the {label} size"
            )
            used = await _used_memory(nodes)
            times = await _series_times(store, fleet, f"cluster: series at the {label} size")
            grown = sum(used) - sum(base)
            results[f"cluster_{label}_device_days"] = fleet.device_days
            results[f"cluster_{label}_bytes_per_device_day"] = round(grown / fleet.device_days, 1)
            results[f"cluster_{label}_node_used_mb"] = [
                round(m / 2**20, 1) for m in await _used_memory(all_nodes)
            ]
            results.update({f"cluster_{label}_{k}": v for k, v in times.items()})
            if label == "large":
                results["cluster_apply_eps"] = round(rate)
            log.info("cluster: %s %s", label, {k: v for k, v in results.items() if label in k})
        results["cluster_query_p99_ms"] = max(
            results["cluster_large_activity_p99_ms"], results["cluster_large_users_p99_ms"]
        )
        for node in all_nodes:
            await node.aclose()
    finally:
        for node in nodes:
            await node.aclose()
        if store is not None:
            await store.aclose()
        cluster.stop()
    return results
