"""Fault injection for tests/integration/test_faults.py: own services, killable workers, truth.

The fault tests stop, kill and restart Kafka, Redis and workers, so they run on a LocalStack of
their own (one per module) and never disturb the session's shared services. Each test gets a
fresh topic and consumer group on it, a seeded workload whose expected numbers come from the
independent oracle, a producer that keeps the stream flowing while the faults strike, and
worker processes it can SIGKILL and restart under the same static group membership id.

Nothing here waits a fixed time to synchronise: every wait polls an observable (the Redis total,
a process's exit, an HTTP status) against a ``time.monotonic()`` deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import TopicPartition

from devact.services import LocalStack, ServiceError, free_port
from state import keys
from tests.integration.conftest import (
    Message,
    devact_executable,
    encode,
    heartbeat_message,
    poll_until,
)
from tests.integration.oracle import DeviceKey, Oracle

PARTITIONS = 6
# Zones whose local midnight is far from UTC's, three of them with 30 or 45 minute offsets.
ZONES = ("UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "Australia/Adelaide")
WIRE_OFFSETS = ("+05:45", "-04:00", "+13:45", "-09:30", "+01:00")
MAX_USERS_PER_DEVICE = 40  # so no device-day holds more than 40 users: user counts are exact
FAST_POLL_S = 0.05
PROCESS_STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 60


# --- services -------------------------------------------------------------------------------


def start_own_stack(run_dir: Path) -> LocalStack:
    """A started LocalStack on free ports (Kafka's controller takes the port after Kafka's)."""
    kafka_port = free_port()
    redis_port = free_port()
    while redis_port in (kafka_port, kafka_port + 1):
        redis_port = free_port()
    stack = LocalStack(run_dir, kafka_port, redis_port)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def redis_pid(stack: LocalStack) -> int:
    """The pid of the stack's redis-server, from its pid file (first line: pid, second: port)."""
    return int((stack.run_dir / "redis.pid").read_text().split()[0])


def redis_aof_tail(stack: LocalStack) -> Path:
    """The AOF file Redis appends to now: the newest `*.incr.aof` of its appendonlydir."""
    found = sorted(
        (stack.run_dir / "redis").glob("appendonlydir/*.incr.aof"),
        key=lambda p: int(p.name.split(".")[-3]),
    )
    assert found, f"no incremental AOF file under {stack.run_dir / 'redis'}"
    return found[-1]


