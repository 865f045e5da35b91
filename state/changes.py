"""Which devices' counts changed: the worker publishes their ids once per batch
(``keys.CHANGES_CHANNEL``, state/writer.py), and readers listen here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from state import keys
from state.connection import Store

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


async def changed_devices(redis: Store) -> AsyncIterator[set[str] | None]:
    """Sets of device ids, as batches change them; None after a lost subscription was made
    again (changes may have been missed meanwhile: re-read everything watched). Runs until
    cancelled, resubscribing with backoff while Redis is away."""
    delay = _RETRY_FIRST_S
    lost = False
    while True:
        try:
            if isinstance(redis, RedisCluster):
                # The cluster client picks the pub/sub node from its slot map (a PUBLISH
                # reaches the subscribers of every node): the map must be there first.
                await redis.initialize()
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
        except (RedisError, OSError) as exc:
            log.warning("change subscription failed (%s); again in %.1f s", exc, delay)
            lost = True
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RETRY_MAX_S)
            continue
        try:
            await pubsub.subscribe(keys.CHANGES_CHANNEL)
            if lost:
                yield None
                lost, delay = False, _RETRY_FIRST_S
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield set(str(message["data"]).split())
        except (RedisError, OSError) as exc:
            log.warning("change subscription lost (%s); again in %.1f s", exc, delay)
            lost = True
        finally:
            await pubsub.aclose()
        await asyncio.sleep(delay)
        delay = min(2 * delay, _RETRY_MAX_S)
