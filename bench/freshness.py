"""Freshness: how long after a producer sends a heartbeat the API shows it.

A producer sends realistic live heartbeats at a steady 5,000/s into the worker's topic; ten times
a second it also sends a probe: one heartbeat of a device never seen before. Each probe is then
polled through the API (every ``PROBE_POLL_S``) until its day shows the probe's count. The
latency is from just before the send to the first response that shows it, so it includes the
producer's linger, the broker, the worker's fetch and batch, Redis and one API request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bench.common import VENV_BIN, children, create_topic, kafka, waiting, worker_env
from devact.progress import Meter
from devtools.demo.generator import HeartbeatGenerator
from devtools.demo.producer import Publisher, publish_at_rate, scheduled
from devtools.services import Endpoints, free_port
from state.registry import Registry

log = logging.getLogger(__name__)

RATE = 5_000
PROBES_PER_S = 10
PROBE_POLL_S = 0.02
PROBE_DEADLINE_S = 30.0
PARTITIONS = 6
PROBE_CLIENT = "00000000-0000-4000-8000-00000000f7e5"


async def run(endpoints: Endpoints, run_dir: Path, quick: bool, now: datetime) -> dict[str, object]:
    duration_s = 10.0 if quick else 60.0
    topic = "bench.fresh"
    await create_topic(kafka(endpoints), topic, PARTITIONS)
    redis = Redis.from_url(endpoints.redis_url)
    try:
        await redis.flushall()
        registry = Registry(redis)
        await registry.add_client(PROBE_CLIENT, "UTC", "freshness probes", now)
        token = await registry.create_token([], all_clients=True, name="bench")
    finally:
        await redis.aclose()
    port = free_port()
    env = worker_env(endpoints, topic, "bench-fresh", run_dir)
    api = [str(VENV_BIN / "devact"), "api", "--port", str(port)]
    worker = [str(VENV_BIN / "devact"), "worker"]
    with children(("fresh-worker", worker, env), ("fresh-api", api, env), logs=run_dir / "logs"):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=5.0) as http,
            Publisher(kafka(endpoints), topic) as publisher,
        ):
            await _wait_ready(http)
            # The first probe also waits out the worker's group join; it is not counted.
            await waiting(
                "freshness: first probe (the worker joins its group)",
                _probe(http, publisher, PROBE_DEADLINE_S * 2),
            )
            sent_rate, latencies = await _measure(http, publisher, duration_s)
    latencies.sort()
    return {
        "fresh_p50_ms": round(_percentile(latencies, 50) * 1000, 1),
        "fresh_p99_ms": round(_percentile(latencies, 99) * 1000, 1),
        "fresh_max_ms": round(latencies[-1] * 1000, 1),
        "fresh_probes": len(latencies),
        "fresh_rate": RATE,
        "fresh_rate_sent": round(sent_rate),
        "fresh_seconds": duration_s,
        "fresh_poll_ms": PROBE_POLL_S * 1000,
    }


async def _measure(
    http: httpx.AsyncClient, publisher: Publisher, duration_s: float
) -> tuple[float, list[float]]:
    """The rate the load was sent at, and each probe's latency."""
    generator = HeartbeatGenerator({str(uuid.UUID(int=n + 1)): "UTC" for n in range(20)}, 50)
    with Meter("freshness: load", scheduled(RATE, duration_s), "heartbeats") as sent:
        load = asyncio.create_task(
            publish_at_rate(publisher, generator.live, RATE, duration_s, sent.advance)
        )
        probes: list[asyncio.Task[float]] = []
        started = time.monotonic()
        while not load.done():  # the load ends after duration_s, or later if it fell behind
            probes.append(asyncio.create_task(_probe(http, publisher, PROBE_DEADLINE_S)))
            await asyncio.sleep(max(0.0, started + len(probes) / PROBES_PER_S - time.monotonic()))
        await load
    elapsed = time.monotonic() - started
    log.info(
        "freshness: %d heartbeats sent in %.1f s, %d probes", publisher.sent, elapsed, len(probes)
    )
    return publisher.sent / elapsed, list(await asyncio.gather(*probes))


async def _probe(http: httpx.AsyncClient, publisher: Publisher, deadline_s: float) -> float:
    """Send one heartbeat of a new device; seconds until the API shows it."""
    device = str(uuid.uuid4())
    at = datetime.now(UTC)
    event = {
        "client_id": PROBE_CLIENT,
        "device_id": device,
        "user_id": None,
        "generated_at_utc": at.isoformat().replace("+00:00", "Z"),
        "total_activity_count": 7,
    }
    day = at.date().isoformat()
    path = f"/v2/clients/{PROBE_CLIENT}/analytics/devices/{device}/activity"
    params = {"metric": "activity-count", "start_date": day, "end_date": day}
    sent = time.monotonic()
    await publisher.publish([event])
    while time.monotonic() - sent < deadline_s:
        response = await http.get(path, params=params)
        if response.status_code == 200 and response.json()["data"][0]["value"] == 7:
            return time.monotonic() - sent
        if response.status_code not in (200, 404):
            raise RuntimeError(f"API answered {response.status_code}: {response.text}")
        await asyncio.sleep(PROBE_POLL_S)
    raise TimeoutError(f"probe {device} not visible after {deadline_s} s")


async def _wait_ready(http: httpx.AsyncClient) -> None:
    limit = time.monotonic() + 30
    while True:
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > limit:
            raise TimeoutError("the API did not become ready")
        await asyncio.sleep(0.1)


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, round(pct / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]