def restart_redis(stack: LocalStack) -> None:
    """``start_redis`` on the same port and data; when it refuses, say who holds the port."""
    try:
        stack.start_redis()
    except ServiceError as exc:
        port = stack.endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]
        sockets = subprocess.run(
            ["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True,
            text=True,
            check=False,
        )
        raise AssertionError(
            f"Redis did not start again: {exc}\nsockets on port {port}:\n{sockets.stdout}"
        ) from exc


def ensure_services(stack: LocalStack, timeout_s: float = 90.0) -> None:
    """Start whichever of Kafka and Redis a test left stopped (a no-op for a running one), so
    that one failed test does not fail the next. Polls: a port the old process held may stay
    unusable for a while (TCP TIME_WAIT lasts 60 s)."""

    def started() -> bool | None:
        try:
            stack.start_redis()
            stack.start_kafka()
        except ServiceError:
            return None
        return True

    poll_until(started, timeout_s=timeout_s, what="Kafka and Redis running again")


def kill_redis(stack: LocalStack) -> None:
    """SIGKILL redis-server, as a crash would, and wait until the stack sees it gone."""
    os.kill(redis_pid(stack), signal.SIGKILL)
    poll_until(
        lambda: True if stack.status()["redis"] == "stopped" else None,
        timeout_s=PROCESS_STOP_TIMEOUT_S,
        what="redis-server to die after SIGKILL",
    )


# --- processes ------------------------------------------------------------------------------


class Process:
    """One `devact` command run in its own session, its output appended to one log file.

    ``start`` may be called again after the process ended: each run is an incarnation, and the
    log marks where each begins, so a failure report shows what every incarnation said.
    """

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self.incarnations = 0
        self.wanted = False
        """True from ``start`` until ``kill`` or ``terminate``: it must be alive meanwhile."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} never started"
        return self._process.pid

    def start(self) -> float:
        """Spawn the process; returns the ``time.monotonic()`` of the spawn."""
        assert not self.alive, f"{self.name} is already running"
        self._close_log()
        self.incarnations += 1
        self._log_file = self.log.open("ab")
        self._log_file.write(
            f"\n===== {self.name}: incarnation {self.incarnations} =====\n".encode()
        )
        self._log_file.flush()
        started = time.monotonic()
        self.wanted = True
        self._process = subprocess.Popen(
            [devact_executable(), *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return started

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        """SIGKILL the whole session of the process (only what we started) and reap it."""
        assert self._process is not None, f"{self.name} never started"
        assert self.alive, f"{self.name} is not running"
        self.wanted = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=PROCESS_STOP_TIMEOUT_S)

    def terminate(self, timeout_s: float = PROCESS_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end in time. Returns the exit code, or None
        when it had to be killed."""
        self.wanted = False
        if not self.alive:
            return self.returncode
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"----- last lines of `devact {self.name}` ({self.log}) -----\n" + "\n".join(
            text[-lines:]
        )

    def close(self) -> None:
        self.terminate()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class Api(Process):
    """`devact api` on a free port, with an HTTP client."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        super().__init__("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)], env, log)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10.0)

    def status(self, path: str) -> int | None:
        try:
            return self.http.get(path).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool | None:
            assert self.alive, f"the API exited\n{self.tail()}"
            return True if self.status("/readyz") == 200 else None

        poll_until(ready, timeout_s=timeout_s, what="GET /readyz -> 200", diagnostics=self.tail)

    def activity(self, key: DeviceKey, token: str, **params: str) -> httpx.Response:
        return self.http.get(
            f"/v2/clients/{key[0]}/analytics/devices/{key[1]}/activity",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )

    def close(self) -> None:
        self.http.close()
        super().close()


# --- Redis ----------------------------------------------------------------------------------

# Sums field `n` of the given hashes server side: one round trip however many device-days.
_SUM_COUNTS = """
local total = 0
for i = 1, #KEYS do
  total = total + (tonumber(redis.call('HGET', KEYS[i], 'n')) or 0)
end
return total
"""
_CHUNK = 5000


class RedisProbe:
    """Reads what the worker wrote, for checks and progress; never writes data keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

    def close(self) -> None:
        self._redis.close()

    def total(self, counter_keys: Sequence[str]) -> int:
        """Sum of the activity counters of these device-days (a missing one counts 0)."""
        return sum(
            int(self._redis.eval(_SUM_COUNTS, len(chunk), *chunk))  # type: ignore[arg-type]
            for chunk in _chunks(counter_keys)
        )

    def total_or_none(self, counter_keys: Sequence[str]) -> int | None:
        """``total``, or None while Redis does not answer (it is being restarted)."""
        try:
            return self.total(counter_keys)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return None

    def counts(self, counter_keys: Sequence[str]) -> list[int | None]:
        values: list[int | None] = []
        for chunk in _chunks(counter_keys):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hget(key, keys.COUNT_FIELD)
                values += [None if v is None else int(v) for v in pipe.execute()]
        return values

    def user_sets(self, user_keys: Sequence[str]) -> list[tuple[str, int]]:
        """(TYPE, SCARD or 0) of each day's users key."""
        result: list[tuple[str, int]] = []
        for chunk in _chunks(user_keys):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.type(key)
                types = [t.decode() for t in pipe.execute()]
                for key, kind in zip(chunk, types, strict=True):
                    if kind == "set":
                        pipe.scard(key)
                    else:
                        pipe.exists(key)  # placeholder keeps positions aligned
                sizes = pipe.execute()
            result += [
                (kind, int(size) if kind == "set" else 0)
                for kind, size in zip(types, sizes, strict=True)
            ]
        return result

    def keys_matching(self, pattern: str) -> list[str]:
        return sorted(k.decode() for k in self._redis.scan_iter(match=pattern, count=5000))

    def digest(self, include: Callable[[str], bool] = lambda _: True) -> dict[str, Any]:
        """Per key (sorted): TYPE, value and EXPIRETIME. Hashes as sorted items, sets as sorted
        members, strings (HyperLogLogs and positions) by GET. Compare two digests with
        ``digest_difference``."""
        names = [k for k in self.keys_matching("*") if include(k)]
        out: dict[str, Any] = {}
        for chunk in _chunks(names):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.type(key)
                    pipe.execute_command("EXPIRETIME", key)
                meta = pipe.execute()
                kinds = [t.decode() for t in meta[0::2]]
                for key, kind in zip(chunk, kinds, strict=True):
                    if kind == "hash":
                        pipe.hgetall(key)
                    elif kind == "set":
                        pipe.smembers(key)
                    elif kind == "string":
                        pipe.get(key)
                    else:
                        pipe.dump(key)
                values = pipe.execute()
            for key, kind, expire, value in zip(chunk, kinds, meta[1::2], values, strict=True):
                if kind == "hash":
                    value = sorted(value.items())
                elif kind == "set":
                    value = sorted(value)
                out[key] = (kind, repr(value), int(expire))
        return out

    def flushall(self) -> None:
        self._redis.flushall()


def digest_hash(digest: Mapping[str, Any]) -> str:
    return hashlib.sha256(repr(sorted(digest.items())).encode()).hexdigest()


def digest_difference(before: Mapping[str, Any], after: Mapping[str, Any], limit: int = 15) -> str:
    """A readable account of how two digests differ ('' when equal)."""
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    if not (gone or new or changed):
        return ""
    lines = [f"{len(gone)} keys gone, {len(new)} keys new, {len(changed)} keys changed"]
    lines += [f"  gone: {k} {before[k]}" for k in gone[:limit]]
    lines += [f"  new: {k} {after[k]}" for k in new[:limit]]
    lines += [
        f"  changed: {k}\n    before {before[k]}\n    after  {after[k]}" for k in changed[:limit]
    ]
    return "\n".join(lines)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for first in range(0, len(items), _CHUNK):
        yield items[first : first + _CHUNK]


# --- the workload and its ground truth ------------------------------------------------------


@dataclass(frozen=True)
class DeviceDay:
    device: DeviceKey
    day: date
    activity: int
    users: int

    @property
    def counter_key(self) -> str:
        return keys.day_counter(self.device[1], self.day)

    @property
    def users_key(self) -> str:
        return keys.day_users(self.device[1], self.day)


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

    def counter_keys(self) -> list[str]:
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


# --- Kafka ----------------------------------------------------------------------------------


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # Idempotent: a send retried across a broker restart must not write a message twice, or the
    # topic itself would hold more events than the oracle counts.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=120_000,
        linger_ms=5,
    )


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
            deadline = time.monotonic() + 60
            while topic not in await admin.list_topics():
                assert time.monotonic() < deadline, f"topic {topic} never appeared"
                await asyncio.sleep(FAST_POLL_S)
        finally:
            await admin.close()

    asyncio.run(run())


