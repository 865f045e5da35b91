"""Every error status of docs/api.md, with its body, its code and the order of the checks.

Clients A and B each own one device that has been counted. Tokens: one for A only, one for A and
B, one for all clients, and one revoked after it had worked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from .harness.kafka import heartbeat_message
from .harness.stack import Stack

pytestmark = pytest.mark.backends("redis", "cluster")

ACTIVITY = "/v2/clients/{client}/analytics/devices/{device}/activity"
UNKNOWN_METRIC_MESSAGE = "Unknown metric: invalid-metric. Valid values: activity-count, user-count"
WAIT_FOR_DEVICES_S = 90.0


@dataclass
class World:
    stack: Stack
    today: date
    a: str
    b: str
    device_a: str
    device_b: str
    token_a: str
    token_ab: str
    token_all: str
    token_revoked: str
    revoked_token_worked_before: bool

    def get(
        self,
        client: str,
        device: str,
        token: str | None,
        **overrides: str | None,
    ) -> httpx.Response:
        """A request that is valid unless ``overrides`` break it (None leaves a parameter out)."""
        params: dict[str, str | None] = {
            "metric": "activity-count",
            "start_date": (self.today - timedelta(days=6)).isoformat(),
            "end_date": self.today.isoformat(),
            "granularity": "daily",
        }
        return self.stack.activity(client, device, token, **(params | overrides))

    def valid_for_a(self, token: str | None) -> httpx.Response:
        return self.get(self.a, self.device_a, token)


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    today = datetime.now(UTC).date()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    device_a, device_b = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(a, "UTC", name="errors A")
    stack.add_client(b, "Europe/Berlin", name="errors B")
    stack.start()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stack.produce(
        [
            heartbeat_message(
                {
                    "client_id": c,
                    "device_id": d,
                    "user_id": "u-1",
                    "generated_at_utc": an_hour_ago,
                    "total_activity_count": 3,
                }
            )
            for c, d in [(a, device_a), (b, device_b)]
        ]
    )
    token_all = stack.create_token(all_clients=True)
    w = World(
        stack=stack,
        today=today,
        a=a,
        b=b,
        device_a=device_a,
        device_b=device_b,
        token_a=stack.create_token(a),
        token_ab=stack.create_token(a, b),
        token_all=token_all,
        token_revoked=stack.create_token(a),
        revoked_token_worked_before=False,
    )

    def both_devices_counted() -> bool | None:
        statuses = [w.get(c, d, token_all).status_code for c, d in [(a, device_a), (b, device_b)]]
        return True if statuses == [200, 200] else None

    stack.wait_for(
        both_devices_counted, timeout_s=WAIT_FOR_DEVICES_S, what="the two devices to be counted"
    )
    w.revoked_token_worked_before = w.valid_for_a(w.token_revoked).status_code == 200
    stack.cli("token", "revoke", w.token_revoked)
    return w


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape, and nothing of FastAPI's defaults; returns ``details``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body  # never a top-level "detail"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], dict), body
    assert "Traceback" not in response.text
    return dict(error["details"])


# --- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Token abcdef", "Bearer", "abcdef"],
    ids=["no-header", "basic-scheme", "token-scheme", "bearer-without-token", "bare-token"],
)
def test_missing_or_malformed_authorization_is_401(world: World, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = world.stack.http.get(
        ACTIVITY.format(client=world.a, device=world.device_a),
        params={
            "metric": "activity-count",
            "start_date": world.today.isoformat(),
            "end_date": world.today.isoformat(),
        },
        headers=headers,
    )
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_unknown_token_is_401(world: World) -> None:
    response = world.valid_for_a("no-such-token-" + uuid.uuid4().hex)
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_revoked_token_is_401(world: World) -> None:
    assert world.revoked_token_worked_before, "the token did not work before it was revoked"
    response = world.valid_for_a(world.token_revoked)
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


# --- 403 ---------------------------------------------------------------------------------------


def test_token_without_access_to_an_existing_client_is_403(world: World) -> None:
    assert_error(world.get(world.b, world.device_b, world.token_a), 403, "forbidden")


def test_token_without_access_to_an_unknown_client_is_403(world: World) -> None:
    response = world.get(str(uuid.uuid4()), str(uuid.uuid4()), world.token_a)
    assert_error(response, 403, "forbidden")


def test_token_for_several_clients_reaches_each(world: World) -> None:
    assert world.get(world.a, world.device_a, world.token_ab).status_code == 200
    assert world.get(world.b, world.device_b, world.token_ab).status_code == 200


def test_token_for_all_clients_reaches_each(world: World) -> None:
    assert world.get(world.a, world.device_a, world.token_all).status_code == 200
    assert world.get(world.b, world.device_b, world.token_all).status_code == 200


# --- 400 ---------------------------------------------------------------------------------------

BAD_PARAMETERS: list[tuple[str, dict[str, str | None], dict[str, Any]]] = [
    ("metric-missing", {"metric": None}, {"metric": None}),
    ("metric-unknown", {"metric": "invalid-metric"}, {"metric": "invalid-metric"}),
    ("metric-underscore", {"metric": "activity_count"}, {"metric": "activity_count"}),
    ("granularity-unknown", {"granularity": "hourly"}, {"granularity": "hourly"}),
    ("granularity-yearly", {"granularity": "yearly"}, {"granularity": "yearly"}),
    ("start-missing", {"start_date": None}, {"start_date": None}),
    ("end-missing", {"end_date": None}, {"end_date": None}),
    ("start-impossible-day", {"start_date": "2026-02-30"}, {"start_date": "2026-02-30"}),
    ("start-unpadded", {"start_date": "2026-1-5"}, {"start_date": "2026-1-5"}),
    ("start-slashes", {"start_date": "2026/01/05"}, {"start_date": "2026/01/05"}),
    ("end-month-13", {"end_date": "2026-13-01"}, {"end_date": "2026-13-01"}),
    ("end-word", {"end_date": "tomorrow"}, {"end_date": "tomorrow"}),
    ("end-with-time", {"end_date": "2026-11-20T00:00"}, {"end_date": "2026-11-20T00:00"}),
]


@pytest.mark.parametrize(
    ("overrides", "expected_details"),
    [pytest.param(o, d, id=i) for i, o, d in BAD_PARAMETERS],
)
def test_bad_query_parameter_is_400_naming_parameter_and_value(
    world: World, overrides: dict[str, str | None], expected_details: dict[str, Any]
) -> None:
    details = assert_error(
        world.get(world.a, world.device_a, world.token_a, **overrides), 400, "invalid_parameter"
    )
    for name, value in expected_details.items():
        assert name in details, details
        assert details[name] == value, details


def test_unknown_metric_body_is_the_spec_example(world: World) -> None:
    response = world.get(world.a, world.device_a, world.token_a, metric="invalid-metric")
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_parameter",
            "message": UNKNOWN_METRIC_MESSAGE,
            "details": {"metric": "invalid-metric"},
        }
    }


def test_start_after_end_is_400_naming_both_dates(world: World) -> None:
    start, end = world.today.isoformat(), (world.today - timedelta(days=1)).isoformat()
    details = assert_error(
        world.get(world.a, world.device_a, world.token_a, start_date=start, end_date=end),
        400,
        "invalid_parameter",
    )
    assert details.get("start_date") == start, details
    assert details.get("end_date") == end, details


def test_range_of_91_days_is_400_naming_both_dates(world: World) -> None:
    start, end = (world.today - timedelta(days=90)).isoformat(), world.today.isoformat()
    details = assert_error(
        world.get(world.a, world.device_a, world.token_a, start_date=start, end_date=end),
        400,
        "invalid_parameter",
    )
    assert details.get("start_date") == start, details
    assert details.get("end_date") == end, details


def test_range_of_90_days_is_accepted(world: World) -> None:
    start = (world.today - timedelta(days=89)).isoformat()
    response = world.get(world.a, world.device_a, world.token_a, start_date=start)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 90


@pytest.mark.parametrize("client", ["not-a-uuid", "aa7cf840-9ca9-46a3-9778-9015d6580d5", "12345"])
def test_malformed_client_uuid_in_path_is_400(world: World, client: str) -> None:
    details = assert_error(
        world.get(client, world.device_a, world.token_all), 400, "invalid_parameter"
    )
    assert details == {"client_id": client}


@pytest.mark.parametrize("device", ["not-a-uuid", "g1e2d3c4-b5a6-7890-abcd-ef1234567890", "1234"])
def test_malformed_device_uuid_in_path_is_400(world: World, device: str) -> None:
    details = assert_error(world.get(world.a, device, world.token_a), 400, "invalid_parameter")
    assert details == {"device_id": device}


# --- the order of the checks: 401, 403, 400, 404 -------------------------------------------------


def test_bad_parameters_without_token_are_401(world: World) -> None:
    response = world.get(
        str(uuid.uuid4()), "not-a-uuid", None, metric="bad", start_date="2026-02-30"
    )
    assert_error(response, 401, "unauthorized")


def test_bad_parameters_with_revoked_token_are_401(world: World) -> None:
    response = world.get(world.a, world.device_a, world.token_revoked, metric="bad")
    assert_error(response, 401, "unauthorized")


def test_bad_parameters_for_a_forbidden_client_are_403(world: World) -> None:
    response = world.get(
        world.b,
        world.device_b,
        world.token_a,
        metric="bad",
        granularity="hourly",
        end_date="tomorrow",
    )
    assert_error(response, 403, "forbidden")


def test_malformed_client_uuid_outside_the_token_scope_is_403(world: World) -> None:
    # The token reaches client A only, and "not-a-uuid" is not A: 403 comes before 400.
    assert_error(world.get("not-a-uuid", world.device_a, world.token_a), 403, "forbidden")


def test_bad_parameters_for_an_unknown_device_are_400(world: World) -> None:
    response = world.get(world.a, str(uuid.uuid4()), world.token_a, metric="invalid-metric")
    assert assert_error(response, 400, "invalid_parameter") == {"metric": "invalid-metric"}


def test_bad_parameters_for_an_unknown_client_are_400(world: World) -> None:
    response = world.get(
        str(uuid.uuid4()), str(uuid.uuid4()), world.token_all, start_date="2026-02-30"
    )
    details = assert_error(response, 400, "invalid_parameter")
    assert details.get("start_date") == "2026-02-30", details


def test_malformed_device_uuid_of_an_unknown_client_is_400(world: World) -> None:
    response = world.get(str(uuid.uuid4()), "not-a-uuid", world.token_all)
    assert assert_error(response, 400, "invalid_parameter") == {"device_id": "not-a-uuid"}


# --- 404 ---------------------------------------------------------------------------------------


def test_unknown_client_is_404(world: World) -> None:
    response = world.get(str(uuid.uuid4()), str(uuid.uuid4()), world.token_all)
    assert_error(response, 404, "not_found")


def test_unknown_device_is_404(world: World) -> None:
    assert_error(world.get(world.a, str(uuid.uuid4()), world.token_a), 404, "not_found")


def test_device_of_another_client_is_404(world: World) -> None:
    assert_error(world.get(world.a, world.device_b, world.token_all), 404, "not_found")
    assert_error(world.get(world.a, world.device_b, world.token_ab), 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/nothing-here",
        "/v1/clients/{a}/analytics/devices/{d}/activity",
        "/v2/clients/{a}/analytics/devices/{d}/activities",
        "/v2/clients/{a}/analytics/devices/{d}",
    ],
)
def test_unknown_route_is_404(world: World, path: str) -> None:
    response = world.stack.http.get(
        path.format(a=world.a, d=world.device_a),
        headers={"Authorization": f"Bearer {world.token_a}"},
    )
    assert_error(response, 404, "not_found")


# --- 405 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_on_the_endpoint_is_405(world: World, method: str) -> None:
    response = world.stack.http.request(
        method,
        ACTIVITY.format(client=world.a, device=world.device_a),
        params={
            "metric": "activity-count",
            "start_date": world.today.isoformat(),
            "end_date": world.today.isoformat(),
        },
        headers={"Authorization": f"Bearer {world.token_a}"},
    )
    assert_error(response, 405, "method_not_allowed")


def test_wrong_method_on_healthz_is_405(world: World) -> None:
    assert_error(world.stack.http.post("/healthz"), 405, "method_not_allowed")


# --- HEAD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["a", "none"])
def test_head_answers_as_get_without_a_body(world: World, token: str) -> None:
    """Proxies and uptime checks send HEAD: the GET answer's status and headers, no body."""
    url = ACTIVITY.format(client=world.a, device=world.device_a)
    params = {
        "metric": "activity-count",
        "start_date": world.today.isoformat(),
        "end_date": world.today.isoformat(),
    }
    headers = {"Authorization": f"Bearer {world.token_a}"} if token == "a" else {}
    get = world.stack.http.get(url, params=params, headers=headers)
    head = world.stack.http.head(url, params=params, headers=headers)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_head_on_the_service_endpoints_is_200_without_a_body(world: World, path: str) -> None:
    head = world.stack.http.head(path)
    assert head.status_code == 200
    assert head.content == b""


# --- the service's other endpoints ---------------------------------------------------------------


def test_healthz_is_200(world: World) -> None:
    assert world.stack.http.get("/healthz").status_code == 200


def test_readyz_is_200_while_redis_is_reachable(world: World) -> None:
    assert world.stack.http.get("/readyz").status_code == 200


def test_metrics_are_prometheus_text(world: World) -> None:
    world.valid_for_a(world.token_a)
    response = world.stack.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    assert "# TYPE " in response.text
    assert "# HELP " in response.text


def test_openapi_describes_the_activity_route(world: World) -> None:
    response = world.stack.http.get("/openapi.json")
    assert response.status_code == 200
    assert ACTIVITY.format(client="{client_id}", device="{device_id}") in response.json()["paths"]


def test_docs_page_is_served(world: World) -> None:
    response = world.stack.http.get("/docs")
    assert response.status_code == 200
    assert "html" in response.headers["content-type"]
