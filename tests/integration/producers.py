"""Producers of other languages and settings for the integration tests: Apache Kafka's own Java
client (tests/integration/java/HeartbeatProducer.java, compiled against the broker's jars), and
aiokafka with a codec; plus heartbeats for them and the oracle's verdict through the API."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from devtools.services.kafka import ensure_kafka_jars

from .harness.stack import Stack
from .oracle import DeviceKey, Oracle

JAVA_SOURCE = Path(__file__).parent / "java" / "HeartbeatProducer.java"
PRODUCER_TIMEOUT_S = 120


def compile_java_producer(out: Path) -> str:
    """Compile the Java producer; returns the class path to run it with."""
    libs = ensure_kafka_jars()
    javac = shutil.which("javac")
    assert javac, "javac (Java 17) is needed to build the Java test producer"
    classpath = f"{libs}/*"
    subprocess.run([javac, "-cp", classpath, "-d", str(out), str(JAVA_SOURCE)], check=True)
    return f"{classpath}:{out}"


def java_produce(
    classpath: str,
    bootstrap: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    codec: str,
    mode: str = "plain",
) -> None:
    """Send ``events`` keyed by device through the Java client; ``mode``: plain, commit, abort."""
    lines = "".join(f"{e['device_id']}\t{json.dumps(e)}\n" for e in events)
    args = ["java", "-cp", classpath, "HeartbeatProducer", bootstrap, topic, codec, mode]
    if mode != "plain":
        args.append(f"devact-test-{uuid.uuid4().hex}")
    done = subprocess.run(
        args, input=lines, capture_output=True, text=True, timeout=PRODUCER_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"Java producer failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip().endswith(f"sent {len(events)}"), done.stdout


def aiokafka_produce(
    bootstrap: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    codec: str,
    partition: int | None = None,
) -> None:
    """Send ``events`` keyed by device with aiokafka's producer and this codec."""

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=20,
            compression_type=None if codec == "none" else codec,
        )
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic,
                    json.dumps(e).encode(),
                    key=str(e["device_id"]).encode(),
                    partition=partition,
                )
                for e in events
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


@dataclass
class Fleet:
    """A fresh client of ``devices`` devices and heartbeats of them over the last few days."""

    client: str
    zone: str
    devices: list[str]
    events: list[dict[str, Any]]

    @property
    def oracle(self) -> Oracle:
        return Oracle(self.events, {self.client: self.zone})

    def device_keys(self) -> list[DeviceKey]:
        return [(self.client, d) for d in self.devices]


def fleet(seed: int, zone: str, *, devices: int, events: int, days: int = 4) -> Fleet:
    rng = random.Random(seed)
    client = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices)]
    now = datetime.now(UTC)
    heartbeats = []
    for _ in range(events):
        instant = now - timedelta(seconds=rng.uniform(60, days * 86_400))
        event: dict[str, Any] = {
            "client_id": client,
            "device_id": rng.choice(ids),
            "generated_at_utc": instant.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "total_activity_count": rng.randint(0, 40),
        }
        if rng.random() < 0.9:
            event["user_id"] = f"u{rng.randrange(12)}"
        heartbeats.append(event)
    return Fleet(client, zone, ids, heartbeats)


def differences(stack: Stack, token: str, data: Fleet) -> list[str]:
    """Device-days where the API's daily series differ from the oracle's (both metrics)."""
    oracle = data.oracle
    found = []
    for key in data.device_keys():
        days = sorted(oracle.local_days(key))
        if not days:
            continue
        for metric in ("activity-count", "user-count"):
            got = stack.series(key, token, metric, days[0], days[-1])
            want = oracle.series(key, days[0], days[-1], metric, "daily")
            if got != want:
                found.append(f"{key[1]} {metric}: API {got}, oracle {want}")
    return found


def counted_total(stack: Stack, token: str, data: Fleet) -> int:
    """The activity the API counts over the fleet's days (0 for devices it does not know)."""
    total = 0
    for key in data.device_keys():
        days = sorted(data.oracle.local_days(key))
        if days:
            series = stack.series(key, token, "activity-count", days[0], days[-1])
            total += sum(p["value"] for p in series or [])
    return total
