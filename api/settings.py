"""Settings of the API process (`devact api`)."""

from __future__ import annotations

from pydantic import Field

from state.settings import StoreSettings


class ApiSettings(StoreSettings):
    max_range_days: int = Field(default=90, ge=1)
    """Longest accepted range, counted inclusively: 90 is accepted, 91 refused (docs/api.md)."""
    redis_timeout_s: float = Field(default=0.75, gt=0)
    """Two attempts of at most this long keep a 503 within the contract's 2 s."""
    auth_cache_s: float = Field(default=5.0, ge=0)
    """How long a token's grant is remembered (api/auth.py): a revoked token is refused, and an
    open live stream of it ends, within this long. 0: read the token on every request."""
    access_log: bool = True
    """One log line per request: route template, client, status, duration and the token's id
    (api/access_log.py). Off: none (the metrics still count every request)."""
    token_uses_every_s: float = Field(default=60.0, gt=0)
    """How often the API notes in Redis when it last served each token (`devact token list`
    shows it, to the minute): one HSET per period and process."""
    max_in_flight: int = Field(default=1000, ge=1)
    """Requests one process answers at once (live streams not counted: they have their own
    caps); beyond it, a fast 503 with Retry-After (api/overload.py)."""
    live_max_streams: int = Field(default=2000, ge=1)
    """Open live streams one process serves at most; beyond it, 429."""
    live_max_streams_per_token: int = Field(default=500, ge=1)
    """Open live streams one token holds at most in one process; beyond it, 429."""
    api_docs: bool = True
    """Whether /docs and /redoc serve the interactive documentation (api/docs.py); false: 404."""
