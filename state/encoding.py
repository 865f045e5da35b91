"""How values are encoded in Redis."""

from __future__ import annotations

import hashlib

EXACT_USERS_LIMIT = 500
"""A day's users are kept exactly up to this many distinct users (docs/api.md), as a set of 64-bit
hashes. Below Redis's default ``set-max-intset-entries`` (512), so the set stays a compact
intset: 8 bytes per user."""


def user_member(user_id: str) -> str:
    """A user id as a signed 64-bit integer in decimal: what the day's user set stores.

    64 bits make a collision among a day's 500 users about 1 in 10^14; the integer form lets
    Redis keep small sets as intsets. BLAKE2b is in the standard library and fast; the writer
    asks once per event, so members already worked out are remembered (``_MEMBERS``).
    """
    return user_hashes(user_id)[0]


def user_hashes(user_id: str) -> tuple[str, bytes]:
    """The user's ``user_member`` and the same 64 bits as 8 bytes (big-endian): the fleet
    aggregates' per-device records hold the bytes (state/fleet.py)."""
    found = _MEMBERS.get(user_id)
    if found is None:
        digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
        found = (str(int.from_bytes(digest, "big", signed=True)), digest)
        if len(_MEMBERS) >= _MEMBERS_LIMIT:
            _MEMBERS.clear()
        _MEMBERS[user_id] = found
    return found


_MEMBERS: dict[str, tuple[str, bytes]] = {}
"""User ids seen, to their members: a signed-in user sends a heartbeat every few minutes, and a
lookup costs a fraction of the hash. Started afresh at ``_MEMBERS_LIMIT`` entries; user ids are
at most 256 characters (docs/events.md), so it holds a few MB for typical ids, 40 MB at worst."""
_MEMBERS_LIMIT = 1 << 15
