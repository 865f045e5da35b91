"""Waits and assertions of the fault tests against the oracle, and their measured figures."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from state import keys
from state.encoding import EXACT_USERS_LIMIT
from tests.integration.harness.waiting import poll_until

from . import fleet_keys
from .constants import FAST_POLL_S
from .kafka import topic_message_count
from .pipeline import Run
from .probe import RedisProbe
from .processes import Api
from .workload import Workload


def wait_until_total(
    probe: RedisProbe,
    workload: Workload,
    run: Run,
    *,
    timeout_s: float,
    stall_s: float | None = None,
    what: str = "every event in Redis",
) -> float:
    """Poll until Redis's total over the workload's device-days equals the oracle's (workers
    must stay alive meanwhile); returns the seconds it took. A total above the oracle's fails
    at once: something was counted twice. With ``stall_s`` (for when nothing more is being
    produced), a total that stops moving short of the oracle's fails after that long."""
    started = time.monotonic()
    counter_keys = workload.counter_keys()
    expected = workload.total
    seen: list[int | None] = [None]
    moved = [time.monotonic()]

    def done() -> bool | None:
        run.assert_workers_alive()
        total = probe.total_or_none(counter_keys)
        if total != seen[0]:
            seen[0], moved[0] = total, time.monotonic()
        if total is not None and total > expected:
            raise AssertionError(
                f"Redis total {total} exceeds the oracle's {expected}: events counted twice\n"
                + cell_differences(probe, workload)
            )
        if total == expected:
            return True
        if stall_s is not None and time.monotonic() - moved[0] > stall_s:
            raise AssertionError(
                f"Redis total stuck at {total} of {expected} for {stall_s:.0f} s, nothing left "
                f"to produce: events are lost, not late\n{diagnostics()}"
            )
        return None

    def diagnostics() -> str:
        messages = topic_message_count(run.bootstrap, run.topic)
        return (
            f"Redis total {seen[0]} of expected {expected}; topic holds {messages} messages, "
            f"{len(workload.messages)} were produced\n"
            + cell_differences(probe, workload)
            + "\n"
            + run.tails()
        )

    poll_until(done, timeout_s=timeout_s, what=what, diagnostics=diagnostics)
    return time.monotonic() - started


def cell_differences(probe: RedisProbe, workload: Workload, limit: int = 20) -> str:
    """Device-days whose counter or user count differs from the oracle ('' when none)."""
    cells = workload.cells()
    counts = probe.counts([c.counter_key for c in cells])
    users = probe.device_day_users([c.counter_key for c in cells])
    wrong = []
    for cell, count, (kind, size) in zip(cells, counts, users, strict=True):
        # At most MAX_USERS_PER_DEVICE users a device: every month keeps a dictionary.
        expected_kind = "dictionary" if cell.users else "none"
        if (count or 0, size, kind) != (cell.activity, cell.users, expected_kind):
            wrong.append(
                f"  {cell.device[1]} {cell.day}: n={count} (oracle {cell.activity}), "
                f"users {kind} of {size} (oracle {cell.users})"
            )
    if not wrong:
        return ""
    missing = sum(c.activity - (n or 0) for c, n in zip(cells, counts, strict=True))
    return (
        f"{len(wrong)} of {len(cells)} device-days differ (oracle minus Redis, summed: "
        f"{missing}):\n" + "\n".join(wrong[:limit])
    )


