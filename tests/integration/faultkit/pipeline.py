"""One fault test's pipeline: its topic, consumer group, workers, clients and token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from devtools.services import LocalStack
from tests.integration.harness.processes import devact_executable

from .constants import PARTITIONS
from .kafka import create_topic
from .processes import Process


class Run:
    """One test's topic, consumer group and workers on the module's own services."""

    def __init__(
        self, stack: LocalStack, workdir: Path, name: str, partitions: int = PARTITIONS
    ) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.stack = stack
        self.workdir = workdir
        self.topic = f"heartbeats-{name}-{suffix}"
        self.dlq_topic = f"{self.topic}.dlq"
        self.app_id = f"device-activity-{name}-{suffix}"
        self.bootstrap = stack.endpoints.kafka_bootstrap
        self.redis_url = stack.endpoints.redis_url
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DEVACT_KAFKA_BOOTSTRAP": self.bootstrap,
            "DEVACT_REDIS_URL": self.redis_url,
            "DEVACT_TOPIC": self.topic,
            "DEVACT_DLQ_TOPIC": self.dlq_topic,
            "DEVACT_APP_ID": self.app_id,
            "DEVACT_TOPIC_PARTITIONS": str(partitions),
            "DEVACT_DEFAULT_TIMEZONE": "UTC",
            "DEVACT_RETENTION_DAYS": "400",
            "DEVACT_WORKER_METRICS_PORT": "0",  # several workers per machine: no fixed port
        }
        self.workers: dict[str, Process] = {}
        self.others: list[Process] = []
        create_topic(self.bootstrap, self.topic, partitions)
        create_topic(self.bootstrap, self.dlq_topic, 2)

    def worker(self, instance_id: str) -> Process:
        """The worker with this static membership id: created once, then the same one (same id,
        same directory) however often it is restarted."""
        if instance_id not in self.workers:
            env = {
                **self.env,
                "DEVACT_WORKER_INSTANCE_ID": instance_id,
                "DEVACT_WORKER_DIR": str(self.workdir / f"worker-{instance_id}"),
            }
            self.workers[instance_id] = Process(
                f"worker {instance_id}", ["worker"], env, self.workdir / f"worker-{instance_id}.log"
            )
        return self.workers[instance_id]

    def replay(self, *extra: str, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
        """Run `devact replay` to its end against this run's topic."""
        return subprocess.run(
            [devact_executable(), "replay", *extra],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def assert_workers_alive(self) -> None:
        for process in self.workers.values():
            if process.wanted and not process.alive:
                raise AssertionError(
                    f"`devact {process.name}` exited with code {process.returncode}\n"
                    + process.tail()
                )

    def tails(self) -> str:
        return "\n".join(p.tail() for p in [*self.workers.values(), *self.others])

    def close(self) -> None:
        for process in [*self.workers.values(), *self.others]:
            process.close()


def register_clients(redis_url: str, timezones: Mapping[str, str]) -> None:
    """What `devact client add` does, for every client of a workload, in one process."""
    from state.connection import open_store
    from state.registry import Registry
    from state.settings import StoreSettings

    async def run() -> None:
        client = open_store(StoreSettings(redis_url=redis_url))
        try:
            registry = Registry(client)
            for client_id, zone in timezones.items():
                await registry.add_client(client_id, zone, f"fault {zone}", datetime.now(UTC))
        finally:
            await client.aclose()

    asyncio.run(run())


def create_token(redis_url: str) -> str:
    """What `devact token create --all-clients` prints."""
    from state.connection import open_store
    from state.registry import Registry
    from state.settings import StoreSettings

    async def run() -> str:
        client = open_store(StoreSettings(redis_url=redis_url))
        try:
            return str(await Registry(client).create_token([], all_clients=True, name="faults"))
        finally:
            await client.aclose()

    return asyncio.run(run())
