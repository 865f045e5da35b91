"""schemathesis against the running API's /openapi.json (issue 3 item 6).

A registered client with a counted device and a token for it; schemathesis generates requests for
every operation of the document (valid and invalid, seeded and derandomized) with the token in
the Authorization header. Path and query parameters draw, part of the time, from dictionaries of
the real client and device, the contract's metrics and granularities and dates around today, so that
200s are reached too, not only 400s.

Checks on every response: schemathesis's ``not_a_server_error`` (with 503 allowed: Redis may be
unreachable, that is the contract's answer for it); every non-200 body is exactly the contract's
error shape with the code its status implies; every 200 of the activity route has the contract's
shape and, for the counted device, the numbers the oracle computes from the events that were
produced.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error

from .harness.kafka import heartbeat_message
from .harness.stack import Stack
from .oracle import GRANULARITIES, LABELS, METRICS, Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

SEED = 31_337
ACTIVITY_PATH = "/v2/clients/{client_id}/analytics/devices/{device_id}/activity"
CLIENT_PATH = "/v2/clients/{client_id}/analytics/activity"
RANKING_PATH = "/v2/clients/{client_id}/analytics/devices"
LIVE_PATH = ACTIVITY_PATH + "/live"
ZONE = "America/Sao_Paulo"
COUNT_TIMEOUT_S = 90.0
MAX_RANGE_DAYS = 90

# docs/api.md (docs/api.md): the code each non-200 status carries.
ERROR_CODES = {
    400: "invalid_parameter",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    500: "internal_error",
    503: "unavailable",
}
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class World:
    """What the generated requests aim at, and the oracle of the counted device."""

    def __init__(self, stack: Stack, client: str, device: str, oracle: Oracle) -> None:
        self.stack = stack
        self.client = client
        self.device = device
        self.oracle = oracle
        self.today = datetime.now(UTC).date()
        self.token = ""
        self.statuses: dict[str, dict[int, int]] = {}

    def dates(self) -> list[str]:
        days = [self.today - timedelta(days=n) for n in (0, 1, 6, 7, 30, 89, 90, 91, 365)]
        days += [self.today + timedelta(days=n) for n in (1, 31)]
        return [d.isoformat() for d in days] + ["2026-02-30", "2026-1-5", "tomorrow", ""]


def schema_config(world: World, token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"mode": "all", "deterministic": True},
            "checks": {
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
            },
            "dictionaries": {
                "clients": {"values": [world.client, world.client.upper(), str(uuid.uuid4())]},
                "devices": {"values": [world.device, world.device.upper(), str(uuid.uuid4())]},
                "metrics": {"values": [*METRICS, "invalid-metric"]},
                "granularities": {"values": [*GRANULARITIES, "hourly"]},
                "dates": {"values": world.dates()},
                "compares": {"values": ["previous_period", "last_year"]},
            },
            "parameters": {
                "path.client_id": {"dictionary": "clients", "probability": 0.7},
                "path.device_id": {"dictionary": "devices", "probability": 0.7},
                "query.metric": {"dictionary": "metrics", "probability": 0.8},
                "query.granularity": {"dictionary": "granularities", "probability": 0.7},
                "query.start_date": {"dictionary": "dates", "probability": 0.8},
                "query.end_date": {"dictionary": "dates", "probability": 0.8},
                "query.compare": {"dictionary": "compares", "probability": 0.5},
            },
        }
    )


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    client, device = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(client, ZONE, name="schemathesis")
    stack.start()
    now = datetime.now(UTC)
    events = [
        {
            "client_id": client,
            "device_id": device,
            "user_id": f"st-user-{n % 5}",
            "generated_at_utc": (now - timedelta(hours=11 * n + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "total_activity_count": n + 1,
        }
        for n in range(40)
    ]
    oracle = Oracle(events, {client: ZONE})
    w = World(stack, client, device, oracle)
    stack.produce([heartbeat_message(e) for e in events])
    first, last = min(oracle.local_days()), max(oracle.local_days())
    expected = oracle.body((client, device), first, last, "activity-count", "daily")

    def counted() -> bool | None:
        response = stack.activity(
            client,
            device,
            token_all,
            metric="activity-count",
            start_date=first.isoformat(),
            end_date=last.isoformat(),
        )
        return True if response.status_code == 200 and response.json() == expected else None

    token_all = stack.create_token(all_clients=True)
    stack.wait_for(counted, timeout_s=COUNT_TIMEOUT_S, what="the device to be counted")
    return w


@pytest.fixture(scope="module")
def api_schema(world: World) -> BaseSchema:
    token = world.token = world.stack.create_token(world.client)
    return schemathesis.openapi.from_url(
        f"{world.stack.base_url}/openapi.json", config=schema_config(world, token)
    )


def assert_error_shape(response: Any) -> None:
    """Exactly ``{"error": {"code", "message", "details"}}``, with the status's code."""
    status = response.status_code
    assert status in ERROR_CODES, f"status {status} is none of the contract's: {response.text}"
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert error["code"] == ERROR_CODES[status], body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], dict), body
    assert "Traceback" not in response.text


