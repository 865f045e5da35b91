"""Crowds queue, they do not fail (docs/api.md, "Limits and hostile input"), on a real API process,
worker, Kafka and Redis:

- 1,000 concurrent 90-day series requests on one API process all answer 200 with the right
  numbers (redis-py's pool of 100 connections used to answer half of them 503);
- with the in-flight limit at 50, the excess is refused at once with 503 and Retry-After, in the
  error shape, and counted in /metrics; the rest answer 200;
- 1,000 live streams over 10 devices: one heartbeat per device reaches every stream, and Redis
  reads per change follow the devices changed, not the streams (``INFO commandstats``);
- the caps on open live streams, per process and per token, answer 429;
- a revoked token's open stream ends within DEVACT_AUTH_CACHE_S and the stream's recheck.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.services import free_port

from .commandstats import command_calls, ran_between
from .harness.kafka import heartbeat_message
from .harness.output import show
from .harness.processes import devact_executable
from .harness.stack import Stack
from .harness.waiting import poll_until

pytestmark = pytest.mark.backends("redis", "cluster")

DEVICES = 10
CROWD = 1000
STREAMS = 1000
TOKENS = 4
"""Live streams are capped at 500 per token by default: the 1,000 streams use four."""
COUNT_TIMEOUT_S = 90.0
CROWD_TIMEOUT_S = 120.0
LIVE_TIMEOUT_S = 60.0
POLL_S = 0.1


@dataclass
class Crowd:
    stack: Stack
    client: str
    devices: list[str]
    tokens: list[str]
    totals: dict[str, int]
    """The oracle: each device's activity over the last 90 days, from what was produced."""
    first: date
    last: date

    def series_path(self, device: str) -> str:
        return f"/v2/clients/{self.client}/analytics/devices/{device}/activity"

    def series_query(self) -> dict[str, str]:
        return {
            "metric": "activity-count",
            "start_date": self.first.isoformat(),
            "end_date": self.last.isoformat(),
        }

    def auth(self, n: int = 0) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[n % len(self.tokens)]}"}


def events(client: str, device: str, now: datetime, n: int) -> list[dict[str, Any]]:
    return [
        {
            "client_id": client,
            "device_id": device,
            "user_id": f"user-{k}",
            "generated_at_utc": (now - timedelta(hours=k * 5)).isoformat(),
            "total_activity_count": n + k,
        }
        for k in range(4)
    ]


