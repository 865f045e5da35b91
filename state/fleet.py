"""The fleet aggregates a batch adds to, which client-wide series and rankings read: packing the
calls of ``apply_client.lua`` (one per client per batch, over all its days), and reading the
aggregates' two binary formats back.

A client's aggregates live under its hash tag ``{c:<client>}``, in another slot than its
devices' keys, so the device's script cannot write them: the writer sends these calls after the
device scripts, for the devices those accepted (``state/writer.py``). A call is summed here, per
device-day and per partition, so Redis works per device-day rather than per heartbeat; the
lowest and highest Kafka offset of each partition's heartbeats go with the sums, for the same
effectively-once rule as the device's (apply_client.lua). A call whose sums straddle what Redis
counted already (a replay that is partly new) is answered with 1, and ``client_calls(...,
finer=...)`` sends it again as one segment per offset.

Formats (docs/key-schema.md):

- activity vector, one per client-day: a string of signed 64-bit big-endian integers, the
  device of index ``i`` at bytes ``8i..8i+7`` (Redis ``BITFIELD ... i64 #i``); a device
  beyond the string's end has no activity that day.
- device-users records, one hash field per device index in a month key: 16 bytes per user of
  that device in the month, the device's index (4 bytes, little-endian), the user's 64-bit hash
  (8 bytes, big-endian), then the days of the month the user was active on it (bit d-1 for day
  d, 4 bytes little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from state import keys
from state.batch import DeviceBatch
from state.encoding import EXACT_USERS_LIMIT, user_hashes
from state.resp import Arg, evalsha

FILLER = "~"
"""A field of the device index and of each month's device-users hash that is not a device: its
value, 80 zero bytes, makes Redis keep the hash as a hash table (apply_client.lua). Read as
device-users records, it is five records of no day, which no range counts."""
ACTIVITY = np.dtype(">i8")
"""An activity vector's element."""
RECORD = np.dtype([("device", "<u4"), ("user", ">i8"), ("days", "<u4")])
"""A device-users record (16 bytes): the device's index, the user's hash, their days."""


@dataclass(frozen=True, slots=True)
class ClientCall:
    """One ``apply_client.lua`` call: a client's part of a batch."""

    client_id: str
    members: tuple[int, ...]
    """The indexes of the device batches it carries."""
    command: bytes
    events: int


def client_calls(
    sha: str,
    batches: Sequence[DeviceBatch],
    refused: Collection[int] = (),
    finer: Collection[str] | None = None,
) -> list[ClientCall]:
    """The calls for every client of ``batches``, leaving out the device batches ``refused``
    (a device that belongs to another client adds nothing to this one). With ``finer``, only
    those clients' calls, each heartbeat offset a segment of its own (apply_client.lua)."""
    members: dict[str, list[int]] = {}
    for index, batch in enumerate(batches):
        if index not in refused and (finer is None or batch.client_id in finer):
            members.setdefault(batch.client_id, []).append(index)
    return [
        _call(sha, client, batches, indexes, finer is not None)
        for client, indexes in members.items()
    ]


_GROUP = struct.Struct("<HIq")
"""A segment's activity of one device-day: day number, device position, activity."""
_DAYS = struct.Struct("<I")


class _Segment:
    """Heartbeats of one partition (of one offset, when finer): their lowest and highest
    offsets, and their activity per device-day (``day << 32 | position``)."""

    __slots__ = ("high", "low", "partition", "sums")

    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.low = self.high = offset
        self.sums: dict[int, int] = {}


