"""Running a coroutine against the module's Redis (one Redis or a cluster) through state/."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")


def run_with_redis(services: Any, body: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``body`` with a state/ client of the session's Redis (or Redis Cluster, as
    ``services`` names one: ``state.connection.open_store``), in a fresh event loop."""
    from state.connection import open_store
    from state.settings import StoreSettings

    async def main() -> T:
        redis: Any = open_store(StoreSettings(redis_url=services.redis_url))
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())
