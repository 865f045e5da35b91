"""docs/operations.md, dead letters: the operators' screens print what comes from outside
literally, on a real worker, Kafka and Redis, through the real `devact` commands.

Heartbeats whose device ids are rich markup, a link or an ANSI escape go through the worker to
the dead-letter topic (the reason's detail quotes the id); one more dead letter is written
straight into that topic with such headers, as anyone who may write to it could. Then
`devact dlq list`, `devact status` and `devact client list` must exit 0 and show every one of
them as the same characters, control characters as their escapes.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from devtools.services import free_port

from .harness.kafka import heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the screens print what Kafka's dead-letter topic and the registry hold; the commands' "
        "Redis reads run on both backends in test_operations.py"
    ),
)

DLQ_TIMEOUT_S = 90.0
ESC = "\x1b"
HOSTILE_IDS = ["[/x]", "[link=http://evil.example]a[/link]", "[bold]", f"{ESC}[31mred{ESC}[0m"]
HOSTILE_HEADER = f"[/x][link=http://evil.example]a[/link]{ESC}[31m"
SHOWN_HEADER = "[/x][link=http://evil.example]a[/link]\\x1b[31m"
OSC8 = f"{ESC}]8;"
"""How a terminal is told to start a hyperlink."""


@dataclass
class Screens:
    stack: Stack
    client: str
    worker_url: str


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    # Wide enough that no cell wraps, and a colour terminal's escapes, as an operator gets.
    env = {**stack.env, "COLUMNS": "400", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    return subprocess.run([devact_executable(), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def produce_raw_dead_letter(stack: Stack) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            headers = [(name, HOSTILE_HEADER.encode()) for name in ("reason", "detail", "source")]
            await producer.send_and_wait(stack.dlq_topic, b"{}", headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.fixture(scope="module")
def screens(stack: Stack) -> Screens:
    client = str(uuid.uuid4())
    stack.add_client(client, "UTC", name=f"{HOSTILE_HEADER} name")
    port = free_port()
    stack.env["DEVACT_WORKER_METRICS_PORT"] = str(port)
    stack.start()
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    events: list[dict[str, Any]] = [
        {"client_id": client, "device_id": device, "generated_at_utc": at,
         "total_activity_count": 1, "user_id": device}
        for device in HOSTILE_IDS
    ]  # fmt: skip
    stack.produce([heartbeat_message(e) for e in events])
    produce_raw_dead_letter(stack)
    stack.read_dlq(at_least=len(HOSTILE_IDS) + 1, timeout_s=DLQ_TIMEOUT_S)
    return Screens(stack, client, f"http://127.0.0.1:{port}")


def assert_nothing_reached_the_terminal_raw(stdout: str) -> None:
    assert OSC8 not in stdout
    for text in [HOSTILE_HEADER, *HOSTILE_IDS[3:]]:
        assert text not in stdout  # the ANSI escape arrives as text only


def test_dlq_list_shows_hostile_ids_and_headers_as_text(screens: Screens) -> None:
    done = run_cli(screens.stack, "dlq", "list")
    assert done.returncode == 0, done.stderr
    for device in HOSTILE_IDS[:3]:
        assert f"device_id: not a UUID: '{device}'" in done.stdout
    assert "device_id: not a UUID: '\\x1b[31mred\\x1b[0m'" in done.stdout
    assert done.stdout.count(SHOWN_HEADER) == 3  # reason, detail and source of the raw one
    assert_nothing_reached_the_terminal_raw(done.stdout)
    assert done.stdout.rstrip().endswith(f"{len(HOSTILE_IDS) + 1} of {len(HOSTILE_IDS) + 1} "
                                         "dead letters")  # fmt: skip


def test_status_shows_a_hostile_reason_as_text(screens: Screens) -> None:
    stack = screens.stack
    done = run_cli(stack, "status", "--api", stack.base_url, "--worker", screens.worker_url)
    assert done.returncode == 0, done.stderr
    assert f"dead letters: {len(HOSTILE_IDS) + 1} (" in done.stdout
    assert f"{SHOWN_HEADER} 1" in done.stdout
    assert f"invalid_field {len(HOSTILE_IDS)}" in done.stdout
    assert_nothing_reached_the_terminal_raw(done.stdout)


def test_client_list_shows_a_hostile_name_as_text(screens: Screens) -> None:
    done = run_cli(screens.stack, "client", "list")
    assert done.returncode == 0, done.stderr
    assert f"{screens.client}\tUTC\t{SHOWN_HEADER} name\t0 devices" in done.stdout.splitlines()
    assert_nothing_reached_the_terminal_raw(done.stdout)