def _call(
    sha: str, client: str, batches: Sequence[DeviceBatch], members: list[int], finer: bool
) -> ClientCall:
    ids: list[str] = []
    days: dict[date, tuple[int, set[str], dict[int, dict[bytes, int]], int]] = {}
    """Per day: its number, its users, its month's records per device position, its bit."""
    expires: list[int] = []
    segments: dict[int | tuple[int, int], _Segment] = {}
    months: dict[tuple[int, int], dict[int, dict[bytes, int]]] = {}
    month_expires: dict[tuple[int, int], int] = {}
    events = 0
    for index in members:
        batch = batches[index]
        ids.append(batch.device_id)
        position = len(ids)  # the script's numbering: from 1
        for day, day_batch in batch.days.items():
            found = days.get(day)
            if found is None:
                month = (day.year, day.month)
                found = days[day] = (
                    len(days) + 1,
                    set(),
                    months.setdefault(month, {}),
                    1 << (day.day - 1),
                )
                expires.append(day_batch.expire_at)
                if day_batch.expire_at > month_expires.get(month, 0):
                    month_expires[month] = day_batch.expire_at
            number, users, month_records, bit = found
            group = number << 32 | position
            records: dict[bytes, int] | None = None
            for c in day_batch.contributions:
                key = (c.partition, c.offset) if finer else c.partition
                segment = segments.get(key)
                if segment is None:
                    segment = segments[key] = _Segment(c.partition, c.offset)
                elif c.offset < segment.low:
                    segment.low = c.offset
                elif c.offset > segment.high:
                    segment.high = c.offset
                sums = segment.sums
                sums[group] = sums.get(group, 0) + c.count
                if c.user_id is not None:
                    member, raw = user_hashes(c.user_id)
                    users.add(member)
                    if records is None:
                        records = month_records.setdefault(position, {})
                    records[raw] = records.get(raw, 0) | bit
            events += len(day_batch.contributions)
    script_keys = [keys.client_devices_index(client), keys.client_offsets(client)]
    # Device ids are canonical UUIDs (docs/events.md): 36 characters each, sent as one string.
    args: list[Arg] = [EXACT_USERS_LIMIT, len(ids), "".join(ids), len(segments)]
    pack = _GROUP.pack
    for segment in segments.values():
        groups = b"".join([pack(g >> 32, g & 0xFFFFFFFF, n) for g, n in segment.sums.items()])
        args += [segment.partition, segment.low, segment.high, groups]
    args.append(len(days))
    for day, (number, users, _, _) in days.items():
        script_keys += [
            keys.client_day(client, day),
            keys.client_day_users(client, day),
            keys.client_day_activity(client, day),
        ]
        args += [expires[number - 1], len(users), *users]
    args.append(len(months))
    days_bits = _DAYS.pack
    for month, devices in months.items():
        script_keys.append(keys.client_month_users(client, date(*month, 1)))
        args += [month_expires[month], len(devices)]
        for position, found_records in devices.items():
            args += [
                position,
                b"".join([raw + days_bits(bits) for raw, bits in found_records.items()]),
            ]
    command = evalsha(sha, script_keys, args)
    return ClientCall(client, tuple(members), command, events)


def activity_totals(vectors: Iterable[bytes | None], size: int) -> np.ndarray:
    """The sum of a range's activity vectors, for device indexes ``0 .. size-1``."""
    totals = np.zeros(size, dtype=np.int64)
    for vector in vectors:
        if vector:
            values = np.frombuffer(vector, dtype=ACTIVITY)[:size]
            totals[: len(values)] += values
    return totals


def distinct_users(months: Sequence[tuple[Sequence[bytes], int]], size: int) -> np.ndarray:
    """Each device's distinct users over a range, for device indexes ``0 .. size-1``, from the
    values of the device-users hashes of the months it touches, each with the bitmask of its
    days inside the range. A user active on a device in two months of the range counts once for
    it. Exact."""
    devices: list[np.ndarray] = []
    users: list[np.ndarray] = []
    for values, mask in months:
        # The filler's value reads as records of no day (apply_client.lua): no need to skip it.
        records = np.frombuffer(b"".join(values), dtype=RECORD)
        inside = records[(records["days"] & mask) != 0]
        devices.append(inside["device"].astype(np.int64))
        users.append(inside["user"])
    if not devices:
        return np.zeros(size, dtype=np.int64)
    device = np.concatenate(devices)
    if len(devices) > 1 and len(device):  # the same pair may be in several months: count once
        device = _distinct_pairs(device, np.concatenate(users))
    counts: np.ndarray = np.bincount(device, minlength=size)
    return counts[:size]


def _distinct_pairs(device: np.ndarray, user: np.ndarray) -> np.ndarray:
    """The device of each distinct (device, user) pair: users ranked densely by sorting, then
    the pairs as one integer each (sorting is numpy's fast path; ``np.unique`` is slower)."""
    order = np.argsort(user)
    sorted_users = user[order]
    new_user = np.empty(len(order), dtype=bool)
    new_user[0] = True
    np.not_equal(sorted_users[1:], sorted_users[:-1], out=new_user[1:])
    rank = np.cumsum(new_user) - 1
    shift = max(1, int(device.max()).bit_length())
    pairs = np.sort((rank << shift) | device[order])
    first = np.empty(len(pairs), dtype=bool)
    first[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    return pairs[first] & ((1 << shift) - 1)
