"""``devact migrate``: moving a Redis written before device-months to their layout, in place.

Before, a device-day was two keys: a hash (``n``, ``o<p>``, ``h``) and its users key. Now a
device-month is one hash (docs/key-schema.md). The migration scans for the old day hashes, reads
each day's users and expiry, and hands every device-month's days to ``migrate_month.lua``,
which adds them to the month and deletes them in one atomic call. So it can stop anywhere and
run again: what moved is gone from the old layout, what did not is found by the next scan.
Run it with the workers stopped (their offsets move into the device's meta hash as it goes);
the API can stay up, and answers each device from whatever has moved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from redis.commands.core import AsyncScript

from state import keys
from state.connection import Store
from state.dates import month_expires_at
from state.encoding import EXACT_USERS_LIMIT
from state.scripts import Scripts

LEGACY_DAY_PATTERN = f"{keys.PREFIX}:{{d:*}}:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_LEGACY_DAY = re.compile(r"^[^{]*\{d:([^}]+)\}:(\d{4})-(\d{2})-(\d{2})$")
SCAN_COUNT = 1000
"""Keys a SCAN step asks for, and about how many days are moved per step."""


@dataclass(slots=True)
class Migrated:
    days: int = 0
    """Old day hashes moved by this run."""
    months: int = 0
    """Device-month calls that moved at least one day."""


def _member_bytes(member: str) -> bytes:
    """A users set's member (the signed 64-bit hash in decimal) as a dictionary holds it."""
    return int(member).to_bytes(8, "big", signed=True)


async def migrate(store: Store, progress: Callable[[int], None] = lambda _: None) -> Migrated:
    """Move every old device-day to its device-month; ``progress`` is told how many days each
    step moved."""
    script = Scripts.register(store).migrate_month
    done = Migrated()
    found: list[str] = []
    async for key in store.scan_iter(match=LEGACY_DAY_PATTERN, count=SCAN_COUNT, _type="hash"):
        found.append(key)
        if len(found) >= SCAN_COUNT:
            await _move(store, script, found, done, progress)
            found = []
    if found:
        await _move(store, script, found, done, progress)
    return done


async def _move(
    store: Store,
    script: AsyncScript,
    day_keys: list[str],
    done: Migrated,
    progress: Callable[[int], None],
) -> None:
    days: list[tuple[str, str, date]] = []
    for key in day_keys:
        match = _LEGACY_DAY.match(key)
        if match is not None:
            device, year, month, day = match.groups()
            days.append((key, device, date(int(year), int(month), int(day))))
    async with store.pipeline(transaction=False) as pipe:
        for key, _, _ in days:
            pipe.type(f"{key}:u")
            pipe.execute_command("EXPIRETIME", key)
        info = await pipe.execute()
    kinds = [str(k) for k in info[0::2]]
    async with store.pipeline(transaction=False) as pipe:
        for (key, _, _), kind in zip(days, kinds, strict=True):
            if kind == "set":
                pipe.smembers(f"{key}:u")
        members = iter(await pipe.execute())
    groups: dict[tuple[str, int, int], list[tuple[str, date, str, list[bytes], int]]] = {}
    for (key, device, day), kind, expire in zip(days, kinds, info[1::2], strict=True):
        users = [_member_bytes(m) for m in next(members)] if kind == "set" else []
        code = {"set": "s", "string": "h"}.get(kind, "n")
        groups.setdefault((device, day.year, day.month), []).append(
            (key, day, code, users, int(expire))
        )
    for (device, _, _), group in groups.items():
        expiries = [month_expires_at(day, expire) for _, day, _, _, expire in group if expire > 0]
        args: list[str | int | bytes] = [EXACT_USERS_LIMIT, max(expiries, default=0), len(group)]
        for _, day, code, users, _ in group:
            args += [day.day, code, len(users), *users]
        moved = await script(
            keys=[
                keys.device_meta(device),
                keys.device_month(device, group[0][1]),
                *(key for key, *_ in group),
            ],
            args=args,
            client=store,
        )
        done.days += int(moved)
        done.months += 1 if int(moved) else 0
        progress(int(moved))
