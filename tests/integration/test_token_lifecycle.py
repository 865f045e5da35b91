"""Tokens with a life cycle, as an operator and a dashboard see them, on a real API, worker,
Redis and `devact` (docs/security.md): ids and names in lists (never the secret), expiry to the
second, revocation by id, open live streams that end within 10 s of either, the last use noted,
and tokens made before ids existed still working, listed and revocable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from state import keys

from .harness.kafka import heartbeat_message
from .harness.processes import devact_executable
from .harness.stack import Stack
from .harness.waiting import poll_until
from .test_operations import sync_redis

pytestmark = pytest.mark.backends("redis", "cluster")

CLOSE_WITHIN_S = 10.0
"""The issue's bound: a revoked or expired token's open live stream ends within it."""
POLL_S = 0.1
TIMEOUT_S = 60.0


@dataclass
class Tokens:
    stack: Stack
    client: str
    other: str
    device: str
    made: list[str] = field(default_factory=list)
    """Every token the module made: none may appear in any log."""

    def path(self) -> str:
        return f"/v2/clients/{self.client}/analytics/devices/{self.device}/activity"

    def query(self) -> dict[str, str]:
        today = datetime.now(UTC).date().isoformat()
        return {"metric": "activity-count", "start_date": today, "end_date": today}

    def get(self, token: str) -> httpx.Response:
        return self.stack.http.get(self.path(), params=self.query(),
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def create(self, *args: str) -> tuple[str, str]:
        """`devact token create ARGS`: the token (stdout) and what stderr said."""
        done = run(self.stack, "token", "create", "--client", self.client, *args)
        assert done.returncode == 0, done.stderr
        self.made.append(done.stdout.strip())
        return done.stdout.strip(), done.stderr

    def listed(self, *args: str) -> list[dict[str, Any]]:
        done = run(self.stack, "token", "list", "--json", *args)
        assert done.returncode == 0, done.stderr
        found: list[dict[str, Any]] = json.loads(done.stdout)
        return found


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([devact_executable(), *args], env={**stack.env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def id_of(token: str) -> str:
    """The id docs/security.md promises: the first 12 hex digits of the token's SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> Tokens:
    client, other, device = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    stack.env["DEVACT_TOKEN_USES_EVERY_S"] = "1"
    stack.env["DEVACT_LOG_FORMAT"] = "json"  # the access log's lines, as fields
    stack.add_client(client, "UTC", name="lifecycle")
    stack.add_client(other, "UTC", name="lifecycle other")
    stack.start()
    stack.produce([heartbeat_message({
        "client_id": client, "device_id": device, "user_id": "u-1",
        "generated_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_activity_count": 2,
    })])  # fmt: skip
    t = Tokens(stack, client, other, device)
    probe, _ = t.create("--name", "probe")
    stack.wait_for(lambda: t.get(probe).status_code == 200 or None, timeout_s=TIMEOUT_S,
                   what="the device counted")  # fmt: skip
    return t


def test_a_list_shows_ids_names_and_times_never_the_secret(tokens: Tokens) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    token, said = tokens.create("--name", "lobby wall", "--expires-in", "30d")
    assert f"token {id_of(token)} created; expires " in said
    listed = {t["id"]: t for t in tokens.listed()}
    entry = listed[id_of(token)]
    assert set(entry) == {"id", "name", "clients", "created_at", "expires_at", "last_used_at"}
    assert entry["name"] == "lobby wall"
    assert entry["clients"] == [tokens.client]
    assert entry["last_used_at"] is None
    created = datetime.fromisoformat(entry["created_at"])
    assert before <= created <= datetime.now(UTC)
    assert datetime.fromisoformat(entry["expires_at"]) - created == timedelta(days=30)
    table = run(tokens.stack, "token", "list")
    assert table.returncode == 0, table.stderr
    assert id_of(token) in table.stdout
    assert "lobby wall" in table.stdout
    for shown in (json.dumps(tokens.listed()), table.stdout, table.stderr):
        assert token not in shown
        assert token[3:] not in shown  # nor the secret without its prefix
        assert hashlib.sha256(token.encode()).hexdigest() not in shown


