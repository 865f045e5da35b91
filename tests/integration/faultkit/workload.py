"""The seeded workload of a fault test and its ground truth from the independent oracle."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from state import keys
from tests.integration.harness.kafka import Message, encode, heartbeat_message
from tests.integration.oracle import DeviceKey, Oracle

# Zones whose local midnight is far from UTC's, three of them with 30 or 45 minute offsets.
ZONES = ("UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "Australia/Adelaide")
WIRE_OFFSETS = ("+05:45", "-04:00", "+13:45", "-09:30", "+01:00")
MAX_USERS_PER_DEVICE = 40  # so no device-day holds more than 40 users: user counts are exact


Cell = tuple[str, str]
"""A hash key and field: a device-day's activity (docs/key-schema.md)."""


@dataclass(frozen=True)
class DeviceDay:
    device: DeviceKey
    day: date
    activity: int
    users: int

    @property
    def counter_key(self) -> Cell:
        """Where the day's activity is: its device-month key and the day's field."""
        return (keys.device_month(self.device[1], self.day), str(self.day.day))

    @property
    def month_key(self) -> str:
        return keys.device_month(self.device[1], self.day)


@dataclass
class Workload:
    """Seeded heartbeats and the messages carrying them, with the oracle's expected numbers."""

    seed: int
    timezones: dict[str, str]  # client id -> IANA zone
    devices: list[DeviceKey]
    pools: dict[DeviceKey, list[str]]
    now: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    _oracle: Oracle | None = None
    _cells: list[DeviceDay] | None = None

    @property
    def oracle(self) -> Oracle:
        if self._oracle is None:
            self._oracle = Oracle(self.events, self.timezones)
        return self._oracle

    def add(self, events: Sequence[dict[str, Any]], messages: Sequence[Message]) -> None:
        """More events (sent later, e.g. markers): the expected numbers follow."""
        self.events += events
        self.messages += messages
        if self._oracle is not None:
            for event in events:
                self._oracle.add(event)
        self._cells = None

    def cells(self) -> list[DeviceDay]:
        """Every device-day the events touch, with its expected activity and user count."""
        if self._cells is None:
            oracle = self.oracle
            self._cells = [
                DeviceDay(
                    key,
                    day,
                    oracle.total_activity(key, day, day),
                    oracle.series(key, day, day, "user-count", "daily")[0]["value"],
                )
                for key in oracle.devices()
                for day in sorted(oracle.local_days(key))
            ]
        return self._cells

    def counter_keys(self) -> list[Cell]:
        return [c.counter_key for c in self.cells()]

    @property
    def total(self) -> int:
        return sum(int(e["total_activity_count"]) for e in self.events)

    def activity_of(self, events: float) -> int:
        """The activity that ``events`` average events add: progress in Redis's units."""
        return max(1, round(events * self.total / len(self.events)))


def seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_workload(
    seed: int, *, events: int, devices: int, days: int = 30, now: datetime | None = None
) -> Workload:
    """``events`` heartbeats over ``devices`` devices of one client per zone in ``ZONES``,
    spread over the last ``days`` days (so they arrive late and, shuffled, out of order).

    Each device has its own pool of at most MAX_USERS_PER_DEVICE users, so a user comes back
    many times a day and no day outgrows the exact user set. About 8% of events carry a null
    user and 4% none at all; 3% of messages are JSON arrays of the same device's heartbeats;
    1% of messages are sent twice (a producer retry: two messages, both counted). The ids come
    from the seed, so two tests with different seeds never share a device.
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    timezones = {seeded_uuid(rng): zone for zone in ZONES}
    clients = list(timezones)
    keys_: list[DeviceKey] = [(clients[n % len(clients)], seeded_uuid(rng)) for n in range(devices)]
    pools = {
        key: [f"user-{seed}-{n}-{k}" for k in range(rng.randint(1, MAX_USERS_PER_DEVICE))]
        for n, key in enumerate(keys_)
    }
    workload = Workload(seed, timezones, keys_, pools, now)
    generated = [
        random_heartbeat(rng, key, pools[key], now, days) for key in _choices(rng, keys_, events)
    ]
    messages: list[Message] = []
    counted: list[dict[str, Any]] = []
    for event in generated:
        if rng.random() < 0.03:
            batch = [event] + [
                random_heartbeat(rng, _device_of(event), pools[_device_of(event)], now, days)
                for _ in range(rng.randint(1, 3))
            ]
            messages.append(Message(encode(batch), str(event["device_id"]).encode()))
            counted += batch
            continue
        messages.append(heartbeat_message(event))
        counted.append(event)
        if rng.random() < 0.01:
            messages.append(heartbeat_message(event))
            counted.append(event)
    rng.shuffle(messages)
    workload.events, workload.messages = counted, messages
    return workload


def _choices(rng: random.Random, population: list[DeviceKey], n: int) -> list[DeviceKey]:
    # Uneven traffic: some devices are much busier than others.
    weights = [rng.paretovariate(1.5) for _ in population]
    return rng.choices(population, weights=weights, k=n)


def _device_of(event: Mapping[str, Any]) -> DeviceKey:
    return (str(event["client_id"]), str(event["device_id"]))


def random_heartbeat(
    rng: random.Random, key: DeviceKey, pool: list[str], now: datetime, days: int
) -> dict[str, Any]:
    instant = now - timedelta(seconds=rng.uniform(120, days * 86_400))
    roll = rng.random()
    # Counts stay small (at most 5000) so that the Redis total tracks how many events are
    # applied: the fault schedule is written in events.
    count = rng.randint(1, 60) if roll < 0.9 else 0 if roll < 0.99 else rng.randint(61, 5000)
    event: dict[str, Any] = {
        "client_id": key[0],
        "device_id": key[1],
        "generated_at_utc": wire_timestamp(rng, instant),
        "total_activity_count": count,
    }
    roll = rng.random()
    if roll < 0.08:
        event["user_id"] = None
    elif roll >= 0.12:  # else: no user_id at all
        event["user_id"] = rng.choice(pool)
    return event


def wire_timestamp(rng: random.Random, instant: datetime) -> str:
    roll = rng.random()
    if roll < 0.7:
        return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if roll < 0.8:
        return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    written = rng.choice(WIRE_OFFSETS)
    hours, minutes = written[1:].split(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if written[0] == "-" else 1)
    return instant.astimezone(timezone(offset)).isoformat(timespec="seconds")


def marker_events(workload: Workload, rng: random.Random, count: int) -> list[dict[str, Any]]:
    """One heartbeat for each of ``count`` new devices: what only a live worker can apply."""
    client = next(iter(workload.timezones))
    now = datetime.now(UTC)
    events = []
    for _ in range(count):
        key = (client, seeded_uuid(rng))
        workload.devices.append(key)
        events.append(
            {
                "client_id": key[0],
                "device_id": key[1],
                "generated_at_utc": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "total_activity_count": 1,
                "user_id": "marker",
            }
        )
    return events
