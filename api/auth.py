"""Authentication first: a token's grant is settled before any series, ranking or client read.

Each request's grant comes from a short in-process cache of token hash -> grant (a miss costs
one HGETALL of the token's key, and concurrent misses of one token share it), so a refused
request costs the same whatever its target holds, and a valid one usually no round trip of its
own. A revoked token is forgotten at once, as `devact token revoke` publishes it (api/live.py
listens); a grant changed otherwise, or a revocation whose message was lost, is seen within
``auth_cache_s`` (docs/api.md). An expired token is refused from the second its expiry passes
(by this process's clock), cached or not.

It also notes when each token was last served, to the minute, for `devact token list`: the app
writes what changed once a minute (``take_uses``), the API's only write to Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from api.access_log import note_token
from api.errors import Forbidden, Unauthorized
from api.params import PathId
from state.errors import StoreUnavailable
from state.reader import Reader
from state.registry import TokenGrant, hash_token, token_id

MAX_TOKEN_CHARS = 512
"""Longer bearer values are refused unread: ours have 46 characters, and hashing a megabyte
that cannot match costs CPU for nothing."""
_KEPT = 10_000
"""Tokens whose grant is remembered, the least recently used dropped first: 10,000 entries take
about 2 MB, and a flood of made-up tokens only pushes real ones out (they are read again)."""
STALE_S = 60.0
"""How old a remembered grant may be to stand in while the token's Redis node is unreachable
(on a cluster, a device on a healthy node still answers)."""


class Authenticator:
    """Grants of bearer tokens, remembered for ``ttl_s``."""

    def __init__(
        self,
        reader: Reader,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._ttl_s = ttl_s
        self._clock = clock
        self._wall = wall
        """Epoch seconds, for expiries."""
        self._known: OrderedDict[str, tuple[TokenGrant | None, float]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[TokenGrant | None]] = {}
        self._used: dict[str, int] = {}
        """Token id -> the minute (epoch seconds) it was last served, as last written."""
        self._unwritten: dict[str, int] = {}

    async def grant(self, token: str) -> TokenGrant | None:
        """The token's grant; None for an unknown, revoked, expired or oversized token."""
        grant = await self._grant(token)
        if grant is None:
            return None
        now = self._wall()
        if grant.expired(now):
            return None
        minute = int(now) // 60 * 60
        if self._used.get(grant.token_id) != minute:
            self._used[grant.token_id] = self._unwritten[grant.token_id] = minute
        return grant

    def take_uses(self) -> dict[str, int]:
        """Token id -> when it was last served, for the tokens served in a new minute since
        the last call (``Registry.record_token_uses`` writes them)."""
        taken, self._unwritten = self._unwritten, {}
        if len(self._used) > _KEPT:  # ids of tokens long unused: nothing to compare with
            self._used.clear()
        return taken

    def put_back(self, uses: dict[str, int]) -> None:
        """Uses ``take_uses`` gave that could not be written: given again next time."""
        for used, minute in uses.items():
            self._unwritten[used] = max(minute, self._unwritten.get(used, minute))

    async def _grant(self, token: str) -> TokenGrant | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        note_token(token_id(digest))
        known = self._known.get(digest)
        now = self._clock()
        if known is not None and now - known[1] < self._ttl_s:
            self._known.move_to_end(digest)
            return known[0]
        pending = self._reading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        reading = asyncio.get_running_loop().create_future()
        self._reading[digest] = reading
        try:
            grant = await self._reader.grant(digest)
        except StoreUnavailable as exc:
            if known is not None and now - known[1] <= STALE_S:
                reading.set_result(known[0])
                return known[0]
            reading.set_exception(exc)
            reading.exception()  # retrieved: waiters, if any, get it; nobody else must
            raise
        finally:
            del self._reading[digest]
        reading.set_result(grant)
        self._remember(digest, grant)
        return grant

    async def authorize(self, token: str, client: PathId) -> TokenGrant:
        """The grant of a token that may read ``client``, or 401 / 403."""
        grant = await self.grant(token)
        if grant is None:
            raise Unauthorized("Unknown, revoked or expired token")
        if not grant.allows(client.id):
            raise Forbidden(
                f"This token has no access to client {client.id}", {"client_id": client.given}
            )
        return grant

    def forget(self, token_hashes: Iterable[str] | None = None) -> None:
        """Drop the remembered grants of these token hashes (revoked), or of every token."""
        if token_hashes is None:
            self._known.clear()
            return
        for digest in token_hashes:
            self._known.pop(digest, None)

    def _remember(self, digest: str, grant: TokenGrant | None) -> None:
        self._known[digest] = (grant, self._clock())
        self._known.move_to_end(digest)
        if len(self._known) > _KEPT:
            self._known.popitem(last=False)
