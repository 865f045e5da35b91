"""`devact api --server granian` against the real stack: the same answers as the module's API under
uvicorn (its default), byte for byte in the body and the same headers but the server's own
(``date``, ``server``) and the request id; the request id, the access log and the metrics work
under it; SIGTERM stops it cleanly (the app's lifespan shutdown runs)."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devtools.services import free_port

from .harness.kafka import heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack
from .harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "redis", reason="the HTTP server in front of the app; the store behind it is the same app's"
)

ACTIVITY = "/v2/clients/{client}/analytics/devices/{device}/activity"
SERVERS_OWN_HEADERS = {"date", "server", "x-request-id"}
STOP_TIMEOUT_S = 30.0
COUNT_TIMEOUT_S = 90.0


@dataclass
class World:
    stack: Stack
    today: date
    client: str
    device: str
    token: str

    def query(self) -> dict[str, str]:
        return {
            "metric": "activity-count",
            "start_date": (self.today - timedelta(days=89)).isoformat(),
            "end_date": self.today.isoformat(),
        }

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Granian:
    base: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    client, device = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(client, "UTC", name="servers")
    stack.start()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stack.produce(
        [
            heartbeat_message(
                {
                    "client_id": client,
                    "device_id": device,
                    "user_id": "u-1",
                    "generated_at_utc": an_hour_ago,
                    "total_activity_count": 7,
                }
            )
        ]
    )
    w = World(stack, datetime.now(UTC).date(), client, device, stack.create_token(client))

    def counted() -> bool | None:
        response = stack.http.get(
            ACTIVITY.format(client=client, device=device), params=w.query(), headers=w.auth()
        )
        if response.status_code != 200:
            return None
        return True if sum(p["value"] for p in response.json()["data"]) == 7 else None

    stack.wait_for(counted, timeout_s=COUNT_TIMEOUT_S, what="the device counted")
    return w


def _start_granian(stack: Stack, log: Path) -> Granian:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [devact_executable(), "api", "--server", "granian", "--port", str(port)],
            env=stack.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool | None:
        if process.poll() is not None:
            raise AssertionError(f"granian exited with {process.returncode}:\n{log.read_text()}")
        try:
            return True if httpx.get(f"{base}/readyz").status_code == 200 else None
        except httpx.TransportError:
            return None

    poll_until(ready, timeout_s=60, what="granian's /readyz", diagnostics=log.read_text)
    return Granian(base, process, log)


def _stop(granian: Granian) -> int:
    granian.process.send_signal(signal.SIGTERM)
    try:
        return granian.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        granian.process.kill()  # its own session; only what this test started
        granian.process.wait(timeout=STOP_TIMEOUT_S)
        raise


@pytest.fixture(scope="module")
def granian(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Granian]:
    started = _start_granian(world.stack, tmp_path_factory.mktemp("granian") / "api.log")
    try:
        yield started
    finally:
        if started.process.poll() is None:
            _stop(started)


def _both(world: World, granian: Granian, path: str, **kwargs: object) -> list[httpx.Response]:
    return [
        httpx.get(base + path, timeout=10, **kwargs)  # type: ignore[arg-type]
        for base in (world.stack.base_url, granian.base)
    ]


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.items() if k not in SERVERS_OWN_HEADERS)


def test_a_series_is_the_same_under_granian_as_under_uvicorn(
    world: World, granian: Granian
) -> None:
    path = ACTIVITY.format(client=world.client, device=world.device)
    uvicorn, gran = _both(world, granian, path, params=world.query(), headers=world.auth())
    assert (uvicorn.status_code, gran.status_code) == (200, 200)
    assert gran.content == uvicorn.content
    assert _headers(gran) == _headers(uvicorn)
    assert gran.headers["content-type"] == "application/json"
    assert gran.headers["server"] == "granian"
    body = gran.json()
    assert len(body["data"]) == 90
    assert sum(p["value"] for p in body["data"]) == 7


def test_an_unknown_device_is_the_same_404_under_both(world: World, granian: Granian) -> None:
    unknown = str(uuid.uuid4())
    path = ACTIVITY.format(client=world.client, device=unknown)
    uvicorn, gran = _both(world, granian, path, params=world.query(), headers=world.auth())
    assert (uvicorn.status_code, gran.status_code) == (404, 404)
    assert gran.json() == {
        "error": {
            "code": "not_found",
            "message": f"Unknown device for this client: {unknown}",
            "details": {"device_id": unknown},
        }
    }
    assert gran.content == uvicorn.content
    assert _headers(gran) == _headers(uvicorn)


def test_a_path_without_a_route_is_the_same_404_under_both(world: World, granian: Granian) -> None:
    uvicorn, gran = _both(world, granian, "/v2/nothing-here")
    assert (uvicorn.status_code, gran.status_code) == (404, 404)
    assert gran.json()["error"]["code"] == "not_found"
    assert gran.content == uvicorn.content


def test_the_request_id_access_log_and_metrics_work_under_granian(
    world: World, granian: Granian
) -> None:
    rid = f"servers-{uuid.uuid4().hex[:12]}"
    path = ACTIVITY.format(client=world.client, device=world.device)
    response = httpx.get(
        granian.base + path, params=world.query(), headers={**world.auth(), "X-Request-ID": rid}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == rid
    template = ACTIVITY.replace("{client}", "{client_id}").replace("{device}", "{device_id}")

    def logged() -> str | None:
        lines = [ln for ln in granian.log.read_text().splitlines() if rid in ln]
        return lines[0] if lines else None

    line = poll_until(
        logged, timeout_s=10, what="the access log line", diagnostics=granian.log.read_text
    )
    assert f"GET {template} 200" in line
    assert f"client_id={world.client}" in line
    metrics = httpx.get(granian.base + "/metrics").text
    assert f'devact_api_requests_total{{route="{template}",status="200"}}' in metrics


def test_granian_stops_on_sigterm(world: World, tmp_path: Path) -> None:
    """Its own process: SIGTERM ends it with status 0, its lifespan's shutdown run."""
    own = _start_granian(world.stack, tmp_path / "api.log")
    assert _stop(own) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{own.base}/healthz", timeout=2)
