"""One hostile message neither stalls its partition nor silences the worker (issue: "the service
holds under crowds and hostile input"; docs/events.md, "How large a message may be").

Found on main before the fix: a 400 KB message holding an array of 200,000 invalid elements,
then a valid heartbeat behind it on the same partition. The heartbeat was not counted within
30 s: each rejected element's original bytes were found by scanning the message again from its
start (an hour for this one), on the event loop, so /healthz and Kafka's heartbeats stopped too.

Here, on a real worker, Kafka and Redis: each message is followed on its partition by a valid
heartbeat, which must be counted within seconds (read back through the API), while a thread
asks the worker's /healthz all along and every answer must come within the probe's timeout.
Expected dead letters are worked out here from the message built here.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from devtools.services import free_port
from stream.model import MAX_MESSAGE_ELEMENTS

from .harness.kafka import TOPIC_PARTITIONS, Message, heartbeat_message
from .harness.output import show
from .harness.stack import Stack
from .harness.waiting import READY_TIMEOUT_S
from .oracle import METRICS, Oracle

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "a hostile message is judged while it is decoded, before any write; the counting of the"
        " heartbeat behind it runs on both backends in test_pipeline.py"
    ),
)

ZONE = "Europe/Paris"
COUNT_TIMEOUT_S = 30.0
"""How long the heartbeat behind a hostile message may take to be counted: on main it was not
counted in 30 s, and would have been after about an hour."""
DLQ_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 2.0
"""How long one /healthz request may take: the worker hands its loop back every 10 ms, and a
probe (Kubernetes' default timeout is 1 s) that waits longer would count the worker dead."""
OVER_THE_CAP = 200_000


@dataclass
class HealthProbe:
    """A thread that asks /healthz again and again until stopped, and keeps every answer."""

    url: str
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    """(seconds it took, the status code or the error's name), in order."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=HEALTH_TIMEOUT_S) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer: int | str = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                self.answers.append((time.monotonic() - started, answer))
                self._stop.wait(0.02)  # the pace of the probe, not a wait for anything

    def failures(self) -> list[tuple[float, int | str]]:
        return [(took, answer) for took, answer in self.answers if answer != 200]

    def slowest(self) -> float:
        return max(took for took, _ in self.answers)


@contextlib.contextmanager
def probing(port: int) -> Iterator[HealthProbe]:
    probe = HealthProbe(f"http://127.0.0.1:{port}/healthz")
    thread = threading.Thread(target=probe.run, name="healthz probe", daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        probe._stop.set()
        thread.join(timeout=HEALTH_TIMEOUT_S * 2)


@dataclass
class Hostile:
    stack: Stack
    port: int
    client: str
    token: str


@pytest.fixture(scope="module")
def hostile(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A stack of the module's own, its worker's /healthz on a port known here."""
    stack = Stack(services, tmp_path_factory.mktemp("hostile"))
    port = free_port()
    stack.env["DEVACT_WORKER_METRICS_PORT"] = str(port)
    client = str(uuid.uuid4())
    stack.add_client(client, ZONE, name="hostile messages")
    stack.start()
    try:
        token = stack.create_token(client)
        stack.wait_for(
            lambda: healthy(port), timeout_s=READY_TIMEOUT_S, what="the worker's /healthz"
        )
        yield Hostile(stack, port, client, token)
    finally:
        crashed = stack.stop()
        assert not crashed, crashed


def healthy(port: int) -> bool | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200 or None
    except httpx.HTTPError:
        return None


def heartbeat(client: str, device: str, user: str, count: int) -> dict[str, Any]:
    instant = datetime.now(UTC) - timedelta(hours=1)
    return {
        "client_id": client,
        "device_id": device,
        "user_id": user,
        "generated_at_utc": instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_activity_count": count,
    }


def partition_of(key: bytes) -> int:
    """Where the producer puts a keyed message (aiokafka's default partitioner)."""
    partitions = list(range(TOPIC_PARTITIONS))
    return int(DefaultPartitioner()(key, partitions, partitions))


def key_elsewhere(key: bytes) -> bytes:
    """A key whose messages go to another partition than ``key``'s."""
    return next(k for k in (uuid.uuid4().hex.encode() for _ in range(1000))
                if partition_of(k) != partition_of(key))  # fmt: skip


def zeros(count: int) -> bytes:
    """A JSON array of ``count`` zeros: ``count`` events, none of them an object."""
    return b"[" + b",".join([b"0"] * count) + b"]"


def wait_until_counted(h: Hostile, event: dict[str, Any]) -> float:
    """Seconds until the API answers with ``event`` counted, exactly as the oracle has it."""
    oracle = Oracle([event], {h.client: ZONE})
    [key] = oracle.devices()
    days = sorted(oracle.local_days(key))
    first, last = days[0] - timedelta(days=1), days[-1] + timedelta(days=1)
    started = time.monotonic()
    seen: list[str] = []

    def counted() -> bool | None:
        for metric in METRICS:
            actual = h.stack.series(key, h.token, metric, first, last)
            if actual != oracle.series(key, first, last, metric, "daily"):
                seen[:] = [f"{metric}: {actual}"]
                return None
        return True

    h.stack.wait_for(counted, timeout_s=COUNT_TIMEOUT_S, what="the heartbeat behind it",
                     progress=lambda: "; ".join(seen))  # fmt: skip
    return time.monotonic() - started


def dead_letters_of(h: Hostile, key: bytes, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The dead-letter topic's records of ``key``, once there are ``count`` of them (a batch's
    dead letters are sent after its heartbeats are applied, so they may come a moment later)."""

    def all_there() -> list[ConsumerRecord[bytes, bytes]] | None:
        records = h.stack.read_dlq(at_least=0, timeout_s=DLQ_TIMEOUT_S)
        found = [r for r in records if r.key == key]
        return found if len(found) >= count else None

    return h.stack.wait_for(all_there, timeout_s=DLQ_TIMEOUT_S, what=f"{count} dead letters")


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def test_an_array_over_the_element_cap_is_one_dead_letter_and_what_follows_goes_on(
    hostile: Hostile, request: pytest.FixtureRequest
) -> None:
    device = str(uuid.uuid4())
    key = device.encode()
    value = zeros(OVER_THE_CAP)
    after = heartbeat(hostile.client, device, "after the array", 3)
    elsewhere = key_elsewhere(key)  # a bad message on another partition, produced after it
    with probing(hostile.port) as probe:
        hostile.stack.produce([Message(value, key), heartbeat_message(after)])
        hostile.stack.produce([Message(b"{", elsewhere)])
        took = wait_until_counted(hostile, after)
        letters = dead_letters_of(hostile, key, 1)
        [broken] = dead_letters_of(hostile, elsewhere, 1)
    show(request, f"\n{len(value):,}-byte array of {OVER_THE_CAP:,} zeros: the heartbeat behind "
                  f"it counted in {took:.1f} s; {len(probe.answers)} /healthz answers, the "
                  f"slowest in {probe.slowest() * 1000:.0f} ms")  # fmt: skip
    assert len(value) < 1024 * 1024  # under the byte cap: it is the element cap that acts
    assert len(letters) == 1, [(headers(r), r.value[:80]) for r in letters]
    [letter] = letters
    assert letter.value == value
    found = headers(letter)
    assert found["reason"] == "message_too_large"
    assert found["source"].startswith(f"{hostile.stack.topic}/")
    assert "element" not in found
    assert (broken.value, headers(broken)["reason"]) == (b"{", "invalid_json")
    assert probe.answers
    assert not probe.failures(), probe.failures()


def test_an_array_at_the_element_cap_is_judged_element_by_element_and_the_worker_answers(
    hostile: Hostile, request: pytest.FixtureRequest
) -> None:
    device = str(uuid.uuid4())
    key = device.encode()
    value = zeros(MAX_MESSAGE_ELEMENTS)
    after = heartbeat(hostile.client, device, "after the array", 5)
    with probing(hostile.port) as probe:
        hostile.stack.produce([Message(value, key), heartbeat_message(after)])
        took = wait_until_counted(hostile, after)
        letters = dead_letters_of(hostile, key, MAX_MESSAGE_ELEMENTS)
    show(request, f"\n{len(value):,}-byte array of {MAX_MESSAGE_ELEMENTS:,} zeros: the heartbeat "
                  f"behind it counted in {took:.1f} s; {len(probe.answers)} /healthz answers, "
                  f"the slowest in {probe.slowest() * 1000:.0f} ms")  # fmt: skip
    assert [r.value for r in letters] == [b"0"] * MAX_MESSAGE_ELEMENTS
    assert Counter(headers(r)["reason"] for r in letters) == {"not_an_object": MAX_MESSAGE_ELEMENTS}
    elements = sorted(int(headers(r)["element"]) for r in letters)
    assert elements == list(range(MAX_MESSAGE_ELEMENTS))
    assert len({headers(r)["source"] for r in letters}) == 1
    assert probe.answers
    assert not probe.failures(), probe.failures()


def test_the_worker_kept_running(hostile: Hostile) -> None:
    hostile.stack.assert_alive()
