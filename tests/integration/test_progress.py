"""`devact produce` and `devact replay` with their output captured (not a terminal): progress
comes as log lines on standard error with the right totals, and standard output says what it
said before (produce nothing, replay its one-line summary)."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from .harness.kafka import TOPIC_PARTITIONS, create_topics
from .harness.processes import devact_executable
from .harness.stack import Stack

pytestmark = pytest.mark.backends("redis", "cluster")

RATE = 1_000
DURATION_S = 2
HEARTBEATS = RATE * DURATION_S
TERMINAL_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
"""What would make rich call a pipe a terminal."""


def devact(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in stack.env.items() if k not in TERMINAL_OVERRIDES}
    done = subprocess.run(
        [devact_executable(), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def progress_lines(done: subprocess.CompletedProcess[str], description: str) -> list[str]:
    """The meter's lines about ``description``, without the log format's prefix."""
    found = [line.split("devact.progress: ", 1)[1] for line in done.stderr.splitlines()
             if "devact.progress: " in line]  # fmt: skip
    return [line for line in found if line.startswith(f"{description}: ")]


def end_offsets(stack: Stack) -> int:
    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
        await consumer.start()
        try:
            partitions = [TopicPartition(stack.topic, p) for p in range(TOPIC_PARTITIONS)]
            return sum((await consumer.end_offsets(partitions)).values())
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def produced(stack: Stack) -> subprocess.CompletedProcess[str]:
    """The module's topic (no worker reads it), filled by ``devact produce`` with
    ``HEARTBEATS`` heartbeats of devices no other test has (a seed of its own)."""
    asyncio.run(create_topics(stack.kafka_bootstrap, {stack.topic: TOPIC_PARTITIONS}))
    seed = str(random.randrange(1, 2**31))
    return devact(
        stack, "produce", "--rate", str(RATE), "--duration", str(DURATION_S), "--seed", seed
    )


def test_produce_reports_the_heartbeats_it_sends_of_rate_times_duration(
    stack: Stack, produced: subprocess.CompletedProcess[str]
) -> None:
    lines = progress_lines(produced, "produce")
    assert lines[0] == f"produce: 0/{HEARTBEATS:,} heartbeats (0%)"
    assert re.fullmatch(
        rf"produce: {HEARTBEATS:,}/{HEARTBEATS:,} heartbeats \(100%\), [\d,.]+/s, done in .+ s",
        lines[-1],
    ), lines
    shares = [int(line.split("(")[1].split("%")[0]) for line in lines]
    assert shares == sorted(shares)
    assert produced.stdout == ""  # produce prints nothing on stdout, as before
    assert end_offsets(stack) == HEARTBEATS  # one heartbeat a message


def test_replay_reports_the_messages_between_start_and_end_offsets(
    stack: Stack, produced: subprocess.CompletedProcess[str]
) -> None:
    done = devact(stack, "replay")
    lines = progress_lines(done, "replay")
    assert lines[0] == f"replay: 0/{HEARTBEATS:,} messages (0%)"
    assert re.fullmatch(
        rf"replay: {HEARTBEATS:,}/{HEARTBEATS:,} messages \(100%\), [\d,.]+/s, done in .+ s",
        lines[-1],
    ), lines
    assert done.stdout == (
        f"replayed {HEARTBEATS} messages: {HEARTBEATS} events applied, 0 already there, "
        "0 refused before (dead letters, or sent back by a redrive), 0 in days expired since, "
        "0 rejected now (not sent to the DLQ)\n"
    )
