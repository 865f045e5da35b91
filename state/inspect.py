"""What Redis holds for one device, as an operator reads it (`devact inspect`)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from redis.asyncio import Redis

from state import keys
from state.scripts import Scripts


async def inspect_device(
    redis: Redis, client_id: str, device_id: str, days: list[date]
) -> dict[str, Any]:
    """The device's owner and registry entries, and every day of ``days`` that holds data:
    its keys, activity count, distinct users (and whether exact), applied offsets and seconds
    to expiry."""
    read_users = Scripts.register(redis).read_users
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.client(client_id))
        pipe.hgetall(keys.device_meta(device_id))
        pipe.ttl(keys.device_meta(device_id))
        pipe.sismember(keys.client_devices(client_id), device_id)
        for day in days:
            pipe.hgetall(keys.day_counter(device_id, day))
            pipe.type(keys.day_users(device_id, day))
            pipe.ttl(keys.day_counter(device_id, day))
        await read_users(
            keys=[keys.device_scratch(device_id)] + [keys.day_users(device_id, d) for d in days],
            args=[1] * len(days),
            client=pipe,
        )
        client, meta, meta_ttl, listed, *per_day, user_counts = await pipe.execute()
    out_days = []
    for day, counter, kind, ttl, users in zip(
        days, per_day[::3], per_day[1::3], per_day[2::3], user_counts, strict=True
    ):
        if not counter:
            continue
        out_days.append(
            {
                "date": day.isoformat(),
                "counter_key": keys.day_counter(device_id, day),
                "users_key": keys.day_users(device_id, day),
                "activity_count": int(counter.get(keys.COUNT_FIELD, 0)),
                "user_count": users,
                "users_exact": kind != "string",
                "applied_offsets": {
                    f[len(keys.OFFSET_FIELD_PREFIX) :]: int(v)
                    for f, v in counter.items()
                    if f.startswith(keys.OFFSET_FIELD_PREFIX)
                },
                "ttl_seconds": ttl,
            }
        )
    return {
        "client": {"client_id": client_id, "key": keys.client(client_id), **client},
        "device": {
            "device_id": device_id,
            "key": keys.device_meta(device_id),
            "owner": meta.get("client"),
            "listed_in_client_devices": bool(listed),
            "ttl_seconds": meta_ttl,
        },
        "days": out_days,
    }


def retention_days_back(today: date, retention_days: int) -> list[date]:
    """Every local day that can still hold data, oldest first (one day ahead for clock skew)."""
    return [today - timedelta(days=n) for n in range(retention_days + 1, -2, -1)]
