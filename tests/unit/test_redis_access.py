"""Redis URLs are shown without their password; the ACL users' rules (state/acl.py) are the ones
docs/security.md describes, and carry no password in clear."""

from __future__ import annotations

import logging
from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import typer
from click.testing import Result
from pydantic import ValidationError
from typer.testing import CliRunner

from devact.redis_acl import redis_acl
from state import acl, keys
from state.settings import StoreSettings, redacted_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://devact-api:{SECRET}@host:6379/0", "redis://devact-api:***@host:6379/0"),
        (f"rediss://devact-worker:{SECRET}@h.example:6380/2", "rediss://devact-worker:***@h.example:6380/2"),
        (f"redis://:{SECRET}@host/0", "redis://:***@host/0"),  # requirepass, no user
        (f"redis://u:{SECRET}@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("redis://u:p%40ss%3Aword@host/0", "redis://u:***@host/0"),  # escaped @ and :
        (f"rediss://u:{SECRET}@host:6380/0?ssl_cert_reqs=required", "rediss://u:***@host:6380/0?ssl_cert_reqs=required"),
    ],
)  # fmt: skip
def test_a_password_in_a_redis_url_is_shown_as_stars(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://127.0.0.1:6380/0", "redis://user@host/0"]
)
def test_a_url_without_a_password_is_shown_as_it_is(url: str) -> None:
    assert redacted_url(url) == url


def test_a_url_that_cannot_be_parsed_is_hidden_whole() -> None:
    assert redacted_url(f"redis://u:{SECRET}@[::1/0") == "***"


def test_printed_settings_hold_no_password(caplog: pytest.LogCaptureFixture) -> None:
    settings = StoreSettings(redis_url=f"rediss://devact-api:{SECRET}@host:6380/0")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r", settings, settings)
    assert "devact-api:***@host:6380" in caplog.text
    assert SECRET not in caplog.text


