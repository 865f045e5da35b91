"""What an operator sees and does, on a real worker, API, Kafka and Redis: the worker's
``/metrics`` against the oracle of a known mix of events, ``devact status``, and the dead-letter
workflow (``devact dlq list`` and ``redrive``, twice).

The mix is test_dlq.py's: valid heartbeats (single and in arrays) and one message for each way
an event can be refused. Then, with the worker stopped, more heartbeats (lag); then the group's
offsets reset to the start (every event again: duplicates, and refusals left alone); then the
worker restarted with a longer retention and the too-old dead letter sent back (counted once,
however often).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from devtools.services import free_port
from state import keys
from state.connection import is_cluster
from state.settings import StoreSettings
from stream.kafka import KafkaConnection
from stream.topics import topic_partitions
from tests.integration.harness.kafka import Message, heartbeat_message
from tests.integration.harness.processes import devact_executable
from tests.integration.harness.stack import Stack
from tests.integration.harness.waiting import poll_until
from tests.integration.oracle import Oracle

from . import test_dlq as mix
from .test_deploy import metric_names_used

pytestmark = pytest.mark.backends("redis", "cluster")

TIMEOUT_S = 120.0
LATER = 25  # heartbeats produced while the worker is stopped

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of the worker's /metrics, by name and labels (none while it starts)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name and v}


def sync_redis(stack: Stack) -> Any:
    """A client of the stack's Redis, or of its cluster (routed by the library)."""
    url = stack.env["DEVACT_REDIS_URL"]
    if is_cluster(StoreSettings(redis_url=url)):
        return redis.RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def lag_is_zero(port: int) -> bool | None:
    lags = [v for (n, _), v in scrape(port).items() if n == "devact_worker_consumer_lag"]
    return (bool(lags) and all(v == 0 for v in lags)) or None


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    wide = {**stack.env, "COLUMNS": "200"}  # tables unwrapped, as on a wide terminal
    return subprocess.run([devact_executable(), *args], env=wide, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def status(stack: Stack, *extra: str) -> tuple[int, dict[str, Any]]:
    worker = f"http://127.0.0.1:{stack.env['DEVACT_WORKER_METRICS_PORT']}"
    done = run_cli(stack, "status", "--json", "--api", stack.base_url, "--worker", worker, *extra)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def stack_kafka(stack: Stack) -> KafkaConnection:
    return KafkaConnection(stack.kafka_bootstrap)


def end_offsets(stack: Stack) -> dict[int, int]:
    async def read() -> dict[int, int]:
        tps = [TopicPartition(stack.topic, p)
               for p in await topic_partitions(stack_kafka(stack), stack.topic)]  # fmt: skip
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
        await consumer.start()
        try:
            return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def reset_group(stack: Stack) -> None:
    """Commit offset 0 on every partition for the worker's group (the worker is stopped)."""

    async def reset() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap,
                                    group_id=stack.app_id, enable_auto_commit=False)  # fmt: skip
        tps = [TopicPartition(stack.topic, p)
               for p in await topic_partitions(stack_kafka(stack), stack.topic)]  # fmt: skip
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
        finally:
            await consumer.stop()

    asyncio.run(reset())


@dataclass
class Observed:
    stack: Stack
    port: int
    scenario: Any
    messages: list[Message]
    valid: int
    reasons: Counter[str]
    first: Samples
    status_code: int
    status: dict[str, Any]
    ends: dict[int, int]


