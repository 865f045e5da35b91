"""The fleet aggregates a batch adds to, which client-wide series and rankings read: packing the
calls of ``apply_client.lua`` (one per client per batch, over all its days), and reading the
aggregates' two binary formats back.

A client's aggregates live under its hash tag ``{c:<client>}``, in another slot than its
devices' keys, so the device's script cannot write them: the writer sends these calls after the
device scripts, for the devices those accepted (``state/writer.py``). A call is summed here, per
device and per partition, so Redis works per device rather than per heartbeat; the Kafka
offsets of each partition's heartbeats go with the sums, for the same effectively-once rule as
the device's (apply_client.lua). A day whose sums straddle what Redis counted already (a replay
that is partly new) comes back from the script, and ``client_calls(..., finer=...)`` sends it
again as one segment per offset.

Formats (docs/key-schema.md):

- activity vector, one per client-day: a string of signed 64-bit big-endian integers, the
  device of index ``i`` at bytes ``8i..8i+7`` (Redis ``BITFIELD ... i64 #i``); a device
  beyond the string's end has no activity that day.
- device-users records, one hash field per device index in a month key: 12 bytes per user of
  that device in the month, the user's 64-bit hash (8 bytes, big-endian) then the days of the
  month the user was active on it (bit d-1 for day d, 4 bytes little-endian).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from state import keys
from state.batch import DeviceBatch
from state.encoding import EXACT_USERS_LIMIT, user_hashes
from state.resp import Arg, Encoded, bulks, evalsha

ACTIVITY = np.dtype(">i8")
"""An activity vector's element."""
RECORD = np.dtype([("user", ">i8"), ("days", "<u4")])
"""A device-users record (12 bytes, unaligned)."""


@dataclass(frozen=True, slots=True)
class ClientCall:
    """One ``apply_client.lua`` call: a client's part of a batch."""

    client_id: str
    members: tuple[int, ...]
    """The indexes of the device batches it carries."""
    days: tuple[date, ...]
    """Its days, in the order of the script's arguments (it answers with their numbers)."""
    command: bytes
    events: int


def client_calls(
    sha: str,
    batches: Sequence[DeviceBatch],
    refused: Collection[int] = (),
    finer: Mapping[str, Collection[date]] | None = None,
) -> list[ClientCall]:
    """The calls for every client of ``batches``, leaving out the device batches ``refused``
    (a device that belongs to another client adds nothing to this one). With ``finer`` (client
    to days), only those clients' days, each heartbeat offset a segment of its own."""
    members: dict[str, list[int]] = {}
    for index, batch in enumerate(batches):
        if index not in refused and (finer is None or batch.client_id in finer):
            members.setdefault(batch.client_id, []).append(index)
    return [
        _call(sha, client, batches, indexes, None if finer is None else finer[client])
        for client, indexes in members.items()
    ]


class _Segment:
    """Heartbeats of one partition (of one offset, when finer) on one day: their lowest and
    highest offsets and their activity per device position."""

    __slots__ = ("high", "low", "sums")

    def __init__(self, offset: int) -> None:
        self.low = self.high = offset
        self.sums: dict[int, int] = {}


class _Day:
    """One day of a call: activity per segment and device, and the day's users."""

    __slots__ = ("expire_at", "segments", "users")

    def __init__(self, expire_at: int) -> None:
        self.expire_at = expire_at
        self.segments: dict[tuple[int, int], _Segment] = {}
        """By (partition, offset or -1 for all of them)."""
        self.users: set[str] = set()


