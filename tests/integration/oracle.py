"""What the API must answer, computed from the events a test produced.

Written from docs/events.md and docs/api.md alone, without the production date module, so that one
bug cannot hide in both: the local day comes from ``datetime.astimezone``; a bucket is the run of
consecutive days sharing a calendar key (``isocalendar()[:2]`` for ISO weeks, ``(year, month)``,
``(year, quarter)``), so clipping to the range falls out of iterating only the range's days.

The oracle trusts its input: give it only the events that must be counted.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

Metric = Literal["activity-count", "user-count"]
Granularity = Literal["daily", "weekly", "monthly", "quarterly"]
METRICS: tuple[Metric, ...] = ("activity-count", "user-count")
GRANULARITIES: tuple[Granularity, ...] = ("daily", "weekly", "monthly", "quarterly")

# docs/api.md, "Labels".
LABELS: dict[tuple[Metric, Granularity], str] = {
    **{("activity-count", g): "Total Activity" for g in GRANULARITIES},
    ("user-count", "daily"): "Daily Users",
    ("user-count", "weekly"): "Weekly Users",
    ("user-count", "monthly"): "Monthly Users",
    ("user-count", "quarterly"): "Quarterly Users",
}

DeviceKey = tuple[str, str]  # (client_id, device_id), both lower-case


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant; a value without an offset is UTC (docs/events.md)."""
    instant = datetime.fromisoformat(text)
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def days_between(first: date, last: date) -> list[date]:
    """Every calendar day of ``[first, last]``, both inclusive."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def bucket_key(day: date, granularity: Granularity) -> Hashable:
    """Days with equal keys share a calendar bucket."""
    if granularity == "daily":
        return day
    if granularity == "weekly":
        return tuple(day.isocalendar())[:2]  # (ISO year, ISO week): Monday-first
    if granularity == "monthly":
        return (day.year, day.month)
    return (day.year, (day.month - 1) // 3)


@dataclass
class DayCell:
    activity: int = 0
    users: set[str] = field(default_factory=set)


class Oracle:
    """Per (client, device) per local day: the activity sum and the set of user ids."""

    def __init__(
        self,
        events: Iterable[Mapping[str, Any]],
        timezones: Mapping[str, str],
        default_timezone: str = "UTC",
    ) -> None:
        self._zones = {client.lower(): ZoneInfo(tz) for client, tz in timezones.items()}
        self._default_zone = ZoneInfo(default_timezone)
        self._days: dict[DeviceKey, dict[date, DayCell]] = {}
        for event in events:
            self.add(event)

    def add(self, event: Mapping[str, Any]) -> None:
        client = str(event["client_id"]).lower()
        device = str(event["device_id"]).lower()
        zone = self._zones.get(client, self._default_zone)
        day = parse_instant(str(event["generated_at_utc"])).astimezone(zone).date()
        cell = self._days.setdefault((client, device), {}).setdefault(day, DayCell())
        cell.activity += int(event["total_activity_count"])
        user = event.get("user_id")
        if user is not None:
            cell.users.add(str(user))

    def devices(self) -> list[DeviceKey]:
        return sorted(self._days)

    def local_days(self, key: DeviceKey | None = None) -> set[date]:
        """The local days holding at least one event (of one device, or of all)."""
        keys = [key] if key is not None else list(self._days)
        return {day for k in keys for day in self._days.get(k, {})}

    def users(self, key: DeviceKey, first: date, last: date) -> set[str]:
        """The device's distinct users over ``[first, last]``."""
        cells = self._days.get(key, {})
        return set().union(*(cells[d].users for d in days_between(first, last) if d in cells))

    def client_days(self, client: str) -> dict[date, tuple[int, set[str], dict[str, int]]]:
        """Per local day of the client: its activity, its users across devices, and each of
        its devices' activity that day (devices with any event that day)."""
        out: dict[date, tuple[int, set[str], dict[str, int]]] = {}
        for (owner, device), cells in self._days.items():
            if owner != client.lower():
                continue
            for day, cell in cells.items():
                activity, users, devices = out.get(day, (0, set(), {}))
                devices[device] = cell.activity
                out[day] = (activity + cell.activity, users | cell.users, devices)
        return out

    def total_activity(self, key: DeviceKey, first: date, last: date) -> int:
        cells = self._days.get(key, {})
        return sum(cells[d].activity for d in days_between(first, last) if d in cells)

    def series(
        self,
        key: DeviceKey,
        first: date,
        last: date,
        metric: Metric,
        granularity: Granularity,
    ) -> list[dict[str, Any]]:
        """The ``data`` list of the response: one point per clipped bucket, zeros included."""
        return _series(self._days.get(key, {}), first, last, metric, granularity)

    def client_series(
        self,
        client: str,
        first: date,
        last: date,
        metric: Metric,
        granularity: Granularity,
    ) -> list[dict[str, Any]]:
        """The client-wide ``data``: its devices' days merged, a user on two devices once."""
        merged: dict[date, DayCell] = {}
        for (owner, _), cells in self._days.items():
            if owner != client.lower():
                continue
            for day, cell in cells.items():
                into = merged.setdefault(day, DayCell())
                into.activity += cell.activity
                into.users |= cell.users
        return _series(merged, first, last, metric, granularity)

    def body(
        self,
        key: DeviceKey,
        first: date,
        last: date,
        metric: Metric,
        granularity: Granularity,
    ) -> dict[str, Any]:
        """The whole 200 response body of docs/api.md."""
        return {
            "metric": metric,
            "label": LABELS[(metric, granularity)],
            "granularity": granularity,
            "period": {"start": first.isoformat(), "end": last.isoformat()},
            "data": self.series(key, first, last, metric, granularity),
        }


def _series(
    cells: Mapping[date, DayCell],
    first: date,
    last: date,
    metric: Metric,
    granularity: Granularity,
) -> list[dict[str, Any]]:
    groups: list[tuple[Hashable, date, list[DayCell]]] = []
    for day in days_between(first, last):
        k = bucket_key(day, granularity)
        if not groups or groups[-1][0] != k:
            groups.append((k, day, []))
        if day in cells:
            groups[-1][2].append(cells[day])
    points = []
    for _, first_day, bucket_cells in groups:
        if metric == "activity-count":
            value = sum(c.activity for c in bucket_cells)
        else:
            value = len(set().union(*(c.users for c in bucket_cells)))
        points.append({"date": first_day.isoformat(), "value": value})
    return points
