"""Issue 9: heartbeat producers of any language and setting are counted exactly.

Apache Kafka's own Java client (the broker's kafka-clients jar) with each codec, inside a
committed and an aborted transaction, and aiokafka's producer with each codec. Each case is a
fresh client of 20 devices and 2,000 heartbeats; the expected numbers come from the oracle.
The table of what the API counted per case is printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from .harness.kafka import TOPIC_PARTITIONS
from .harness.output import show
from .harness.stack import Stack
from .producers import (
    Fleet,
    aiokafka_produce,
    compile_java_producer,
    counted_total,
    differences,
    fleet,
    java_produce,
)

pytestmark = pytest.mark.backends("redis", "cluster")

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
EVENTS = 2_000
DEVICES = 20
ZONE = "Asia/Kathmandu"
CATCH_UP_TIMEOUT_S = 90.0
SEED = 9_000


@pytest.fixture(scope="module")
def classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compile_java_producer(tmp_path_factory.mktemp("java-producer"))


@pytest.fixture(scope="module")
def started(stack: Stack) -> Stack:
    stack.start()
    return stack


@pytest.fixture(scope="module")
def token(started: Stack) -> str:
    return started.create_token(all_clients=True)


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest, backend: str) -> Iterator[list[str]]:
    """The rows of one backend's run, printed at its end."""
    rows: list[str] = []
    yield rows
    show(
        request,
        f"\n| producer setting ({backend}) | counted by the API | expected (oracle) |\n"
        "|---|---:|---:|\n" + "\n".join(rows),
    )


def _case(stack: Stack, seed: int) -> Fleet:
    data = fleet(seed, ZONE, devices=DEVICES, events=EVENTS)
    stack.add_client(data.client, ZONE)
    return data


def _wait_exact(stack: Stack, token: str, data: Fleet, label: str, table: list[str]) -> None:
    stack.wait_for(
        lambda: True if not differences(stack, token, data) else None,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what=f"every device-day of the {label} case equal to the oracle",
        progress=lambda: "\n".join(differences(stack, token, data)[:10]),
    )
    expected = sum(int(e["total_activity_count"]) for e in data.events)
    table.append(f"| {label} | {counted_total(stack, token, data):,} | {expected:,} |")


@pytest.mark.parametrize("codec", CODECS)
def test_java_producer_with_each_codec_is_counted_exactly(
    started: Stack, token: str, classpath: str, table: list[str], codec: str
) -> None:
    data = _case(started, SEED + CODECS.index(codec))
    java_produce(classpath, started.kafka_bootstrap, started.topic, data.events, codec)
    _wait_exact(started, token, data, f"Java `compression.type={codec}`", table)


def test_java_committed_transaction_is_counted_once(
    started: Stack, token: str, classpath: str, table: list[str]
) -> None:
    data = _case(started, SEED + 10)
    java_produce(classpath, started.kafka_bootstrap, started.topic, data.events, "gzip", "commit")
    _wait_exact(started, token, data, "Java transaction committed (gzip)", table)


def test_java_aborted_transaction_is_never_counted(
    started: Stack, token: str, classpath: str, table: list[str]
) -> None:
    """Aborted records sit in the log; the worker must read past them without counting them.
    Sentinels sent after the abort, one per partition, show that it has read that far."""
    aborted = _case(started, SEED + 11)
    java_produce(classpath, started.kafka_bootstrap, started.topic, aborted.events, "gzip", "abort")
    sentinels = _case(started, SEED + 12)
    sentinels.events = [
        {**sentinels.events[p], "device_id": sentinels.devices[p], "total_activity_count": 1}
        for p in range(TOPIC_PARTITIONS)
    ]
    for partition, event in enumerate(sentinels.events):
        aiokafka_produce(started.kafka_bootstrap, started.topic, [event], "none", partition)
    _wait_exact(started, token, sentinels, "sentinels after the aborted transaction", [])
    counted = counted_total(started, token, aborted)
    table.append(f"| Java transaction aborted (gzip) | {counted:,} | 0 |")
    assert counted == 0
    known = [
        key
        for key in aborted.device_keys()
        if started.activity(
            *key, token, metric="activity-count", start_date="2026-01-01", end_date="2026-01-01"
        ).status_code
        != 404
    ]
    assert not known, f"devices of the aborted transaction exist: {known[:5]}"


@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_producer_with_each_codec_is_counted_exactly(
    started: Stack, token: str, table: list[str], codec: str
) -> None:
    data = _case(started, SEED + 20 + CODECS.index(codec))
    aiokafka_produce(started.kafka_bootstrap, started.topic, data.events, codec)
    _wait_exact(started, token, data, f"aiokafka `compression_type={codec}`", table)


def test_transaction_markers_cause_no_gap_alarm_and_positions_reach_the_end(
    started: Stack, token: str
) -> None:
    """Transaction markers and aborted records occupy offsets that no reader delivers. The
    worker must know they are not writes Redis lost: no re-read, no warning, and each applied
    position reaches the partition's last readable message. (Runs after the cases above.)"""
    log = (started.workdir / "worker.log").read_text(errors="replace")
    alarms = [line for line in log.splitlines() if "re-reading" in line]
    assert not alarms, "false gap alarms:\n" + "\n".join(alarms[:5])
    last = asyncio.run(_last_readable_offsets(started.kafka_bootstrap, started.topic))
    assert all(offset is not None for offset in last.values())
    started.wait_for(
        lambda: True if started.applied_positions(TOPIC_PARTITIONS) == last else None,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what=f"applied positions at the last readable offsets {last}",
        progress=lambda: f"applied positions: {started.applied_positions(TOPIC_PARTITIONS)}",
    )


async def _last_readable_offsets(bootstrap: str, topic: str) -> dict[int, int | None]:
    """Per partition, the offset of the last message a read_committed reader delivers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        last: dict[int, int | None] = {p: None for p in range(TOPIC_PARTITIONS)}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(*tps, timeout_ms=500)).items():
                if records:
                    last[tp.partition] = records[-1].offset
        return last
    finally:
        await consumer.stop()
