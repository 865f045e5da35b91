"""Settings of the API process (`devact api`)."""

from __future__ import annotations

from pydantic import Field

from state.settings import StoreSettings


class ApiSettings(StoreSettings):
    max_range_days: int = Field(default=90, ge=1)
    """Longest accepted range, counted inclusively: 90 is accepted, 91 refused (docs/api.md)."""
    redis_timeout_s: float = Field(default=0.75, gt=0)
    """Two attempts of at most this long keep a 503 within the contract's 2 s."""
