"""A dead letter counts once whatever an operator does next (docs/events.md, "Verdicts that do
not change with the clock"), on a real worker, API, Kafka and Redis, and the real `devact`.

One timeline, as an operator would live it, with a worker that keeps 2 days at first:
1. Heartbeats are refused: A and B lie 24 h and a few seconds ahead of the time Kafka received
   them (``event_in_future``), C and D are older than the retention (``event_too_old``). E is
   sent by a producer whose clock is 3 days fast, with a record time to match: the broker
   stamps the record itself (the topic uses ``LogAppendTime``), so E is in the future too.
2. Replay then redrive: once A's time is less than 24 h ahead and the retention is raised to 30
   days, `devact replay` (which would now accept A and C as new) and then `devact dlq redrive`:
   A and C count once.
3. Redrive then rebuild: B and D are refused, the retention raised to 60 days, B and D sent back
   and counted; then Redis is rebuilt into an empty Redis twice, by the worker's gap repair and by
   `devact replay`: each of A to D counts once, E not at all.

The expected counts are the heartbeats' own; the day each counts on is worked out here from
its generated_at_utc (the client is in UTC).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from devtools.services import free_port
from devtools.services.redis import RedisServer
from stream.app import ensure_topics
from stream.settings import WorkerSettings
from stream.topics import timestamp_type
from tests.integration.harness.kafka import TOPIC_PARTITIONS, encode, heartbeat_message
from tests.integration.harness.stack import Stack
from tests.integration.harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the verdicts are decided from Kafka's record times and the retention, before the "
        "store; its rebuilds go into empty Redis servers of its own"
    ),
)

CLIENT = "5e6f7a8b-0000-4000-8000-00000000c11e"
TIMEOUT_S = 120.0
LEAD_S = 5.0
"""How far past 24 h ahead of its record the future heartbeats lie: the test waits this long
for them to be less than 24 h ahead of the clock."""
COUNT_FUTURE, COUNT_OLD = 7, 5


@dataclass
class Heartbeat:
    device: str
    at: datetime
    count: int
    reason: str

    @property
    def event(self) -> dict[str, Any]:
        return {
            "client_id": CLIENT,
            "device_id": self.device,
            "user_id": "u-1",
            "generated_at_utc": self.at.isoformat().replace("+00:00", "Z"),
            "total_activity_count": self.count,
        }

    @property
    def day(self) -> date:
        return self.at.date()


@dataclass
class Timeline:
    stack: Stack
    tmp: Path
    token: str = ""
    beats: dict[str, Heartbeat] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    """What each step printed, for the report."""

    def future(self, name: str) -> Heartbeat:
        at = datetime.now(UTC) + timedelta(hours=24, seconds=LEAD_S)
        beat = self.beats[name] = Heartbeat(str(uuid.uuid4()), at, COUNT_FUTURE, "event_in_future")
        return beat

    def old(self, name: str, days: int) -> Heartbeat:
        at = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        beat = Heartbeat(str(uuid.uuid4()), at - timedelta(days=days), COUNT_OLD, "event_too_old")
        self.beats[name] = beat
        return beat

    def counted(self, name: str) -> int:
        """The activity of ``name``'s day, as the API answers it (0: a device never counted)."""
        beat = self.beats[name]
        response = self.stack.activity(
            CLIENT, beat.device, self.token, metric="activity-count",
            start_date=beat.day.isoformat(), end_date=beat.day.isoformat(),
        )  # fmt: skip
        if response.status_code == 404 and response.json()["error"]["code"] == "not_found":
            return 0
        assert response.status_code == 200, response.text
        return sum(int(p["value"]) for p in response.json()["data"])

    def restart_worker(self, **env: str) -> None:
        self.stack.stop_process("worker")
        self.stack.env.update({f"DEVACT_{k.upper()}": v for k, v in env.items()})
        self.stack.start_worker()


def dead_letters(stack: Stack, at_least: int) -> dict[str, str]:
    """Reason of each dead letter, by device."""
    records = stack.read_dlq(at_least=at_least, timeout_s=TIMEOUT_S)
    found = {}
    for r in records:
        headers = dict(r.headers)
        found[json.loads(r.value)["device_id"]] = headers["reason"].decode()
    return found


def wait_until_clock_passes(moment: datetime) -> None:
    poll_until(lambda: datetime.now(UTC) > moment or None, timeout_s=LEAD_S + 30,
               what=f"the clock past {moment.isoformat()}")  # fmt: skip


