"""Kafka over SASL_SSL: a broker of this module's own with a listener that takes only TLS
clients authenticated with SCRAM-SHA-512 (a throwaway CA and certificate, the user created
with Kafka's own storage tool), a Redis of its own, a real `devact worker` and API configured
through DEVACT_KAFKA_*, and the devact commands.

What must hold: heartbeats sent over SASL_SSL are counted exactly (the oracle computed here);
a plaintext client and a TLS client without credentials are refused by that listener; a wrong
password stops the worker and each command at start with one clear line, not a retry loop;
replay, dlq list and redrive, and status work over SASL_SSL; and no log of any process run here
holds the password.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from devtools.services import Endpoints, free_port
from devtools.services.kafka import KafkaServer, SaslSslListener, scram_credential
from devtools.services.redis import RedisServer
from stream.kafka import KafkaConnection, check_access

from .harness.kafka import Message, encode, heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack
from .harness.waiting import poll_until
from .kafka_tls import BrokerTls, make_broker_tls
from .oracle import Oracle

pytestmark = pytest.mark.backends(
    "redis", reason="a broker and a Redis of its own: the subject is Kafka over SASL_SSL"
)

USER = "devact-worker"
SEED = 20261207
EVENTS = 300
COUNTED_TIMEOUT_S = 120.0
EXIT_DEADLINE_S = 60.0
"""How long a refused worker or command may take to stop (it takes a few seconds)."""
REFUSED_CLIENT_TIMEOUT_MS = 5000
ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu")
REFUSED_LINE = f"refused the credentials of user {USER!r}"


class SecuredStack(Stack):
    """The module's worker and API, their Kafka settings those of ``kafka`` (SASL_SSL). The
    worker creates the topics itself, over SASL_SSL, and heartbeats are sent over it too."""

    def __init__(self, endpoints: Endpoints, workdir: Path, kafka: KafkaConnection) -> None:
        super().__init__(endpoints, workdir)
        self.kafka = kafka
        self.env.update(kafka.environment())

    def start(self) -> None:
        self.start_processes()

    def produce(self, messages: Sequence[Message]) -> None:
        async def send() -> None:
            producer = AIOKafkaProducer(**self.kafka.client_kwargs(), acks="all")
            await producer.start()
            try:
                sent = [await producer.send(self.topic, m.value, key=m.key) for m in messages]
                await asyncio.gather(*sent)
            finally:
                await producer.stop()

        asyncio.run(send())


@dataclass
class Secured:
    """The module's broker, Redis, stack and what everything it ran printed."""

    broker: KafkaServer
    redis: RedisServer
    tls: BrokerTls
    password: str
    stack: SecuredStack
    logs: list[Path] = field(default_factory=list)
    """Every log file a process of this module wrote (besides the stack's)."""
    outputs: list[str] = field(default_factory=list)
    """What each command run here printed, stdout and stderr."""

    def env(self, **kafka: str) -> dict[str, str]:
        """The stack's environment with some DEVACT_KAFKA_* changed (``password="..."``)."""
        return self.stack.env | {f"DEVACT_KAFKA_{k.upper()}": v for k, v in kafka.items()}

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [devact_executable(), *args],
            env=env or self.stack.env,
            capture_output=True,
            text=True,
            timeout=EXIT_DEADLINE_S,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        return done

    def cli(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"`devact {' '.join(args)}` exited {done.returncode}:\n" + (
            done.stdout + done.stderr
        )
        return done.stdout


def free_ports(count: int) -> list[int]:
    """Distinct free ports, none the port after another (Kafka's controller takes that one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if all(abs(port - p) > 1 for p in ports):
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("kafka-security")
    tls = make_broker_tls(base / "tls")
    password = secrets.token_urlsafe(24)
    kafka_port, sasl_port, redis_port = free_ports(3)
    listener = SaslSslListener(
        sasl_port, tls.keystore, tls.keystore_password, [scram_credential(USER, password)]
    )
    services = base / "services"
    services.mkdir()
    broker = KafkaServer(services, kafka_port, listener)
    redis = RedisServer(services, redis_port)
    kafka = KafkaConnection(
        broker.sasl_ssl_bootstrap, "SASL_SSL", "SCRAM-SHA-512", USER, SecretStr(password),
        ca_file=tls.ca_file,
    )  # fmt: skip
    stack = SecuredStack(Endpoints(kafka.bootstrap, redis.url), base / "stack", kafka)
    (base / "stack").mkdir()
    found = Secured(broker, redis, tls, password, stack)
    found.logs += [broker.log_file, broker.out_file, redis.log_file, redis.out_file]
    try:
        redis.start()
        broker.start()
        yield found
    finally:
        stack.stop()
        broker.stop()
        redis.stop()


# --- counting over SASL_SSL --------------------------------------------------------------------


@dataclass
class Counted:
    secured: Secured
    oracle: Oracle
    events: list[dict[str, Any]]
    token: str
    first: date
    last: date


def zulu(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def heartbeats(now: datetime) -> tuple[dict[str, str], list[dict[str, Any]], list[Message]]:
    """Seeded heartbeats of three clients in three timezones over the last ten days, singles
    and gateway arrays; the client zones; the messages, two of them refused (dead letters)."""
    rng = random.Random(SEED)
    zones = {str(uuid.UUID(int=rng.getrandbits(128))): zone for zone in ZONES}
    devices = {c: [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)] for c in zones}
    users = [f"user-{n}" for n in range(12)]
    events = []
    for _ in range(EVENTS):
        client = rng.choice(sorted(zones))
        event: dict[str, Any] = {
            "client_id": client,
            "device_id": rng.choice(devices[client]),
            "generated_at_utc": zulu(now - timedelta(seconds=rng.randint(120, 10 * 86_400))),
            "total_activity_count": rng.randint(0, 50),
        }
        if rng.random() < 0.8:
            event["user_id"] = rng.choice(users)
        events.append(event)
    messages = [heartbeat_message(e) for e in events[: EVENTS // 2]]
    rest = events[EVENTS // 2 :]
    for n in range(0, len(rest), 10):  # arrays of a device's gateway: keyed by the first one
        messages.append(Message(encode(rest[n : n + 10]), str(rest[n]["device_id"]).encode()))
    bad = dict(events[0], total_activity_count=-1)
    messages += [Message(b"{not json", b"broken"), heartbeat_message(bad)]
    return zones, events, messages


@pytest.fixture(scope="module")
def counted(secured: Secured) -> Counted:
    stack = secured.stack
    zones, events, messages = heartbeats(datetime.now(UTC))
    for client, zone in zones.items():
        stack.add_client(client, zone)
    stack.start()
    token = stack.create_token(all_clients=True)
    stack.produce(messages)
    oracle = Oracle(events, zones)
    first, last = min(oracle.local_days()), max(oracle.local_days())

    def all_counted() -> bool | None:
        for key in oracle.devices():
            for metric in ("activity-count", "user-count"):
                expected = oracle.series(key, first, last, metric, "daily")
                if stack.series(key, token, metric, first, last) != expected:
                    return None
        return True

    stack.wait_for(all_counted, timeout_s=COUNTED_TIMEOUT_S, what="every series = the oracle")
    return Counted(secured, oracle, events, token, first, last)


def test_heartbeats_sent_over_sasl_ssl_are_counted_exactly(counted: Counted) -> None:
    """``counted`` waited until every device's daily activity and users equal the oracle's;
    here the weekly and monthly buckets, and the worker's log shows it authenticated."""
    stack, oracle = counted.secured.stack, counted.oracle
    for key in oracle.devices():
        for granularity in ("weekly", "monthly"):
            for metric in ("activity-count", "user-count"):
                expected = oracle.series(key, counted.first, counted.last, metric, granularity)
                got = stack.activity(
                    *key, counted.token, metric=metric, granularity=granularity,
                    start_date=counted.first.isoformat(), end_date=counted.last.isoformat(),
                )  # fmt: skip
                assert got.status_code == 200, got.text
                assert got.json()["data"] == expected, (key, metric, granularity)
    assert sum(oracle.total_activity(k, counted.first, counted.last) for k in oracle.devices()) > 0
    worker_log = (stack.workdir / "worker.log").read_text(errors="replace")
    assert f"Authenticated as {USER} via SCRAM-SHA-512" in worker_log


def dead_letters(secured: Secured) -> list[dict[str, Any]]:
    out = secured.cli("dlq", "list", "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_dlq_list_and_redrive_work_over_sasl_ssl(counted: Counted) -> None:
    secured = counted.secured
    letters = poll_until(
        lambda: found if len(found := dead_letters(secured)) >= 2 else None,
        timeout_s=COUNTED_TIMEOUT_S,
        what="the two dead letters in `devact dlq list`",
    )
    assert sorted(letter["reason"] for letter in letters) == ["invalid_field", "invalid_json"]
    dry = secured.cli("dlq", "redrive", "--dry-run")
    assert dry.startswith(f"would send 2 events back to {secured.stack.topic}"), dry


def test_replay_works_over_sasl_ssl_and_changes_nothing(counted: Counted) -> None:
    secured = counted.secured
    poll_until(
        lambda: True if len(dead_letters(secured)) >= 2 else None,
        timeout_s=COUNTED_TIMEOUT_S,
        what="the dead letters written",
    )
    out = secured.cli("replay")
    found = re.search(
        r"(\d+) events applied, (\d+) already there, (\d+) refused before .* (\d+) rejected now",
        out,
    )
    assert found is not None, out
    applied, already, refused_before, rejected = map(int, found.groups())
    assert (applied, already) == (0, len(counted.events)), out
    assert refused_before + rejected == 2, out


def test_status_works_over_sasl_ssl(counted: Counted) -> None:
    secured = counted.secured
    status = json.loads(secured.cli("status", "--json"))
    assert [e for e in status["errors"] if e.startswith(("kafka", "dead-letter"))] == []
    assert len(status["partitions"]) == int(secured.stack.env["DEVACT_TOPIC_PARTITIONS"])
    assert sum(p["end"] for p in status["partitions"]) > 0
    assert status["dead_letters"]["total"] == 2


# --- refusals ------------------------------------------------------------------------------------


def refused_at_start(client_kwargs: dict[str, Any]) -> BaseException | None:
    """What starting a producer with these arguments raised (None: it started)."""

    async def start() -> BaseException | None:
        producer = AIOKafkaProducer(**client_kwargs, request_timeout_ms=REFUSED_CLIENT_TIMEOUT_MS)
        try:
            await asyncio.wait_for(producer.start(), EXIT_DEADLINE_S)
        except Exception as exc:
            return exc
        finally:
            await producer.stop()
        return None

    return asyncio.run(start())


def test_a_plaintext_client_is_refused_by_the_sasl_ssl_listener(secured: Secured) -> None:
    bootstrap = secured.broker.sasl_ssl_bootstrap
    log_before = secured.broker.log_file.read_text(errors="replace").count("SSL handshake failed")
    assert isinstance(refused_at_start({"bootstrap_servers": bootstrap}), KafkaConnectionError)
    with pytest.raises(KafkaConnectionError):
        asyncio.run(check_access(KafkaConnection(bootstrap)))

    def broker_saw_it() -> bool | None:
        log = secured.broker.log_file.read_text(errors="replace")
        return True if log.count("SSL handshake failed") > log_before else None

    poll_until(broker_saw_it, timeout_s=30, what="the broker to log the failed TLS handshake")


def test_a_tls_client_without_credentials_is_refused_by_the_sasl_ssl_listener(
    secured: Secured,
) -> None:
    tls_only = KafkaConnection(
        secured.broker.sasl_ssl_bootstrap, "SSL", ca_file=secured.tls.ca_file
    )
    assert isinstance(refused_at_start(tls_only.client_kwargs()), KafkaConnectionError)


def refused_worker(secured: Secured, name: str, env: dict[str, str]) -> tuple[int, str, float]:
    """Run `devact worker` until it exits (or fail at the deadline): its exit code, output and
    how long it ran."""
    log = secured.stack.workdir / f"{name}.log"
    secured.logs.append(log)
    env = env | {"DEVACT_WORKER_DIR": str(secured.stack.workdir / name)}
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [devact_executable(), "worker"], env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code = poll_until(
                process.poll,
                timeout_s=EXIT_DEADLINE_S,
                what=f"`devact worker` ({name}) to stop at start",
                diagnostics=lambda: log.read_text(errors="replace"),
            )
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 9)  # its own session: only what we started
                process.wait()
    return code, log.read_text(errors="replace"), time.monotonic() - started


def assert_one_clear_error(output: str, line: str, settings: str) -> None:
    said = [text for text in output.splitlines() if line in text]
    assert len(said) == 1, output
    assert settings in said[0], said[0]
    for noise in ("Traceback", "retrying", "Unable connect", "Unable to bootstrap"):
        assert noise not in output, output


def test_a_wrong_password_stops_the_worker_at_start_with_one_clear_error(
    secured: Secured,
) -> None:
    wrong = secured.env(password=secrets.token_urlsafe(24))
    code, output, took = refused_worker(secured, "worker-wrong-password", wrong)
    assert code == 1, output
    assert_one_clear_error(output, REFUSED_LINE, "DEVACT_KAFKA_PASSWORD")
    assert wrong["DEVACT_KAFKA_PASSWORD"] not in output
    assert took < EXIT_DEADLINE_S


def test_a_broker_certificate_of_another_ca_stops_the_worker_at_start(secured: Secured) -> None:
    env = secured.env(ca_file=str(secured.tls.other_ca_file))
    code, output, _ = refused_worker(secured, "worker-other-ca", env)
    assert code == 1, output
    assert_one_clear_error(output, "is not trusted", "DEVACT_KAFKA_CA_FILE")


@pytest.mark.parametrize(
    "command",
    [("replay",), ("dlq", "list"), ("dlq", "redrive", "--dry-run"), ("status", "--json")],
    ids=" ".join,
)
def test_a_wrong_password_stops_the_command_with_one_clear_error(
    secured: Secured, command: tuple[str, ...]
) -> None:
    wrong = secured.env(password=secrets.token_urlsafe(24))
    done = secured.run(*command, env=wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert_one_clear_error(done.stderr, REFUSED_LINE, "DEVACT_KAFKA_PASSWORD")
    assert done.stderr.startswith("error: Kafka at "), done.stderr


# --- secrets -------------------------------------------------------------------------------------


def test_no_log_of_any_process_holds_the_password(counted: Counted) -> None:
    """Run last: every process of the module has written its log by now (the broker, Redis,
    the worker, the API, the refused workers, every command)."""
    secured = counted.secured
    logs = [*secured.logs, *sorted(secured.stack.workdir.glob("*.log"))]
    texts = {str(p): p.read_text(errors="replace") for p in dict.fromkeys(logs) if p.exists()}
    texts |= {f"command {n}": out for n, out in enumerate(secured.outputs)}
    assert any(USER in text for text in texts.values()), "read the wrong logs: no user named"
    assert len(texts) >= 6, sorted(texts)
    for name, text in texts.items():
        assert secured.password not in text, f"the password is in {name}"
        assert secured.tls.keystore_password not in text, f"the keystore password is in {name}"
