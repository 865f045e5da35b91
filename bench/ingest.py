"""Ingest: the same heartbeats, already in Kafka, consumed into Redis by each contender in turn.

Contenders: one ``devact worker`` (Faust), the bare aiokafka loop (the Python ceiling), the Quix
Streams app, one to three ``devact worker`` processes in one group on 6 and on 12 partitions, one
worker reading the same events sent as arrays of 100, and one on a Redis Cluster. Each starts on
an empty Redis with a consumer group of its own. The rate is events/s from the first applied
batch to the moment Redis holds every event (the applied positions state/ writes with the
counters), so process start-up and the group join are excluded and reported apart; so is the
contender's CPU per event (from /proc). Every run is then checked against the oracle. A
contender that has not finished by ``RUN_DEADLINE_S`` is reported as "did not finish", with the
events it applied by then, and the run goes on with the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.common import (
    VENV_BIN,
    Child,
    NotFinished,
    children,
    create_topic,
    kafka,
    wait_applied,
    worker_env,
)
from bench.dataset import Dataset, generate, produce, register_clients, verify
from bench.flame import flame_graph
from devact.progress import Meter
from devtools.services import Endpoints
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports
from state.connection import Store, connect_cluster
from state.settings import StoreSettings
from stream.kafka import KafkaConnection

log = logging.getLogger(__name__)

PARTITIONS = 6
Feed = tuple[bool, int]
"""What a contender reads: arrays of heartbeats or one a message, on how many partitions."""
TOPICS: dict[Feed, str] = {
    (False, PARTITIONS): "bench.ingest",
    (True, PARTITIONS): "bench.ingest.batched",
    (False, 12): "bench.ingest.p12",
}
BATCHED_PER_MESSAGE = 100
RUN_DEADLINE_S = 600.0
DID_NOT_FINISH = "did not finish"
VERIFY_SAMPLE = 300


@dataclass(frozen=True)
class Contender:
    key: str
    """The ``latest.json`` key of its rate."""
    label: str
    processes: int
    batched: bool
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment of its processes."""
    cluster: bool = False
    """Run against a local Redis Cluster (three primaries, a replica each) instead."""
    partitions: int = PARTITIONS
    """Partitions of the topic it reads (the same events either way)."""

    @property
    def feed(self) -> Feed:
        return (self.batched, self.partitions)

    @property
    def scales(self) -> bool:
        """One of the worker's runs that differ only in processes and partitions."""
        plain = not (self.batched or self.cluster or self.env)
        return plain and self.key not in ("ingest_raw_eps", "ingest_quix_eps")

    def commands(
        self, endpoints: Endpoints, topic: str, run_dir: Path, redis_url: str
    ) -> list[tuple[str, list[str], dict[str, str]]]:
        group = f"bench-{self.key}"
        env = {**worker_env(endpoints, topic, group, run_dir), **dict(self.env)}
        env["DEVACT_REDIS_URL"] = redis_url
        if self.key == "ingest_raw_eps":
            module = "bench.raw_loop"
        elif self.key == "ingest_quix_eps":
            module = "bench.quix_app"
        else:
            worker = [str(VENV_BIN / "devact"), "worker"]
            return [
                (f"{self.key}-{n}", worker, {**env, "DEVACT_WORKER_INSTANCE_ID": f"bench-{n}"})
                for n in range(self.processes)
            ]
        argv = [sys.executable, "-m", module, "--bootstrap", endpoints.kafka_bootstrap]
        argv += ["--redis-url", redis_url, "--topic", topic, "--group", group]
        return [(self.key, argv, env)]


CONTENDERS = (
    Contender("ingest_eps", "devact worker (Faust), 1 process", 1, batched=False),
    Contender(
        "ingest_nofleet_eps",
        "devact worker without the fleet aggregates",
        1,
        batched=False,
        env=(("DEVACT_FLEET_AGGREGATES", "0"),),
    ),
    Contender("ingest_raw_eps", "bare aiokafka loop, 1 process", 1, batched=False),
    Contender("ingest_quix_eps", "Quix Streams app, 1 process", 1, batched=False),
    Contender("ingest_2w_eps", "devact worker (Faust), 2 processes", 2, batched=False),
    Contender("ingest_3w_eps", "devact worker (Faust), 3 processes", 3, batched=False),
    Contender(
        "ingest_p12_eps",
        "devact worker (Faust), 1 process, 12 partitions",
        1,
        batched=False,
        partitions=12,
    ),
    Contender(
        "ingest_2w_p12_eps",
        "devact worker (Faust), 2 processes, 12 partitions",
        2,
        batched=False,
        partitions=12,
    ),
    Contender(
        "ingest_3w_p12_eps",
        "devact worker (Faust), 3 processes, 12 partitions",
        3,
        batched=False,
        partitions=12,
    ),
    Contender("ingest_batched_eps", "devact worker, arrays of 100", 1, batched=True),
    Contender(
        "cluster_ingest_eps",
        "devact worker (Faust), 1 process, on a Redis Cluster of 3 primaries",
        1,
        batched=False,
        env=(("DEVACT_REDIS_CLUSTER", "1"),),
        cluster=True,
    ),
)


