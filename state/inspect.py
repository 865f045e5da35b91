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


async def inspect_client(redis: Redis, client_id: str, days: list[date]) -> dict[str, Any]:
    """The client's registry entry and its aggregates (state/fleet.py): per day of ``days``
    that holds data, its keys, activity, users (and whether exact), active devices, applied
    offsets and seconds to expiry; and its month device-users keys with their sizes."""
    read_users = Scripts.register(redis).read_users
    months = sorted({day.replace(day=1) for day in days})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.client(client_id))
        pipe.scard(keys.client_devices(client_id))
        for day in days:
            pipe.hgetall(keys.client_day(client_id, day))
            pipe.type(keys.client_day_users(client_id, day))
            pipe.ttl(keys.client_day(client_id, day))
        for month in months:
            pipe.hlen(keys.client_month_users(client_id, month))
            pipe.ttl(keys.client_month_users(client_id, month))
        await read_users(
            keys=[keys.client_scratch(client_id)]
            + [keys.client_day_users(client_id, d) for d in days],
            args=[1] * len(days),
            client=pipe,
        )
        client, devices, *rest = await pipe.execute()
    per_day, per_month, user_counts = rest[: 3 * len(days)], rest[3 * len(days) : -1], rest[-1]
    out_days = []
    for day, aggregate, kind, ttl, users in zip(
        days, per_day[::3], per_day[1::3], per_day[2::3], user_counts, strict=True
    ):
        if not aggregate:
            continue
        out_days.append(
            {
                "date": day.isoformat(),
                "aggregate_key": keys.client_day(client_id, day),
                "users_key": keys.client_day_users(client_id, day),
                "activity_count": int(aggregate.get(keys.COUNT_FIELD, 0)),
                "user_count": users,
                "users_exact": kind != "string",
                "active_devices": sum(1 for f in aggregate if len(f) == 36),
                "applied_offsets": {
                    f[len(keys.OFFSET_FIELD_PREFIX) :]: int(v)
                    for f, v in aggregate.items()
                    if f.startswith(keys.OFFSET_FIELD_PREFIX) and len(f) < 36
                },
                "ttl_seconds": ttl,
            }
        )
    out_months = [
        {
            "month": month.strftime("%Y-%m"),
            "device_users_key": keys.client_month_users(client_id, month),
            "device_user_pairs": pairs,
            "ttl_seconds": ttl,
        }
        for month, pairs, ttl in zip(months, per_month[::2], per_month[1::2], strict=True)
        if pairs
    ]
    return {
        "client": {"client_id": client_id, "key": keys.client(client_id), **client},
        "devices": devices,
        "days": out_days,
        "months": out_months,
    }
