"""What changed, as Redis pub/sub says it: the devices whose counts a batch changed (the worker
publishes their ids once per batch, ``keys.CHANGES_CHANNEL``, state/writer.py) and the tokens
revoked (``keys.TOKENS_CHANNEL``, state/registry.py). Readers listen here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from state import keys
from state.connection import Store

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Changes:
    """One message's news. ``missed``: the subscription was lost and is made again, so anything
    may have changed meanwhile (re-read everything watched, forget every remembered grant)."""

    devices: frozenset[str] = frozenset()
    revoked: frozenset[str] = frozenset()
    """Hashes of revoked tokens."""
    missed: bool = False


async def changes(redis: Store) -> AsyncIterator[Changes]:
    """What changed, message by message. Runs until cancelled, resubscribing with backoff while
    Redis is away."""
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
            await pubsub.subscribe(keys.CHANGES_CHANNEL, keys.TOKENS_CHANNEL)
            if lost:
                yield Changes(missed=True)
                lost, delay = False, _RETRY_FIRST_S
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                named = frozenset(str(message["data"]).split())
                if message["channel"] == keys.TOKENS_CHANNEL:
                    yield Changes(revoked=named)
                else:
                    yield Changes(devices=named)
        except (RedisError, OSError) as exc:
            log.warning("change subscription lost (%s); again in %.1f s", exc, delay)
            lost = True
        finally:
            await pubsub.aclose()
        await asyncio.sleep(delay)
        delay = min(2 * delay, _RETRY_MAX_S)