def wait_applied(stack: Stack, since: dict[int, int]) -> int:
    """Until the worker has applied every message produced after the end offsets ``since``;
    returns how many there were. (A redrive's transaction ends with a marker that takes an
    offset of its own: the messages are read, not counted from the end offsets.)"""
    from tests.integration.test_operations import end_offsets, read_range

    offsets: dict[int, int] = {}
    for record in read_range(stack, since, end_offsets(stack)):
        offsets[record.partition] = max(offsets.get(record.partition, -1), record.offset)

    def done() -> bool | None:
        applied = stack.applied_positions(TOPIC_PARTITIONS)
        return all((applied[p] if applied[p] is not None else -1) >= o
                   for p, o in offsets.items()) or None  # fmt: skip

    stack.wait_for(
        done, timeout_s=TIMEOUT_S, what=f"the worker applied up to {offsets}",
        progress=lambda: f"applied: {stack.applied_positions(TOPIC_PARTITIONS)}",
    )  # fmt: skip
    return len(offsets)


def end_offsets(stack: Stack) -> dict[int, int]:
    from tests.integration.test_operations import end_offsets as read

    return read(stack)


def produce_with_clock(stack: Stack, event: dict[str, Any], at: datetime) -> None:
    """Produce ``event`` with a record time (CreateTime) of ``at``: a producer whose clock is
    wrong."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            key, stamp = event["device_id"].encode(), int(at.timestamp() * 1000)
            await producer.send_and_wait(stack.topic, encode(event), key=key, timestamp_ms=stamp)
        finally:
            await producer.stop()

    asyncio.run(send())


def topic_timestamp_type(stack: Stack, topic: str) -> str | None:
    async def read() -> str | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            return await timestamp_type(admin, topic)
        finally:
            await admin.close()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def timeline(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Timeline:
    stack.env["DEVACT_RETENTION_DAYS"] = "2"
    stack.start()  # topics stamped by the broker, as the worker creates them
    stack.add_client(CLIENT, "UTC")
    return Timeline(stack, tmp_path_factory.mktemp("verdicts"), stack.create_token(CLIENT))


@pytest.fixture(scope="module")
def refused(timeline: Timeline) -> Timeline:
    """Step 1: A, C and E refused on their first reading."""
    stack = timeline.stack
    a, c = timeline.future("A"), timeline.old("C", days=5)
    fast = datetime.now(UTC) + timedelta(days=3)
    e = timeline.beats["E"] = Heartbeat(str(uuid.uuid4()), fast - timedelta(days=1),
                                        COUNT_FUTURE, "event_in_future")  # fmt: skip
    stack.produce([heartbeat_message(a.event), heartbeat_message(c.event)])
    produce_with_clock(stack, e.event, fast)
    found = dead_letters(stack, at_least=3)
    assert found == {b.device: b.reason for b in (a, c, e)}
    return timeline


def test_the_worker_creates_topics_stamped_by_the_broker(refused: Timeline) -> None:
    stack = refused.stack
    suffix = uuid.uuid4().hex
    settings = WorkerSettings(
        kafka_bootstrap=stack.kafka_bootstrap, topic=f"created-{suffix}",
        dlq_topic=f"created-{suffix}.dlq",
    )  # fmt: skip
    asyncio.run(ensure_topics(settings))
    assert topic_timestamp_type(stack, settings.topic) == "LogAppendTime"
    assert topic_timestamp_type(stack, settings.dlq_topic) == "LogAppendTime"


def test_a_producers_fast_clock_does_not_move_the_future_limit(refused: Timeline) -> None:
    assert refused.counted("E") == 0


@pytest.fixture(scope="module")
def replayed_then_redriven(refused: Timeline) -> Timeline:
    """Step 2: replay, then redrive, with A less than 24 h ahead and a retention of 30 days."""
    t, stack = refused, refused.stack
    wait_until_clock_passes(t.beats["A"].at - timedelta(hours=24))
    t.restart_worker(retention_days="30")
    t.figures["replay"] = stack.cli("replay").strip().splitlines()[-1]
    t.figures["after replay"] = {n: t.counted(n) for n in ("A", "C")}
    before = end_offsets(stack)
    t.figures["redrive"] = stack.cli("dlq", "redrive").strip()
    wait_applied(stack, before)
    t.figures["after redrive"] = {n: t.counted(n) for n in ("A", "C")}
    return t


def test_a_replay_leaves_alone_what_was_refused_before(replayed_then_redriven: Timeline) -> None:
    t = replayed_then_redriven
    assert t.figures["after replay"] == {"A": 0, "C": 0}, t.figures
    assert "0 events applied" in t.figures["replay"], t.figures
    assert "3 refused before" in t.figures["replay"], t.figures


def test_replay_then_redrive_counts_each_dead_letter_once(replayed_then_redriven: Timeline) -> None:
    t = replayed_then_redriven
    assert t.figures["redrive"].startswith("sent 3 events back"), t.figures  # A, C and E
    assert t.figures["after redrive"] == {"A": COUNT_FUTURE, "C": COUNT_OLD}, t.figures
    assert t.counted("E") == 0  # sent back, and still too far ahead of its new record


@pytest.fixture(scope="module")
def redriven(replayed_then_redriven: Timeline) -> Timeline:
    """Step 3, first half: B and D refused, the retention raised to 60 days, both sent back."""
    t, stack = replayed_then_redriven, replayed_then_redriven.stack
    b, d = t.future("B"), t.old("D", days=40)
    stack.produce([heartbeat_message(b.event), heartbeat_message(d.event)])
    found = dead_letters(stack, at_least=6)
    assert (found[b.device], found[d.device]) == ("event_in_future", "event_too_old")
    wait_until_clock_passes(b.at - timedelta(hours=24))
    t.restart_worker(retention_days="60")
    before = end_offsets(stack)
    t.figures["second redrive"] = stack.cli("dlq", "redrive").strip()
    wait_applied(stack, before)
    t.figures["after second redrive"] = {n: t.counted(n) for n in "ABCD"}
    return t


def test_a_second_redrive_sends_back_only_the_new_dead_letters(redriven: Timeline) -> None:
    # B and D, and E again: refused once more at its new offset, so a dead letter of its own.
    assert redriven.figures["second redrive"].startswith("sent 3 events back"), redriven.figures
    want = {"A": COUNT_FUTURE, "B": COUNT_FUTURE, "C": COUNT_OLD, "D": COUNT_OLD}
    assert redriven.figures["after second redrive"] == want, redriven.figures


def rebuild_on(t: Timeline, server: RedisServer) -> None:
    """Point the worker and the API at ``server``, with the client registered there."""
    t.stack.env["DEVACT_REDIS_URL"] = server.url
    t.stack.add_client(CLIENT, "UTC")
    t.token = t.stack.create_token(CLIENT)
    t.stack.restart_api()


@pytest.fixture(scope="module")
def empty_redis(redriven: Timeline) -> Iterator[list[RedisServer]]:
    servers: list[RedisServer] = []
    yield servers
    for server in servers:
        server.stop()


def new_redis(t: Timeline, servers: list[RedisServer], name: str) -> RedisServer:
    server = RedisServer(t.tmp / name, free_port())
    server.start()
    servers.append(server)
    return server


def test_a_rebuild_by_the_gap_repair_counts_each_heartbeat_once(
    redriven: Timeline, empty_redis: list[RedisServer]
) -> None:
    """The worker on an empty Redis: its next batch of each partition finds nothing applied
    before it, and it reads the partition again from the start."""
    t, stack = redriven, redriven.stack
    stack.stop_process("worker")
    rebuild_on(t, new_redis(t, empty_redis, "gap-repair"))
    stack.start_worker()
    before = end_offsets(stack)
    nudges = [heartbeat_message({**t.beats[n].event, "generated_at_utc": _now(),
                                 "total_activity_count": 1}) for n in "ABCDE"]  # fmt: skip
    stack.produce(nudges)
    wait_applied(stack, before)
    got = {n: t.counted(n) for n in "ABCDE"}
    t.figures["after a rebuild by the gap repair"] = got
    assert got == {"A": COUNT_FUTURE, "B": COUNT_FUTURE, "C": COUNT_OLD, "D": COUNT_OLD, "E": 0}


def test_a_rebuild_by_replay_counts_each_heartbeat_once(
    redriven: Timeline, empty_redis: list[RedisServer]
) -> None:
    t, stack = redriven, redriven.stack
    stack.stop_process("worker")
    rebuild_on(t, new_redis(t, empty_redis, "replay"))
    t.figures["rebuild replay"] = stack.cli("replay").strip().splitlines()[-1]
    got = {n: t.counted(n) for n in "ABCDE"}
    t.figures["after a rebuild by replay"] = got
    assert got == {"A": COUNT_FUTURE, "B": COUNT_FUTURE, "C": COUNT_OLD, "D": COUNT_OLD, "E": 0}
    stack.start_worker()  # the stack's teardown stops it with the others
    print("\nfigures:", json.dumps(t.figures, indent=1))


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
