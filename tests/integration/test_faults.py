"""Issue 3: every event counted exactly once, whatever crashes, restarts, rebalances or replays.

The module runs on Kafka and Redis of its own (tests/integration/faultkit/), because it kills and
restarts them. Each test has its own topic, consumer group and seeded workload; the expected
numbers come from the independent oracle. Faults strike while a background producer keeps the
stream flowing, at points chosen by a seeded schedule and expressed as progress in Redis (how
many events the worker has applied), never as fixed sleeps.

Measured figures (kill count, events, restart pauses, 503 latency...) are printed (`pytest -s`)
and written as JSON to the pytest temporary directory; the path is printed with them.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.services import LocalStack
from tests.integration.harness.kafka import heartbeat_message
from tests.integration.harness.waiting import poll_until

from .faultkit.checks import (
    Figures,
    assert_exact,
    assert_weekly_buckets,
    wait_for_total,
    wait_until_total,
)
from .faultkit.constants import PARTITIONS
from .faultkit.kafka import BackgroundProducer, group_members, produce, topic_message_count
from .faultkit.pipeline import Run, create_token, register_clients
from .faultkit.probe import Cell, RedisProbe, digest_difference, digest_hash
from .faultkit.processes import Api
from .faultkit.services import (
    kill_redis,
    redis_aof_tail,
    restart_redis,
)
from .faultkit.workload import Workload, build_workload, marker_events

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "it kills and restarts Kafka and a Redis of its own; test_cluster_faults.py does the "
        "same to a cluster"
    ),
)

CRASH_SEED = 20261128
CRASH_EVENTS = 100_000
CRASH_DEVICES = 300
CRASH_KILLS = 6
# Limits of these tests, not of the contract: generous, so a slow CI machine does not fail them,
# while a worker that stalls (e.g. waits out a 60 s session timeout on every restart) still does.
CATCH_UP_TIMEOUT_S = 150.0
RESUME_DEADLINE_S = 60.0
API_UNAVAILABLE_LIMIT_S = 2.0  # docs/api.md: 503 within 2 s
REDIS_OUTAGE_S = 10.0
# Once everything is produced, a Redis total that stands still this long is a loss, not a delay
# (longer than a 10 s session timeout plus a broker restart).
STALL_S = 45.0


@pytest.fixture(scope="module")
def api(own_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = {**os.environ, "DEVACT_REDIS_URL": own_stack.endpoints.redis_url}
    the_api = Api(env, tmp_path_factory.mktemp("fault-api") / "api.log")
    the_api.start()
    try:
        the_api.wait_ready()
        yield the_api
    finally:
        the_api.close()


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Figures:
    return Figures(tmp_path_factory.mktemp("fault-figures") / "faults.json")


def finish(probe: RedisProbe, workload: Workload, run: Run, producer: BackgroundProducer) -> float:
    """Wait for the producer, then for Redis to hold every event; check the topic and every
    device-day. Returns the seconds the catch-up took after the last message was acknowledged."""
    producer.join()
    messages = topic_message_count(run.bootstrap, run.topic)
    assert messages == len(workload.messages), (
        f"the topic holds {messages} messages, {len(workload.messages)} were produced: "
        "the producer, not the worker, would be at fault"
    )
    caught_up_s = wait_until_total(
        probe, workload, run, timeout_s=CATCH_UP_TIMEOUT_S, stall_s=STALL_S
    )
    assert_exact(probe, workload)
    run.assert_workers_alive()
    return caught_up_s


# --- 1. crash oracle ------------------------------------------------------------------------


def test_sigkilled_worker_still_counts_every_event_exactly_once(
    own_stack: LocalStack,
    probe: RedisProbe,
    api: Api,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    workload = build_workload(CRASH_SEED, events=CRASH_EVENTS, devices=CRASH_DEVICES, days=30)
    assert len(workload.events) >= CRASH_EVENTS
    assert max(c.users for c in workload.cells()) <= 500  # every user count must be exact
    run = new_run(workload)
    schedule = random.Random(CRASH_SEED + 1)
    # Kill 2 (and maybe more) strikes the moment the restarted worker applies anything: inside
    # its first batches. The others after a seeded number of further events.
    modes = ["progress"] * CRASH_KILLS
    modes[1] = "resumed"
    modes[schedule.randrange(2, CRASH_KILLS)] = "resumed"
    worker = run.worker("crash-worker-1")
    counter_keys = workload.counter_keys()

    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 2500).start()
    started = worker.start()
    kills: list[dict[str, Any]] = []
    for mode in modes:
        baseline = probe.total(counter_keys)
        if mode == "resumed":
            _, resumed_at = wait_for_total(probe, workload, run, baseline + 1, what="resumed")
        else:
            events = schedule.uniform(0.05, 0.14) * len(workload.events)
            _, resumed_at = wait_for_total(
                probe, workload, run, baseline + workload.activity_of(events), what="progress"
            )
        worker.kill()
        killed_at = time.monotonic()
        kills.append(
            {
                "mode": mode,
                "applied_share": round(probe.total(counter_keys) / workload.total, 3),
                "first_progress_after_start_s": round(resumed_at - started, 2),
                "killed_after_progress_s": round(killed_at - resumed_at, 3),
            }
        )
        started = worker.start()

    caught_up_s = finish(probe, workload, run, producer)
    compared = assert_weekly_buckets(api, create_token(run.redis_url), workload, schedule)
    figures.record(
        "crash_oracle",
        events=len(workload.events),
        messages=len(workload.messages),
        devices=len(workload.devices),
        device_days=len(workload.cells()),
        kill_count=len(kills),
        kills=kills,
        catch_up_after_last_message_s=round(caught_up_s, 1),
        weekly_series_compared=compared,
    )
    assert len(kills) >= 5
    assert [k for k in kills if k["mode"] == "resumed"]


# --- 2. restart pause -----------------------------------------------------------------------


def test_restarted_worker_resumes_processing(
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    """Time from the restart command to the first event that only the new incarnation can have
    applied (a marker produced while no worker ran); the bound here is generous, the figure is
    reported."""
    workload = build_workload(CRASH_SEED + 2, events=15_000, devices=60, days=10)
    run = new_run(workload)
    schedule = random.Random(CRASH_SEED + 3)
    worker = run.worker("pause-worker-1")
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 500).start()
    started = worker.start()
    _, first_at = wait_for_total(probe, workload, run, 1, what="first event")
    pauses: list[dict[str, float]] = []
    for _ in range(3):
        baseline = probe.total(workload.counter_keys())
        wait_for_total(probe, workload, run, baseline + workload.activity_of(500))
        worker.kill()
        markers = marker_events(workload, schedule, 12)
        messages = [heartbeat_message(m) for m in markers]
        produce(run.bootstrap, run.topic, messages)
        workload.add(markers, messages)
        marker_keys = [c.counter_key for c in workload.cells() if c.device[1] in _ids(markers)]
        restarted = worker.start()
        first = _when_total_reaches(probe, marker_keys, 1, RESUME_DEADLINE_S)
        every = _when_total_reaches(probe, marker_keys, len(markers), RESUME_DEADLINE_S)
        pauses.append(
            {
                "first_marker_s": round(first - restarted, 2),
                "all_markers_s": round(every - restarted, 2),
            }
        )
    finish(probe, workload, run, producer)
    figures.record(
        "restart_pause",
        first_start_to_first_event_s=round(first_at - started, 2),
        restarts=pauses,
        worst_first_marker_s=max(p["first_marker_s"] for p in pauses),
    )


def _ids(events: list[dict[str, Any]]) -> set[str]:
    return {str(e["device_id"]) for e in events}


PROGRESS_POLL_S = 0.02
"""Fine-grained: the restart pause is measured with this resolution."""


def _when_total_reaches(
    probe: RedisProbe, counter_keys: list[Cell], at_least: int, timeout_s: float
) -> float:
    """``time.monotonic()`` when the total of these counters first reaches ``at_least``."""
    deadline = time.monotonic() + timeout_s
    while (probe.total_or_none(counter_keys) or 0) < at_least:
        assert time.monotonic() < deadline, f"{at_least} not reached within {timeout_s:.0f} s"
        time.sleep(PROGRESS_POLL_S)  # polling with the deadline above
    return time.monotonic()


# --- 3. rebalance ---------------------------------------------------------------------------


def test_second_worker_joining_and_leaving_changes_no_count(
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    workload = build_workload(CRASH_SEED + 4, events=30_000, devices=120, days=20)
    run = new_run(workload)
    first, second = run.worker("rebalance-worker-1"), run.worker("rebalance-worker-2")
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 1000).start()
    first.start()
    wait_for_total(probe, workload, run, workload.activity_of(0.15 * len(workload.events)))

    joined = second.start()
    members = poll_until(
        lambda: _split_between(group_members(run.bootstrap, run.app_id, run.topic), 2),
        timeout_s=RESUME_DEADLINE_S,
        what="two workers sharing the partitions",
        diagnostics=run.tails,
    )
    shared_after_s = time.monotonic() - joined
    baseline = probe.total(workload.counter_keys())
    wait_for_total(
        probe, workload, run, baseline + workload.activity_of(0.2 * len(workload.events))
    )

    leaving = time.monotonic()
    exit_code = second.terminate()
    left_after_s = time.monotonic() - leaving
    assert exit_code is not None, "the second worker ignored SIGTERM for 30 s"
    poll_until(
        lambda: _split_between(group_members(run.bootstrap, run.app_id, run.topic), 1),
        timeout_s=RESUME_DEADLINE_S,
        what="the first worker holding every partition again",
        diagnostics=run.tails,
    )
    regained_after_s = time.monotonic() - leaving
    finish(probe, workload, run, producer)
    figures.record(
        "rebalance",
        events=len(workload.events),
        partitions_shared_after_join_s=round(shared_after_s, 1),
        assignment_while_shared=[m.partitions for m in members],
        second_worker_exit_code=exit_code,
        second_worker_stop_s=round(left_after_s, 1),
        first_worker_has_all_partitions_after_s=round(regained_after_s, 1),
    )


def _split_between(members: list[Any], count: int) -> list[Any] | None:
    """The members, when there are ``count`` of them and each holds partitions covering all."""
    covered = sorted(p for m in members for p in m.partitions)
    if (
        len(members) == count
        and all(m.partitions for m in members)
        and covered == list(range(PARTITIONS))
    ):
        return members
    return None


# --- 4. replay ------------------------------------------------------------------------------


def _data_keys_of(workload: Workload) -> Callable[[str], bool]:
    """Keys rebuilt from the topic alone: the workload's devices' days, users and owners, its
    clients' aggregates and device sets. (Client registrations and tokens are not in the topic,
    and `da:applied` is the worker's bookkeeping.) Other tests' keys share this Redis: left out."""
    devices = {device for _, device in workload.devices}
    clients = set(workload.timezones)
    device_sets = {f"da:client:{client}:devices" for client in workload.timezones}

    def is_data_key(key: str) -> bool:
        if key.startswith("da:{d:"):
            return key[len("da:{d:") :].split("}", 1)[0] in devices
        if key.startswith("da:{c:"):
            return key[len("da:{c:") :].split("}", 1)[0] in clients
        return key in device_sets

    return is_data_key


def test_replay_changes_nothing_and_rebuilds_the_same_state_after_flushall(
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    workload = build_workload(CRASH_SEED + 5, events=20_000, devices=80, days=30)
    run = new_run(workload)
    produce(run.bootstrap, run.topic, workload.messages)
    worker = run.worker("replay-worker-1")
    worker.start()
    wait_until_total(probe, workload, run, timeout_s=CATCH_UP_TIMEOUT_S)
    assert_exact(probe, workload)
    assert worker.terminate() is not None  # nothing else writes while the replays run

    before = probe.digest()
    started = time.monotonic()
    over_populated = run.replay()
    over_populated_s = time.monotonic() - started
    _assert_replay_output(over_populated)
    after = probe.digest()
    assert after == before, digest_difference(before, after)

    probe.flushall()
    register_clients(run.redis_url, workload.timezones)  # registrations are not in the topic
    started = time.monotonic()
    rebuild = run.replay()
    rebuild_s = time.monotonic() - started
    _assert_replay_output(rebuild)
    is_data_key = _data_keys_of(workload)
    rebuilt = probe.digest(is_data_key)
    expected = {k: v for k, v in before.items() if is_data_key(k)}
    # Device-months, owners (meta), device sets: more keys than device-months alone.
    assert len(expected) > len({c.month_key for c in workload.cells()})
    assert rebuilt == expected, digest_difference(expected, rebuilt)
    assert_exact(probe, workload)
    figures.record(
        "replay",
        events=len(workload.events),
        keys=len(before),
        digest=digest_hash(before),
        replay_over_populated_s=round(over_populated_s, 1),
        rebuild_after_flushall_s=round(rebuild_s, 1),
        summary_over_populated=over_populated.stdout.strip(),
        summary_rebuild=rebuild.stdout.strip(),
    )


def _assert_replay_output(done: Any) -> None:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"the summary is not one line: {done.stdout!r}"
    assert done.stderr.strip(), "no progress shown on stderr"


# --- 5. Redis restart -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "sigkill_losing_the_aof_tail"])
def test_redis_restart_mid_stream_ends_exact(
    how: str,
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    """`sigterm`: Redis shuts down cleanly. `sigkill`: a crash; the AOF (everysec) keeps what
    reached the file. `sigkill_losing_the_aof_tail`: a crash that also loses the last writes, as
    a machine crash may with everysec: the AOF is cut back to where it was a few thousand events
    earlier. Redis comes back behind the worker's committed offsets; only replaying from the
    `da:applied` position repairs that."""
    seed = CRASH_SEED + 6 + ["sigterm", "sigkill", "sigkill_losing_the_aof_tail"].index(how)
    workload = build_workload(seed, events=25_000, devices=100, days=20)
    run = new_run(workload)
    counter_keys = workload.counter_keys()
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 1000).start()
    run.worker("redis-restart-worker-1").start()
    wait_for_total(probe, workload, run, workload.activity_of(0.3 * len(workload.events)))

    lost: dict[str, Any] = {}
    if how == "sigterm":
        own_stack.stop_redis()
    elif how == "sigkill":
        kill_redis(own_stack)
    else:
        aof = redis_aof_tail(own_stack)
        cut_at = aof.stat().st_size
        total_at_cut = probe.total(counter_keys)
        reached, _ = wait_for_total(probe, workload, run, total_at_cut + workload.activity_of(3000))
        kill_redis(own_stack)
        assert redis_aof_tail(own_stack) == aof, "Redis rewrote its AOF meanwhile"
        lost["aof_bytes_cut"] = aof.stat().st_size - cut_at
        with aof.open("r+b") as handle:
            handle.truncate(cut_at)
        lost["total_before_kill_at_least"] = reached
    restarting = time.monotonic()
    restart_redis(own_stack)
    redis_back_s = time.monotonic() - restarting
    after_restart = probe.total(counter_keys)
    if how == "sigkill_losing_the_aof_tail":
        lost["total_after_restart"] = after_restart
        assert after_restart < lost["total_before_kill_at_least"], (
            "cutting the AOF lost nothing: the test did not create the rollback it means to",
            lost,
        )
    name = f"redis_restart_{how}"
    figures.record(name, events=len(workload.events), redis_back_after_s=round(redis_back_s, 1))
    if lost:
        figures.record(name, **lost)
    caught_up_s = finish(probe, workload, run, producer)
    figures.record(name, catch_up_after_last_message_s=round(caught_up_s, 1))


# --- 6. outages -----------------------------------------------------------------------------


def test_redis_outage_gives_503_quickly_and_loses_nothing(
    own_stack: LocalStack,
    probe: RedisProbe,
    api: Api,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    workload = build_workload(CRASH_SEED + 9, events=25_000, devices=100, days=20)
    run = new_run(workload)
    token = create_token(run.redis_url)
    key = workload.devices[0]
    day = min(workload.oracle.local_days(key))
    query = {"metric": "activity-count", "start_date": day.isoformat(), "end_date": day.isoformat()}
    assert api.activity(key, token, **query).status_code in (200, 404)
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 1000).start()
    run.worker("outage-worker-1").start()
    wait_for_total(probe, workload, run, workload.activity_of(0.25 * len(workload.events)))

    own_stack.stop_redis()
    down_until = time.monotonic() + REDIS_OUTAGE_S
    answers: list[tuple[str, int, str | None, float]] = []
    while time.monotonic() < down_until:
        for path in (None, "/readyz"):
            begun = time.monotonic()
            response = api.activity(key, token, **query) if path is None else api.http.get(path)
            elapsed = time.monotonic() - begun
            code = (
                response.json().get("error", {}).get("code")
                if response.status_code != 200
                else None
            )
            answers.append((path or "activity", response.status_code, code, elapsed))
        run.assert_workers_alive()
    restart_redis(own_stack)
    back = time.monotonic()
    poll_until(
        lambda: True if api.activity(key, token, **query).status_code == 200 else None,
        timeout_s=30,
        what="the API answering 200 once Redis is back",
        diagnostics=api.tail,
    )
    recovered_s = time.monotonic() - back

    wrong = [a for a in answers if a[1] != 503 or a[2] != "unavailable"]
    assert not wrong, f"answers while Redis was down that are not 503 unavailable: {wrong[:5]}"
    slowest = max(a[3] for a in answers)
    assert slowest < API_UNAVAILABLE_LIMIT_S, f"slowest 503 took {slowest:.2f} s"
    finish(probe, workload, run, producer)
    assert_weekly_buckets(api, token, workload, random.Random(CRASH_SEED + 10))
    figures.record(
        "redis_outage",
        outage_s=REDIS_OUTAGE_S,
        requests_while_down=len(answers),
        slowest_503_s=round(slowest, 3),
        api_200_after_restart_s=round(recovered_s, 2),
    )


def test_kafka_restart_mid_stream_loses_nothing(
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    workload = build_workload(CRASH_SEED + 11, events=25_000, devices=100, days=20)
    run = new_run(workload)
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 1000).start()
    run.worker("kafka-restart-worker-1").start()
    wait_for_total(probe, workload, run, workload.activity_of(0.25 * len(workload.events)))

    stopping = time.monotonic()
    own_stack.stop_kafka()
    stopped_s = time.monotonic() - stopping
    run.assert_workers_alive()
    own_stack.start_kafka()
    broker_down_s = time.monotonic() - stopping
    caught_up_s = finish(probe, workload, run, producer)
    figures.record(
        "kafka_restart",
        events=len(workload.events),
        broker_stop_s=round(stopped_s, 1),
        broker_down_s=round(broker_down_s, 1),
        catch_up_after_last_message_s=round(caught_up_s, 1),
    )