def test_an_invalid_setting_is_reported_without_the_password(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read by this test")
    with pytest.raises(ValidationError) as refused:
        StoreSettings(redis_url=f"redis://devact-api:{SECRET}@host/0", redis_ca_file=ca)
    assert "rediss://" in str(refused.value)
    assert SECRET not in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        StoreSettings(redis_url=f"redis://devact-api:{SECRET}@host/0", redis_timeout_s=-1)
    assert SECRET not in str(refused.value)


def test_tls_options_are_given_for_rediss_urls_only(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read by this test")
    tls = StoreSettings(redis_url="rediss://host:6380/0", redis_ca_file=ca)
    assert tls.redis_tls_options() == {
        "ssl_ca_certs": str(ca), "ssl_certfile": None, "ssl_keyfile": None,
    }  # fmt: skip
    assert StoreSettings(redis_url="redis://host:6379/0").redis_tls_options() == {}


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not read by this test")
    with pytest.raises(ValidationError, match="go together"):
        StoreSettings(redis_url="rediss://host:6380/0", redis_cert_file=cert)


# --- the ACL users ---------------------------------------------------------------------------


def test_the_rules_start_from_nothing_and_store_the_password_hashed() -> None:
    for grant in acl.GRANTS:
        rules = grant.rules(SECRET)
        assert rules[:2] == ["reset", "on"]
        assert rules[2] == "#" + acl.password_hash(SECRET)
        assert len(rules[2]) == 65
        text = " ".join(grant.setuser(SECRET)) + grant.acl_file_line(SECRET)
        assert SECRET not in text
        assert not any(rule.startswith(">") for rule in rules)


def test_the_setuser_command_and_the_acl_file_line_say_the_same() -> None:
    assert acl.API.setuser(SECRET) == ["ACL", "SETUSER", "devact-api", *acl.API.rules(SECRET)]
    assert acl.API.acl_file_line(SECRET) == " ".join(["user", "devact-api", *acl.API.rules(SECRET)])


def _commands(grant: acl.Grant) -> set[str]:
    return {r[1:] for r in grant.rules(SECRET) if r.startswith("+")}


def _key_rules(grant: acl.Grant) -> set[str]:
    return {r for r in grant.rules(SECRET) if "~" in r}


DESTRUCTIVE = {"flushall", "flushdb", "config", "keys", "scan", "debug", "shutdown", "acl",
               "script", "script|flush", "eval", "eval_ro", "function", "fcall", "module",
               "replicaof", "save", "bgsave", "rename", "unlink", "expire", "migrate", "restore",
               "@all", "@dangerous", "@write", "@admin"}  # fmt: skip


@pytest.mark.parametrize("grant", acl.GRANTS, ids=lambda g: g.user)
def test_no_user_may_run_arbitrary_scripts_or_admin_commands(grant: acl.Grant) -> None:
    assert not _commands(grant) & DESTRUCTIVE
    assert not any(c.startswith("@") for c in _commands(grant))  # named commands only


def test_the_api_reads_everything_of_ours_and_writes_scratch_and_token_uses_only() -> None:
    assert _key_rules(acl.API) == {
        "%R~da:*",
        f"~{keys.TOKEN_USED}",
        f"~{keys.device_scratch('*')}",
        f"~{keys.client_scratch('*')}",
    }
    assert {"evalsha_ro", "evalsha", "hset", "subscribe"} <= _commands(acl.API)
    # The worker's direct writes are not the API's.
    assert not {"set", "sadd", "hsetnx", "hdel", "expireat", "publish", "bitfield"} & _commands(
        acl.API
    )
    assert set(acl.API.channels) == {keys.CHANGES_CHANNEL, keys.TOKENS_CHANNEL}


def test_the_worker_never_touches_a_token() -> None:
    patterns = [r.split("~", 1)[1] for r in _key_rules(acl.WORKER)]
    token_keys = [keys.token("0" * 64), keys.TOKEN_USED, keys.TOKEN_INDEX]
    for pattern in patterns:
        for key in token_keys:
            assert not _glob(pattern, key), (pattern, key)
    assert "subscribe" not in _commands(acl.WORKER)
    assert acl.WORKER.channels == (keys.CHANGES_CHANNEL,)


def test_the_worker_may_touch_every_key_it_writes() -> None:
    day = date(2026, 12, 7)
    written = [
        keys.device_meta("d"), keys.device_month("d", day), keys.day_users("d", day),
        keys.client_day("c", day), keys.client_day_users("c", day),
        keys.client_day_activity("c", day), keys.client_devices_index("c"),
        keys.client_offsets("c"), keys.client_month_users("c", day), keys.client("c"),
        keys.client_devices("c"), keys.CLIENTS, keys.applied("heartbeats", 3),
        keys.batch_marker("w-1"), keys.node_batch_marker(keys.node_tag(7), "w-1"),
        keys.node_applied(keys.node_tag(7), "heartbeats", 3),
    ]  # fmt: skip
    patterns = [r.split("~", 1)[1] for r in _key_rules(acl.WORKER)]
    for key in written:
        assert any(_glob(p, key) for p in patterns), key
    assert all(r.startswith("~") for r in _key_rules(acl.WORKER))  # read and write


def _glob(pattern: str, key: str) -> bool:
    """Redis's key pattern match for the patterns used here (``*`` only; braces literal)."""
    return fnmatchcase(key, pattern.replace("[", "[[]"))


# --- devact redis-acl ------------------------------------------------------------------------


def _redis_acl(tmp_path: Path, *extra: str, api_password: str = SECRET * 3) -> Result:
    app = typer.Typer()
    app.command("redis-acl")(redis_acl)
    (tmp_path / "worker").write_text("worker-" + SECRET * 2 + "\n")
    (tmp_path / "api").write_text(api_password + "\n")
    args = ["--worker-password-file", str(tmp_path / "worker"), "--api-password-file"]
    return CliRunner().invoke(app, [*args, str(tmp_path / "api"), *extra])


def test_redis_acl_prints_the_setuser_commands_with_hashed_passwords(tmp_path: Path) -> None:
    done = _redis_acl(tmp_path)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        " ".join(acl.WORKER.setuser("worker-" + SECRET * 2)),
        " ".join(acl.API.setuser(SECRET * 3)),
    ]
    assert SECRET not in done.output


def test_redis_acl_prints_acl_file_lines_on_request(tmp_path: Path) -> None:
    done = _redis_acl(tmp_path, "--acl-file")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[1] == acl.API.acl_file_line(SECRET * 3)


def test_redis_acl_refuses_a_short_password(tmp_path: Path) -> None:
    done = _redis_acl(tmp_path, api_password="short")
    assert done.exit_code != 0
    assert "16 characters" in done.output
