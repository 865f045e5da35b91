"""Issue 8: a backlog never stalls the worker, and a slow Redis is waited for, not given up on.

Runs on Kafka and Redis of its own (faultkit), because it stops Redis with SIGSTOP. Expected
numbers come from the independent oracle (tests/integration/oracle.py), never from the worker.
Measured figures are printed (`pytest -s`) and kept as JSON in the pytest temporary directory.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from devtools.services import LocalStack
from tests.integration.harness.kafka import Message, encode

from .faultkit.checks import Figures, assert_exact, wait_for_total, wait_until_total
from .faultkit.kafka import BackgroundProducer, produce, topic_message_count
from .faultkit.pipeline import Run
from .faultkit.probe import Cell, RedisProbe
from .faultkit.services import redis_pid
from .faultkit.workload import (
    MAX_USERS_PER_DEVICE,
    ZONES,
    Workload,
    build_workload,
    random_heartbeat,
    seeded_uuid,
)

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "it freezes a Redis of its own with SIGSTOP; test_cluster_faults.py freezes a cluster's"
        " primary"
    ),
)

SEED = 20261202
GATEWAY_MESSAGES = 2_000
HEARTBEATS_PER_MESSAGE = 100
GATEWAY_DEVICES = 1_500
GATEWAY_DAYS = 4
TINY_REDIS_TIMEOUT_S = "0.05"
"""Far below what one round trip of a full batch takes (tens of milliseconds of Redis time)."""
CATCH_UP_TIMEOUT_S = 300.0
STALL_S = 60.0
SLOW_FOR_S = 5.0
STOPPED_S, RUNNING_S = 0.4, 0.1
"""The slow spell: Redis frozen (SIGSTOP) 0.4 s out of every 0.5 s for 5 s."""
RATE_WINDOW_S = 3.0
FALSE_ALARMS = ("Redis unavailable", "Stream has not started processing")


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Figures:
    return Figures(tmp_path_factory.mktemp("backlog-figures") / "backlog.json")


def gateway_workload(seed: int) -> Workload:
    """Gateways' arrays: each message holds 100 heartbeats of 100 distinct devices, over a few
    days, keyed by the gateway (the producer's choice for arrays)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    timezones = {seeded_uuid(rng): zone for zone in ZONES}
    clients = list(timezones)
    devices = [(clients[n % len(clients)], seeded_uuid(rng)) for n in range(GATEWAY_DEVICES)]
    pools = {
        key: [f"user-{seed}-{n}-{k}" for k in range(rng.randint(1, MAX_USERS_PER_DEVICE))]
        for n, key in enumerate(devices)
    }
    workload = Workload(seed, timezones, devices, pools, now)
    gateways = [seeded_uuid(rng).encode() for _ in range(40)]
    events, messages = [], []
    for _ in range(GATEWAY_MESSAGES):
        array = [
            random_heartbeat(rng, key, pools[key], now, GATEWAY_DAYS)
            for key in rng.sample(devices, HEARTBEATS_PER_MESSAGE)
        ]
        events += array
        messages.append(Message(encode(array), rng.choice(gateways)))
    workload.events, workload.messages = events, messages
    return workload


def false_alarms(run: Run) -> list[str]:
    """Log lines of the run's workers that report trouble although Redis was reachable."""
    lines = "\n".join(w.log.read_text(errors="replace") for w in run.workers.values())
    return [line for line in lines.splitlines() if any(a in line for a in FALSE_ALARMS)]


def test_backlog_of_gateway_arrays_catches_up_exactly(
    probe: RedisProbe, figures: Figures, new_run: Callable[[Workload], Run]
) -> None:
    """2,000 arrays of 100 heartbeats wait in the topic before the worker starts, and the
    worker's Redis timeout is far below what a batch takes: it still catches up, exactly, and
    never reports a Redis that answered all along as unavailable."""
    workload = gateway_workload(SEED)
    run = new_run(workload)
    produce(run.bootstrap, run.topic, workload.messages)
    assert topic_message_count(run.bootstrap, run.topic) == GATEWAY_MESSAGES
    run.env["DEVACT_REDIS_TIMEOUT_S"] = TINY_REDIS_TIMEOUT_S
    worker = run.worker("backlog-worker-1")
    started = worker.start()
    caught_up_s = wait_until_total(
        probe, workload, run, timeout_s=CATCH_UP_TIMEOUT_S, stall_s=STALL_S
    )
    assert_exact(probe, workload)
    run.assert_workers_alive()
    alarms = false_alarms(run)
    assert not alarms, "false alarms while Redis answered:\n" + "\n".join(alarms[:10])
    elapsed = time.monotonic() - started
    figures.record(
        "backlog_of_arrays",
        messages=GATEWAY_MESSAGES,
        events=len(workload.events),
        device_days=len(workload.cells()),
        redis_timeout_s=float(TINY_REDIS_TIMEOUT_S),
        caught_up_after_start_s=round(caught_up_s, 1),
        events_per_s_including_start=round(len(workload.events) / elapsed),
    )


def test_slow_redis_is_waited_for_and_nothing_is_lost_or_doubled(
    own_stack: LocalStack,
    probe: RedisProbe,
    figures: Figures,
    new_run: Callable[[Workload], Run],
) -> None:
    """While events flow, Redis is frozen in short bursts for 5 s: the worker waits and
    resumes; every device-day equals the oracle (a batch applied twice would exceed it)."""
    workload = build_workload(SEED + 1, events=40_000, devices=150, days=10)
    run = new_run(workload)
    run.env["DEVACT_REDIS_TIMEOUT_S"] = "0.2"
    producer = BackgroundProducer(run.bootstrap, run.topic, workload.messages, 2000).start()
    run.worker("slow-redis-worker-1").start()
    counter_keys = workload.counter_keys()
    wait_for_total(probe, workload, run, workload.activity_of(0.25 * len(workload.events)))
    before = _rate(probe, counter_keys, workload)

    pid = redis_pid(own_stack)
    frozen_until = time.monotonic() + SLOW_FOR_S
    bursts = 0
    try:
        while time.monotonic() < frozen_until:
            os.kill(pid, signal.SIGSTOP)
            bursts += 1
            time.sleep(STOPPED_S)  # the fault itself: how long Redis stays frozen
            os.kill(pid, signal.SIGCONT)
            time.sleep(RUNNING_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    after = _rate(probe, counter_keys, workload)

    producer.join()
    assert topic_message_count(run.bootstrap, run.topic) == len(workload.messages)
    caught_up_s = wait_until_total(
        probe, workload, run, timeout_s=CATCH_UP_TIMEOUT_S, stall_s=STALL_S
    )
    assert_exact(probe, workload)
    run.assert_workers_alive()
    figures.record(
        "slow_redis",
        events=len(workload.events),
        freeze_bursts=bursts,
        frozen_share=STOPPED_S / (STOPPED_S + RUNNING_S),
        events_per_s_before=before,
        events_per_s_after=after,
        caught_up_after_last_message_s=round(caught_up_s, 1),
    )


def _rate(probe: RedisProbe, counter_keys: list[Cell], workload: Workload) -> float:
    """Events applied per second over a short window (a figure, never asserted), from the
    activity applied and the workload's mean activity per event."""
    first = probe.total(counter_keys)
    started = time.monotonic()
    time.sleep(RATE_WINDOW_S)  # the measuring window itself, not a wait for a condition
    activity = (probe.total(counter_keys) - first) / (time.monotonic() - started)
    return round(activity * len(workload.events) / workload.total)
