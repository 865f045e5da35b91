"""The integration tests' fixtures: the session's services, the module's backend and stack, the
fault tests' own services, the local Redis Cluster and a browser. What they are made of is in
harness/ (backends, the stack of real processes, Kafka, waiting) and faultkit/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.services import Endpoints, LocalStack, free_port
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports

from .faultkit.pipeline import Run, register_clients
from .faultkit.probe import RedisProbe
from .faultkit.services import ensure_services, start_own_stack
from .faultkit.workload import Workload
from .harness import backends
from .harness.backends import Backend
from .harness.stack import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends.parametrize(metafunc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:  # every item of the session, the unit tests' too
        if item.path.is_relative_to(here):
            backends.declared(item)  # no backends marker, or one without its reason, fails here


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
    services: Endpoints, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
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
    stack = start_own_stack(tmp_path_factory.mktemp("own-services"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def probe(own_stack: LocalStack) -> Iterator[RedisProbe]:
    redis_probe = RedisProbe(own_stack.endpoints.redis_url)
    yield redis_probe
    redis_probe.close()


@pytest.fixture
def new_run(
    own_stack: LocalStack, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[Workload], Run]]:
    """Makes the test's Run (topic, group, workers) for a workload whose clients it registers;
    stops its processes afterwards and restarts any service a failed test left stopped."""
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
def browser(backend: Backend) -> Iterator[Browser]:
    """Debian's chromium (installed when missing), driven by Playwright: the page's and the
    documentation pages' browser tests. Never a browser build Playwright downloads. One per
    backend of the module (``backend``): Playwright's sync API keeps an event loop running in
    this thread while it lives, so the next backend's stack must start before it."""
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