def _call(
    sha: str,
    client: str,
    batches: Sequence[DeviceBatch],
    members: list[int],
    finer: Collection[date] | None,
) -> ClientCall:
    ids: list[str] = []
    days: dict[date, _Day] = {}
    months: dict[tuple[int, int], tuple[list[int], dict[int, dict[bytes, int]]]] = {}
    events = 0
    for index in members:
        batch = batches[index]
        ids.append(batch.device_id)
        position = len(ids)  # the script's numbering: from 1
        for day, day_batch in batch.days.items():
            if finer is not None and day not in finer:
                continue
            aggregate = days.get(day)
            if aggregate is None:
                aggregate = days[day] = _Day(day_batch.expire_at)
            month_key = (day.year, day.month)
            month = months.get(month_key)
            if month is None:
                month = months[month_key] = ([day_batch.expire_at], {})
            elif day_batch.expire_at > month[0][0]:
                month[0][0] = day_batch.expire_at
            bit = 1 << (day.day - 1)
            records = month[1].setdefault(position, {})
            segments = aggregate.segments
            for c in day_batch.contributions:
                key = (c.partition, -1 if finer is None else c.offset)
                segment = segments.get(key)
                if segment is None:
                    segment = segments[key] = _Segment(c.offset)
                elif c.offset < segment.low:
                    segment.low = c.offset
                elif c.offset > segment.high:
                    segment.high = c.offset
                sums = segment.sums
                sums[position] = sums.get(position, 0) + c.count
                if c.user_id is not None:
                    member, raw = user_hashes(c.user_id)
                    aggregate.users.add(member)
                    records[raw] = records.get(raw, 0) | bit
            events += len(day_batch.contributions)
    script_keys = [keys.client_devices_index(client)]
    args: list[Arg] = [EXACT_USERS_LIMIT, len(ids), *ids, len(days)]
    for day, aggregate in days.items():
        script_keys += [
            keys.client_day(client, day),
            keys.client_day_users(client, day),
            keys.client_day_activity(client, day),
        ]
        args += [aggregate.expire_at, len(aggregate.segments)]
        for (partition, _), segment in aggregate.segments.items():
            args += [partition, segment.low, segment.high, len(segment.sums)]
            for position, activity in segment.sums.items():
                args += [position, activity]
        args.append(len(aggregate.users))
        args += aggregate.users
    args.append(len(months))
    for (year, month_number), (expire_at, devices) in months.items():
        script_keys.append(keys.client_month_users(client, date(year, month_number, 1)))
        used = {position: records for position, records in devices.items() if records}
        args += [expire_at[0], len(used)]
        for position, records in used.items():
            args += [position, len(records)]
            args += [raw + days_bits.to_bytes(4, "little") for raw, days_bits in records.items()]
    command = evalsha(sha, script_keys, [Encoded(len(args), bulks(args))])
    return ClientCall(client, tuple(members), tuple(days), command, events)


def activity_totals(vectors: Iterable[bytes | None], size: int) -> np.ndarray:
    """The sum of a range's activity vectors, for device indexes ``0 .. size-1``."""
    totals = np.zeros(size, dtype=np.int64)
    for vector in vectors:
        if vector:
            values = np.frombuffer(vector, dtype=ACTIVITY)[:size]
            totals[: len(values)] += values
    return totals


def distinct_users(months: Sequence[tuple[Mapping[Any, Any], int]], size: int) -> np.ndarray:
    """Each device's distinct users over a range, for device indexes ``0 .. size-1``, from the
    device-users hashes of the months it touches, each with the bitmask of its days inside the
    range. A user active on a device in two months of the range counts once for it. Exact."""
    devices: list[np.ndarray] = []
    users: list[np.ndarray] = []
    for fields, mask in months:
        if not fields:
            continue
        index = np.fromiter((int(f) for f in fields), dtype=np.int64, count=len(fields))
        blobs = list(fields.values())
        counts = np.fromiter((len(b) // RECORD.itemsize for b in blobs), np.int64, len(blobs))
        records = np.frombuffer(b"".join(blobs), dtype=RECORD)
        inside = (records["days"] & mask) != 0
        devices.append(np.repeat(index, counts)[inside])
        users.append(records["user"][inside])
    if not devices:
        return np.zeros(size, dtype=np.int64)
    device = np.concatenate(devices)
    if len(devices) > 1:  # the same pair may be in several months: count it once
        device = _distinct_pairs(device, np.concatenate(users))
    found = np.bincount(device, minlength=size)
    return found[:size]


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
