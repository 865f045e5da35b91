"""The client-day aggregates a batch adds to, which client-wide series and rankings read:
encoding the calls of ``apply_client.lua`` (one per client per batch, over all its days).

A client-day's aggregate lives under the client's hash tag ``{c:<client>}``, in another slot
than its devices' keys, so it cannot be written by the device's script: the writer sends these
calls after the device scripts, for the devices those accepted (``state/writer.py``). They
carry the same events with the same offsets, so the same effectively-once rule holds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date

from state import keys
from state.batch import DayBatch, DeviceBatch, encoded_contributions
from state.encoding import EXACT_USERS_LIMIT
from state.resp import Encoded, evalsha


@dataclass(frozen=True, slots=True)
class ClientCall:
    """One ``apply_client.lua`` call: a client's part of a batch."""

    client_id: str
    members: tuple[int, ...]
    """The indexes of the device batches it carries."""
    command: bytes
    events: int


def client_calls(
    sha: str, batches: Sequence[DeviceBatch], refused: Collection[int] = ()
) -> list[ClientCall]:
    """The calls for every client of ``batches``, leaving out the device batches ``refused``
    (a device that belongs to another client adds nothing to this one)."""
    members: dict[str, list[int]] = {}
    for index, batch in enumerate(batches):
        if index not in refused:
            members.setdefault(batch.client_id, []).append(index)
    return [_call(sha, client, batches, indexes) for client, indexes in members.items()]


def _call(sha: str, client: str, batches: Sequence[DeviceBatch], members: list[int]) -> ClientCall:
    days: dict[date, tuple[int, list[tuple[str, DayBatch]]]] = {}
    for index in members:
        batch = batches[index]
        for day, day_batch in batch.days.items():
            days.setdefault(day, (day_batch.expire_at, []))[1].append((batch.device_id, day_batch))
    script_keys: list[str] = []
    args: list[str | int | Encoded] = [EXACT_USERS_LIMIT, len(days)]
    events = 0
    for day, (expire_at, devices) in days.items():
        script_keys += [
            keys.client_day(client, day),
            keys.client_day_users(client, day),
            keys.client_month_users(client, day),
        ]
        args += [expire_at, day.day, len(devices)]
        for device_id, day_batch in devices:
            args += [device_id, len(day_batch.contributions), encoded_contributions(day_batch)]
            events += len(day_batch.contributions)
    return ClientCall(client, tuple(members), evalsha(sha, script_keys, args), events)