@pytest.fixture(scope="module")
def observed(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    stack = Stack(services, tmp_path_factory.mktemp("operations"))
    port = free_port()
    stack.env["DEVACT_WORKER_METRICS_PORT"] = str(port)
    s = mix.build_scenario()
    stack.add_client(s.x, mix.X_ZONE, name="ops X")
    stack.add_client(s.y, mix.Y_ZONE, name="ops Y")
    stack.start()
    try:
        token = stack.create_token(all_clients=True)
        zones = {s.x: mix.X_ZONE, s.y: mix.Y_ZONE}
        phase1 = [heartbeat_message(e) for e in s.phase1_valid
                  if all(e is not a for a in s.arrayed)]  # fmt: skip
        phase1 += [c.message for n, c in s.cases.items() if n != "device_of_another_client"]
        stack.produce(phase1)
        mix.wait_until_counted(stack, token, Oracle(s.phase1_valid, zones), "phase 1 counted")
        phase2 = [s.cases["device_of_another_client"].message]
        phase2 += [heartbeat_message(e) for e in s.phase2_valid]
        stack.produce(phase2)
        mix.wait_until_counted(stack, token, Oracle(s.phase1_valid + s.phase2_valid, zones),
                               "phase 2 counted")  # fmt: skip
        valid = len(s.phase1_valid) + len(s.phase2_valid)
        reasons = Counter(reason for _, reason, _ in mix.INVALID_CASES)
        poll_until(
            lambda: (value(scrape(port), "devact_worker_events_total", outcome="dead_letter")
                     == len(mix.INVALID_CASES)) or None,
            timeout_s=TIMEOUT_S, what="every dead letter in the worker's metrics",
        )  # fmt: skip
        poll_until(lambda: lag_is_zero(port), timeout_s=TIMEOUT_S,
                   what="the group's lag at 0 once all is applied")  # fmt: skip
        code, found = status(stack)
        yield Observed(stack, port, s, phase1 + phase2, valid, reasons, scrape(port), code, found,
                       end_offsets(stack))  # fmt: skip
    finally:
        stack.stop()


def test_events_are_counted_by_outcome(observed: Observed) -> None:
    first = observed.first
    assert value(first, "devact_worker_events_total", outcome="applied") == observed.valid
    assert value(first, "devact_worker_events_total", outcome="dead_letter") == len(
        mix.INVALID_CASES
    )
    assert value(first, "devact_worker_events_total", outcome="duplicate") == 0
    assert value(first, "devact_worker_events_total", outcome="deferred") == 0


def test_dead_letters_are_counted_by_reason(observed: Observed) -> None:
    found = by_label(observed.first, "devact_worker_dead_letters_total", "reason")
    assert found == dict(observed.reasons)


def test_batch_sizes_add_up_to_what_was_produced(observed: Observed) -> None:
    first = observed.first
    assert value(first, "devact_worker_batch_messages_sum") == len(observed.messages)
    events = observed.valid + len(mix.INVALID_CASES)
    assert value(first, "devact_worker_batch_events_sum") == events
    batches = value(first, "devact_worker_batch_messages_count")
    assert batches >= 2  # two phases, each waited for
    assert value(first, "devact_worker_batch_apply_seconds_count") == batches


def test_event_age_is_observed_once_per_counted_event(observed: Observed) -> None:
    first = observed.first
    assert value(first, "devact_worker_event_age_seconds_count") == observed.valid
    # The event an hour ahead is younger than 0.1 s; the one 380 days old is older than a week.
    assert value(first, "devact_worker_event_age_seconds_bucket", le="0.1") >= 1
    assert value(first, "devact_worker_event_age_seconds_bucket", le="604800.0") < observed.valid


def test_applied_offsets_reach_each_partitions_last_message(observed: Observed) -> None:
    found = {int(dict(k)["partition"]): v for (n, k), v in observed.first.items()
             if n == "devact_worker_applied_offset"}  # fmt: skip
    assert found == {p: end - 1 for p, end in observed.ends.items() if end > 0}


def test_nothing_was_repaired_or_retried_and_redis_is_up(observed: Observed) -> None:
    first = observed.first
    assert value(first, "devact_worker_gap_repairs_total") == 0
    assert value(first, "devact_worker_gap_repair_events_total") == 0
    assert value(first, "devact_worker_redis_retries_total") == 0
    assert value(first, "devact_worker_redis_up") == 1
    versions = by_label(first, "devact_build_info", "component")
    assert versions == {"worker": 1}


def test_every_metric_the_dashboards_and_alerts_use_exists(observed: Observed) -> None:
    names = {n for n, _ in observed.first}
    api = httpx.get(f"{observed.stack.base_url}/metrics", timeout=5).text
    names |= {s.name for f in text_string_to_metric_families(api) for s in f.samples}
    assert metric_names_used() - names == set()


def test_status_reports_partitions_dead_letters_redis_and_readiness(observed: Observed) -> None:
    found = observed.status
    assert observed.status_code == 0
    partitions = {p["partition"]: p for p in found["partitions"]}
    assert {p: v["end"] for p, v in partitions.items()} == observed.ends
    for p, end in observed.ends.items():
        assert partitions[p]["committed"] == end
        assert partitions[p]["lag"] == 0
        assert partitions[p]["applied"] == (end - 1 if end > 0 else None)
    assert found["lag"] == 0
    reasons = dict(sorted(observed.reasons.items()))
    assert found["dead_letters"] == {"total": len(mix.INVALID_CASES), "by_reason": reasons}
    client = sync_redis(observed.stack)
    try:
        if isinstance(client, redis.RedisCluster):
            keys_now = sum(client.dbsize(target_nodes=n) for n in client.get_primaries())
        else:
            keys_now = client.dbsize()
    finally:
        client.close()
    nodes = found["redis"]["nodes"]
    assert [n["healthy"] for n in nodes] == [True] * len(nodes)
    assert found["redis"]["keys"] > 0
    assert abs(found["redis"]["keys"] - keys_now) <= 5  # the worker's markers come and go
    assert found["api"]["ready"] is True
    assert [w["ready"] for w in found["workers"]] == [True]
    assert found["errors"] == []


@dataclass
class Lagged:
    code: int
    """``devact status --max-lag 0`` while the worker was stopped."""
    status: dict[str, Any]
    code_at_limit: int
    """The same with ``--max-lag`` at the lag."""
    applied_after: float


@pytest.fixture(scope="module")
def lagged(observed: Observed) -> Lagged:
    """The worker stopped, ``LATER`` heartbeats produced, then the worker started again."""
    stack, s = observed.stack, observed.scenario
    stack.stop_process("worker")
    later = [heartbeat_message(s.event(s.devices["main"], total_activity_count=1))
             for _ in range(LATER)]  # fmt: skip
    stack.produce(later)
    code, found = status(stack, "--max-lag", "0")
    at_limit = status(stack, "--max-lag", str(LATER))[0]
    stack.start_worker()
    poll_until(lambda: lag_is_zero(observed.port), timeout_s=TIMEOUT_S, what="the lag back at 0")
    applied = value(scrape(observed.port), "devact_worker_events_total", outcome="applied")
    return Lagged(code, found, at_limit, applied)


def test_lag_rises_while_the_worker_is_stopped_and_returns_to_zero(lagged: Lagged) -> None:
    assert lagged.status["lag"] == LATER
    assert lagged.code == 1
    assert lagged.code_at_limit == 0
    assert [w["ready"] for w in lagged.status["workers"]] == [False]  # stopped: unreachable
    assert lagged.applied_after == LATER  # the new process counts from 0


@pytest.fixture(scope="module")
def replayed(observed: Observed, lagged: Lagged) -> Samples:
    """The group's offsets reset to the start, the worker started again: every event again."""
    stack = observed.stack
    stack.stop_process("worker")
    reset_group(stack)
    stack.start_worker()
    expected = observed.valid + LATER
    poll_until(
        lambda: (value(scrape(observed.port), "devact_worker_events_total", outcome="duplicate")
                 == expected) or None,
        timeout_s=TIMEOUT_S, what="every event seen again as a duplicate",
    )  # fmt: skip
    poll_until(lambda: lag_is_zero(observed.port), timeout_s=TIMEOUT_S, what="the lag at 0")
    return scrape(observed.port)


def test_a_replay_from_the_start_counts_every_event_as_a_duplicate(replayed: Samples) -> None:
    """Counted events are duplicates; refused ones are left alone, not dead-lettered again
    (docs/events.md, "Verdicts that do not change with the clock")."""
    assert value(replayed, "devact_worker_events_total", outcome="applied") == 0
    assert value(replayed, "devact_worker_events_total", outcome="dead_letter") == 0
    assert value(replayed, "devact_worker_events_total", outcome="refused_before") == len(
        mix.INVALID_CASES
    )


def dlq_list(stack: Stack, *args: str) -> list[dict[str, Any]]:
    done = run_cli(stack, "dlq", "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_dlq_list_shows_each_dead_letter_with_its_reason_and_source(
    observed: Observed, replayed: Samples
) -> None:
    stack = observed.stack
    letters = dlq_list(stack)
    # Two passes over the mix so far: the first, and the replay from the start, which sent no
    # dead letter again.
    assert Counter(r["reason"] for r in letters) == Counter(observed.reasons)
    for letter in letters:
        assert letter["source"].startswith(f"{stack.topic}/")
        assert letter["detail"]
    invalid = dlq_list(stack, "--reason", "invalid_field")
    assert len(invalid) == observed.reasons["invalid_field"]
    assert {r["reason"] for r in invalid} == {"invalid_field"}
    assert all(r["field"] for r in invalid)
    assert len(dlq_list(stack, "--limit", "3")) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert dlq_list(stack, "--since", future) == []
    old = next(r for r in letters if r["reason"] == "event_too_old")
    sent = json.loads(old["value"])
    case = observed.scenario.cases["older_than_retention"].message
    assert sent == json.loads(case.value)


def test_a_redriven_dead_letter_valid_now_is_counted_once_however_often(
    observed: Observed, replayed: Samples
) -> None:
    stack, s = observed.stack, observed.scenario
    case = observed.scenario.cases["older_than_retention"]
    event = json.loads(case.message.value)
    key = (event["client_id"], event["device_id"])
    oracle = Oracle([event], {s.x: mix.X_ZONE, s.y: mix.Y_ZONE})
    (day,) = oracle.local_days(key)
    expected = oracle.total_activity(key, day, day)
    # The cause fixed: a retention long enough for it.
    stack.stop_process("worker")
    stack.env["DEVACT_RETENTION_DAYS"] = "500"
    stack.start_worker()
    before = end_offsets(stack)
    dry = run_cli(stack, "dlq", "redrive", "--reason", "event_too_old", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would send 1 " in dry.stdout
    first = run_cli(stack, "dlq", "redrive", "--reason", "event_too_old")
    assert first.returncode == 0, first.stderr
    assert "sent 1 " in first.stdout
    again = run_cli(stack, "dlq", "redrive", "--reason", "event_too_old")
    assert again.returncode == 0, again.stderr
    assert "sent 0 " in again.stdout
    assert "1 matching ones were sent back before" in again.stdout

    def stored() -> int | None:
        client = sync_redis(stack)
        try:
            found = client.hget(keys.device_month(key[1], day), str(day.day))
        finally:
            client.close()
        return None if found is None else int(found)

    poll_until(lambda: stored() == expected or None, timeout_s=TIMEOUT_S,
               what="the redriven heartbeat counted")  # fmt: skip
    after = end_offsets(stack)
    sent = read_range(stack, before, after)
    assert len(sent) == 1
    (record,) = sent
    assert json.loads(record.value) == event
    assert record.key == case.message.key

    def applied_past_it() -> bool | None:
        partitions = {p["partition"]: p for p in status(stack)[1]["partitions"]}
        return (partitions[record.partition]["applied"] or -1) >= record.offset or None

    # Once the worker has applied the message sent back, nothing else is left to count.
    poll_until(applied_past_it, timeout_s=TIMEOUT_S, what="the worker past the message sent back")
    assert stored() == expected
    origin = dict(record.headers)["redriven_from"].decode()
    assert origin.startswith(f"{stack.dlq_topic}/")


def read_range(stack: Stack, first: dict[int, int], last: dict[int, int]) -> list[Any]:
    """The heartbeats topic's messages between two readings of its end offsets."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap,
                                    isolation_level="read_committed")  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(stack.topic, p) for p in last]
            consumer.assign(tps)
            found = []
            for tp in tps:
                consumer.seek(tp, first.get(tp.partition, 0))
                while await consumer.position(tp) < last[tp.partition]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    found += [r for r in batch.get(tp, []) if r.offset < last[tp.partition]]
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_the_screens_for_people_show_the_same(observed: Observed, replayed: Samples) -> None:
    stack = observed.stack
    worker = f"http://127.0.0.1:{stack.env['DEVACT_WORKER_METRICS_PORT']}"
    shown = run_cli(stack, "status", "--api", stack.base_url, "--worker", worker)
    assert shown.returncode == 0, shown.stderr
    assert f"{stack.topic} (group {stack.app_id})" in shown.stdout
    assert f"dead letters: {len(mix.INVALID_CASES)} (" in shown.stdout
    assert f"api {stack.base_url}: ready" in shown.stdout
    listed = run_cli(stack, "dlq", "list", "--reason", "empty_array")
    assert listed.returncode == 0, listed.stderr
    total = len(mix.INVALID_CASES)
    assert listed.stdout.rstrip().endswith(f"{observed.reasons['empty_array']} of {total} "
                                           "dead letters")  # fmt: skip
    assert "empty_array" in listed.stdout