PROFILED = Contender("ingest_profiled", "devact worker (Faust), 1 process", 1, batched=False)
"""The worker as deployed, run once more under py-spy after the measured runs, in a consumer
group of its own (so it reads the topic from the start)."""


async def run(
    endpoints: Endpoints,
    run_dir: Path,
    quick: bool,
    now: datetime,
    only: list[str] | None = None,
) -> dict[str, object]:
    events = 100_000 if quick else 1_000_000
    started = time.monotonic()
    by_key = {c.key: c for c in CONTENDERS}
    chosen = [by_key[k] for k in only] if only else list(CONTENDERS)
    feeds = sorted({c.feed for c in chosen} | {PROFILED.feed})
    kinds = sorted({batched for batched, _ in feeds})
    with Meter("ingest: generating", len(kinds) * events, "heartbeats") as generated:
        data_of = {
            batched: generate(
                events,
                10_000,
                BATCHED_PER_MESSAGE if batched else 1,
                now,
                seed=4,
                progress=generated.advance,
            )
            for batched in kinds
        }
    topics: dict[Feed, tuple[str, Dataset]] = {}
    for feed in feeds:
        topic, data = TOPICS[feed], data_of[feed[0]]
        topics[feed] = (topic, data)
        await create_topic(kafka(endpoints), topic, feed[1])
        with Meter(f"ingest: producing {topic}", len(data.messages), "messages") as sent:
            await produce(kafka(endpoints), topic, data.messages, sent.advance)
    log.info(
        "ingest: %d events generated and produced in %.1f s", events, time.monotonic() - started
    )
    ends = {
        topic: await _end_offsets(kafka(endpoints), topic, feed[1])
        for feed, (topic, _) in topics.items()
    }

    results: dict[str, object] = {"ingest_events": events}
    runs = []
    with contextlib.ExitStack() as stack:
        stores: dict[bool, tuple[Store, str]] = {
            False: (Redis.from_url(endpoints.redis_url), endpoints.redis_url)
        }
        if any(c.cluster for c in chosen):
            cluster = LocalRedisCluster(run_dir / "ingest-cluster", consecutive_free_ports(6))
            with Meter("ingest: starting a Redis Cluster"):
                cluster.start()
            stack.callback(cluster.stop)
            stores[True] = (connect_cluster(StoreSettings(redis_url=cluster.url)), cluster.url)
        try:
            runs = await _races(chosen, stores, endpoints, topics, ends, run_dir, now, results)
            if isinstance(results.get("ingest_eps"), float | int):
                store, url = stores[False]
                topic, data = topics[PROFILED.feed]
                graph = run_dir / "flame-worker.svg"
                with Meter(f"ingest: {PROFILED.label}, profiled (figures not kept)"):
                    await _race(
                        PROFILED, store, url, endpoints, topic, data, ends[topic], run_dir, now,
                        graph,
                    )  # fmt: skip
                if graph.exists():
                    results["flame_graphs_ingest"] = {"worker": str(graph)}
        finally:
            for store, _ in stores.values():
                await store.aclose()
    results["ingest_runs"] = runs
    results.update(_fleet_cost(runs))
    worker = next((r for r in runs if r["key"] == "ingest_eps" and r["finished"]), None)
    if worker is not None:
        results["ingest_worker_cpu_us"] = worker["cpu_us_per_event"]
        results["ingest_redis_cpu_us"] = worker["redis_cpu_us_per_event"]
    return results


