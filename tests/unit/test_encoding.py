"""``state.encoding.user_member``: what a day's user set stores for a user id, memoised.

The oracle is the definition, computed here: BLAKE2b with an 8-byte digest of the UTF-8 id, read
as a big-endian signed 64-bit integer, in decimal.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from state.encoding import user_member


def member_by_definition(user_id: str) -> str:
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return str(int.from_bytes(digest, "big", signed=True))


USER_IDS = [
    pytest.param("u-1842", id="short"),
    pytest.param("aa7cf840-9ca9-46a3-9778-9015d6580d50", id="uuid"),
    pytest.param(" ", id="space"),
    pytest.param("Zoë 😀 日本語", id="non-ascii"),
    pytest.param("x" * 256, id="256-characters"),
]


@pytest.mark.parametrize("user_id", USER_IDS)
def test_user_member_is_the_signed_64_bit_blake2b_in_decimal(user_id: str) -> None:
    expected = member_by_definition(user_id)
    assert user_member(user_id) == expected
    assert user_member("".join(user_id)) == expected  # again, from the memo, for an equal string
    assert -(2**63) <= int(expected) < 2**63


def test_user_member_of_the_spec_example_user_by_hand() -> None:
    # The digest's first byte has its top bit set for this id, so the member is negative.
    digest = hashlib.blake2b(b"u-1842", digest_size=8).digest()
    value = int.from_bytes(digest, "big") - (2**64 if digest[0] >= 0x80 else 0)
    assert user_member("u-1842") == str(value)


def test_user_member_stays_right_beyond_what_the_memo_holds() -> None:
    rng = random.Random(3)
    ids = [f"user-{rng.getrandbits(64):x}" for _ in range(40_000)]  # more than the memo keeps
    for user_id in ids + ids[:1_000] + ids[-1_000:]:
        assert user_member(user_id) == member_by_definition(user_id)