def client_differences(probe: RedisProbe, workload: Workload, limit: int = 20) -> str:
    """Client-day aggregates (activity, each device's activity, users across devices) and
    month device-users (each device's users of the month with their days, what rankings read)
    that differ from the oracle ('' when none)."""
    wrong = []
    for client in workload.timezones:
        days = workload.oracle.client_days(client)
        indexes = fleet_keys.device_indexes(probe.hash(keys.client_devices_index(client)))
        for day, (activity, users, devices) in sorted(days.items()):
            fields, (kind, size) = (
                probe.hash(keys.client_day(client, day)),
                probe.user_sets([keys.client_day_users(client, day)])[0],
            )
            stored = fleet_keys.activity_by_device(
                indexes, probe.raw(keys.client_day_activity(client, day))
            )
            wanted = {d: a for d, a in devices.items() if a > 0}
            if int(fields.get(keys.COUNT_FIELD, -1)) != activity or stored != wanted:
                wrong.append(
                    f"  {client} {day}: n={fields.get('n')} (oracle {activity}), "
                    f"devices {stored} (oracle {wanted})"
                )
            if len(users) > EXACT_USERS_LIMIT:  # a HyperLogLog: within 2% (docs/api.md)
                estimate = probe.pfcount(keys.client_day_users(client, day))
                if kind != "string" or abs(estimate - len(users)) > 0.02 * len(users):
                    wrong.append(f"  {client} {day}: ~{estimate} users (oracle {len(users)})")
            elif (kind, size) != (("set", len(users)) if users else ("none", 0)):
                wrong.append(f"  {client} {day}: users {kind} of {size} (oracle {len(users)})")
        for month in sorted({d.replace(day=1) for d in days}):
            last = (month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
            records = fleet_keys.users_by_device(
                indexes, probe.raw_hash(keys.client_month_users(client, month))
            )
            wanted_records: dict[str, dict[int, int]] = {}
            for owner, device in workload.devices:
                if owner != client:
                    continue
                for n in range(last.day):
                    day = month + timedelta(days=n)
                    for user in workload.oracle.users((owner, device), day, day):
                        mine = wanted_records.setdefault(device, {})
                        bits = mine.get(fleet_keys.user_hash(user), 0)
                        mine[fleet_keys.user_hash(user)] = bits | 1 << n
            if records != wanted_records:
                wrong.append(
                    f"  {client} {month:%Y-%m}: device users of {len(records)} devices differ "
                    f"from the oracle's {len(wanted_records)}"
                )
    if not wrong:
        return ""
    return f"{len(wrong)} client aggregates differ:\n" + "\n".join(wrong[:limit])


def assert_exact(probe: RedisProbe, workload: Workload) -> None:
    """Every device-day counter and user count equals the oracle, and no device of the workload
    has a month key the oracle does not know."""
    differences = cell_differences(probe, workload) or client_differences(probe, workload)
    assert not differences, differences
    devices = {d for _, d in workload.devices}
    expected = {c.month_key for c in workload.cells()}
    stored = {
        k
        for k in probe.keys_matching(f"{keys.PREFIX}:{{d:*")
        if k.split("{d:", 1)[1].split("}", 1)[0] in devices
        and not k.endswith((":meta", ":scratch"))
    }
    assert stored == expected, (
        f"keys only in Redis: {sorted(stored - expected)[:10]}; "
        f"keys only in the oracle: {sorted(expected - stored)[:10]}"
    )


def assert_weekly_buckets(api: Api, token: str, workload: Workload, rng: random.Random) -> int:
    """Weekly activity and user counts of a few devices through the API equal the oracle's;
    returns how many series were compared."""
    compared = 0
    for key in rng.sample(sorted(workload.oracle.devices()), 5):
        days = sorted(workload.oracle.local_days(key))
        first, last = days[0] - timedelta(days=3), days[-1] + timedelta(days=3)
        for metric in ("activity-count", "user-count"):
            response = api.activity(
                key,
                token,
                metric=metric,
                granularity="weekly",
                start_date=first.isoformat(),
                end_date=last.isoformat(),
            )
            assert response.status_code == 200, (response.status_code, response.text)
            expected = workload.oracle.series(key, first, last, metric, "weekly")
            assert response.json()["data"] == expected, (key, metric)
            compared += 1
    return compared


class Figures:
    """Measured numbers of the fault tests: printed (visible with -s) and kept as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: dict[str, dict[str, Any]] = {}

    def record(self, test: str, **values: Any) -> None:
        self.figures.setdefault(test, {}).update(values)
        self.path.write_text(json.dumps(self.figures, indent=2, sort_keys=True) + "\n")
        print(f"\n[faults] {test}: {json.dumps(values, sort_keys=True)} (all figures: {self.path})")


def wait_for_total(
    probe: RedisProbe,
    workload: Workload,
    run: Run,
    at_least: int,
    *,
    timeout_s: float = 120.0,
    what: str = "progress",
) -> tuple[int, float]:
    """Poll quickly until Redis's total over the workload reaches ``at_least`` (capped at the
    oracle's total), workers alive; returns the total seen and the ``time.monotonic()`` then."""
    target = min(at_least, workload.total)
    counter_keys = workload.counter_keys()
    deadline = time.monotonic() + timeout_s
    total: int | None = None
    while True:
        run.assert_workers_alive()
        total = probe.total_or_none(counter_keys)
        if total is not None and total >= target:
            return total, time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}: Redis total {total}, "
                f"waiting for {target} of {workload.total}\n{run.tails()}"
            )
        time.sleep(FAST_POLL_S)
