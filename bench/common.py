"""What every section of the benchmark shares: the services, child processes, Redis progress.

The bench owns its own Kafka and Redis (``LocalStack`` on free ports, in its own run dir), never
the ones of ``make run`` or the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio.cluster import RedisCluster

from devact.progress import REFRESH_S, Meter
from devtools.services import Endpoints, LocalStack, free_port
from state import keys
from state.connection import Store
from state.writer import new_writer
from stream.kafka import KafkaConnection
from stream.settings import WorkerSettings
from stream.topics import STAMPED_BY_BROKER

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
POLL_S = 0.02
"""Progress polling interval: the resolution of every ingest and freshness figure."""

T = TypeVar("T")


@contextlib.contextmanager
def local_stack(run_dir: Path) -> Iterator[Endpoints]:
    stack = LocalStack(run_dir / "services", free_port(), free_port())
    try:
        with Meter("bench: starting Kafka and Redis"):
            endpoints = stack.start()
        yield endpoints
    finally:
        stack.stop()


async def waiting(description: str, work: Awaitable[T], seconds: float | None = None) -> T:
    """Await ``work`` under a meter of the time it takes: a bar of ``seconds`` when its length
    is known (a wrk run), else the time spent so far. The meter wakes a few times a second."""
    task = asyncio.ensure_future(work)
    total = None if seconds is None else math.ceil(seconds)
    started = time.monotonic()
    with Meter(description, total, "s" if total else "", rate=False) as meter:
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=REFRESH_S)
                if total is None:
                    meter.poll()
                else:
                    meter.update(min(total, int(time.monotonic() - started)))
        finally:
            task.cancel()  # when this wait is cancelled; a done task ignores it
        return task.result()


def kafka(endpoints: Endpoints) -> KafkaConnection:
    """The bench's own Kafka (``local_stack``): a local broker without TLS or SASL."""
    return KafkaConnection(endpoints.kafka_bootstrap)


async def create_topic(connection: KafkaConnection, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(**connection.client_kwargs())
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics(
                [NewTopic(name, partitions, 1, topic_configs=STAMPED_BY_BROKER)]
            )
    finally:
        await admin.close()


def worker_env(endpoints: Endpoints, topic: str, group: str, run_dir: Path) -> dict[str, str]:
    """Environment of a ``devact worker`` (and of the peer consumers) reading ``topic``: every
    Kafka setting is the bench's own, none inherited from the shell that started it."""
    return {
        **kafka(endpoints).environment(),
        "DEVACT_REDIS_URL": endpoints.redis_url,
        "DEVACT_TOPIC": topic,
        "DEVACT_DLQ_TOPIC": f"{topic}.dlq",
        "DEVACT_APP_ID": group,
        "DEVACT_WORKER_DIR": str(run_dir / "worker" / group),
        "DEVACT_LOG_LEVEL": "warning",
        "DEVACT_WORKER_METRICS_PORT": "0",  # several workers per machine: no fixed port
    }


@dataclass
class Child:
    """A child process of the bench, stopped with SIGTERM (then SIGKILL) on exit."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, deadline_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(deadline_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")


@contextlib.contextmanager
def children(
    *commands: tuple[str, list[str], Mapping[str, str]], logs: Path
) -> Iterator[list[Child]]:
    """Start ``(name, argv, extra env)`` processes; stop them all on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    started: list[Child] = []
    try:
        for name, argv, env in commands:
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
                )
            started.append(Child(name, process, log))
        yield started
    finally:
        for child in started:
            child.stop()


class NotFinished(TimeoutError):
    """The deadline passed before Redis held every message: ``applied`` of ``total``."""

    def __init__(self, topic: str, applied: int, total: int) -> None:
        super().__init__(f"{topic}: {applied} of {total} messages applied by the deadline")
        self.applied = applied
        self.total = total


@dataclass(frozen=True)
class Progress:
    first_s: float
    """Monotonic time at which Redis first showed an applied message."""
    done_s: float
    messages_at_first: int
    messages: int


async def wait_applied(
    redis: Store,
    topic: str,
    end_offsets: Mapping[int, int],
    deadline_s: float,
    alive: list[Child] | None = None,
    label: str = "",
    on_first: Callable[[], object] | None = None,
) -> Progress:
    """Poll the applied positions of ``topic`` until every partition reached its end offset,
    showing them as messages applied under ``label`` (default: the topic); ``on_first`` is
    called once the first batch is applied (the consumers have started and joined).

    The positions are written by state/ in the same Redis transaction as the counters they
    cover, so "position at end" means "Redis holds every event". On a Redis Cluster they are
    read as the worker reads them (the lowest any primary holds, state/writer.py).
    """
    partitions = sorted(end_offsets)
    position_keys = [keys.applied(topic, p) for p in partitions]
    total = sum(end_offsets.values())
    first: tuple[float, int] | None = None
    limit = time.monotonic() + deadline_s
    cluster = new_writer(redis) if isinstance(redis, RedisCluster) else None
    with Meter(label or topic, total, "messages applied") as meter:
        while True:
            if cluster is not None:
                values = list((await cluster.applied_positions(topic, partitions)).values())
            else:
                values = await redis.mget(position_keys)
            now = time.monotonic()
            applied = sum(int(v) + 1 for v in values if v is not None)
            if first is None and applied:
                first = (now, applied)
                if on_first is not None:
                    on_first()
            meter.update(applied)  # reaches the display a few times a second at most
            if applied >= total and first is not None:
                return Progress(first[0], now, first[1], total)
            if now > limit:
                raise NotFinished(topic, applied, total)
            for child in alive or []:
                child.check_alive()
            await asyncio.sleep(POLL_S)


def peer_settings(argv: Sequence[str] | None, prog: str, description: str) -> WorkerSettings:
    """The command line of the bench's peer consumers (bench.raw_loop, bench.quix_app): the
    worker's settings (``DEVACT_`` environment) with the broker, Redis, topics and group given.
    Also sets up logging at the settings' level, as the worker does."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="Kafka consumer group")
    parser.add_argument("--dlq-topic", help="dead-letter topic (default: <topic>.dlq)")
    parser.add_argument(
        "--batch-max", type=int, help="events per batch (default: the worker's, DEVACT_BATCH_MAX)"
    )
    args = parser.parse_args(argv)
    batch = {} if args.batch_max is None else {"batch_max": args.batch_max}
    settings = WorkerSettings(
        kafka_bootstrap=args.bootstrap,
        redis_url=args.redis_url,
        topic=args.topic,
        dlq_topic=args.dlq_topic or f"{args.topic}.dlq",
        app_id=args.group,
        **batch,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings
