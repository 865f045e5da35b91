"""Clients managed with `devact client add` (DEVACT_UNKNOWN_CLIENTS=dead_letter, docs/events.md):
a heartbeat of a client nobody registered goes to the dead-letter topic as ``unknown_client``,
with its original bytes, and registers nothing; a registered client's heartbeats around it are
counted as always. (The default, registering unknown clients, is the rest of the suite's.)"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .harness.kafka import heartbeat_message
from .harness.stack import Stack

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the unknown-client rule is the worker's, decided before a batch is written; the "
        "registry it reads runs on both backends in test_tenancy.py"
    ),
)

TIMEOUT_S = 90.0


def event(client: str, device: str, count: int) -> dict[str, Any]:
    return {
        "client_id": client,
        "device_id": device,
        "user_id": "u-1",
        "generated_at_utc": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "total_activity_count": count,
    }


def test_a_heartbeat_of_an_unregistered_client_is_dead_lettered_and_registers_nothing(
    stack: Stack,
) -> None:
    stack.env["DEVACT_UNKNOWN_CLIENTS"] = "dead_letter"
    known, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    device, foreign_device = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(known, "UTC", "managed")
    stack.start()
    refused = heartbeat_message(event(stranger, foreign_device, 5))
    stack.produce(
        [
            heartbeat_message(event(known, device, 3)),
            refused,
            heartbeat_message(event(known, device, 4)),
        ]
    )
    token = stack.create_token(all_clients=True)
    today = datetime.now(UTC).date()

    def counted() -> int | None:
        points = stack.series((known, device), token, "activity-count", today, today)
        return points[0]["value"] if points and points[0]["value"] == 7 else None

    assert stack.wait_for(counted, timeout_s=TIMEOUT_S, what="the known client's 7") == 7
    records = stack.read_dlq(at_least=1, timeout_s=TIMEOUT_S)
    assert len(records) == 1, records
    headers = {k: v.decode() for k, v in records[0].headers}
    assert headers["reason"] == "unknown_client"
    assert headers["field"] == "client_id"
    assert records[0].value == refused.value
    clients = stack.http.get("/v2/clients", headers={"Authorization": f"Bearer {token}"}).json()
    listed = {c["client_id"] for c in clients["clients"]}
    assert known in listed
    assert stranger not in listed
    lines = stack.cli("client", "list", "--json").splitlines()  # one JSON object a line
    registered = {json.loads(line)["client_id"] for line in lines}
    assert known in registered
    assert stranger not in registered
