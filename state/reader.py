"""Reading what the API needs for one request, in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from redis.asyncio import Redis

from state import keys, resp
from state.dates import Bucket, Granularity, buckets, days_inclusive
from state.errors import unavailable_on_failure
from state.registry import TokenGrant, hash_token
from state.scripts import Scripts

Metric = Literal["activity-count", "user-count"]

_PLANS_KEPT = 256
"""Ranges whose ``SeriesPlan`` is remembered. A dashboard asks for a few ranges (the last 7, 30,
90 days, by granularity) that move once a day; one plan of 90 days takes about 30 KB."""


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The buckets of a range and what reading them takes, worked out once per range
    (``series_plan``): a request then only adds its device's key tag."""

    buckets: tuple[Bucket, ...]
    dates: tuple[str, ...]
    """The first day of each bucket, ISO: the ``date`` of each point."""
    sizes: tuple[int, ...]
    """The number of days of each bucket: the read scripts' arguments."""
    counter_keys: resp.PrefixedBulks
    """Every day's counter key, in order, given the device's tag."""
    users_keys: resp.PrefixedBulks
    """Every day's users key, in order, given the device's tag."""
    packed_sizes: bytes
    """``sizes`` as bulk strings."""

    @classmethod
    def of(cls, bucket_list: Sequence[Bucket]) -> SeriesPlan:
        days = [day for bucket in bucket_list for day in bucket.days()]
        sizes = tuple(days_inclusive(b.first, b.last) for b in bucket_list)
        return cls(
            buckets=tuple(bucket_list),
            dates=tuple(b.first.isoformat() for b in bucket_list),
            sizes=sizes,
            counter_keys=resp.PrefixedBulks(keys.day_counter_suffix(d) for d in days),
            users_keys=resp.PrefixedBulks(keys.day_users_suffix(d) for d in days),
            packed_sizes=resp.bulks(sizes),
        )


@lru_cache(maxsize=_PLANS_KEPT)
def series_plan(first: date, last: date, granularity: Granularity) -> SeriesPlan:
    """``SeriesPlan.of(buckets(first, last, granularity))``, remembered per range."""
    return SeriesPlan.of(buckets(first, last, granularity))


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    metric: Metric
    buckets: Sequence[Bucket] | SeriesPlan
    """The buckets to read, in order; a ``SeriesPlan`` spares working out their keys again."""


@dataclass(frozen=True, slots=True)
class DeviceView:
    """Everything one request may need; the API decides which parts to look at, in the
    contract's order (docs/api.md)."""

    grant: TokenGrant | None
    client_exists: bool
    device_owner: str | None
    values: list[int] | None
    """One value per bucket of the query; None when no query was asked."""


def _hash_fields(reply: Any) -> dict[str, str]:
    """An HGETALL reply as a dict: RESP3 answers a map, RESP2 a flat list of fields and values."""
    if isinstance(reply, dict):
        return reply
    fields = iter(reply)
    return dict(zip(fields, fields, strict=True))


class Reader:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts.register(redis)

    async def ping(self) -> None:
        with unavailable_on_failure():
            await self._redis.ping()

    async def device_view(
        self, token: str, client_id: str, device_id: str, query: SeriesQuery | None
    ) -> DeviceView:
        """The token's grant, the client's and device's existence and, speculatively, the series:
        a valid request costs exactly one round trip. The series is computed even when a later
        check will refuse the request; it only ever reads the device's own keys."""
        commands = [
            resp.command("HGETALL", keys.token(hash_token(token))),
            resp.command("EXISTS", keys.client(client_id)),
            resp.command("HGET", keys.device_meta(device_id), "client"),
        ]
        if query is not None:
            commands.append(self._series_command(device_id, query))
        replies = await self._round_trip(commands)
        return DeviceView(
            grant=TokenGrant.decode(_hash_fields(replies[0])),
            client_exists=bool(replies[1]),
            device_owner=replies[2],
            values=list(map(int, replies[3])) if query is not None else None,
        )

    def _series_command(self, device_id: str, query: SeriesQuery) -> bytes:
        """The EVALSHA of the query's read script over the device's day keys, in day order."""
        plan = query.buckets
        if not isinstance(plan, SeriesPlan):
            plan = SeriesPlan.of(plan)
        scratch: tuple[str, ...] = ()
        if query.metric == "activity-count":
            sha, day_keys = self._scripts.read_counts.sha, plan.counter_keys
        else:
            sha = self._scripts.read_users.sha
            scratch, day_keys = (keys.device_scratch(device_id),), plan.users_keys
        numkeys = len(scratch) + len(day_keys)
        return b"".join(
            (
                resp.header(3 + numkeys + len(plan.sizes)),
                resp.bulks(("EVALSHA", sha, numkeys, *scratch)),
                day_keys.pack(keys.device_tag(device_id).encode()),
                plan.packed_sizes,
            )
        )

    async def _round_trip(self, commands: Sequence[bytes]) -> list[Any]:
        """Every reply of ``commands``, sent at once (the read script's scratch key is its own,
        so sending again after a NOSCRIPT is safe)."""
        with unavailable_on_failure():
            return await self._scripts.send(self._redis, resp.send, commands)
