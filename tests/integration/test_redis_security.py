"""The worker and the API on a Redis that speaks TLS only and knows each of them by its ACL user
(state/acl.py), on one Redis and on the local Redis Cluster: the numbers are exact, the API's
password reads and cannot write, plaintext is refused, and no log holds a password.

Each backend gets its own Redis (or cluster) started TLS-only, with a throwaway CA made by
openssl, the default user as the operators' admin, and ``devact-worker`` and ``devact-api`` as
``state.acl`` renders them. The worker, the API and the `devact` commands are real processes,
each with its own user's URL; Kafka is the session's.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.cluster import RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

from devtools.services import free_port
from devtools.services.redis import RedisSecurity, RedisServer, TlsFiles
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports
from state import acl, keys
from state.scripts import Scripts

from .harness.backends import BACKENDS
from .harness.kafka import heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack
from .oracle import Oracle
from .throwaway_ca import make_tls_files

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the session's Redis serves its Kafka side only; the suite's own TLS and ACL servers, "
        "one Redis and a cluster, are the parameters of its ``secured`` fixture"
    ),
)

COUNT_TIMEOUT_S = 90.0
WIDE_DAY_USERS = 520
"""Users of one device on one day: past the 500 of an exact set, so that day is a HyperLogLog
and reading it goes through the read scripts' scratch key, the API's one key to write there."""
HLL_TOLERANCE = 0.02


class SecureStack(Stack):
    """A Stack whose worker and API each connect as their own ACL user; the `devact` commands
    keep the admin URL of ``env``, and their output goes to ``cli.log`` like the others'."""

    def __init__(self, services: Any, workdir: Path, urls: Mapping[str, str]) -> None:
        super().__init__(services, workdir)
        self.urls = urls

    def _spawn(self, name: str, args: list[str]) -> None:
        admin = self.env["DEVACT_REDIS_URL"]
        self.env["DEVACT_REDIS_URL"] = self.urls[name]
        try:
            super()._spawn(name, args)
        finally:
            self.env["DEVACT_REDIS_URL"] = admin

    def cli(self, *args: str) -> str:
        done = self.run_cli(self.env, *args)
        assert done.returncode == 0, f"`devact {' '.join(args)}` exited {done.returncode}"
        return done.stdout

    def run_cli(self, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [devact_executable(), *args],
            env=dict(env), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        with (self.workdir / "cli.log").open("a") as log:
            log.write(f"$ devact {' '.join(args)}\n{done.stdout}{done.stderr}")
        return done


@dataclass
class Secured:
    backend: str
    stack: SecureStack
    server_url: str
    """``rediss://127.0.0.1:<port>/0``, no credentials."""
    node_ports: list[int]
    tls: TlsFiles
    passwords: dict[str, str]
    """ACL user (``default`` for the admin) -> password."""
    server_logs: Path
    oracle: Oracle
    client_a: str
    client_b: str
    devices_a: list[str]
    wide_device: str
    first: date
    last: date
    wide_day: date
    token: str

    def url(self, user: str) -> str:
        return self.server_url.replace("rediss://", f"rediss://{user}:{self.passwords[user]}@")

    def client(self, user: str, **options: Any) -> Any:
        """A redis-py client of ``user`` as our processes make them (a cluster client on the
        cluster), over TLS."""
        kind = RedisCluster if self.backend == "cluster" else redis.Redis
        return kind.from_url(
            self.url(user), ssl_ca_certs=str(self.tls.ca_file), decode_responses=True, **options
        )

    def attacker(self) -> Any:
        """A client with the API's password that reads what the API reads (the control: a
        refusal below is of the command, not of the connection)."""
        client = self.client(acl.API_USER)
        assert client.hget(keys.client(self.client_a), "timezone") == "UTC"
        return client

    def node_clients(self) -> list[redis.Redis]:
        """The admin's client of each node by itself."""
        return [
            redis.Redis(
                host="127.0.0.1", port=port, username="default", password=self.passwords["default"],
                ssl=True, ssl_ca_certs=str(self.tls.ca_file), decode_responses=True,
            )
            for port in self.node_ports
        ]  # fmt: skip

    def fetch(self, path: str, **params: str) -> httpx.Response:
        return self.stack.http.get(
            path, params=params, headers={"Authorization": f"Bearer {self.token}"}
        )

    def get(self, path: str, **params: str) -> Any:
        response = self.fetch(path, **params)
        assert response.status_code == 200, (path, params, response.text)
        return response.json()

    def device_path(self, client: str, device: str) -> str:
        return f"/v2/clients/{client}/analytics/devices/{device}/activity"

    def device_series(self, client: str, device: str, metric: str, granularity: str) -> Any:
        return self.get(
            self.device_path(client, device), metric=metric, granularity=granularity,
            start_date=self.first.isoformat(), end_date=self.last.isoformat(),
        )  # fmt: skip


def _heartbeat(client: str, device: str, user: str, at: datetime, count: int) -> dict[str, Any]:
    return {
        "client_id": client,
        "device_id": device,
        "user_id": user,
        "generated_at_utc": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_activity_count": count,
    }


def _events(now: datetime, a: str, b: str, devices_a: list[str], wide: str) -> list[dict[str, Any]]:
    """Client A: a few devices over five days, a handful of users each (exact); client B: one
    device with ``WIDE_DAY_USERS`` users yesterday and a few the day before (estimated)."""
    events = [
        _heartbeat(a, device, f"a-user-{(k + n) % 5}", now - timedelta(hours=5 * k + 1), k + n)
        for n, device in enumerate(devices_a)
        for k in range(24)
    ]
    yesterday = now - timedelta(days=1)
    events += [
        _heartbeat(b, wide, f"b-user-{k}", yesterday - timedelta(seconds=k), 1)
        for k in range(WIDE_DAY_USERS)
    ]
    events += [
        _heartbeat(b, wide, user, now - timedelta(days=2), 3)
        for user in ("b-user-0", "b-user-1", "b-other")
    ]
    return events


def _redis_server(backend: str, run_dir: Path, security: RedisSecurity) -> Any:
    if backend == "cluster":
        return LocalRedisCluster(run_dir, consecutive_free_ports(6), security=security)
    return RedisServer(run_dir, free_port(), security=security)


def _node_ports(server: Any) -> list[int]:
    if isinstance(server, LocalRedisCluster):
        return [node.port for node in server.nodes]
    return [server.port]


# Both backends, each a Redis or a cluster this module starts TLS-only: the parameter is the
# suite's own, not the `backends` marker's (the session's services give it Kafka alone).
@pytest.fixture(scope="module", params=BACKENDS)
def secured(
    request: pytest.FixtureRequest, services: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    """A Redis (or cluster) with TLS and ACL users, and a worker and an API on it that have
    counted the module's heartbeats."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"secure-{backend}")
    tls = make_tls_files(root / "tls")
    passwords = {u: secrets.token_urlsafe(24) for u in ("default", acl.WORKER_USER, acl.API_USER)}
    security = RedisSecurity(
        admin_password=passwords["default"],
        users=[grant.acl_file_line(passwords[grant.user]) for grant in acl.GRANTS],
        tls=tls,
    )
    server = _redis_server(backend, root / "redis", security)
    server.start()
    stack: SecureStack | None = None
    try:
        server_url = server.url
        assert server_url.startswith("rediss://")
        urls = {
            name: server_url.replace("rediss://", f"rediss://{user}:{passwords[user]}@")
            for name, user in (("worker", acl.WORKER_USER), ("api", acl.API_USER))
        }
        admin = server_url.replace("rediss://", f"rediss://default:{passwords['default']}@")
        kafka_only = type("Services", (), {"kafka_bootstrap": services.kafka_bootstrap,
                                           "redis_url": admin})()  # fmt: skip
        stack = SecureStack(kafka_only, root / "stack", urls)
        stack.workdir.mkdir()
        stack.env["DEVACT_REDIS_CA_FILE"] = str(tls.ca_file)
        stack.env.pop("DEVACT_REDIS_CLUSTER", None)  # each process asks, as its user
        stack.env["DEVACT_TOKEN_USES_EVERY_S"] = "1"  # the API's one write, soon
        secured = _counted(backend, stack, server_url, _node_ports(server), tls, passwords, root)
        yield secured
    finally:
        crashed = stack.stop() if stack is not None else []
        server.stop()
    assert not crashed, crashed


def _counted(
    backend: str,
    stack: SecureStack,
    server_url: str,
    node_ports: list[int],
    tls: TlsFiles,
    passwords: dict[str, str],
    root: Path,
) -> Secured:
    """Register the clients, start the worker and the API, produce, and wait until every
    device's numbers are the oracle's."""
    now = datetime.now(UTC).replace(microsecond=0)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    devices_a = [str(uuid.uuid4()) for _ in range(3)]
    wide = str(uuid.uuid4())
    stack.add_client(a, "UTC", name="secure A")
    stack.add_client(b, "UTC", name="secure B")
    stack.start()
    events = _events(now, a, b, devices_a, wide)
    oracle = Oracle(events, {a: "UTC", b: "UTC"})
    days = oracle.local_days()
    secured = Secured(
        backend=backend,
        stack=stack,
        server_url=server_url,
        node_ports=node_ports,
        tls=tls,
        passwords=passwords,
        server_logs=root / "redis",
        oracle=oracle,
        client_a=a,
        client_b=b,
        devices_a=devices_a,
        wide_device=wide,
        first=min(days) - timedelta(days=1),
        last=now.date(),
        wide_day=(now - timedelta(days=1)).date(),
        token=stack.create_token(a, b),
    )
    stack.produce([heartbeat_message(e) for e in events])
    differing: list[str] = []

    first, last = secured.first.isoformat(), secured.last.isoformat()
    expected = {
        secured.device_path(*key): oracle.series(
            key, secured.first, secured.last, "activity-count", "daily"
        )
        for key in oracle.devices()
    }
    expected |= {  # each client's aggregates, applied after its devices
        f"/v2/clients/{client}/analytics/activity": oracle.client_series(
            client, secured.first, secured.last, "activity-count", "daily"
        )
        for client in (a, b)
    }

    def counted() -> bool | None:
        for path, points in expected.items():
            response = secured.fetch(path, metric="activity-count", start_date=first,
                                     end_date=last)  # fmt: skip
            if response.status_code != 200 or response.json()["data"] != points:
                differing[:] = [f"{path}: {response.status_code} {response.text}"]
                return None
        return True

    stack.wait_for(
        counted, timeout_s=COUNT_TIMEOUT_S, what="every device counted",
        progress=lambda: "; ".join(differing),
    )  # fmt: skip
    return secured


# --- what the worker and the API do with their own users -----------------------------------


@pytest.mark.parametrize("granularity", ["daily", "weekly"])
@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_the_worker_counts_exactly_and_the_api_serves_it(
    secured: Secured, metric: str, granularity: Any
) -> None:
    for device in secured.devices_a:
        key = (secured.client_a, device)
        got = secured.device_series(secured.client_a, device, metric, granularity)
        assert got == secured.oracle.body(key, secured.first, secured.last, metric, granularity)
    got = secured.get(
        f"/v2/clients/{secured.client_a}/analytics/activity", metric=metric,
        granularity=granularity, start_date=secured.first.isoformat(),
        end_date=secured.last.isoformat(),
    )  # fmt: skip
    expected = secured.oracle.client_series(
        secured.client_a, secured.first, secured.last, metric, granularity
    )
    assert got["data"] == expected


@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_the_ranking_is_served(secured: Secured, metric: str) -> None:
    got = secured.get(
        f"/v2/clients/{secured.client_a}/analytics/devices", metric=metric, limit="10",
        start_date=secured.first.isoformat(), end_date=secured.last.isoformat(),
    )  # fmt: skip
    first, last = secured.first, secured.last
    expected = {
        device: secured.oracle.total_activity((secured.client_a, device), first, last)
        if metric == "activity-count"
        else len(secured.oracle.users((secured.client_a, device), first, last))
        for device in secured.devices_a
    }
    assert {d["device_id"]: d["value"] for d in got["devices"]} == expected


def test_a_day_past_the_exact_limit_is_read_through_the_scratch_key(secured: Secured) -> None:
    """The users scripts estimate a bucket holding a HyperLogLog in their scratch key: the one
    thing they write, and the one key of a device the API's user may write."""
    key = (secured.client_b, secured.wide_device)
    daily = secured.device_series(key[0], key[1], "user-count", "daily")["data"]
    wide = [p["value"] for p in daily if p["date"] == secured.wide_day.isoformat()]
    assert len(wide) == 1, daily
    assert abs(wide[0] - WIDE_DAY_USERS) <= HLL_TOLERANCE * WIDE_DAY_USERS, daily
    whole = secured.get(
        f"/v2/clients/{key[0]}/analytics/devices/{key[1]}/activity", metric="user-count",
        start_date=secured.first.isoformat(), end_date=secured.last.isoformat(),
        compare="previous_period",
    )  # fmt: skip
    exact = len(secured.oracle.users(key, secured.first, secured.last))
    assert exact == WIDE_DAY_USERS + 1
    assert abs(whole["total"] - exact) <= HLL_TOLERANCE * exact, whole["total"]
    client_wide = secured.get(
        f"/v2/clients/{key[0]}/analytics/activity", metric="user-count",
        start_date=secured.first.isoformat(), end_date=secured.last.isoformat(),
        compare="previous_period",
    )  # fmt: skip
    assert abs(client_wide["total"] - exact) <= HLL_TOLERANCE * exact, client_wide["total"]
    with secured.client("default") as admin:  # nothing is left in the scratch keys
        assert admin.exists(keys.device_scratch(key[1]), keys.client_scratch(key[0])) == 0


def test_the_api_notes_when_a_token_was_used(secured: Secured) -> None:
    """``HSET da:token-used``: the one write of the API's user outside scratch keys."""
    secured.device_series(secured.client_a, secured.devices_a[0], "activity-count", "daily")
    with secured.client("default") as admin:
        noted = secured.stack.wait_for(
            lambda: admin.hgetall(keys.TOKEN_USED) or None,
            timeout_s=30, what="the API to note the token's use",
        )  # fmt: skip
    assert len(noted) == 1
    assert abs(int(next(iter(noted.values()))) - datetime.now(UTC).timestamp()) < 120


def test_neither_process_was_ever_refused(secured: Secured) -> None:
    """Every command the worker and the API sent is in their rules: Redis's ACL log, on every
    node, holds no refusal (the attempts below come after it, in this module's order)."""
    for node in secured.node_clients():
        with node:
            refused = node.acl_log()
        assert refused == [], refused


# --- what the API's password cannot do -----------------------------------------------------


def _write_attempts(secured: Secured) -> dict[str, tuple[Any, ...]]:
    device, client = secured.devices_a[0], secured.client_a
    month = keys.device_month(device, secured.last)
    return {
        "a device's day": ("HSET", month, str(secured.last.day), "1000000"),
        "a device's owner": ("HSET", keys.device_meta(device), "client", secured.client_b),
        "a client's timezone": ("HSET", keys.client(client), "timezone", "Asia/Tokyo"),
        "a device of a client": ("SADD", keys.client_devices(client), str(uuid.uuid4())),
        "a token": ("HSET", keys.token("0" * 64), "clients", "*"),
        "a token's deletion": ("DEL", keys.token("0" * 64)),
        "an applied position": ("SET", keys.applied("heartbeats", 0), "999999"),
        "a key's expiry": ("EXPIRE", keys.device_meta(device), "1"),
    }


SCRIPT_REFUSALS = ("The user executing the script can't", "ACL failure in script")
"""How Redis (7.0; 7.2 and later) words an ACL refusal of a command a script runs: as an ERR,
where the same refusal of the script's own call is a NOPERM."""


def _refused(client: Any, command: tuple[Any, ...]) -> bool:
    """True when Redis refuses the command by its ACL rules; False when the command ran."""
    try:
        client.execute_command(*command)
    except NoPermissionError:
        return True
    except ResponseError as exc:
        if any(words in str(exc) for words in SCRIPT_REFUSALS):
            return True
        raise
    return False


def test_the_api_user_cannot_write_a_data_key(secured: Secured) -> None:
    with secured.attacker() as attacker:
        allowed = [
            name
            for name, command in _write_attempts(secured).items()
            if not _refused(attacker, command)
        ]
    assert allowed == []


def _apply_attempts(secured: Secured) -> dict[str, tuple[Any, ...]]:
    """Each apply script called as the worker calls it, to add a million to a device's today
    (or move a position, or convert a month): what a stolen API password would try first."""
    shas = Scripts.register(AsyncRedis())
    device, client, today = secured.devices_a[0], secured.client_a, secured.last
    month, meta = keys.device_month(device, today), keys.device_meta(device)
    expire = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
    return {
        "apply_device": ("EVALSHA", shas.apply_device.sha, 2, meta, month, client, 500, 1,
                         expire, 1, 1, today.day, 1, 0, 10**9, 10**6, b""),
        "apply_client": ("EVALSHA", shas.apply_client.sha, 2, keys.client_devices_index(client),
                         keys.client_offsets(client), 0),
        "advance_applied": ("EVALSHA", shas.advance_applied.sha, 1,
                            keys.applied("heartbeats", 0), 0, 10**9, 1, -2),
        "migrate_month": ("EVALSHA", shas.migrate_month.sha, 2, month,
                          keys.legacy_day_counter(device, today), 0),
        # EVALSHA_RO needs only the right to read what it names: the script runs, and its
        # first write is refused by the rules, inside it.
        "apply_device by EVALSHA_RO": ("EVALSHA_RO", shas.apply_device.sha, 2, meta, month,
                                       client, 500, 1, expire, 1, 1, today.day, 1, 0, 10**9,
                                       10**6, b""),
        "a script of its own": ("EVAL", "return redis.call('FLUSHALL')", 0),
    }  # fmt: skip


def test_the_api_user_cannot_run_an_apply_script(secured: Secured) -> None:
    with secured.attacker() as attacker:
        allowed = [
            name
            for name, command in _apply_attempts(secured).items()
            if not _refused(attacker, command)
        ]
    assert allowed == []


SERVER_ATTEMPTS: dict[str, tuple[Any, ...]] = {
    "FLUSHALL": ("FLUSHALL",),
    "FLUSHDB": ("FLUSHDB",),
    "CONFIG SET": ("CONFIG", "SET", "appendonly", "no"),
    "SCRIPT FLUSH": ("SCRIPT", "FLUSH"),
    "ACL SETUSER": ("ACL", "SETUSER", acl.API_USER, "+@all", "~*"),
    "KEYS": ("KEYS", "*"),
    "SHUTDOWN": ("SHUTDOWN", "NOSAVE"),
    "a forged revocation": ("PUBLISH", keys.TOKENS_CHANNEL, "0" * 64),
    "a forged change": ("PUBLISH", keys.CHANGES_CHANNEL, "x"),
}


def test_the_api_user_cannot_flush_reconfigure_or_publish(secured: Secured) -> None:
    """Sent to every node by itself, as an attacker with a plain connection would."""
    for port in secured.node_ports:
        with redis.Redis(
            host="127.0.0.1", port=port, username=acl.API_USER,
            password=secured.passwords[acl.API_USER], ssl=True,
            ssl_ca_certs=str(secured.tls.ca_file),
        ) as attacker:  # fmt: skip
            assert attacker.ping()  # the control: the connection works
            allowed = [
                name for name, command in SERVER_ATTEMPTS.items() if not _refused(attacker, command)
            ]
        assert allowed == [], port


def test_the_worker_user_cannot_read_a_token(secured: Secured) -> None:
    with secured.client(acl.WORKER_USER) as worker:
        assert worker.hget(keys.client(secured.client_a), "timezone") == "UTC"  # the control
        assert _refused(worker, ("HGETALL", keys.token("0" * 64)))
        assert _refused(worker, ("HGETALL", keys.TOKEN_USED))


def test_the_data_is_as_counted_after_the_attempts(secured: Secured) -> None:
    for client, device in secured.oracle.devices():
        got = secured.device_series(client, device, "activity-count", "daily")
        assert got == secured.oracle.body(
            (client, device), secured.first, secured.last, "activity-count", "daily"
        )
    with secured.client("default") as admin:
        assert admin.hget(keys.client(secured.client_a), "timezone") == "UTC"


# --- TLS and passwords ---------------------------------------------------------------------


def test_a_plaintext_connection_is_refused(secured: Secured) -> None:
    for port in secured.node_ports:
        plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        with plain, pytest.raises(redis.ConnectionError):
            plain.ping()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"PING\r\n")
            try:
                answer = raw.recv(64)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"+PONG"), answer


