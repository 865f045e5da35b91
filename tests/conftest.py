"""Fixtures shared by every test: the real services for integration tests, no network for the rest.

Tests under tests/integration/ are marked `integration` automatically. They get Kafka and Redis
through the `services` fixture: the ones named by DEVACT_KAFKA_BOOTSTRAP and DEVACT_REDIS_URL
when both are set, otherwise a LocalStack started on free ports for this session and stopped at
its end. Unit tests never start them, and may not open a network connection at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.services import Endpoints, LocalStack, free_port

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs the real Kafka broker and Redis server (tests/conftest.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _no_network_in_unit_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit test that reaches for a broker or Redis fails loudly instead of hanging or passing."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def guarded(real: Callable[[socket.socket, Any], Any]) -> Callable[[socket.socket, Any], Any]:
        def connect(self: socket.socket, address: Any, /) -> Any:
            # Unix sockets stay allowed: libraries use them to talk to themselves, not the net.
            if self.family == socket.AF_UNIX:
                return real(self, address)
            raise RuntimeError("unit tests must not touch the network")

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))


def _external_endpoints() -> Endpoints | None:
    kafka = os.environ.get("DEVACT_KAFKA_BOOTSTRAP")
    redis = os.environ.get("DEVACT_REDIS_URL")
    if kafka and redis:
        return Endpoints(kafka_bootstrap=kafka, redis_url=redis)
    return None


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack | None]:
    """The LocalStack this session started (for fault injection), or None for external services."""
    if _external_endpoints() is not None:
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


@pytest.fixture(scope="session")
def services(local_stack: LocalStack | None) -> Endpoints:
    """Where the integration tests find Kafka and Redis."""
    if local_stack is not None:
        return local_stack.endpoints
    external = _external_endpoints()
    assert external is not None
    return external