@pytest.fixture(scope="module")
def crowd(stack: Stack) -> Crowd:
    client = str(uuid.uuid4())
    stack.add_client(client, "UTC", "crowd")
    stack.start()
    now = datetime.now(UTC)
    devices = [str(uuid.uuid4()) for _ in range(DEVICES)]
    produced = {d: events(client, d, now, n) for n, d in enumerate(devices)}
    stack.produce([heartbeat_message(e) for batch in produced.values() for e in batch])
    totals = {d: sum(e["total_activity_count"] for e in batch) for d, batch in produced.items()}
    tokens = [stack.create_token(client) for _ in range(TOKENS)]
    found = Crowd(
        stack, client, devices, tokens, totals, now.date() - timedelta(days=89), now.date()
    )

    def counted() -> bool | None:
        for device in devices:
            response = stack.http.get(
                found.series_path(device), params=found.series_query(), headers=found.auth()
            )
            if response.status_code != 200:
                return None
            if sum(p["value"] for p in response.json()["data"]) != totals[device]:
                return None
        return True

    stack.wait_for(counted, timeout_s=COUNT_TIMEOUT_S, what="every device counted")
    return found


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def limited_api(
    stack: Stack,
    crowd: Crowd,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """A second API process on the same Redis, with small limits, under each server of
    `devact api --server`: its base URL."""
    port = free_port()
    env = {
        **stack.env,
        "DEVACT_MAX_IN_FLIGHT": "50",
        "DEVACT_LIVE_MAX_STREAMS": "5",
        "DEVACT_LIVE_MAX_STREAMS_PER_TOKEN": "3",
    }
    log_path = tmp_path_factory.mktemp("limited") / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(devact_executable(), "api", "--host", "127.0.0.1", "--port", str(port)),
                *("--server", request.param),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        poll_until(
            lambda: _ready(base),
            timeout_s=60,
            what="the limited API's /readyz",
            diagnostics=log_path.read_text,
        )
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _ready(base: str) -> bool | None:
    try:
        return True if httpx.get(f"{base}/readyz").status_code == 200 else None
    except httpx.TransportError:
        return None


async def _all_at_once(base: str, crowd: Crowd, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=CROWD_TIMEOUT_S) as http:
        start = asyncio.Event()

        async def one(n: int) -> httpx.Response:
            await start.wait()
            device = crowd.devices[n % len(crowd.devices)]
            return await http.get(
                crowd.series_path(device), params=crowd.series_query(), headers=crowd.auth(n)
            )

        tasks = [asyncio.create_task(one(n)) for n in range(count)]
        await asyncio.sleep(0)  # every task waits on ``start``
        start.set()
        return await asyncio.gather(*tasks)


def test_a_thousand_concurrent_series_requests_all_answer_200(
    crowd: Crowd, request: pytest.FixtureRequest
) -> None:
    responses = asyncio.run(_all_at_once(crowd.stack.base_url, crowd, CROWD))
    statuses: dict[int, int] = {}
    for response in responses:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    show(request, f"[crowd] {CROWD} concurrent 90-day series: statuses {statuses}")
    assert statuses == {200: CROWD}
    for n, response in enumerate(responses):
        device = crowd.devices[n % len(crowd.devices)]
        assert sum(p["value"] for p in response.json()["data"]) == crowd.totals[device]


def test_beyond_the_in_flight_limit_the_excess_gets_a_fast_503_with_retry_after(
    crowd: Crowd, limited_api: str
) -> None:
    refused_before = _refused(limited_api, "overload")
    responses = asyncio.run(_all_at_once(limited_api, crowd, CROWD))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert len(ok) + len(refused) == CROWD, {r.status_code for r in responses}
    assert len(ok) >= 50
    assert refused, "1,000 requests at once never went past a limit of 50"
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        assert response.json()["error"]["details"] == {"limit": 50}
    assert _refused(limited_api, "overload") - refused_before == len(refused)


def _refused(base: str, limit: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    line = f'devact_api_refused_total{{limit="{limit}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


@dataclass
class Stream:
    """One open live stream: the points it received."""

    points: list[dict[str, Any]]
    status: int = 0
    ended: bool = False


async def _watch(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], stream: Stream
) -> None:
    async with http.stream(
        "GET", path, params={"metric": "activity-count"}, headers=headers
    ) as response:
        stream.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            stream.ended = True
            return
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                stream.points.append(json.loads(line[5:]))
    stream.ended = True


async def _until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def test_a_thousand_live_streams_share_one_read_per_device_and_change(
    crowd: Crowd, request: pytest.FixtureRequest
) -> None:
    stack = crowd.stack
    redis_url = stack.env["DEVACT_REDIS_URL"]
    today = datetime.now(UTC).date().isoformat()

    async def body() -> tuple[list[Stream], dict[str, int], float]:
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=None) as http:
            streams = [Stream([]) for _ in range(STREAMS)]
            tasks = [
                asyncio.create_task(
                    _watch(
                        http,
                        crowd.series_path(crowd.devices[n % DEVICES]) + "/live",
                        crowd.auth(n),
                        s,
                    )
                )
                for n, s in enumerate(streams)
            ]
            await _until(
                lambda: all(s.points or s.ended for s in streams),
                LIVE_TIMEOUT_S,
                "every stream's first point",
            )
            assert all(s.status == 200 and not s.ended for s in streams), {
                s.status for s in streams
            }
            open_streams = _gauge(stack.base_url, "devact_api_live_streams")
            before = command_calls(redis_url)
            now = datetime.now(UTC)
            await asyncio.to_thread(
                stack.produce,
                [
                    heartbeat_message(
                        {"client_id": crowd.client, "device_id": d, "user_id": None,
                         "generated_at_utc": now.isoformat(), "total_activity_count": 1000 + n}
                    )
                    for n, d in enumerate(crowd.devices)
                ]
            )  # fmt: skip
            first = [s.points[0]["value"] for s in streams]
            expected = [v + 1000 + n % DEVICES for n, v in enumerate(first)]
            await _until(
                lambda: all(
                    s.points[-1]["value"] == e for s, e in zip(streams, expected, strict=True)
                ),
                LIVE_TIMEOUT_S,
                "the new point on every stream",
            )
            ran = ran_between(before, command_calls(redis_url))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return streams, ran, open_streams

    streams, ran, open_streams = asyncio.run(body())
    assert open_streams == STREAMS
    for stream in streams:
        assert stream.points[0]["date"] == today
    # The worker applies each device with one EVALSHA of its own and publishes the change; the API
    # reads each changed device once (one EVALSHA_RO: a read script that writes nothing),
    # whatever the number of its streams. A batch may split the ten heartbeats, so a device may
    # change, and be read, more than once.
    scripts = ran.get("evalsha", 0) + ran.get("evalsha_ro", 0)
    api_reads = scripts - DEVICES  # less the worker's own scripts, one per device
    show(request, f"[live] {STREAMS} streams, {DEVICES} devices changed: Redis ran {ran}")
    assert api_reads <= 3 * DEVICES, ran
    assert api_reads < STREAMS / 10, ran