def test_a_client_that_does_not_trust_the_ca_is_refused(secured: Secured) -> None:
    """The server's certificate is checked: without our CA, the handshake fails."""
    untrusting = redis.Redis(  # the system's CAs only
        host="127.0.0.1", port=secured.node_ports[0], ssl=True, socket_timeout=5
    )
    with untrusting, pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        untrusting.ping()


def test_a_wrong_password_is_refused_and_not_shown(secured: Secured) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(12)
    secured.passwords["wrong"] = wrong  # looked for in every log below too
    env = {**secured.stack.env, "DEVACT_REDIS_URL": secured.server_url.replace(
        "rediss://", f"rediss://{acl.API_USER}:{wrong}@")}  # fmt: skip
    started = time.monotonic()
    done = secured.stack.run_cli(env, "client", "list")
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert time.monotonic() - started < 10, "refused at once, not retried"
    assert f"{acl.API_USER}:***@127.0.0.1" in said, said  # where, with the password hidden
    assert wrong not in said


def test_no_log_line_holds_a_redis_password(secured: Secured) -> None:
    """Every log the run wrote: the worker's, the API's, the `devact` commands' output, and
    each Redis server's log and output. (The servers' configuration files hold the replicas'
    password by design; they are not logs.)"""
    logs = sorted(secured.stack.workdir.glob("*.log"))
    logs += sorted(secured.server_logs.glob("*.log")) + sorted(secured.server_logs.glob("*.out"))
    names = {path.name for path in logs}
    assert {"worker.log", "api.log", "cli.log"} <= names, names
    assert len([n for n in names if n.startswith("redis")]) >= len(secured.node_ports), names
    assert "wrong" in secured.passwords  # the refused command's output is among them
    leaks = [
        f"{path}: {user}'s password"
        for path in logs
        for user, password in secured.passwords.items()
        if password in path.read_text(errors="replace")
    ]
    assert leaks == []
    assert all(path.stat().st_size > 0 for path in logs if path.suffix == ".log"), logs
