"""Clients (with their timezones) and API tokens.

A token is a 256-bit random secret, stored only as its SHA-256; its **id**, the first 12 hex
digits of that hash, is what lists and logs show and what `devact token revoke` takes. A token
may expire; the API notes, to the minute, when it last served each one (``da:token-used``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from state import keys
from state.connection import Store
from state.errors import NotFound, UnknownTimezone, unavailable_on_failure

TOKEN_PREFIX = "da_"
TOKEN_ID_CHARS = 12
"""Hex digits of a token's hash that make its id: 48 bits, so two tokens of one deployment
share an id with a chance of about n^2 / 2^49 (one in 5 million for 10,000 tokens), and the
id says nothing of the secret."""
KEPT_AFTER_EXPIRY = timedelta(days=30)
"""How long an expired token stays listed (as expired) before its key expires."""


def token_id(token_hash: str) -> str:
    """The id of the token with this hash (``hash_token``)."""
    return token_hash[:TOKEN_ID_CHARS]


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    timezone: str
    name: str
    device_count: int = 0


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a token may read."""

    clients: frozenset[str]
    all_clients: bool
    name: str = ""
    token_id: str = ""
    expires_at: float | None = None
    """Epoch seconds from which the token is refused; None: never."""

    def allows(self, client_id: str) -> bool:
        return self.all_clients or client_id in self.clients

    def expired(self, now: float) -> bool:
        """Whether the token is refused at ``now`` (epoch seconds) for its age."""
        return self.expires_at is not None and now >= self.expires_at

    @classmethod
    def decode(cls, fields: dict[str, str], token_hash: str = "") -> TokenGrant | None:
        """The grant stored in a token hash; None for a missing (unknown or revoked) token."""
        if not fields:
            return None
        raw = fields.get("clients", "")
        expires = _instant(fields.get("expires_at"))
        return cls(
            clients=frozenset(raw.split()) - {keys.ALL_CLIENTS},
            all_clients=keys.ALL_CLIENTS in raw.split(),
            name=fields.get("name", ""),
            token_id=token_id(token_hash),
            expires_at=None if expires is None else expires.timestamp(),
        )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What `devact token list` shows of a token: never its secret, nor its hash."""

    id: str
    name: str
    clients: list[str]
    """The client ids it may read, or ``["*"]`` for every client."""
    created_at: datetime | None
    """None for a token made before tokens recorded it."""
    expires_at: datetime | None
    last_used_at: datetime | None
    """When the API last served it, to the minute (within a minute of the request)."""

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> dict[str, object]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "name": self.name,
            "clients": self.clients,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class DeviceOwner:
    """Who a device belongs to (`devact device show`)."""

    device_id: str
    client_id: str
    client_name: str
    listed: bool
    """Whether the owner's device set lists it (the fleet views' membership)."""
    partitions: int
    """Kafka partitions the device's heartbeats were applied from."""


class AmbiguousTokenId(Exception):
    """Two tokens share the id given (or its prefix): revoke by a longer one."""


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is enough to store them safely
    (no dictionary to guard against, unlike passwords)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimezone(f"Unknown timezone: {name}") from exc