def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send and wait for every acknowledgement."""

    async def run() -> None:
        producer = _producer(bootstrap)
        await producer.start()
        try:
            sent = [await producer.send(topic, value=m.value, key=m.key) for m in messages]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def topic_message_count(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> int:
    """Messages in the topic (sum of end offsets; the topic starts empty, nothing is compacted)."""

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(run())


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    partitions: tuple[int, ...]


def group_members(bootstrap: str, group: str, topic: str) -> list[GroupMember]:
    """The consumer group's members and the partitions of ``topic`` each was assigned."""

    async def run() -> list[GroupMember]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        members = []
        for response in responses:
            for described in response.groups:
                for member in described[5]:
                    member_id, client_id, assignment = member[0], member[-4], member[-1]
                    parts: tuple[int, ...] = ()
                    if assignment:
                        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                        parts = tuple(
                            sorted(tp.partition for tp in decoded.partitions() if tp.topic == topic)
                        )
                    members.append(GroupMember(member_id, client_id, parts))
        return members

    return asyncio.run(run())


class BackgroundProducer:
    """Sends messages from a thread at a steady rate, so that faults strike while events flow.

    The pace is rate limiting, not synchronisation: nothing in the tests waits on it except
    ``join`` at the end. ``sent`` counts acknowledged messages.
    """

    def __init__(
        self, bootstrap: str, topic: str, messages: Sequence[Message], rate_per_s: float
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._messages = list(messages)
        self._rate = rate_per_s
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="background-producer", daemon=True)

    def start(self) -> BackgroundProducer:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float = 180.0) -> float:
        """Wait until every message is acknowledged; returns how long sending took."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"producer still sending after {timeout_s:.0f} s"
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error
        assert self.sent == len(self._messages), (self.sent, len(self._messages))
        assert self.finished_at is not None
        return self.finished_at - self.started_at

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.finished_at = time.monotonic()

    async def _send_all(self) -> None:
        producer = _producer(self._bootstrap)
        await producer.start()
        try:
            tick_s = 0.05
            per_tick = max(1, round(self._rate * tick_s))
            next_tick = time.monotonic()
            for first in range(0, len(self._messages), per_tick):
                chunk = self._messages[first : first + per_tick]
                sent = [await producer.send(self._topic, value=m.value, key=m.key) for m in chunk]
                await asyncio.gather(*sent)
                self.sent += len(chunk)
                next_tick += tick_s
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        finally:
            await producer.stop()


# --- one test's pipeline --------------------------------------------------------------------


class Run:
    """One test's topic, consumer group and workers on the module's own services."""

    def __init__(self, stack: LocalStack, workdir: Path, name: str) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.stack = stack
        self.workdir = workdir
        self.topic = f"heartbeats-{name}-{suffix}"
        self.dlq_topic = f"{self.topic}.dlq"
        self.app_id = f"device-activity-{name}-{suffix}"
        self.bootstrap = stack.endpoints.kafka_bootstrap
        self.redis_url = stack.endpoints.redis_url
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DEVACT_KAFKA_BOOTSTRAP": self.bootstrap,
            "DEVACT_REDIS_URL": self.redis_url,
            "DEVACT_TOPIC": self.topic,
            "DEVACT_DLQ_TOPIC": self.dlq_topic,
            "DEVACT_APP_ID": self.app_id,
            "DEVACT_TOPIC_PARTITIONS": str(PARTITIONS),
            "DEVACT_DEFAULT_TIMEZONE": "UTC",
            "DEVACT_RETENTION_DAYS": "400",
        }
        self.workers: dict[str, Process] = {}
        self.others: list[Process] = []
        create_topic(self.bootstrap, self.topic)
        create_topic(self.bootstrap, self.dlq_topic, 2)

    def worker(self, instance_id: str) -> Process:
        """The worker with this static membership id: created once, then the same one (same id,
        same directory) however often it is restarted."""
        if instance_id not in self.workers:
            env = {
                **self.env,
                "DEVACT_WORKER_INSTANCE_ID": instance_id,
                "DEVACT_WORKER_DIR": str(self.workdir / f"worker-{instance_id}"),
            }
            self.workers[instance_id] = Process(
                f"worker {instance_id}", ["worker"], env, self.workdir / f"worker-{instance_id}.log"
            )
        return self.workers[instance_id]

    def replay(self, *extra: str, timeout_s: float = 240.0) -> subprocess.CompletedProcess[str]:
        """Run `devact replay` to its end against this run's topic."""
        return subprocess.run(
            [devact_executable(), "replay", *extra],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def assert_workers_alive(self) -> None:
        for process in self.workers.values():
            if process.wanted and not process.alive:
                raise AssertionError(
                    f"`devact {process.name}` exited with code {process.returncode}\n"
                    + process.tail()
                )

    def tails(self) -> str:
        return "\n".join(p.tail() for p in [*self.workers.values(), *self.others])

    def close(self) -> None:
        for process in [*self.workers.values(), *self.others]:
            process.close()


def register_clients(redis_url: str, timezones: Mapping[str, str]) -> None:
    """What `devact client add` does, for every client of a workload, in one process."""
    from state.connection import connect
    from state.registry import Registry
    from state.settings import StoreSettings

    async def run() -> None:
        client = connect(StoreSettings(redis_url=redis_url))
        try:
            registry = Registry(client)
            for client_id, zone in timezones.items():
                await registry.add_client(client_id, zone, f"fault {zone}", datetime.now(UTC))
        finally:
            await client.aclose()

    asyncio.run(run())


def create_token(redis_url: str) -> str:
    """What `devact token create --all-clients` prints."""
    from state.connection import connect
    from state.registry import Registry
    from state.settings import StoreSettings

    async def run() -> str:
        client = connect(StoreSettings(redis_url=redis_url))
        try:
            return str(await Registry(client).create_token([], all_clients=True, name="faults"))
        finally:
            await client.aclose()

    return asyncio.run(run())


# --- checks ---------------------------------------------------------------------------------


def wait_until_total(
    probe: RedisProbe,
    workload: Workload,
    run: Run,
    *,
    timeout_s: float,
    stall_s: float | None = None,
    what: str = "every event in Redis",
) -> float:
    """Poll until Redis's total over the workload's device-days equals the oracle's (workers
    must stay alive meanwhile); returns the seconds it took. A total above the oracle's fails
    at once: something was counted twice. With ``stall_s`` (for when nothing more is being
    produced), a total that stops moving short of the oracle's fails after that long."""
    started = time.monotonic()
    counter_keys = workload.counter_keys()
    expected = workload.total
    seen: list[int | None] = [None]
    moved = [time.monotonic()]

    def done() -> bool | None:
        run.assert_workers_alive()
        total = probe.total_or_none(counter_keys)
        if total != seen[0]:
            seen[0], moved[0] = total, time.monotonic()
        if total is not None and total > expected:
            raise AssertionError(
                f"Redis total {total} exceeds the oracle's {expected}: events counted twice\n"
                + cell_differences(probe, workload)
            )
        if total == expected:
            return True
        if stall_s is not None and time.monotonic() - moved[0] > stall_s:
            raise AssertionError(
                f"Redis total stuck at {total} of {expected} for {stall_s:.0f} s, nothing left "
                f"to produce: events are lost, not late\n{diagnostics()}"
            )
        return None

    def diagnostics() -> str:
        messages = topic_message_count(run.bootstrap, run.topic)
        return (
            f"Redis total {seen[0]} of expected {expected}; topic holds {messages} messages, "
            f"{len(workload.messages)} were produced\n"
            + cell_differences(probe, workload)
            + "\n"
            + run.tails()
        )

    poll_until(done, timeout_s=timeout_s, what=what, diagnostics=diagnostics)
    return time.monotonic() - started


def cell_differences(probe: RedisProbe, workload: Workload, limit: int = 20) -> str:
    """Device-days whose counter or user count differs from the oracle ('' when none)."""
    cells = workload.cells()
    counts = probe.counts([c.counter_key for c in cells])
    users = probe.user_sets([c.users_key for c in cells])
    wrong = []
    for cell, count, (kind, size) in zip(cells, counts, users, strict=True):
        expected_kind = "set" if cell.users else "none"
        if (count or 0, size, kind) != (cell.activity, cell.users, expected_kind):
            wrong.append(
                f"  {cell.device[1]} {cell.day}: n={count} (oracle {cell.activity}), "
                f"users {kind} of {size} (oracle {cell.users})"
            )
    if not wrong:
        return ""
    missing = sum(c.activity - (n or 0) for c, n in zip(cells, counts, strict=True))
    return (
        f"{len(wrong)} of {len(cells)} device-days differ (oracle minus Redis, summed: "
        f"{missing}):\n" + "\n".join(wrong[:limit])
    )


def assert_exact(probe: RedisProbe, workload: Workload) -> None:
    """Every device-day counter and user count equals the oracle, and no device of the workload
    has a day key the oracle does not know."""
    differences = cell_differences(probe, workload)
    assert not differences, differences
    devices = {d for _, d in workload.devices}
    expected = {c.counter_key for c in workload.cells()} | {
        c.users_key for c in workload.cells() if c.users
    }
    stored = {
        k
        for k in probe.keys_matching(f"{keys.PREFIX}:{{d:*")
        if k.split("{d:", 1)[1].split("}", 1)[0] in devices
        and not k.endswith((":meta", ":scratch"))
    }
    assert stored == expected, (
        f"keys only in Redis: {sorted(stored - expected)[:10]}; "
        f"keys only in the oracle: {sorted(expected - stored)[:10]}"
    )


def assert_weekly_buckets(api: Api, token: str, workload: Workload, rng: random.Random) -> int:
    """Weekly activity and user counts of a few devices through the API equal the oracle's;
    returns how many series were compared."""
    compared = 0
    for key in rng.sample(sorted(workload.oracle.devices()), 5):
        days = sorted(workload.oracle.local_days(key))
        first, last = days[0] - timedelta(days=3), days[-1] + timedelta(days=3)
        for metric in ("activity-count", "user-count"):
            response = api.activity(
                key,
                token,
                metric=metric,
                granularity="weekly",
                start_date=first.isoformat(),
                end_date=last.isoformat(),
            )
            assert response.status_code == 200, (response.status_code, response.text)
            expected = workload.oracle.series(key, first, last, metric, "weekly")
            assert response.json()["data"] == expected, (key, metric)
            compared += 1
    return compared


class Figures:
    """Measured numbers of the fault tests: printed (visible with -s) and kept as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: dict[str, dict[str, Any]] = {}

    def record(self, test: str, **values: Any) -> None:
        self.figures.setdefault(test, {}).update(values)
        self.path.write_text(json.dumps(self.figures, indent=2, sort_keys=True) + "\n")
        print(f"\n[faults] {test}: {json.dumps(values, sort_keys=True)} (all figures: {self.path})")


def wait_for_total(
    probe: RedisProbe,
    workload: Workload,
    run: Run,
    at_least: int,
    *,
    timeout_s: float = 120.0,
    what: str = "progress",
) -> tuple[int, float]:
    """Poll quickly until Redis's total over the workload reaches ``at_least`` (capped at the
    oracle's total), workers alive; returns the total seen and the ``time.monotonic()`` then."""
    target = min(at_least, workload.total)
    counter_keys = workload.counter_keys()
    deadline = time.monotonic() + timeout_s
    total: int | None = None
    while True:
        run.assert_workers_alive()
        total = probe.total_or_none(counter_keys)
        if total is not None and total >= target:
            return total, time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}: Redis total {total}, "
                f"waiting for {target} of {workload.total}\n{run.tails()}"
            )
        time.sleep(FAST_POLL_S)
