"""Tenant crossing (docs/contract.md, docs/api.md, issue 3 item 6): a token of client A never reads
anything of client B.

Clients A and B each own two devices counted through the real pipeline, with different numbers.
A's token gets 403 on B's client path whatever the device (B's, A's, a random one), and 404 with
the contract's error body only for B's device under A's path, answered exactly as for a device that
does not exist, so the body tells nothing of B. Tokens for [A, B] and for all clients read both;
a revoked token reads nothing. A heartbeat of A naming B's device does not give it to A.
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
from .oracle import GRANULARITIES, METRICS, DeviceKey, Granularity, Metric, Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

COUNT_TIMEOUT_S = 90.0
DLQ_TIMEOUT_S = 60.0
ZONES = {"A": "Europe/Paris", "B": "Asia/Tokyo"}


@dataclass
class Tenants:
    stack: Stack
    oracle: Oracle
    first: date
    last: date
    a: str
    b: str
    devices: dict[str, list[str]]  # "A" / "B" -> device ids
    token_a: str
    token_b: str
    token_ab: str
    token_all: str
    token_revoked: str
    revoked_worked_before: bool

    def get(
        self,
        client: str,
        device: str,
        token: str | None,
        metric: Metric = "activity-count",
        granularity: Granularity = "daily",
    ) -> httpx.Response:
        return self.stack.activity(
            client,
            device,
            token,
            metric=metric,
            start_date=self.first.isoformat(),
            end_date=self.last.isoformat(),
            granularity=granularity,
        )

    def body(self, key: DeviceKey, metric: Metric, granularity: Granularity) -> dict[str, Any]:
        return self.oracle.body(key, self.first, self.last, metric, granularity)

    def keys(self, tenant: str) -> list[DeviceKey]:
        client = self.a if tenant == "A" else self.b
        return [(client, d) for d in self.devices[tenant]]


def heartbeats(client: str, device: str, now: datetime, scale: int) -> list[dict[str, Any]]:
    """A few days of a device; ``scale`` makes each tenant's numbers its own."""
    events = []
    for n in range(12):
        events.append(
            {
                "client_id": client,
                "device_id": device,
                "user_id": f"{client[:8]}-user-{n % (2 + scale)}",
                "generated_at_utc": (now - timedelta(hours=7 * n + 1)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "total_activity_count": scale * 100 + n,
            }
        )
    return events


def wait_until_counted(stack: Stack, t: Tenants) -> None:
    differing: list[str] = []

    def counted() -> bool | None:
        for key in t.oracle.devices():
            for metric in METRICS:
                response = t.get(key[0], key[1], t.token_all, metric)
                expected = t.body(key, metric, "daily")
                if response.status_code != 200 or response.json() != expected:
                    differing[:] = [f"{key} {metric}: {response.status_code} {response.text}"]
                    return None
        return True

    stack.wait_for(
        counted,
        timeout_s=COUNT_TIMEOUT_S,
        what="both tenants' devices to be counted",
        progress=lambda: "; ".join(differing),
    )


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> Tenants:
    now = datetime.now(UTC)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    devices = {
        "A": [str(uuid.uuid4()) for _ in range(2)],
        "B": [str(uuid.uuid4()) for _ in range(2)],
    }
    stack.add_client(a, ZONES["A"], name="tenant A")
    stack.add_client(b, ZONES["B"], name="tenant B")
    stack.start()
    events = [
        e
        for tenant, client, scale in (("A", a, 1), ("B", b, 7))
        for device in devices[tenant]
        for e in heartbeats(client, device, now, scale)
    ]
    oracle = Oracle(events, {a: ZONES["A"], b: ZONES["B"]})
    days = oracle.local_days()
    t = Tenants(
        stack=stack,
        oracle=oracle,
        first=min(days) - timedelta(days=1),
        last=max(days) + timedelta(days=1),
        a=a,
        b=b,
        devices=devices,
        token_a=stack.create_token(a),
        token_b=stack.create_token(b),
        token_ab=stack.create_token(a, b),
        token_all=stack.create_token(all_clients=True),
        token_revoked=stack.create_token(a),
        revoked_worked_before=False,
    )
    stack.produce([heartbeat_message(e) for e in events])
    wait_until_counted(stack, t)
    t.revoked_worked_before = t.get(a, devices["A"][0], t.token_revoked).status_code == 200
    stack.cli("token", "revoke", t.token_revoked)
    return t


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Exactly the contract's error body: nothing else, so no data of another tenant."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str), body
    assert isinstance(body["error"]["details"], dict), body
    return dict(body)


def assert_nothing_of_b(t: Tenants, response: httpx.Response) -> None:
    """B's client id and the names of B's users appear nowhere in the answer."""
    text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    assert t.b not in text, text
    assert f"{t.b[:8]}-user" not in text, text


# --- 403: A's token on B's client path ------------------------------------------------------


@pytest.mark.parametrize("device_of", ["B", "A", "nobody"])
@pytest.mark.parametrize("metric", METRICS)
def test_token_of_a_gets_403_on_the_path_of_b(
    tenants: Tenants, device_of: str, metric: Metric
) -> None:
    t = tenants
    device = t.devices[device_of][0] if device_of in t.devices else str(uuid.uuid4())
    response = t.get(t.b, device, t.token_a, metric)
    assert_error(response, 403, "forbidden")
    # The same answer whatever the device: a 403 does not reveal what B owns.
    random_device = t.get(t.b, str(uuid.uuid4()), t.token_a, metric)
    assert response.json() == random_device.json()


def test_token_of_a_gets_403_on_the_path_of_b_in_upper_case(tenants: Tenants) -> None:
    t = tenants
    response = t.get(t.b.upper(), t.devices["B"][0].upper(), t.token_a)
    assert_error(response, 403, "forbidden")


def test_token_of_b_gets_403_on_the_path_of_a(tenants: Tenants) -> None:
    t = tenants
    for device in t.devices["A"]:
        assert_error(t.get(t.a, device, t.token_b), 403, "forbidden")


# --- 404: B's device under A's path -----------------------------------------------------------


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("metric", METRICS)
def test_device_of_b_under_the_path_of_a_is_404_and_tells_nothing(
    tenants: Tenants, metric: Metric, granularity: Granularity
) -> None:
    t = tenants
    for device in t.devices["B"]:
        for token in (t.token_a, t.token_ab, t.token_all):
            response = t.get(t.a, device, token, metric, granularity)
            body = assert_error(response, 404, "not_found")
            assert_nothing_of_b(t, response)
            # Answered as for a device nobody owns: the body cannot tell that B owns it.
            unknown = str(uuid.uuid4())
            other = t.get(t.a, unknown, token, metric, granularity)
            assert other.status_code == 404
            assert json_with(other.json(), unknown, device) == body


def json_with(body: Any, old: str, new: str) -> Any:
    """``body`` with every occurrence of ``old`` in its strings replaced by ``new``."""
    if isinstance(body, dict):
        return {k: json_with(v, old, new) for k, v in body.items()}
    if isinstance(body, list):
        return [json_with(v, old, new) for v in body]
    return body.replace(old, new) if isinstance(body, str) else body


def test_device_of_b_in_upper_case_under_the_path_of_a_is_404(tenants: Tenants) -> None:
    t = tenants
    response = t.get(t.a, t.devices["B"][0].upper(), t.token_a, "user-count")
    assert_error(response, 404, "not_found")
    assert_nothing_of_b(t, response)


# --- who reads what ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_token_of_a_reads_exactly_the_devices_of_a(tenants: Tenants, metric: Metric) -> None:
    t = tenants
    for key in t.keys("A"):
        for granularity in GRANULARITIES:
            response = t.get(*key, t.token_a, metric, granularity)
            assert response.status_code == 200, response.text
            assert response.json() == t.body(key, metric, granularity)
            assert_nothing_of_b(t, response)


@pytest.mark.parametrize("token_name", ["token_ab", "token_all"])
def test_token_for_a_and_b_or_all_clients_reads_both(tenants: Tenants, token_name: str) -> None:
    t = tenants
    token = getattr(t, token_name)
    for key in t.keys("A") + t.keys("B"):
        for metric in METRICS:
            response = t.get(*key, token, metric, "weekly")
            assert response.status_code == 200, (key, response.text)
            assert response.json() == t.body(key, metric, "weekly")


def test_revoked_token_reads_nothing(tenants: Tenants) -> None:
    t = tenants
    assert t.revoked_worked_before, "the token did not work before it was revoked"
    for client, device in t.keys("A") + t.keys("B"):
        response = t.get(client, device, t.token_revoked)
        assert_error(response, 401, "unauthorized")
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_heartbeat_of_a_naming_a_device_of_b_does_not_give_it_to_a(tenants: Tenants) -> None:
    t = tenants
    device = t.devices["B"][1]
    claim = {
        "client_id": t.a,
        "device_id": device,
        "user_id": "claimer",
        "generated_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_activity_count": 12_345,
    }
    message = heartbeat_message(claim)
    t.stack.produce([message])
    records = t.stack.read_dlq(at_least=1, timeout_s=DLQ_TIMEOUT_S)
    found = [r for r in records if r.value == message.value]
    assert len(found) == 1, [r.value for r in records]
    assert dict(found[0].headers).get("reason") == b"device_client_mismatch"
    assert_error(t.get(t.a, device, t.token_a), 404, "not_found")
    for metric in METRICS:
        response = t.get(t.b, device, t.token_b, metric)
        assert response.status_code == 200, response.text
        assert response.json() == t.body((t.b, device), metric, "daily")