class Registry:
    def __init__(self, redis: Store) -> None:
        self._redis = redis

    async def add_client(self, client_id: str, timezone: str, name: str, now: datetime) -> None:
        """Register or update a client. Changing a timezone affects events counted from then on;
        days already counted keep the bucketing they got."""
        validate_timezone(timezone)
        # Not a transaction: the keys sit in several Redis Cluster slots, and each write is
        # idempotent, so a registration cut short is completed by running it again.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.client(client_id), mapping={"timezone": timezone, "name": name})
            pipe.hsetnx(keys.client(client_id), "created_at", now.isoformat())
            pipe.sadd(keys.CLIENTS, client_id)
            await pipe.execute()

    async def list_clients(self, client_ids: Iterable[str] | None = None) -> list[Client]:
        """Every registered client, or those of ``client_ids`` that are registered, by id."""
        if client_ids is None:
            ids = sorted(map(str, await self._redis.smembers(keys.CLIENTS)))
        else:
            ids = sorted(set(client_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for client_id in ids:
                pipe.hgetall(keys.client(client_id))
                pipe.scard(keys.client_devices(client_id))
            replies = await pipe.execute()
        return [
            Client(cid, fields.get("timezone", ""), fields.get("name", ""), int(count))
            for cid, fields, count in zip(ids, replies[::2], replies[1::2], strict=True)
            if fields  # a granted client that was never registered (or a typo in the grant)
        ]

    async def timezones(
        self, client_ids: Iterable[str], default: str, now: datetime
    ) -> dict[str, str]:
        """The timezone of each client; unknown clients are registered with ``default`` first
        (docs/contract.md: their heartbeats are counted, never dropped)."""
        ids = sorted(set(client_ids))
        with unavailable_on_failure():
            async with self._redis.pipeline(transaction=False) as pipe:
                for client_id in ids:
                    pipe.hsetnx(keys.client(client_id), "timezone", default)
                    pipe.hsetnx(keys.client(client_id), "created_at", now.isoformat())
                    pipe.sadd(keys.CLIENTS, client_id)
                    pipe.hget(keys.client(client_id), "timezone")
                replies = await pipe.execute()
        return dict(zip(ids, replies[3::4], strict=True))

    async def known_timezones(self, client_ids: Iterable[str]) -> dict[str, str]:
        """The timezone of each registered client of ``client_ids``; the others are left out
        and left unregistered."""
        ids = sorted(set(client_ids))
        with unavailable_on_failure():
            async with self._redis.pipeline(transaction=False) as pipe:
                for client_id in ids:
                    pipe.hget(keys.client(client_id), "timezone")
                replies = await pipe.execute()
        return {cid: str(tz) for cid, tz in zip(ids, replies, strict=True) if tz is not None}

    async def device_owner(self, device_id: str) -> DeviceOwner:
        """The device's owner; NotFound for a device never counted."""
        with unavailable_on_failure():
            meta = _strings(await self._redis.hgetall(keys.device_meta(device_id)))
            owner = meta.get("client")
            if owner is None:
                raise NotFound(f"device {device_id} was never counted")
            name = await self._redis.hget(keys.client(owner), "name")
            listed = await self._redis.sismember(keys.client_devices(owner), device_id)
        offsets = [f for f in meta if f.startswith(keys.OFFSET_FIELD_PREFIX)]
        return DeviceOwner(device_id, owner, str(name or ""), bool(listed), len(offsets))

    async def move_device(self, device_id: str, client_id: str) -> DeviceOwner:
        """Give a device to another registered client; returns who had it. From then on its
        heartbeats count for ``client_id`` (those naming the previous owner become
        ``device_client_mismatch``), and its own series, history included, are read with
        ``client_id``'s tokens. Client-wide aggregates keep the past where it was counted.

        Three writes in this order: the owner in the device's meta (what the worker's script
        checks), then the two clients' device sets; on a Redis Cluster they are on different
        nodes, so a failure in between is repaired by running the move again."""
        before = await self.device_owner(device_id)
        with unavailable_on_failure():
            if not await self._redis.exists(keys.client(client_id)):
                raise NotFound(f"client {client_id} is not registered (devact client add)")
            await self._redis.hset(keys.device_meta(device_id), "client", client_id)
            if before.client_id != client_id:
                await self._redis.srem(keys.client_devices(before.client_id), device_id)
            await self._redis.sadd(keys.client_devices(client_id), device_id)
        return before

    async def create_token(
        self,
        clients: Iterable[str],
        all_clients: bool,
        name: str,
        now: datetime | None = None,
        expires_in: timedelta | None = None,
    ) -> str:
        """A new token, the secret, to be shown once (its id: ``token_id(hash_token(it))``).
        ``now``: its creation time (default: the clock); ``expires_in``: its lifetime."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        granted = sorted(set(clients))
        created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        expires = None if expires_in is None else created + expires_in
        fields = {
            "clients": keys.ALL_CLIENTS if all_clients else " ".join(granted),
            "name": name,
            "created_at": created.isoformat(),
        }
        if expires is not None:
            fields["expires_at"] = expires.isoformat()
        with unavailable_on_failure():
            await self._index()  # tokens made before the index are in it before this one
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(keys.token(digest), mapping=fields)  # type: ignore[arg-type]
                if expires is not None:
                    pipe.expireat(keys.token(digest), expires + KEPT_AFTER_EXPIRY)
                pipe.sadd(keys.TOKEN_INDEX, digest)
                await pipe.execute()
        return token

    async def list_tokens(self, client_id: str | None = None) -> list[TokenInfo]:
        """Every token (those that may read ``client_id``, when given), oldest first."""
        with unavailable_on_failure():
            digests = sorted(await self._index())
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.hgetall(keys.token(digest))
                replies = await pipe.execute()
            used = _strings(await self._redis.hgetall(keys.TOKEN_USED))
        found, gone = [], []
        for digest, raw in zip(digests, replies, strict=True):
            fields = _strings(raw)
            grant = TokenGrant.decode(fields, digest)
            if grant is None:  # expired long ago, or deleted by hand
                gone.append(digest)
                continue
            if client_id is not None and not grant.allows(client_id):
                continue
            last = used.get(grant.token_id)
            found.append(
                TokenInfo(
                    id=grant.token_id,
                    name=grant.name,
                    clients=[keys.ALL_CLIENTS] if grant.all_clients else sorted(grant.clients),
                    created_at=_instant(fields.get("created_at")),
                    expires_at=_instant(fields.get("expires_at")),
                    last_used_at=None if not last or not last.isdigit()
                    else datetime.fromtimestamp(int(last), UTC),
                )
            )  # fmt: skip
        if gone:
            with unavailable_on_failure():
                await self._redis.srem(keys.TOKEN_INDEX, *gone)
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda t: (t.created_at or epoch, t.id))

    async def revoke_token_id(self, wanted: str) -> TokenInfo | None:
        """Revoke the token whose id is ``wanted`` (at least its first 6 hex digits); None when
        no token has it. API processes forget it at once (and within their cache's lifetime
        when the message is lost)."""
        wanted = wanted.lower()
        if len(wanted) < 6:
            return None
        with unavailable_on_failure():
            digests = [d for d in await self._index() if d.startswith(wanted)]
        if len(digests) > 1:
            raise AmbiguousTokenId(f"{len(digests)} tokens have an id starting with {wanted}")
        if not digests:
            return None
        (digest,) = digests
        listed = [t for t in await self.list_tokens() if t.id == token_id(digest)]
        with unavailable_on_failure():
            await self._redis.delete(keys.token(digest))
            await self._redis.srem(keys.TOKEN_INDEX, digest)
            await self._redis.hdel(keys.TOKEN_USED, token_id(digest))
            await self._redis.publish(keys.TOKENS_CHANNEL, digest)
        return listed[0] if listed else None

    async def revoke_token(self, token: str) -> bool:
        """Revoke a token given by its secret (``revoke_token_id`` keeps it out of shell
        history and process lists)."""
        return await self.revoke_token_id(token_id(hash_token(token))) is not None

    async def record_token_uses(self, uses: dict[str, int]) -> None:
        """Note when the API last served each token (id -> epoch seconds)."""
        if uses:
            with unavailable_on_failure():
                await self._redis.hset(keys.TOKEN_USED, mapping=uses)  # type: ignore[arg-type]

    async def _index(self) -> set[str]:
        """The hashes of every token. The first call after an upgrade adds the tokens made
        before the index existed, with one scan of the keyspace."""
        if not await self._redis.exists(keys.TOKEN_INDEX_COMPLETE):
            prefix = keys.token("")
            found = [k[len(prefix) :] async for k in self._redis.scan_iter(
                match=keys.TOKEN_PATTERN, count=1000)]  # fmt: skip
            if found:
                await self._redis.sadd(keys.TOKEN_INDEX, *found)
            await self._redis.set(keys.TOKEN_INDEX_COMPLETE, "1")
        return {str(d) for d in await self._redis.smembers(keys.TOKEN_INDEX)}


def _strings(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in fields.items()
    }
