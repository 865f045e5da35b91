"""Creating the Redis client, with timeouts that keep every caller responsive."""

from __future__ import annotations

from redis.asyncio import Redis

from state.settings import StoreSettings


def connect(settings: StoreSettings) -> Redis:
    """A pooled asyncio client. Connect and read time out after ``redis_timeout_s`` so a dead
    Redis surfaces as an error quickly instead of hanging a request or a batch."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=15,
        decode_responses=True,
    )
