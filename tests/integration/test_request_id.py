"""Request ids on every answer of the real API, and the JSON logs (DEVACT_LOG_FORMAT=json) of the
real API and worker: every line one object, a request's lines carrying its id."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import get_reader
from api.settings import ApiSettings
from devtools.services import Endpoints, free_port
from state.logs import JsonFormatter
from tests.integration.faultkit.kafka import create_topic, produce
from tests.integration.faultkit.processes import Api, Process
from tests.integration.harness.kafka import heartbeat_message
from tests.integration.harness.store import run_with_redis
from tests.integration.harness.waiting import poll_until

pytestmark = pytest.mark.backends("redis", "cluster")

CLIENT = str(uuid.uuid4())
OTHER_CLIENT = str(uuid.uuid4())
DEVICE = str(uuid.uuid4())
NEW_ID = re.compile(r"[0-9a-f]{32}")
"""What the API makes when the request brings no sane id: a uuid4 in hex."""
LINE_FIELDS = ("time", "level", "logger", "message")
ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HARNESS_MARK = "===== "
"""The line faultkit's Process writes into a log before each start: the harness's, not ours."""
TIMEOUT_S = 60.0


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line the process wrote, each parsed as a JSON object with the fields of a line."""
    written = log.read_text()
    complete = written[: written.rfind("\n") + 1]  # not a line the process is still writing
    lines = []
    for text in complete.splitlines():
        if not text.strip() or text.startswith(HARNESS_MARK):
            continue
        line = json.loads(text)  # fails the test on the first line that is not JSON
        assert isinstance(line, dict), text
        assert all(field in line for field in LINE_FIELDS), text
        assert ISO_UTC_MS.fullmatch(line["time"]), text
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Path:
    """One per backend: the logs read here must be this backend's processes' alone."""
    return tmp_path_factory.mktemp(f"request-id-{backend}")


@pytest.fixture(scope="module")
def env(services: Endpoints, workdir: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex
    topic = f"heartbeats-logs-{suffix}"
    create_topic(services.kafka_bootstrap, topic, 2)
    create_topic(services.kafka_bootstrap, f"{topic}.dlq", 1)
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DEVACT_LOG_FORMAT": "json",
        "DEVACT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DEVACT_REDIS_URL": services.redis_url,
        "DEVACT_TOPIC": topic,
        "DEVACT_DLQ_TOPIC": f"{topic}.dlq",
        "DEVACT_APP_ID": f"device-activity-logs-{suffix}",
        "DEVACT_TOPIC_PARTITIONS": "2",
        "DEVACT_DEFAULT_TIMEZONE": "UTC",
        "DEVACT_WORKER_DIR": str(workdir / "worker"),
        "DEVACT_WORKER_METRICS_PORT": "0",  # several workers per machine: no fixed port
    }


@pytest.fixture(scope="module")
def token(services: Endpoints) -> str:
    """A token for CLIENT alone (OTHER_CLIENT exists too, and answers it 403)."""

    async def register(redis: Any) -> str:
        from state.registry import Registry

        registry = Registry(redis)
        for client in (CLIENT, OTHER_CLIENT):
            await registry.add_client(client, "UTC", "request ids", datetime.now(UTC))
        return await registry.create_token([CLIENT], all_clients=False, name="request ids")

    return str(run_with_redis(services, register))


def start_api(env: Mapping[str, str], log: Path) -> Api:
    api = Api(env, log)
    api.start()
    return api