def _gauge(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = [row for row in text.splitlines() if row.startswith(f"{name} ")]
    return float(found[0].split()[-1])


def test_open_live_streams_are_capped_per_token_and_per_process(
    crowd: Crowd, limited_api: str
) -> None:
    """The limited API holds 5 streams, 3 per token."""
    device = crowd.series_path(crowd.devices[0]) + "/live"

    async def body() -> list[Stream]:
        async with httpx.AsyncClient(base_url=limited_api, timeout=None) as http:
            streams: list[Stream] = []
            tasks = []
            for n in [0, 0, 0, 0, 1, 1, 2]:  # token 0 four times: the fourth over its cap
                stream = Stream([])
                streams.append(stream)
                tasks.append(asyncio.create_task(_watch(http, device, crowd.auth(n), stream)))
                await _until(lambda s=stream: s.points or s.ended, LIVE_TIMEOUT_S, "an answer")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return streams

    refused_before = _refused(limited_api, "live_streams")
    streams = asyncio.run(body())
    assert [s.status for s in streams] == [200, 200, 200, 429, 200, 200, 429]
    assert _refused(limited_api, "live_streams") - refused_before == 2


def test_a_429_is_in_the_error_shape_with_retry_after(crowd: Crowd, limited_api: str) -> None:
    path = crowd.series_path(crowd.devices[1]) + "/live"

    async def body() -> httpx.Response:
        async with httpx.AsyncClient(base_url=limited_api, timeout=None) as http:
            holders = [Stream([]) for _ in range(3)]
            tasks = [asyncio.create_task(_watch(http, path, crowd.auth(3), s)) for s in holders]
            await _until(lambda: all(s.points for s in holders), LIVE_TIMEOUT_S, "three streams")
            refused = await http.get(
                path, params={"metric": "activity-count"}, headers=crowd.auth(3)
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return refused

    refused = asyncio.run(body())
    assert refused.status_code == 429
    assert refused.headers["retry-after"].isdigit()
    error = refused.json()["error"]
    assert error["code"] == "too_many_requests"
    assert error["details"] == {"limit": 3}


def test_a_revoked_tokens_open_stream_ends(crowd: Crowd) -> None:
    stack = crowd.stack
    token = stack.create_token(crowd.client)
    path = crowd.series_path(crowd.devices[2]) + "/live"
    limit_s = 5.0 + 2.5  # DEVACT_AUTH_CACHE_S and the stream's recheck (api/live.py)

    async def body() -> Stream:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=None) as http:
            stream = Stream([])
            task = asyncio.create_task(
                _watch(http, path, {"Authorization": f"Bearer {token}"}, stream)
            )
            await _until(lambda: stream.points, LIVE_TIMEOUT_S, "the first point")
            await asyncio.to_thread(stack.cli, "token", "revoke", token)
            await _until(lambda: stream.ended, limit_s, "the revoked token's stream to end")
            await task
            return stream

    stream = asyncio.run(body())
    assert stream.status == 200
    assert len(stream.points) == 1  # nothing changed meanwhile: the stream ended, nothing more
