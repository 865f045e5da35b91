"""The fleet aggregates' binary values, decoded for checks with the standard library alone
(independently of state/fleet.py, which the API reads them with)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

FILLER = "~"
"""The device index's and month hashes' field that is not a device (apply_client.lua)."""


def device_indexes(index: Mapping[str, str]) -> dict[str, int]:
    """The client's device index hash (decoded): device id -> index."""
    return {device: int(i) for device, i in index.items() if device != FILLER}


def activity_by_device(indexes: Mapping[str, int], vector: bytes | None) -> dict[str, int]:
    """A day's activity vector: each device's activity that day, devices above zero only."""
    found = {}
    for device, i in indexes.items():
        if vector and 8 * i + 8 <= len(vector):
            (activity,) = struct.unpack_from(">q", vector, 8 * i)
            if activity:
                found[device] = activity
    return found


def users_by_device(
    indexes: Mapping[str, int], month: Mapping[bytes, bytes]
) -> dict[str, dict[int, int]]:
    """A month's device-users hash (raw): per device, each user's 64-bit hash -> the bitmap of
    the days of the month they were active on it. Records are 16 bytes: the device's index
    (little-endian), the user's hash (big-endian, signed), the days (little-endian)."""
    device_of = {i: device for device, i in indexes.items()}
    found: dict[str, dict[int, int]] = {}
    for field, records in month.items():
        if field == FILLER.encode():
            continue
        assert len(records) % 16 == 0, f"records of {len(records)} bytes"
        device = device_of[int(field)]
        users = found.setdefault(device, {})
        for at in range(0, len(records), 16):
            (index,) = struct.unpack_from("<I", records, at)
            (user,) = struct.unpack_from(">q", records, at + 4)
            (days,) = struct.unpack_from("<I", records, at + 12)
            assert device_of[index] == device, f"a record of {device} names index {index}"
            assert user not in users, f"user {user} twice in one device's records"
            users[user] = days
    return found


def user_hash(user_id: str) -> int:
    """A user id's 64-bit hash as the records hold it: BLAKE2b of 8 bytes, big-endian, signed
    (docs/key-schema.md)."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
