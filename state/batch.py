"""What a batch adds to one device, by local day: the plan stream/ hands to state/."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from state.encoding import user_member
from state.resp import Encoded, bulks


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
    encoded: bytes | None = None
    """The contributions as script arguments (state/writer.py encodes them once, for the
    device's script and the client's)."""


@dataclass(slots=True)
class DeviceBatch:
    """Everything a batch adds to one device on behalf of one client, by local day."""

    client_id: str
    device_id: str
    days: dict[date, DayBatch] = field(default_factory=dict)


def encoded_contributions(day_batch: DayBatch) -> Encoded:
    """A day's contributions as script arguments, four each: partition, offset, count, user
    (the user's 64-bit hash in decimal, '' for nobody). Encoded once per day batch: the
    device's script and the client's (state/fleet.py) carry the same."""
    if day_batch.encoded is None:
        day_batch.encoded = bulks(
            item
            for c in day_batch.contributions
            for item in (
                c.partition,
                c.offset,
                c.count,
                "" if c.user_id is None else user_member(c.user_id),
            )
        )
    return Encoded(4 * len(day_batch.contributions), day_batch.encoded)
