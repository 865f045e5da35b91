"""How values are encoded in Redis."""

from __future__ import annotations

import hashlib

EXACT_USERS_LIMIT = 500
"""A day's users are kept exactly up to this many distinct users (SPEC §4), as a set of 64-bit
hashes. Below Redis's default ``set-max-intset-entries`` (512), so the set stays a compact
intset: 8 bytes per user."""


def user_member(user_id: str) -> str:
    """A user id as a signed 64-bit integer in decimal: what the day's user set stores.

    64 bits make a collision among a day's 500 users about 1 in 10^14; the integer form lets
    Redis keep small sets as intsets. BLAKE2b is in the standard library and fast.
    """
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return str(int.from_bytes(digest, "big", signed=True))
