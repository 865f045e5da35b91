"""Reading what the API needs for one request, in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import keys
from state.dates import Bucket
from state.errors import StoreUnavailable
from state.registry import TokenGrant, hash_token
from state.scripts import Scripts

Metric = Literal["activity-count", "user-count"]


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    metric: Metric
    buckets: Sequence[Bucket]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """Everything one request may need; the API decides which parts to look at, in SPEC order."""

    grant: TokenGrant | None
    client_exists: bool
    device_owner: str | None
    values: list[int] | None
    """One value per bucket of the query; None when no query was asked."""


class Reader:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts.register(redis)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def device_view(
        self, token: str, client_id: str, device_id: str, query: SeriesQuery | None
    ) -> DeviceView:
        """The token's grant, the client's and device's existence and, speculatively, the series:
        a valid request costs exactly one round trip. The series is computed even when a later
        check will refuse the request; it only ever reads the device's own keys."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.token(hash_token(token)))
                pipe.exists(keys.client(client_id))
                pipe.hget(keys.device_meta(device_id), "client")
                if query is not None:
                    await self._queue_series(pipe, device_id, query)
                replies = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return DeviceView(
            grant=TokenGrant.decode(replies[0]),
            client_exists=bool(replies[1]),
            device_owner=replies[2],
            values=[int(v) for v in replies[3]] if query is not None else None,
        )

    async def _queue_series(self, pipe: Redis, device_id: str, query: SeriesQuery) -> None:
        days = [day for bucket in query.buckets for day in bucket.days()]
        bucket_sizes = [len(b.days()) for b in query.buckets]
        if query.metric == "activity-count":
            day_keys = [keys.day_counter(device_id, d) for d in days]
            script = self._scripts.read_counts
        else:
            day_keys = [keys.device_scratch(device_id)]
            day_keys += [keys.day_users(device_id, d) for d in days]
            script = self._scripts.read_users
        await script(keys=day_keys, args=bucket_sizes, client=pipe)
