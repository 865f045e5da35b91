"""Issue 9: a record batch the worker cannot read is a held partition, not a poison pill.

The worker runs as a build that lacks the snappy codec (tests/integration/shims/no_snappy) until
the test removes a flag file, the "upgrade". Partition 0 holds a snappy batch and valid events
behind it; the other partitions hold valid events. Expected numbers come from the oracle.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from devtools.services import free_port

from .harness.stack import Stack
from .harness.waiting import poll_until
from .producers import aiokafka_produce, counted_total, differences, fleet

pytestmark = pytest.mark.backends("redis", "cluster")

SHIM = Path(__file__).parent / "shims" / "no_snappy"
ZONE = "Europe/Berlin"
CATCH_UP_TIMEOUT_S = 90.0
RESUME_TIMEOUT_S = 120.0
"""The held partition is tried again 5, 15, 35, 75 s after it was first held, then every 60 s."""
SEED = 9_100


@pytest.fixture(scope="module")
def flag(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Path:
    """One per backend: the test removes it."""
    path = tmp_path_factory.mktemp(f"shim-{backend}") / "snappy-missing"
    path.touch()
    return path


@pytest.fixture(scope="module")
def health_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def started(stack: Stack, flag: Path, health_port: int) -> Stack:
    stack.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SHIM), os.environ.get("PYTHONPATH", "")) if p
    )
    stack.env["DEVACT_TEST_SNAPPY_MISSING_WHILE"] = str(flag)
    stack.env["DEVACT_WORKER_METRICS_PORT"] = str(health_port)
    stack.start()
    return stack


def readiness(port: int) -> tuple[int, dict[str, object]] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def test_an_unreadable_batch_holds_its_partition_and_the_rest_goes_on(
    started: Stack, flag: Path, health_port: int
) -> None:
    token = started.create_token(all_clients=True)
    held = fleet(SEED, ZONE, devices=10, events=300)
    behind = fleet(SEED + 1, ZONE, devices=5, events=100)
    others = fleet(SEED + 2, ZONE, devices=20, events=900)
    for data in (held, behind, others):
        started.add_client(data.client, ZONE)
    aiokafka_produce(started.kafka_bootstrap, started.topic, held.events, "snappy", partition=0)
    aiokafka_produce(started.kafka_bootstrap, started.topic, behind.events, "none", partition=0)
    for partition in (1, 2, 3):
        events = others.events[(partition - 1) * 300 : partition * 300]
        aiokafka_produce(started.kafka_bootstrap, started.topic, events, "none", partition)

    started.wait_for(
        lambda: True if not differences(started, token, others) else None,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what="the other partitions' events counted exactly",
    )
    _, body = poll_until(
        lambda: r if (r := readiness(health_port)) and r[0] == 503 else None,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what="the worker reporting itself not ready",
    )
    problems = " ".join(map(str, body["problems"]))  # type: ignore[call-overload]
    assert f"{started.topic}[0] offset 0" in problems, body
    assert "snappy" in problems, body
    started.assert_alive()
    assert counted_total(started, token, held) == 0  # held, not skipped
    assert counted_total(started, token, behind) == 0  # nothing behind it jumps the queue
    log = (started.workdir / "worker.log").read_text(errors="replace")
    holding = [line for line in log.splitlines() if "Holding" in line]
    assert len(holding) == 1, holding  # one clear error, not one per fetch
    assert "Fetch loop raised" not in log
    assert "crash" not in log.lower()

    flag.unlink()  # the upgrade: the codec is there now
    for data in (held, behind):
        started.wait_for(
            lambda data=data: True if not differences(started, token, data) else None,  # type: ignore[misc]
            timeout_s=RESUME_TIMEOUT_S,
            what="the held partition counted exactly once the batch is readable",
        )
    assert readiness(health_port) == (200, {"ready": True, "problems": []})
    log = (started.workdir / "worker.log").read_text(errors="replace")
    assert f"{started.topic}[0] resumed at offset 0" in log
    assert not differences(started, token, others)
