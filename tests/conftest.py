"""What every test shares: integration tests are marked, the others may not touch the network.

Tests under tests/integration/ are marked `integration` automatically; they get Kafka and Redis
from tests/integration/conftest.py. Unit tests never start them, and may not open a network
connection at all.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import backends

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs the real Kafka broker and Redis server (tests/conftest.py)"
    )
    config.addinivalue_line("markers", backends.MARKER_HELP)


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
