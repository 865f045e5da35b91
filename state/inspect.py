"""What Redis holds for one device, as an operator reads it (`devact inspect`)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
from redis.client import NEVER_DECODE

from state import fleet, keys
from state.connection import Store
from state.dates import Bucket
from state.read_plans import SeriesPlan
from state.scripts import Scripts


async def inspect_device(
    redis: Store, client_id: str, device_id: str, days: list[date]
) -> dict[str, Any]:
    """The device's owner, applied offsets and registry entries, and every day of ``days`` (a
    run of consecutive days) that holds data: its month key, activity count, distinct users,
    how they are kept (the month's dictionary, a set, a HyperLogLog) and seconds to expiry."""
    plan = SeriesPlan.of([Bucket(d, d) for d in days])
    months = list(dict.fromkeys(keys.device_month(device_id, d) for d in days))
    read_users = Scripts.register(redis).read_device_users
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.client(client_id))
        pipe.hgetall(keys.device_meta(device_id))
        pipe.ttl(keys.device_meta(device_id))
        pipe.sismember(keys.client_devices(client_id), device_id)
        for month in months:  # undecoded: the dictionary and the bitmaps are bytes
            pipe.execute_command("HGETALL", month, **{NEVER_DECODE: True})
            pipe.ttl(month)
        client, meta, meta_ttl, listed, *per_month = await pipe.execute()
    # Outside the pipeline: a cluster's pipeline refuses scripts (their keys share one slot, so
    # the client routes the call as it is).
    user_counts = (
        await read_users(
            keys=[keys.device_scratch(device_id)],  # the months are arguments (state/acl.py)
            args=[*plan.month_spans, *months, *plan.sizes],
            client=redis,
        )
        if days
        else []
    )
    held = {
        month: (_decoded_keys(raw), ttl)
        for month, raw, ttl in zip(months, per_month[::2], per_month[1::2], strict=True)
    }
    out_days = []
    for day, users in zip(days, user_counts, strict=True):
        month = keys.device_month(device_id, day)
        fields, ttl = held[month]
        count = fields.get(str(day.day))
        if count is None:
            continue
        if "w" not in fields:
            kept = "dictionary" if f"{day.day}u" in fields else "none"
        else:
            kept = "hyperloglog" if f"{day.day}h" in fields else "set"
        out_days.append(
            {
                "date": day.isoformat(),
                "month_key": month,
                "users_key": keys.day_users(device_id, day) if "w" in fields else None,
                "activity_count": int(count),
                "user_count": users,
                "users_kept_as": kept,
                "users_exact": kept != "hyperloglog",
                "ttl_seconds": ttl,
            }
        )
    return {
        "client": {"client_id": client_id, "key": keys.client(client_id), **client},
        "device": {
            "device_id": device_id,
            "key": keys.device_meta(device_id),
            "owner": meta.get("client"),
            "applied_offsets": {
                f[len(keys.OFFSET_FIELD_PREFIX) :]: int(v)
                for f, v in meta.items()
                if f.startswith(keys.OFFSET_FIELD_PREFIX)
            },
            "listed_in_client_devices": bool(listed),
            "ttl_seconds": meta_ttl,
        },
        "days": out_days,
    }


def _decoded_keys(reply: Any) -> dict[str, bytes]:
    """An undecoded HGETALL reply (a map in RESP3, a flat list in RESP2), its fields decoded."""
    if not isinstance(reply, dict):
        reply = dict(zip(reply[::2], reply[1::2], strict=True))
    return {field.decode(): value for field, value in reply.items()}


def retention_days_back(today: date, retention_days: int) -> list[date]:
    """Every local day that can still hold data, oldest first (one day ahead for clock skew)."""
    return [today - timedelta(days=n) for n in range(retention_days + 1, -2, -1)]


async def inspect_client(redis: Store, client_id: str, days: list[date]) -> dict[str, Any]:
    """The client's registry entry and its fleet aggregates (state/fleet.py): its device index
    and counted offsets; per day of ``days`` that holds data, its keys, activity, users (and
    whether exact), devices with activity and seconds to expiry; and its month device-users
    keys with their devices and records."""
    read_users = Scripts.register(redis).read_users
    months = sorted({day.replace(day=1) for day in days})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.client(client_id))
        pipe.scard(keys.client_devices(client_id))
        pipe.hlen(keys.client_devices_index(client_id))
        pipe.hgetall(keys.client_offsets(client_id))
        for day in days:
            pipe.hgetall(keys.client_day(client_id, day))
            pipe.type(keys.client_day_users(client_id, day))
            pipe.ttl(keys.client_day(client_id, day))
            pipe.execute_command(
                "GET", keys.client_day_activity(client_id, day), **{NEVER_DECODE: True}
            )
        for month in months:
            pipe.execute_command(
                "HVALS", keys.client_month_users(client_id, month), **{NEVER_DECODE: True}
            )
            pipe.ttl(keys.client_month_users(client_id, month))
        client, devices, indexed, offsets, *rest = await pipe.execute()
    user_counts = await read_users(
        keys=[keys.client_scratch(client_id)],  # the days are arguments (state/acl.py)
        args=[len(days), *(keys.client_day_users(client_id, d) for d in days), *[1] * len(days)],
        client=redis,
    )
    per_day, per_month = rest[: 4 * len(days)], rest[4 * len(days) :]
    out_days = []
    for day, aggregate, kind, ttl, vector, users in zip(
        days, per_day[::4], per_day[1::4], per_day[2::4], per_day[3::4], user_counts, strict=True
    ):
        if not aggregate:
            continue
        out_days.append(
            {
                "date": day.isoformat(),
                "aggregate_key": keys.client_day(client_id, day),
                "users_key": keys.client_day_users(client_id, day),
                "activity_key": keys.client_day_activity(client_id, day),
                "activity_count": int(aggregate.get(keys.COUNT_FIELD, 0)),
                "user_count": users,
                "users_exact": kind != "string",
                "active_devices": int(
                    np.count_nonzero(np.frombuffer(vector or b"", dtype=fleet.ACTIVITY))
                ),
                "ttl_seconds": ttl,
            }
        )
    out_months = []
    for month, values, ttl in zip(months, per_month[::2], per_month[1::2], strict=True):
        records = np.frombuffer(b"".join(values), dtype=fleet.RECORD)
        records = records[records["days"] != 0]  # the filler's are of no day
        if len(records):
            out_months.append(
                {
                    "month": month.strftime("%Y-%m"),
                    "device_users_key": keys.client_month_users(client_id, month),
                    "devices": len(set(records["device"].tolist())),
                    "device_user_pairs": len(records),
                    "ttl_seconds": ttl,
                }
            )
    return {
        "client": {"client_id": client_id, "key": keys.client(client_id), **client},
        "devices": devices,
        "index": {
            "key": keys.client_devices_index(client_id),
            "devices": max(0, indexed - 1),  # not the filler
        },
        "applied_offsets": {
            "key": keys.client_offsets(client_id),
            **{partition: int(offset) for partition, offset in offsets.items()},
        },
        "days": out_days,
        "months": out_months,
    }
