"""Authentication first (docs/api.md, "Limits and hostile input"): a request with an unknown token,
or with a token of another client, is refused before anything is read. Redis's own count of
the commands it ran (``INFO commandstats``) moves by the token lookup at most, whatever the
target holds; and ``GET /v2/clients`` reads the token's own clients, not the registry.

Client A owns ``DEVICES`` devices counted through the real worker, so that a read of A would
show; the worker is then stopped, so that every command counted comes from the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from state.registry import Registry

from .commandstats import command_calls, ran_between
from .harness.kafka import heartbeat_message
from .harness.stack import Stack
from .harness.store import run_with_redis

pytestmark = pytest.mark.backends("redis", "cluster")

DEVICES = 40
OTHER_CLIENTS = 60
COUNT_TIMEOUT_S = 90.0
TRIES = 10


@dataclass
class Fleet:
    stack: Stack
    a: str
    b: str
    device: str
    token_a: str
    token_b: str
    first: date
    last: date

    def routes(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Every route that reads a client, with a 90-day query of client A."""
        users = {
            "metric": "user-count",
            "start_date": self.first.isoformat(),
            "end_date": self.last.isoformat(),
        }
        client = f"/v2/clients/{self.a}/analytics"
        device = f"{client}/devices/{self.device}/activity"
        return {
            "device series": (device, {**users, "compare": "previous_period"}),
            "client series": (f"{client}/activity", users),
            "ranking": (f"{client}/devices", {**users, "limit": "1000"}),
            "live": (f"{device}/live", {"metric": "activity-count"}),
        }

    def get(self, path: str, query: dict[str, str], token: str) -> int:
        response = self.stack.http.get(
            path, params=query, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code


@pytest.fixture(scope="module")
def fleet(stack: Stack, services: Any) -> Fleet:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(a, "UTC", "big")
    stack.add_client(b, "UTC", "small")

    async def register_others(redis: Redis) -> None:
        # A registry that the old GET /v2/clients read whole for every token.
        for _ in range(OTHER_CLIENTS):
            await Registry(redis).add_client(str(uuid.uuid4()), "UTC", "other", datetime.now(UTC))

    run_with_redis(services, register_others)
    stack.start()
    now = datetime.now(UTC)
    devices = [str(uuid.uuid4()) for _ in range(DEVICES)]
    stack.produce(
        [
            heartbeat_message(
                {
                    "client_id": a,
                    "device_id": device,
                    "user_id": f"user-{n % 7}",
                    "generated_at_utc": (now - timedelta(hours=n)).isoformat(),
                    "total_activity_count": n + 1,
                }
            )
            for device in devices
            for n in range(3)
        ]
    )
    token_a, token_b = stack.create_token(a), stack.create_token(b)
    found = Fleet(
        stack, a, b, devices[0], token_a, token_b, now.date() - timedelta(days=89), now.date()
    )

    def counted() -> bool | None:
        path, query = found.routes()["ranking"]
        response = stack.http.get(
            path, params=query, headers={"Authorization": f"Bearer {token_a}"}
        )
        return (
            True
            if response.status_code == 200 and response.json()["total_devices"] == DEVICES
            else None
        )

    stack.wait_for(
        counted, timeout_s=COUNT_TIMEOUT_S, what=f"{DEVICES} devices of client A counted"
    )
    stack.stop_process("worker")  # from here on, every command Redis runs is the API's
    return found


def test_an_unknown_token_costs_the_token_lookup_alone_on_every_route(fleet: Fleet) -> None:
    redis_url = fleet.stack.env["DEVACT_REDIS_URL"]
    before = command_calls(redis_url)
    tokens = 0
    for name, (path, query) in fleet.routes().items():
        repeated = f"da_made_up_{uuid.uuid4().hex}"
        for n in range(TRIES):
            token = repeated if n % 2 else f"da_made_up_{uuid.uuid4().hex}"
            assert fleet.get(path, query, token) == 401, name
        tokens += TRIES // 2 + 1
    ran = ran_between(before, command_calls(redis_url))
    assert set(ran) <= {"hgetall"}, ran
    assert ran.get("hgetall", 0) <= tokens, ran


def test_a_token_of_another_client_costs_the_token_lookup_alone(fleet: Fleet) -> None:
    redis_url = fleet.stack.env["DEVACT_REDIS_URL"]
    before = command_calls(redis_url)
    for name, (path, query) in fleet.routes().items():
        for _ in range(TRIES):
            assert fleet.get(path, query, fleet.token_b) == 403, name
    ran = ran_between(before, command_calls(redis_url))
    # One lookup at most: the grant is remembered for DEVACT_AUTH_CACHE_S.
    assert set(ran) <= {"hgetall"}, ran
    assert ran.get("hgetall", 0) <= 1, ran


def test_a_valid_request_still_reads_its_client(fleet: Fleet) -> None:
    """The control of the two tests above: the same routes with A's token do read A."""
    redis_url = fleet.stack.env["DEVACT_REDIS_URL"]
    routes = fleet.routes()
    del routes["live"]  # a stream that stays open: test_crowds.py
    before = command_calls(redis_url)
    for name, (path, query) in routes.items():
        assert fleet.get(path, query, fleet.token_a) == 200, name
    ran = ran_between(before, command_calls(redis_url))
    assert ran.get("evalsha", 0) >= 2, ran  # the device's and the client's series scripts
    assert ran.get("hvals", 0) >= 1, ran  # the ranking's device-users of a month


def test_the_clients_route_reads_only_the_tokens_own_clients(fleet: Fleet) -> None:
    redis_url = fleet.stack.env["DEVACT_REDIS_URL"]
    before = command_calls(redis_url)
    response = fleet.stack.http.get(
        "/v2/clients", headers={"Authorization": f"Bearer {fleet.token_a}"}
    )
    ran = ran_between(before, command_calls(redis_url))
    assert response.status_code == 200
    assert [c["client_id"] for c in response.json()["clients"]] == [fleet.a]
    assert "smembers" not in ran, ran  # the registry of every client is not read
    assert ran.get("hgetall", 0) <= 2, ran  # the token (when not remembered) and client A
    assert ran.get("scard", 0) == 1, ran  # A's device count
