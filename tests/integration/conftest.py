"""A real `devact worker` and `devact api` per test module, against the session's Kafka and Redis.

Isolation without FLUSHALL: each module gets its own topic, dead-letter topic, Faust app id (so its
own consumer group and changelog topics) and worker directory; tests use fresh client and device
UUIDs, so they never see each other's data even in a Redis that outlives the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, TopicPartition

from devtools.services import Endpoints, LocalStack, free_port
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports
from stream.topics import STAMPED_BY_BROKER

from .harness import backends
from .harness.backends import Backend

if TYPE_CHECKING:
    from playwright.sync_api import Browser
    from redis.asyncio import Redis

    from .faultkit.pipeline import Run
    from .faultkit.probe import RedisProbe
    from .faultkit.workload import Workload

T = TypeVar("T")

# Faust needs a few seconds to join its group; the API starts in about one.
READY_TIMEOUT_S = 60.0
# Faust flushes its tables and leaves the group on SIGTERM; give it that long before SIGKILL.
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.25
# The heartbeat topic is created here, before the worker starts, and the worker is told the same
# count, so a Faust table co-partitioned with it cannot disagree about partitions.
TOPIC_PARTITIONS = 4
DLQ_PARTITIONS = 2
LOG_TAIL_LINES = 80


@dataclass(frozen=True)
class Message:
    """One Kafka message to produce: the value bytes and the key bytes."""

    value: bytes
    key: bytes | None = None


def encode(event: Any) -> bytes:
    """A heartbeat (object, array or anything) as the UTF-8 JSON a producer sends."""
    return json.dumps(event, ensure_ascii=False).encode()


def heartbeat_message(event: Mapping[str, Any]) -> Message:
    """The docs/events.md message: JSON value, keyed by the device id as written in the event."""
    return Message(encode(event), str(event["device_id"]).encode())


def devact_executable() -> str:
    sibling = Path(sys.executable).parent / "devact"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("devact")
    if found is None:
        raise RuntimeError("the `devact` console script is not installed")
    return found


def show(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's output capture: for tests whose measured figures are the point."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print(text)


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
) -> T:
    """Call ``check`` until it returns something other than None, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}\n{diagnostics()}"
            )
        time.sleep(POLL_INTERVAL_S)