@pytest.fixture(scope="module")
def api(env: dict[str, str], workdir: Path) -> Iterator[Api]:
    process = start_api(env, workdir / "api.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def api_without_store(env: dict[str, str], workdir: Path) -> Iterator[Api]:
    """The API with nothing at its Redis address: /readyz answers 503 and logs why."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    process = start_api({**env, "DEVACT_REDIS_URL": nowhere}, workdir / "api-503.log")
    try:
        poll_until(
            lambda: True if process.status("/healthz") == 200 else None,
            timeout_s=TIMEOUT_S,
            what="GET /healthz -> 200",
            diagnostics=process.tail,
        )
        yield process
    finally:
        process.close()


def activity(client: str, **query: str) -> str:
    params = {"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-15"}
    return f"/v2/clients/{client}/analytics/devices/{DEVICE}/activity?" + "&".join(
        f"{k}={v}" for k, v in (params | query).items()
    )


ANSWERS = {
    "200": ("GET", "/healthz", False, 200),
    "HEAD 200": ("HEAD", "/healthz", False, 200),
    "401": ("GET", activity(CLIENT), False, 401),
    "403": ("GET", activity(OTHER_CLIENT), True, 403),
    "404": ("GET", "/no-such-route", False, 404),
    # What FastAPI would answer 422, the contract answers 400 (api/errors.py).
    "invalid parameter": ("GET", activity(CLIENT, start_date="yesterday"), True, 400),
}


def ask(api: Api, token: str, answer: str, request_id: str | None) -> httpx.Response:
    method, path, authorised, status = ANSWERS[answer]
    headers = {"Authorization": f"Bearer {token}"} if authorised else {}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    response = api.http.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    return response


@pytest.mark.parametrize("answer", ANSWERS)
def test_a_sane_request_id_comes_back_on_every_answer(api: Api, token: str, answer: str) -> None:
    sent = f"req-{answer.replace(' ', '_')}.{uuid.uuid4().hex[:8]}"
    assert ask(api, token, answer, sent).headers["X-Request-ID"] == sent


@pytest.mark.parametrize("answer", ANSWERS)
def test_without_a_request_id_every_answer_gets_a_new_one(
    api: Api, token: str, answer: str
) -> None:
    first = ask(api, token, answer, None).headers["X-Request-ID"]
    second = ask(api, token, answer, None).headers["X-Request-ID"]
    assert NEW_ID.fullmatch(first)
    assert NEW_ID.fullmatch(second)
    assert first != second


def test_an_id_of_128_characters_is_kept(api: Api, token: str) -> None:
    sent = "a" * 128
    assert ask(api, token, "200", sent).headers["X-Request-ID"] == sent


@pytest.mark.parametrize(
    "sent", ["", "a" * 129, "two words", "semi;colon", "new\\nline", 'quote"d', "{json}"]
)
@pytest.mark.parametrize("answer", ["200", "404"])
def test_an_id_that_is_not_sane_is_replaced(api: Api, token: str, answer: str, sent: str) -> None:
    got = ask(api, token, answer, sent).headers["X-Request-ID"]
    assert NEW_ID.fullmatch(got), got
    assert got != sent


def test_the_answer_carries_one_request_id_header(api: Api, token: str) -> None:
    response = ask(api, token, "200", "only-one")
    assert response.headers.get_list("X-Request-ID") == ["only-one"]


def test_a_503_carries_the_id_and_the_line_logged_for_it_too(api_without_store: Api) -> None:
    sent = f"store-down-{uuid.uuid4().hex}"
    response = api_without_store.http.get("/readyz", headers={"X-Request-ID": sent})
    assert response.status_code == 503
    assert response.headers["X-Request-ID"] == sent

    def logged() -> dict[str, Any] | None:
        lines = [
            line for line in json_lines(api_without_store.log) if line.get("request_id") == sent
        ]
        return lines[0] if lines else None

    line = poll_until(logged, timeout_s=TIMEOUT_S, what=f"a log line with request_id {sent}")
    assert (line["level"], line["logger"]) == ("WARNING", "api.errors")
    assert line["message"].startswith("Redis unavailable")


def test_the_servers_own_lines_are_json_too(api: Api) -> None:
    # uvicorn warns, through its own logger, about a request it cannot parse.
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        connection.recv(1024)

    def server_line() -> dict[str, Any] | None:
        return next((ln for ln in json_lines(api.log) if ln["logger"].startswith("uvicorn")), None)

    line = poll_until(server_line, timeout_s=TIMEOUT_S, what="a uvicorn line in the API's log")
    assert line["level"] == "WARNING"


def test_an_unexpected_error_is_a_500_with_the_id_and_logged_with_it() -> None:
    """In process: the running API has no bug to trigger. Starlette answers an exception no
    handler took outside every middleware; the id's middleware answers it itself."""

    class ExplodingReader:
        async def ping(self) -> None:
            raise RuntimeError("a bug")

    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    errors = logging.getLogger("api.errors")
    errors.addHandler(handler)
    try:
        nowhere = f"redis://127.0.0.1:{free_port()}/0"
        app = create_app(ApiSettings(redis_url=nowhere, redis_cluster=False))
        app.dependency_overrides[get_reader] = ExplodingReader
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/readyz", headers={"X-Request-ID": "the-bug"})
    finally:
        errors.removeHandler(handler)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["X-Request-ID"] == "the-bug"
    [line] = [json.loads(text) for text in written.getvalue().splitlines()]
    assert (line["message"], line["request_id"]) == ("Unhandled error", "the-bug")
    assert line["exc_info"].endswith("RuntimeError: a bug")


def test_every_line_of_a_worker_is_json_faust_s_own_included(
    env: dict[str, str], workdir: Path, api: Api, token: str
) -> None:
    worker = Process("worker", ["worker"], env, workdir / "worker.log")
    now = datetime.now(UTC)
    day = now.date().isoformat()
    try:
        worker.start()
        event = {
            "client_id": CLIENT,
            "device_id": DEVICE,
            "generated_at_utc": now.isoformat(),
            "total_activity_count": 7,
        }
        produce(env["DEVACT_KAFKA_BOOTSTRAP"], env["DEVACT_TOPIC"], [heartbeat_message(event)])

        def counted() -> bool | None:
            assert worker.alive, worker.tail()
            answer = api.http.get(
                activity(CLIENT, start_date=day, end_date=day),
                headers={"Authorization": f"Bearer {token}"},
            )
            # 404 until the worker has written the device.
            done = answer.status_code == 200 and answer.json()["data"] == [
                {"date": day, "value": 7}
            ]
            return True if done else None

        # Consumed and applied: the worker joined its group, fetched and wrote a batch.
        poll_until(
            counted, timeout_s=TIMEOUT_S, what="the heartbeat counted", diagnostics=worker.tail
        )
    finally:
        code = worker.terminate()
    assert code is not None, f"the worker ignored SIGTERM\n{worker.tail()}"
    lines = json_lines(worker.log)
    loggers = {line["logger"] for line in lines}
    assert any(name.startswith("faust.") for name in loggers), loggers
    assert any(name.startswith("mode.") or name.startswith("aiokafka") for name in loggers), loggers