def assert_activity_shape(world: World, case: Any, body: Any) -> None:
    """docs/api.md's 200 body; for the counted device, the oracle's very numbers."""
    query = case.query or {}
    assert isinstance(body, dict), body
    compared = {"total", "previous", "change"} if query.get("compare") else set()
    assert set(body) == {"metric", "label", "granularity", "period", "data"} | compared, body
    metric, granularity = body["metric"], body["granularity"]
    assert metric in METRICS, body
    assert granularity in GRANULARITIES, body
    assert body["label"] == LABELS[(metric, granularity)], body
    assert metric == query.get("metric"), (query, body)
    assert granularity == (query.get("granularity") or "daily"), (query, body)
    assert body["period"] == {"start": query["start_date"], "end": query["end_date"]}, body
    first, last = date.fromisoformat(query["start_date"]), date.fromisoformat(query["end_date"])
    assert first <= last, body
    assert (last - first).days + 1 <= MAX_RANGE_DAYS, body
    data = body["data"]
    assert isinstance(data, list), body
    assert data, body
    for point in data:
        assert set(point) == {"date", "value"}, point
        assert isinstance(point["date"], str), point
        assert ISO_DATE.fullmatch(point["date"]), point
        assert type(point["value"]) is int, point
        assert point["value"] >= 0, point
    dates = [date.fromisoformat(p["date"]) for p in data]
    assert dates[0] == first, body
    assert dates == sorted(set(dates)), body
    assert all(first <= d <= last for d in dates), body
    path = case.path_parameters or {}
    key = (str(path["client_id"]).lower(), str(path["device_id"]).lower())
    assert key == (world.client, world.device), f"a 200 for a device never counted: {key}"
    assert data == world.oracle.series(key, first, last, metric, granularity), body


def check_response(world: World, case: Case, response: Any) -> None:
    label = case.operation.label
    counts = world.statuses.setdefault(label, {})
    counts[response.status_code] = counts.get(response.status_code, 0) + 1
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code != 200:
        assert_error_shape(response)
    elif case.operation.path == ACTIVITY_PATH:
        assert_activity_shape(world, case, response.json())
    elif case.operation.path == CLIENT_PATH:
        body = response.json()
        assert {"metric", "label", "granularity", "period", "data"} <= set(body), body
        assert all(type(p["value"]) is int and p["value"] >= 0 for p in body["data"]), body
    elif case.operation.path == RANKING_PATH:
        body = response.json()
        assert set(body) == {
            "metric", "label", "period", "order", "limit", "total_devices", "devices",
        }, body  # fmt: skip
        assert len(body["devices"]) <= body["limit"], body


# Every operation of the document, with how many examples each gets. The activity route is the
# one with parameters; the others take none, so a few examples exhaust them.
OPERATIONS = {
    ("GET", ACTIVITY_PATH): 150,
    ("GET", CLIENT_PATH): 60,
    ("GET", RANKING_PATH): 60,
    ("GET", "/v2/clients"): 10,
    ("GET", "/healthz"): 10,
    ("GET", "/readyz"): 10,
    ("GET", "/metrics"): 10,
}
LISTED_ONLY = {("GET", LIVE_PATH)}
"""In the document but not generated against here: a 200 is a stream that never ends
(tests/integration/test_fleet.py tests it, its errors included)."""


def test_the_document_lists_exactly_the_operations_tested_here(api_schema: BaseSchema) -> None:
    listed = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert listed == set(OPERATIONS) | LISTED_ONLY


@pytest.mark.parametrize(
    ("method", "path", "max_examples"),
    [pytest.param(m, p, n, id=f"{m} {p}") for (m, p), n in OPERATIONS.items()],
)
def test_generated_requests_get_answers_in_the_spec_shape(
    api_schema: BaseSchema, world: World, method: str, path: str, max_examples: int
) -> None:
    operation = api_schema[path][method]
    modes = [GenerationMode.POSITIVE]
    if operation.path_parameters or operation.query:
        modes.append(GenerationMode.NEGATIVE)

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*(operation.as_strategy(mode) for mode in modes)))
    def generated(case: Case) -> None:
        check_response(world, case, case.call())

    generated()


def test_generated_requests_reached_every_answer_of_the_activity_route(world: World) -> None:
    """The generation was not all 400s: each of the contract's outcomes was seen at least once."""
    seen = set(world.statuses.get(f"GET {ACTIVITY_PATH}", {}))
    assert {200, 400, 403, 404} <= seen, world.statuses


@pytest.mark.parametrize("path", [ACTIVITY_PATH, "/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_undeclared_methods_are_405_in_the_spec_shape(
    world: World, api_schema: BaseSchema, path: str, method: str
) -> None:
    url = path.format(client_id=world.client, device_id=world.device)
    response = world.stack.http.request(
        method, url, headers={"Authorization": f"Bearer {world.token}"}
    )
    assert response.status_code == 405, response.text
    assert_error_shape(response)
