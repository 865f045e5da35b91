"""docs/api.md: Redis unreachable -> 503 `unavailable` within 2 s, and recovery without a restart.

A Redis of its own (real `redis-server`) is stopped and started here, so the session's shared
services are never disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.services import free_port
from devtools.services.redis import RedisServer
from tests.integration.harness.processes import devact_executable
from tests.integration.harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "it stops and starts a Redis of its own; test_cluster_faults.py stops a cluster's primary"
    ),
)

CONTRACT_LIMIT_S = 2.0
CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
QUERY = {"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-15"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-run", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(own_redis: RedisServer, tmp_path: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {**os.environ, "DEVACT_REDIS_URL": own_redis.url}
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen(
            [devact_executable(), "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
        try:
            poll_until(lambda: _status(client, "/readyz") == 200 or None, timeout_s=30, what="api")
            yield client
        finally:
            client.close()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _status(client: httpx.Client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return None


def _timed_get(client: httpx.Client, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path, **kwargs)
    return response, time.monotonic() - started


def _token(redis_url: str) -> str:
    out = subprocess.run(
        [devact_executable(), "token", "create", "--client", CLIENT],
        env={**os.environ, "DEVACT_REDIS_URL": redis_url},
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def test_redis_down_gives_503_unavailable_within_2_s_and_recovers(
    own_redis: RedisServer, api: httpx.Client
) -> None:
    headers = {"Authorization": f"Bearer {_token(own_redis.url)}"}
    path = f"/v2/clients/{CLIENT}/analytics/devices/{DEVICE}/activity"
    assert api.get(path, params=QUERY, headers=headers).status_code == 404  # unknown client

    own_redis.stop()
    ready, ready_s = _timed_get(api, "/readyz")
    series, series_s = _timed_get(api, path, params=QUERY, headers=headers)
    assert api.get("/healthz").status_code == 200  # the process itself is fine

    for response, elapsed in ((ready, ready_s), (series, series_s)):
        assert response.status_code == 503
        assert elapsed < CONTRACT_LIMIT_S
        error = response.json()["error"]
        assert error["code"] == "unavailable"
        assert set(error) == {"code", "message", "details"}

    own_redis.start()  # same port, same data (AOF): the API must reconnect on its own
    poll_until(lambda: _status(api, "/readyz") == 200 or None, timeout_s=10, what="recovery")
    assert api.get(path, params=QUERY, headers=headers).status_code == 404
