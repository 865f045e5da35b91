"""Token rules that need no Redis: expiry to the second, last uses to the minute, lifetimes on the
command line, and ids (api/auth.py, state/registry.py, devact/tokens.py). The same rules on real
processes: tests/integration/test_token_lifecycle.py."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from api.auth import Authenticator
from devact.tokens import parse_duration
from state.registry import TokenGrant, hash_token, token_id

TOKEN = "da_" + "x" * 43
EXPIRES = 1_800_000_000.0


class OneToken:
    """A reader that knows one token, expiring at ``EXPIRES``, and counts its lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    async def grant(self, digest: str) -> TokenGrant | None:
        self.lookups += 1
        if digest != hash_token(TOKEN):
            return None
        return TokenGrant(frozenset({"c"}), False, "wall", token_id(digest), EXPIRES)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def authenticator(wall: Clock) -> tuple[Authenticator, OneToken]:
    reader = OneToken()
    return Authenticator(reader, 5.0, clock=lambda: 0.0, wall=wall), reader  # type: ignore[arg-type]


def test_a_token_is_refused_from_the_second_it_expires_even_when_cached() -> None:
    wall = Clock(EXPIRES - 0.001)
    auth, reader = authenticator(wall)
    assert asyncio.run(auth.grant(TOKEN)) is not None
    wall.now = EXPIRES
    assert asyncio.run(auth.grant(TOKEN)) is None
    assert reader.lookups == 1  # the cached grant, refused by its expiry


def test_uses_are_noted_once_per_minute_and_token() -> None:
    wall = Clock(EXPIRES - 600 + 5)  # 5 s into a minute
    auth, _ = authenticator(wall)
    for _ in range(3):
        asyncio.run(auth.grant(TOKEN))
    minute = int(wall.now) // 60 * 60
    assert auth.take_uses() == {token_id(hash_token(TOKEN)): minute}
    asyncio.run(auth.grant(TOKEN))
    assert auth.take_uses() == {}  # the same minute: nothing new to write
    wall.now += 60
    asyncio.run(auth.grant(TOKEN))
    uses = auth.take_uses()
    assert uses == {token_id(hash_token(TOKEN)): minute + 60}
    auth.put_back(uses)  # the write failed: given again
    assert auth.take_uses() == uses


def test_unknown_and_expired_tokens_are_not_noted_as_used() -> None:
    auth, _ = authenticator(Clock(EXPIRES + 1))
    asyncio.run(auth.grant(TOKEN))
    asyncio.run(auth.grant("da_unknown"))
    assert auth.take_uses() == {}


def test_a_grant_without_expiry_never_expires() -> None:
    grant = TokenGrant(frozenset(), True)
    assert not grant.expired(1e12)


def test_a_token_id_is_the_start_of_its_hash() -> None:
    assert token_id(hash_token(TOKEN)) == hashlib.sha256(TOKEN.encode()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("text", "lifetime"),
    [("45s", timedelta(seconds=45)), ("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)),
     ("30d", timedelta(days=30)), (" 7d ", timedelta(days=7)), ("3660d", timedelta(days=3660))],
)  # fmt: skip
def test_lifetimes_are_a_whole_number_and_a_unit(text: str, lifetime: timedelta) -> None:
    assert parse_duration(text) == lifetime


@pytest.mark.parametrize("text", ["30", "1w", "-5d", "0d", "1.5h", "3661d", "d", "", "5 d", "5D"])
def test_other_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|ten years"):
        parse_duration(text)
