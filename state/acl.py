"""The Redis ACL users of the service and the rules that make them (docs/security.md).

The worker writes; the API reads. Each gets the commands and keys its code sends and nothing
more, so that a leaked API password reads what the API reads, notes when a token was used, and
writes nothing else (a data key, a script's effect, FLUSHALL: NOPERM). Operators' commands
(`devact client add`, `devact token create`, `devact migrate`) keep an admin user.

Two things of Redis shape the API's rules:

- ``EVALSHA`` declares its keys written (its key spec is RW and UPDATE: Redis cannot tell what a
  script does), so calling a script needs write permission on every key it names. The read
  scripts that write nothing (``read_counts``, ``read_device_counts``: ``flags=no-writes``) are
  called with ``EVALSHA_RO``, which needs read permission alone.
- ``read_users`` and ``read_device_users`` cannot be read-only: they estimate a bucket holding a
  HyperLogLog in a scratch key (PFMERGE, PFADD, DEL), and Redis refuses even PFCOUNT in a
  read-only script (it may rewrite the sketch's cached count). They name only their scratch
  key as a key and take the keys they read as arguments (state/lua/read_users.lua), and the API
  may write its scratch keys alone: ``EVALSHA`` of any script by the API then writes nothing
  but a scratch key, whatever it is asked (every command a script runs is checked against the
  caller's rules, keys included).

Passwords appear in the rules as their SHA-256 (``#<hex>``), never in clear, so the rules can
be printed, logged and kept in a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from state import keys

WORKER_USER = "devact-worker"
API_USER = "devact-api"

CONNECTING = ("ping", "info", "command", "cluster|slots", "cluster|shards")
"""What any of our clients sends besides its work: the cluster client's slot map and command
table (``CLUSTER SLOTS``, ``COMMAND``), the health checks (``PING``) and the cluster probe of
state/connection.py (``INFO cluster``, when DEVACT_REDIS_CLUSTER is not set). redis-py's
``CLIENT SETINFO`` at connection is left out: Redis 7.0 does not know it (an ACL rule naming it
is refused there), and redis-py goes on when it is refused."""

SCRIPT_READS = ("hget", "hmget", "hgetall", "scard", "smembers", "sunion", "type", "pfcount")
"""What the read scripts (state/lua/read_*.lua) read; a script runs with its caller's rights."""
SCRIPT_SCRATCH = ("del", "pfmerge", "pfadd")
"""What read_users.lua and read_device_users.lua write, to their scratch key only."""
SCRIPT_WRITES = (
    *SCRIPT_READS,
    *SCRIPT_SCRATCH,
    "get", "set", "exists", "hset", "hdel", "hlen", "sadd", "expireat", "bitfield",
)  # fmt: skip
"""What the apply scripts (apply_device.lua, apply_client.lua, lib_*.lua, advance_applied.lua)
run, besides reading."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL user's rights: commands (``+name``, ``+name|subcommand``), key patterns with
    their permission (``~``: read and write, ``%R~``: read), pub/sub channels (``&``)."""

    user: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    channels: tuple[str, ...]

    def rules(self, password: str) -> list[str]:
        """The arguments of ``ACL SETUSER <user>``: everything reset first, so applying them
        again (after a change here, or to rotate the password) leaves no old right behind.
        ``password`` is stored as its SHA-256."""
        return [
            "reset",
            "on",
            f"#{password_hash(password)}",
            *(f"+{command}" for command in self.commands),
            *self.keys,
            *(f"&{channel}" for channel in self.channels),
        ]

    def setuser(self, password: str) -> list[str]:
        """The whole ``ACL SETUSER`` command, as its arguments."""
        return ["ACL", "SETUSER", self.user, *self.rules(password)]

    def acl_file_line(self, password: str) -> str:
        """The same user as a line of an ACL file (``aclfile``) or a ``user`` directive."""
        return " ".join(["user", self.user, *self.rules(password)])


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def _sorted(*groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({name for group in groups for name in group}))


WORKER = Grant(
    user=WORKER_USER,
    commands=_sorted(
        CONNECTING,
        SCRIPT_WRITES,
        # Batches: markers and applied positions (GET, SET, MGET, DEL), device sets (SADD), the
        # scripts (EVALSHA; SCRIPT LOAD after a restart emptied the cache), the changed devices
        # (PUBLISH); ASKING follows a slot that moves between cluster nodes (state/routing.py).
        ("mget", "evalsha", "script|load", "publish", "asking"),
        # Clients met in heartbeats (state/registry.py: timezones, known_timezones).
        ("hsetnx", "hget"),
    ),
    keys=(
        f"~{keys.PREFIX}:{{*",  # tagged keys: devices {d:, clients' aggregates {c:, nodes {n:
        f"~{keys.client('*')}",  # a client's hash and device set
        f"~{keys.CLIENTS}",
        f"~{keys.PREFIX}:applied:*",  # keys.applied: da:applied:<topic>:<partition>
        f"~{keys.batch_marker('*')}",
    ),
    channels=(keys.CHANGES_CHANNEL,),
)
"""The worker: reads and writes its data keys, never a token."""

API = Grant(
    user=API_USER,
    commands=_sorted(
        CONNECTING,
        SCRIPT_READS,
        SCRIPT_SCRATCH,
        # A request's round trip (state/reader.py), the clients of a grant (state/registry.py).
        ("exists", "hlen", "hvals", "mget", "asking"),
        # The read scripts: read-only by EVALSHA_RO, the users ones by EVALSHA (see above);
        # SCRIPT LOAD after a restart emptied the cache.
        ("evalsha_ro", "evalsha", "script|load"),
        # The live hub and the revocations (state/changes.py).
        ("subscribe", "unsubscribe"),
        # When a token was last used (state/registry.record_token_uses): the API's one write.
        ("hset",),
    ),
    keys=(
        f"%R~{keys.PREFIX}:*",
        f"~{keys.TOKEN_USED}",
        f"~{keys.device_scratch('*')}",
        f"~{keys.client_scratch('*')}",
    ),
    channels=(keys.CHANGES_CHANNEL, keys.TOKENS_CHANNEL),
)
"""The API: reads every key of ours (tokens included), writes ``da:token-used`` and the read
scripts' scratch keys, listens to the changes and the revocations."""

GRANTS = (WORKER, API)