def test_a_list_for_one_client_shows_only_its_tokens(tokens: Tokens) -> None:
    mine, _ = tokens.create("--name", "mine")
    done = run(tokens.stack, "token", "create", "--client", tokens.other, "--name", "theirs")
    theirs = done.stdout.strip()
    every = run(tokens.stack, "token", "create", "--all-clients", "--name", "all").stdout.strip()
    ids = {t["id"] for t in tokens.listed("--client", tokens.client)}
    assert {id_of(mine), id_of(every)} <= ids
    assert id_of(theirs) not in ids
    everything = {t["id"]: t for t in tokens.listed()}
    assert everything[id_of(every)]["clients"] == ["*"]


def test_bad_lifetimes_are_refused_with_a_clear_error(tokens: Tokens) -> None:
    for bad in ("30", "1w", "-5d", "0d", "1.5h", "99999999d", ""):
        done = run(tokens.stack, "token", "create", "--client", tokens.client,
                   "--expires-in", bad)  # fmt: skip
        assert done.returncode == 2, (bad, done.stdout)
        assert "error: --expires-in" in done.stderr, (bad, done.stderr)
        assert done.stdout == ""


async def watch(stack: Stack, path: str, token: str, ended: list[float], points: list[str]) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=None) as http, http.stream(
        "GET", path, params={"metric": "activity-count"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                points.append(line)
    ended.append(time.time())


async def until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def test_an_expired_token_is_refused_and_its_stream_ends(tokens: Tokens) -> None:
    token, _ = tokens.create("--name", "short", "--expires-in", "8s")
    (entry,) = [t for t in tokens.listed() if t["id"] == id_of(token)]
    expires = datetime.fromisoformat(entry["expires_at"]).timestamp()
    assert tokens.get(token).status_code == 200

    async def body() -> list[float]:
        ended: list[float] = []
        points: list[str] = []
        task = asyncio.create_task(
            watch(tokens.stack, tokens.path() + "/live", token, ended, points)
        )
        await until(lambda: points, TIMEOUT_S, "the first point")
        await until(lambda: ended, expires - time.time() + CLOSE_WITHIN_S, "the stream to end")
        await task
        return ended

    ended = asyncio.run(body())
    assert expires <= ended[0] <= expires + CLOSE_WITHIN_S
    refused = tokens.get(token)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Unknown, revoked or expired token"
    assert time.time() >= expires


def test_a_token_revoked_by_id_is_refused_and_its_stream_ends(tokens: Tokens) -> None:
    token, _ = tokens.create("--name", "revoked by id")
    assert tokens.get(token).status_code == 200

    async def body() -> tuple[float, list[float]]:
        ended: list[float] = []
        points: list[str] = []
        task = asyncio.create_task(
            watch(tokens.stack, tokens.path() + "/live", token, ended, points)
        )
        await until(lambda: points, TIMEOUT_S, "the first point")
        done = await asyncio.to_thread(run, tokens.stack, "token", "revoke", id_of(token))
        revoked_at = time.time()
        assert (done.returncode, done.stdout.strip()) == (0, "revoked"), done.stderr
        await until(lambda: ended, CLOSE_WITHIN_S, "the stream to end")
        await task
        return revoked_at, ended

    revoked_at, ended = asyncio.run(body())
    assert ended[0] - revoked_at <= CLOSE_WITHIN_S
    assert tokens.get(token).status_code == 401
    assert id_of(token) not in {t["id"] for t in tokens.listed()}
    again = run(tokens.stack, "token", "revoke", id_of(token))
    assert again.returncode == 1
    assert f"no token has the id {id_of(token)}" in again.stderr


def test_revoking_needs_an_id_long_enough_to_name_one_token(tokens: Tokens) -> None:
    token, _ = tokens.create("--name", "kept")
    for short in ("", id_of(token)[:3]):
        done = run(tokens.stack, "token", "revoke", short)
        assert done.returncode != 0
    assert tokens.get(token).status_code == 200


def test_the_last_use_is_noted_to_the_minute(tokens: Tokens) -> None:
    token, _ = tokens.create("--name", "used")
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    assert tokens.get(token).status_code == 200

    def noted() -> str | None:
        (entry,) = [t for t in tokens.listed() if t["id"] == id_of(token)]
        return entry["last_used_at"]

    when = datetime.fromisoformat(poll_until(noted, timeout_s=TIMEOUT_S, what="the use noted"))
    assert before <= when <= datetime.now(UTC)
    assert when.second == 0


def test_a_token_made_before_ids_keeps_working_and_is_listed_and_revocable(tokens: Tokens) -> None:
    """As `devact token create` stored them before: a hash of clients and name, no index."""
    legacy = "da_" + uuid.uuid4().hex + uuid.uuid4().hex[:11]
    digest = hashlib.sha256(legacy.encode()).hexdigest()
    client = sync_redis(tokens.stack)
    try:
        client.hset(keys.token(digest), mapping={"clients": tokens.client, "name": "old"})
        client.delete(keys.TOKEN_INDEX_COMPLETE)  # as on a deployment that never listed tokens
    finally:
        client.close()
    assert tokens.get(legacy).status_code == 200
    (entry,) = [t for t in tokens.listed() if t["id"] == digest[:12]]
    assert (entry["name"], entry["created_at"], entry["expires_at"]) == ("old", None, None)
    assert run(tokens.stack, "token", "revoke", digest[:12]).returncode == 0
    poll_until(lambda: tokens.get(legacy).status_code == 401 or None, timeout_s=CLOSE_WITHIN_S,
               what="the legacy token refused")  # fmt: skip


def access_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = (stack.workdir / "api.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("logger") == "devact.access"]


def test_the_access_log_says_who_read_what_never_with_the_token(tokens: Tokens) -> None:
    token, _ = tokens.create("--name", "audited")
    made_up = "da_" + uuid.uuid4().hex
    rid = uuid.uuid4().hex
    answers = [
        tokens.stack.http.get(tokens.path(), params=tokens.query(),
                              headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid}),
        tokens.get(made_up),
        tokens.stack.http.get(tokens.path(), params=tokens.query()),
        tokens.stack.http.get("/no/such/route"),
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 401, 401, 404]

    sent = {a.headers["x-request-id"] for a in answers}

    def logged() -> dict[str, Any] | None:
        """The first request's line, once every request's line is written (a line is written
        as its request ends, after the answer has left)."""
        lines = {e.get("request_id"): e for e in access_lines(tokens.stack)}
        return lines[rid] if sent <= lines.keys() else None

    entry = poll_until(logged, timeout_s=TIMEOUT_S, what="the requests' access lines")
    template = "/v2/clients/{client_id}/analytics/devices/{device_id}/activity"
    assert entry["route"] == template
    assert (entry["method"], entry["status"], entry["client_id"]) == ("GET", 200, tokens.client)
    assert entry["token_id"] == id_of(token)
    assert entry["duration_ms"] >= 0
    lines = access_lines(tokens.stack)
    refused = [e for e in lines if e["token_id"] == id_of(made_up)]
    assert [(e["status"], e["route"]) for e in refused] == [(401, template)]
    assert any(e["route"] == "unmatched" and e["status"] == 404 for e in lines)
    assert any(e["token_id"] is None and e["status"] == 401 for e in lines)


def test_no_log_line_holds_a_token(tokens: Tokens) -> None:
    """Every log of the module's processes, after everything above ran."""
    assert len(tokens.made) >= 8
    logs = {p.name: p.read_text(errors="replace") for p in tokens.stack.workdir.glob("*.log")}
    assert {"api.log", "worker.log"} <= logs.keys()
    for name, text in logs.items():
        for token in tokens.made:
            assert token not in text, f"{name} holds a token"
            assert token[3:] not in text, f"{name} holds a token's secret"
