"""A real `devact worker` and `devact api` per test module, against the module's Kafka and Redis.

Isolation without FLUSHALL: each module gets its own topic, dead-letter topic, Faust app id (so its
own consumer group and changelog topics) and worker directory; tests use fresh client and device
UUIDs, so they never see each other's data even in a Redis that outlives the session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from aiokafka.structs import ConsumerRecord

from devtools.services import free_port

from .kafka import DLQ_PARTITIONS, TOPIC_PARTITIONS, Message, consume_all, create_topics, produce
from .processes import devact_executable
from .waiting import READY_TIMEOUT_S, poll_until

T = TypeVar("T")

# Faust flushes its tables and leaves the group on SIGTERM; give it that long before SIGKILL.
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 80


class Stack:
    """Topics, worker and API of one test module, plus helpers to drive them like a user."""

    def __init__(self, services: Any, workdir: Path) -> None:
        suffix = uuid.uuid4().hex
        self.topic = f"heartbeats-{suffix}"
        self.dlq_topic = f"heartbeats-{suffix}.dlq"
        self.app_id = f"device-activity-{suffix}"
        self.kafka_bootstrap: str = services.kafka_bootstrap
        self.workdir = workdir
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DEVACT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
            "DEVACT_REDIS_URL": services.redis_url,
            "DEVACT_TOPIC": self.topic,
            "DEVACT_DLQ_TOPIC": self.dlq_topic,
            "DEVACT_APP_ID": self.app_id,
            "DEVACT_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
            "DEVACT_WORKER_DIR": str(workdir / "worker"),
            "DEVACT_DEFAULT_TIMEZONE": "UTC",
            "DEVACT_MAX_RANGE_DAYS": "90",
            "DEVACT_RETENTION_DAYS": "400",
            "DEVACT_WORKER_METRICS_PORT": "0",  # several workers per machine: no fixed port
        }
        self.base_url = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._http: httpx.Client | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        asyncio.run(
            create_topics(
                self.kafka_bootstrap, {self.topic: TOPIC_PARTITIONS, self.dlq_topic: DLQ_PARTITIONS}
            )
        )
        self.start_processes()

    def start_processes(self) -> None:
        """The worker, and the API on a free port; returns once the API is ready."""
        self._spawn("worker", ["worker"])
        port = free_port()
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
        self.base_url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)
        self.wait_for(self._api_ready, timeout_s=READY_TIMEOUT_S, what="GET /readyz -> 200")

    def stop(self) -> list[str]:
        """Stop everything; returns a line per process that had died before being asked to."""
        if self._http is not None:
            self._http.close()
        crashed = []
        for name, process in self._processes.items():
            if process.poll() is not None:
                crashed.append(f"{name} exited early with code {process.returncode}")
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only what we started
                process.wait(timeout=STOP_TIMEOUT_S)
        for log in self._logs.values():
            log.close()
        return crashed

    def stop_process(self, name: str) -> None:
        """SIGTERM one process (``worker``, ``api``) and wait for it to exit."""
        process = self._processes.pop(name)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
        self._logs.pop(name).close()

    def restart_api(self) -> None:
        """Stop the API and start it again on the same port: what its clients see of a deploy."""
        self.stop_process("api")
        port = self.base_url.rsplit(":", 1)[1]
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", port])
        self.wait_for(self._api_ready, timeout_s=READY_TIMEOUT_S, what="GET /readyz -> 200")

    def start_worker(self) -> None:
        """Start the worker again (after ``stop_process("worker")``), with ``env`` as it is now;
        its log goes on in the same file."""
        self._spawn("worker", ["worker"])

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self._logs[name] = log
        self._processes[name] = subprocess.Popen(
            [devact_executable(), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _api_ready(self) -> bool | None:
        try:
            return True if self.http.get("/readyz").status_code == 200 else None
        except httpx.TransportError:
            return None

    def assert_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"`devact {name}` exited with code {process.returncode}\n{self.log_tails()}"
                )

    def wait_for(
        self,
        check: Callable[[], T | None],
        *,
        timeout_s: float,
        what: str,
        progress: Callable[[], str] = lambda: "",
    ) -> T:
        """Poll ``check`` while worker and API live; on timeout report ``progress()`` and logs."""

        def alive_check() -> T | None:
            self.assert_alive()
            return check()

        return poll_until(
            alive_check,
            timeout_s=timeout_s,
            what=what,
            diagnostics=lambda: progress() + "\n" + self.log_tails(),
        )

    def log_tails(self) -> str:
        parts = []
        for name in self._processes:
            path = self.workdir / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"----- last lines of `devact {name}` ({path}) -----\n" + "\n".join(lines))
        return "\n".join(parts)

    # --- the CLI ---------------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        """Run `devact ARGS`, require exit 0, return stdout."""
        done = subprocess.run(
            [devact_executable(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (
            f"`devact {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done.stdout

    def add_client(self, client_id: str, timezone: str, name: str | None = None) -> None:
        self.cli(
            "client", "add", client_id, "--timezone", timezone, *(["--name", name] if name else [])
        )

    def create_token(self, *clients: str, all_clients: bool = False) -> str:
        scope = ["--all-clients"] if all_clients else [a for c in clients for a in ("--client", c)]
        out = self.cli("token", "create", *scope)
        lines = out.strip().splitlines()
        assert len(lines) == 1, f"token not alone on stdout: {out!r}"
        assert len(lines[0].split()) == 1, f"token not alone on stdout: {out!r}"
        return lines[0]

    # --- Kafka -----------------------------------------------------------------------------

    def produce(self, messages: Sequence[Message]) -> None:
        asyncio.run(produce(self.kafka_bootstrap, self.topic, messages))

    def read_dlq(self, *, at_least: int, timeout_s: float) -> list[ConsumerRecord[bytes, bytes]]:
        return asyncio.run(
            consume_all(
                self.kafka_bootstrap,
                self.dlq_topic,
                DLQ_PARTITIONS,
                at_least=at_least,
                timeout_s=timeout_s,
            )
        )

    def applied_positions(self, partitions: int) -> dict[int, int | None]:
        """Per partition of the topic, the applied position the worker keeps in Redis (on a
        cluster, the lowest its primaries hold), read as the worker reads it."""
        from state.connection import open_store
        from state.settings import StoreSettings
        from state.writer import new_writer

        async def read() -> dict[int, int | None]:
            redis = open_store(StoreSettings(redis_url=self.env["DEVACT_REDIS_URL"]))
            try:
                return await new_writer(redis).applied_positions(self.topic, range(partitions))
            finally:
                await redis.aclose()

        return asyncio.run(read())

    # --- HTTP ------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        assert self._http is not None, "Stack.start() was not called"
        return self._http

    def activity(
        self, client_id: str, device_id: str, token: str | None, **params: str | None
    ) -> httpx.Response:
        """GET the activity endpoint; parameters given as None are left out of the query."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        query = {k: v for k, v in params.items() if v is not None}
        return self.http.get(
            f"/v2/clients/{client_id}/analytics/devices/{device_id}/activity",
            params=query,
            headers=headers,
        )

    def series(
        self,
        key: tuple[str, str],
        token: str,
        metric: str,
        first: date,
        last: date,
        granularity: str = "daily",
    ) -> list[dict[str, Any]] | None:
        """The data points of a (client, device) series, or None when the answer is not 200."""
        response = self.activity(
            key[0],
            key[1],
            token,
            metric=metric,
            start_date=first.isoformat(),
            end_date=last.isoformat(),
            granularity=granularity,
        )
        data: list[dict[str, Any]] | None = (
            response.json().get("data") if response.status_code == 200 else None
        )
        return data
