"""Realistic heartbeats for demos, tests and benchmarks. Pure and seeded: no clock, no I/O.

Shape: each client has devices, each device a few regular users; activity follows the working
day of the client's timezone (busy 8:00-18:00 on weekdays, a trickle at night, weekends quiet).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_NAMESPACE = uuid.UUID("6f1d3c1e-2b8a-4d52-9a57-0d7c5e1f9b31")


def _hour_weight(local: datetime) -> float:
    """Relative activity of a local hour: 1.0 at the core of a weekday, 0.02 at night."""
    workday = local.weekday() < 5
    if 8 <= local.hour < 18:
        return 1.0 if workday else 0.08
    if 6 <= local.hour < 8 or 18 <= local.hour < 21:
        return 0.25 if workday else 0.04
    return 0.02


@dataclass(frozen=True, slots=True)
class Device:
    client_id: str
    device_id: str
    timezone: ZoneInfo
    users: tuple[str, ...]


class HeartbeatGenerator:
    def __init__(
        self,
        clients: dict[str, str],
        devices_per_client: int,
        seed: int = 0,
        max_users_per_device: int = 5,
        pinned_devices: dict[str, list[str]] | None = None,
    ) -> None:
        """``clients`` maps client id to IANA timezone; ``pinned_devices`` names device ids
        that must exist (the demo's device), the rest are derived from the seed."""
        self._rng = random.Random(seed)
        self.devices: list[Device] = []
        for client_id, tz in clients.items():
            ids = list((pinned_devices or {}).get(client_id, []))
            ids += [
                str(uuid.uuid5(_NAMESPACE, f"{seed}/{client_id}/{n}"))
                for n in range(devices_per_client - len(ids))
            ]
            for device_id in ids:
                count = self._rng.randint(1, max_users_per_device)
                users = tuple(f"u-{self._rng.randrange(100_000)}" for _ in range(count))
                self.devices.append(Device(client_id, device_id, ZoneInfo(tz), users))

    def event(self, device: Device, at: datetime) -> dict[str, object]:
        rng = self._rng
        user = None if rng.random() < 0.05 else rng.choice(device.users)
        return {
            "client_id": device.client_id,
            "device_id": device.device_id,
            "user_id": user,
            "generated_at_utc": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "total_activity_count": rng.randint(0, 40),
        }

    def live(self, now: datetime) -> dict[str, object]:
        """One heartbeat happening ``now``, from a device picked by its local hour's weight."""
        rng = self._rng
        while True:
            device = rng.choice(self.devices)
            if rng.random() < _hour_weight(now.astimezone(device.timezone)):
                return self.event(device, now - timedelta(seconds=rng.uniform(0, 5)))

    def history(self, first: date, last: date, per_device_day: int) -> Iterator[dict[str, object]]:
        """Heartbeats of every device over ``[first, last]`` (local days), about
        ``per_device_day`` on a busy weekday, spread over the hours by their weight."""
        rng = self._rng
        for device in self.devices:
            day = first
            while day <= last:
                for hour in range(24):
                    local = datetime(day.year, day.month, day.day, hour, tzinfo=device.timezone)
                    expected = per_device_day * _hour_weight(local) / 10.0
                    whole = int(expected)
                    for _ in range(whole + (rng.random() < expected - whole)):
                        yield self.event(device, local + timedelta(seconds=rng.uniform(0, 3599)))
                day += timedelta(days=1)
