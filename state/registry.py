"""Clients (with their timezones) and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from state import keys
from state.connection import Store
from state.errors import UnknownTimezone, unavailable_on_failure

TOKEN_PREFIX = "da_"


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

    def allows(self, client_id: str) -> bool:
        return self.all_clients or client_id in self.clients

    @classmethod
    def decode(cls, fields: dict[str, str]) -> TokenGrant | None:
        """The grant stored in a token hash; None for a missing (unknown or revoked) token."""
        if not fields:
            return None
        raw = fields.get("clients", "")
        return cls(
            clients=frozenset(raw.split()) - {keys.ALL_CLIENTS},
            all_clients=keys.ALL_CLIENTS in raw.split(),
            name=fields.get("name", ""),
        )


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

    async def create_token(self, clients: Iterable[str], all_clients: bool, name: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        granted = keys.ALL_CLIENTS if all_clients else " ".join(sorted(set(clients)))
        await self._redis.hset(
            keys.token(hash_token(token)), mapping={"clients": granted, "name": name}
        )
        return token

    async def revoke_token(self, token: str) -> bool:
        digest = hash_token(token)
        removed = bool(await self._redis.delete(keys.token(digest)))
        await self._redis.publish(keys.TOKENS_CHANNEL, digest)  # API processes forget it now
        return removed