async def _races(
    chosen: list[Contender],
    stores: dict[bool, tuple[Store, str]],
    endpoints: Endpoints,
    topics: dict[Feed, tuple[str, Dataset]],
    ends: dict[str, dict[int, int]],
    run_dir: Path,
    now: datetime,
    results: dict[str, object],
) -> list[dict[str, Any]]:
    runs = []
    for contender in chosen:
        topic, data = topics[contender.feed]
        store, url = stores[contender.cluster]
        figures = await _race(
            contender, store, url, endpoints, topic, data, ends[topic], run_dir, now
        )
        if figures["finished"]:
            log.info("ingest: %s: %.0f events/s", contender.label, figures["eps"])
            results[contender.key] = round(figures["eps"])
        else:
            log.error(
                "ingest: %s did not finish: %d of %d events applied in %.0f s",
                contender.label, figures["events_applied"], data.events, RUN_DEADLINE_S,
            )  # fmt: skip
            results[contender.key] = DID_NOT_FINISH
            results[f"{contender.key.removesuffix('_eps')}_events_applied"] = figures[
                "events_applied"
            ]
        runs.append(
            {
                "key": contender.key, "label": contender.label, "processes": contender.processes,
                "partitions": contender.partitions, "scales": contender.scales, **figures,
            }
        )  # fmt: skip
    return runs


def _fleet_cost(runs: list[dict[str, Any]]) -> dict[str, float]:
    """What the fleet aggregates cost, from the worker's runs with and without them: the CPU
    per event of the worker and Redis together (steadier than rates on a shared machine)."""
    by_key = {r["key"]: r for r in runs if r.get("finished", True)}
    with_fleet, without = by_key.get("ingest_eps"), by_key.get("ingest_nofleet_eps")
    if with_fleet is None or without is None:
        return {}

    def cpu(run: dict[str, Any]) -> float:
        return float(run["cpu_us_per_event"]) + float(run["redis_cpu_us_per_event"])

    return {"ingest_fleet_cpu_ratio": round(cpu(with_fleet) / cpu(without), 2)}


async def _race(
    contender: Contender,
    redis: Store,
    redis_url: str,
    endpoints: Endpoints,
    topic: str,
    data: Dataset,
    ends: dict[int, int],
    run_dir: Path,
    now: datetime,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One contender's run; with ``profile``, its first process's flame graph is written there
    (``bench/flame.py``)."""
    await redis.flushall()
    await register_clients(redis, data.clients, now)
    commands = contender.commands(endpoints, topic, run_dir, redis_url)
    redis_pids = await _redis_pids(redis)
    redis_cpu = sum(_process_cpu_s(pid) for pid in redis_pids)
    launched = time.monotonic()
    per_message = data.events / sum(ends.values())
    with children(*commands, logs=run_dir / "logs") as procs, contextlib.ExitStack() as spying:

        def profiling() -> None:  # from the first batch on: start-up is not the steady state
            if profile is not None:
                spying.enter_context(flame_graph(procs[0].process.pid, profile))

        try:
            progress = await wait_applied(
                redis, topic, ends, RUN_DEADLINE_S, procs, contender.key, profiling
            )
        except NotFinished as late:
            return {
                "finished": False,
                "eps": None,
                "events_applied": round(late.applied * per_message),
                "seconds": RUN_DEADLINE_S,
                "startup_s": None,
                "cpu_s": round(_cpu_seconds(procs), 1),
                "cpu_us_per_event": None,
                "redis_cpu_us_per_event": None,
            }
        cpu = _cpu_seconds(procs)
        redis_cpu = sum(_process_cpu_s(pid) for pid in redis_pids) - redis_cpu
    await verify(redis, data, now, VERIFY_SAMPLE, seed=7)
    counted = (progress.messages - progress.messages_at_first) * per_message
    elapsed = progress.done_s - progress.first_s
    return {
        "finished": True,
        "eps": counted / elapsed,
        "events_applied": data.events,
        "seconds": round(elapsed, 2),
        "startup_s": round(progress.first_s - launched, 2),
        "cpu_s": round(cpu, 1),
        "cpu_us_per_event": round(cpu / data.events * 1e6, 1),
        "redis_cpu_us_per_event": round(redis_cpu / data.events * 1e6, 1),
    }


async def _redis_pids(redis: Store) -> list[int]:
    """The Redis server processes: one, or every node of a cluster (replicas replicate)."""
    if isinstance(redis, RedisCluster):
        info = await redis.info("server", target_nodes=RedisCluster.ALL_NODES)
        return [int(node_info["process_id"]) for node_info in info.values()]
    return [int((await redis.info("server"))["process_id"])]


def _cpu_seconds(procs: list[Child]) -> float:
    """User and system CPU the processes used so far (from /proc, while they still run)."""
    return sum(_process_cpu_s(child.process.pid) for child in procs)


def _process_cpu_s(pid: int) -> float:
    """User and system CPU of one process so far (its /proc stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _end_offsets(connection: KafkaConnection, topic: str, count: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**connection.client_kwargs())
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(count)]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
