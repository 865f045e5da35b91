"""What a batch adds to one device, by local day: the plan stream/ hands to state/."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(slots=True)
class Contribution:
    """One heartbeat's part of a device-day, with the Kafka position it came from. (Not frozen:
    one is made per heartbeat, and a frozen dataclass costs several times as much to create.)"""

    partition: int
    offset: int
    count: int
    user_id: str | None


@dataclass(slots=True)
class DayBatch:
    expire_at: int
    """Unix time at which the day leaves the retention window (EXPIREAT of its keys)."""
    contributions: list[Contribution] = field(default_factory=list)


@dataclass(slots=True)
class DeviceBatch:
    """Everything a batch adds to one device on behalf of one client, by local day."""

    client_id: str
    device_id: str
    days: dict[date, DayBatch] = field(default_factory=dict)