async def _create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, p, 1, topic_configs=STAMPED_BY_BROKER) for n, p in partitions.items()]
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not set(partitions) <= set(await admin.list_topics()):
            if time.monotonic() >= deadline:
                raise AssertionError(f"topics {sorted(partitions)} never appeared")
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value=m.value, key=m.key) for m in messages]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def _consume_all(
    bootstrap: str, topic: str, partitions: int, *, at_least: int, timeout_s: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of ``topic`` from the beginning, once at least ``at_least`` have arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while len(records) < at_least and time.monotonic() < deadline:
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(batch)
        # Then drain up to the end offsets, so that any extra message is seen too.
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() >= deadline + READY_TIMEOUT_S:
                raise AssertionError(f"could not read {topic} up to its end offsets")
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def run_with_redis(services: Any, body: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``body`` with a state/ client of the session's Redis (or Redis Cluster, as
    ``services`` names one: ``state.connection.open_store``), in a fresh event loop."""
    from state.connection import open_store
    from state.settings import StoreSettings

    async def main() -> T:
        redis: Any = open_store(StoreSettings(redis_url=services.redis_url))
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


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
            _create_topics(
                self.kafka_bootstrap, {self.topic: TOPIC_PARTITIONS, self.dlq_topic: DLQ_PARTITIONS}
            )
        )
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
        asyncio.run(_produce(self.kafka_bootstrap, self.topic, messages))

    def read_dlq(self, *, at_least: int, timeout_s: float) -> list[ConsumerRecord[bytes, bytes]]:
        return asyncio.run(
            _consume_all(
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
        from state.cluster_writer import new_writer
        from state.connection import open_store
        from state.settings import StoreSettings

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends.parametrize(metafunc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        backends.declared(item)  # a backends marker that names no backend or no reason fails here


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack | None]:
    """The LocalStack this session started (for fault injection), or None for external services."""
    if backends.external_endpoints() is not None:
        yield None
        return
    kafka_port = free_port()
    redis_port = free_port()
    while redis_port in (kafka_port, kafka_port + 1):  # kafka_port + 1: its controller
        redis_port = free_port()
    stack = LocalStack(tmp_path_factory.mktemp("services"), kafka_port, redis_port)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Backend:
    """The Redis backend of this module's tests (harness/backends.py): the parameter of a module
    that runs on both, else the one it declares."""
    param: Backend | None = getattr(request, "param", None)
    return param if param is not None else backends.declared(request.node)[0]


@pytest.fixture(scope="module")
def services(
    backend: Backend, local_stack: LocalStack | None, request: pytest.FixtureRequest
) -> Endpoints:
    """Where the module's tests find Kafka and Redis: the session's Kafka, and its one Redis or
    its local Redis Cluster (three primaries, a replica each) as ``backend`` says."""
    base = local_stack.endpoints if local_stack is not None else backends.external_endpoints()
    assert base is not None
    if backend == "redis":
        return base
    cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
    return Endpoints(kafka_bootstrap=base.kafka_bootstrap, redis_url=cluster.url)


@pytest.fixture(scope="module")
def stack(
    services: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A not yet started Stack: the module registers its clients, then calls ``start()``."""
    the_stack = Stack(services, tmp_path_factory.mktemp("stack"))
    failed_before = request.session.testsfailed
    try:
        yield the_stack
    finally:
        tails = the_stack.log_tails() if the_stack.base_url else ""
        crashed = the_stack.stop()
        if crashed or request.session.testsfailed > failed_before:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"\n[{request.module.__name__}] {'; '.join(crashed)}")
                reporter.write_line(tails)
        if crashed:
            pytest.fail("; ".join(crashed) + "\n" + tails)


# --- the fault tests' own services (test_faults.py, test_backlog.py) --------------------------
# They kill, stop and freeze Kafka and Redis, so each such module gets a LocalStack of its own.


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    from .faultkit.services import start_own_stack  # faultkit imports this module

    stack = start_own_stack(tmp_path_factory.mktemp("own-services"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def probe(own_stack: LocalStack) -> Iterator[RedisProbe]:
    from .faultkit.probe import RedisProbe

    redis_probe = RedisProbe(own_stack.endpoints.redis_url)
    yield redis_probe
    redis_probe.close()


@pytest.fixture
def new_run(
    own_stack: LocalStack, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[Workload], Run]]:
    """Makes the test's Run (topic, group, workers) for a workload whose clients it registers;
    stops its processes afterwards and restarts any service a failed test left stopped."""
    from .faultkit.pipeline import Run, register_clients
    from .faultkit.services import ensure_services

    runs: list[Run] = []

    def make(workload: Workload) -> Run:
        run = Run(own_stack, tmp_path, request.node.name.split("[")[0].removeprefix("test_")[:24])
        register_clients(run.redis_url, workload.timezones)
        runs.append(run)
        return run

    failed_before = request.session.testsfailed
    yield make
    for run in runs:
        if request.session.testsfailed > failed_before:
            print(run.tails())
        run.close()
    ensure_services(own_stack)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real local Redis Cluster: three primaries with a replica each."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("cluster"), consecutive_free_ports(6))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (installed when missing), driven by Playwright: the page's and the
    documentation pages' browser tests. Never a browser build Playwright downloads."""
    from playwright.sync_api import sync_playwright

    from devtools.services.process import ensure_apt_package

    chromium = ensure_apt_package("chromium", "chromium")
    with sync_playwright() as playwright:
        # Root in a container: Chromium's sandbox needs user namespaces it may not have.
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()
