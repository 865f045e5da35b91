"""Devices change hands on purpose only (docs/security.md), on a real worker, API, Kafka, Redis
and `devact`: a wrong first claim is fixed with `devact device move`, the heartbeats refused
meanwhile are sent back and counted for the new owner, and the previous owner loses access.

Client A claims device D first (by mistake: D is B's). B's heartbeats for D are refused as
``device_client_mismatch``. The operator moves D to B and sends those dead letters back.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .harness.kafka import heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack
from .harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "a move is three single-key commands, routed on a cluster as any other; a second run is"
        " not worth its share of the suite's time budget"
    ),
)

TIMEOUT_S = 90.0


@dataclass
class Fleet:
    stack: Stack
    a: str
    b: str
    device: str
    token_a: str
    token_b: str
    day: str

    def beat(self, client: str, count: int) -> Any:
        return heartbeat_message({
            "client_id": client, "device_id": self.device, "user_id": "u-1",
            "generated_at_utc": f"{self.day}T10:00:00Z", "total_activity_count": count,
        })  # fmt: skip

    def activity(self, client: str, token: str) -> int | None:
        """The device's activity on the day, read with ``client``'s token (None: refused)."""
        response = self.stack.activity(client, self.device, token, metric="activity-count",
                                       start_date=self.day, end_date=self.day)  # fmt: skip
        if response.status_code != 200:
            return None
        return sum(int(p["value"]) for p in response.json()["data"])


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([devact_executable(), *args], env=stack.env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def mismatches(stack: Stack, at_least: int) -> int:
    records = stack.read_dlq(at_least=at_least, timeout_s=TIMEOUT_S)
    return sum(dict(r.headers)["reason"] == b"device_client_mismatch" for r in records)


@pytest.fixture(scope="module")
def fleet(stack: Stack) -> Fleet:
    a, b, device = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(a, "UTC", name="claimed first")
    stack.add_client(b, "UTC", name="real owner")
    stack.start()
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    f = Fleet(stack, a, b, device, stack.create_token(a), stack.create_token(b), day)
    stack.produce([f.beat(a, 3)])
    poll_until(lambda: f.activity(a, f.token_a) == 3 or None, timeout_s=TIMEOUT_S,
               what="A's claim counted")  # fmt: skip
    stack.produce([f.beat(b, 5), f.beat(b, 7)])
    assert mismatches(stack, at_least=2) == 2
    return f


def test_show_names_the_owner(fleet: Fleet) -> None:
    done = run(fleet.stack, "device", "show", fleet.device)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"device {fleet.device} belongs to client {fleet.a} "
                                  "(claimed first)")  # fmt: skip


def test_moving_to_an_unknown_client_or_an_unknown_device_is_refused(fleet: Fleet) -> None:
    stranger = str(uuid.uuid4())
    done = run(fleet.stack, "device", "move", fleet.device, "--to", stranger)
    assert done.returncode == 2
    assert f"client {stranger} is not registered" in done.stderr
    nobody = str(uuid.uuid4())
    done = run(fleet.stack, "device", "move", nobody, "--to", fleet.b)
    assert done.returncode == 2
    assert f"device {nobody} was never counted" in done.stderr
    assert run(fleet.stack, "device", "move", "not-a-uuid", "--to", fleet.b).returncode == 2
    shown = run(fleet.stack, "device", "show", fleet.device)
    assert f"belongs to client {fleet.a}" in shown.stdout


@pytest.fixture(scope="module")
def moved(fleet: Fleet) -> Fleet:
    done = run(fleet.stack, "device", "move", fleet.device, "--to", fleet.b)
    assert done.returncode == 0, done.stderr
    assert f"moved from client {fleet.a} to client {fleet.b}" in done.stdout
    redrive = run(fleet.stack, "dlq", "redrive", "--reason", "device_client_mismatch")
    assert redrive.returncode == 0, redrive.stderr
    assert redrive.stdout.startswith("sent 2 events back"), redrive.stdout
    return fleet


def test_the_new_owner_reads_the_history_and_the_refused_heartbeats(moved: Fleet) -> None:
    poll_until(lambda: moved.activity(moved.b, moved.token_b) == 3 + 5 + 7 or None,
               timeout_s=TIMEOUT_S, what="B's heartbeats counted on D after the move")  # fmt: skip


def test_the_previous_owner_no_longer_reads_it_nor_counts_on_it(moved: Fleet) -> None:
    assert moved.activity(moved.a, moved.token_a) is None
    moved.stack.produce([moved.beat(moved.a, 11)])
    assert mismatches(moved.stack, at_least=3) == 3  # A's heartbeat is refused now
    assert moved.activity(moved.b, moved.token_b) == 15


def test_show_names_the_new_owner_and_the_device_is_in_its_fleet(moved: Fleet) -> None:
    shown = run(moved.stack, "device", "show", moved.device, "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"client_id":"' + moved.b + '"' in shown.stdout
    assert '"listed":true' in shown.stdout
    ranking = moved.stack.http.get(
        f"/v2/clients/{moved.b}/analytics/devices",
        params={"metric": "activity-count", "start_date": moved.day, "end_date": moved.day},
        headers={"Authorization": f"Bearer {moved.token_b}"},
    )
    assert ranking.status_code == 200, ranking.text
    assert moved.device in ranking.text
    again = run(moved.stack, "device", "move", moved.device, "--to", moved.b)
    assert again.returncode == 0
    assert "already belongs" in again.stdout
