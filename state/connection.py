"""Creating the Redis client, with timeouts that keep every caller responsive."""

from __future__ import annotations

import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from state.settings import StoreSettings


def connect(settings: StoreSettings) -> Redis:
    """A pooled asyncio client. Connect and read time out after ``redis_timeout_s`` so a dead
    Redis surfaces as an error quickly instead of hanging a request or a batch.

    One immediate retry covers a pooled connection that died with a Redis restart; anything
    longer is the caller's to decide (the worker backs off, the API answers 503), so the
    library's default of several retries with backoff is turned off.
    """
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
        decode_responses=True,
    )


CLUSTER_NOT_SUPPORTED = (
    "DEVACT_REDIS_URL names a node of a Redis Cluster, and this version talks to a single Redis "
    "only: its pipelines would be refused (MOVED) for every key outside that node's slots. "
    "Point it at a single Redis (docs/scaling.md, Redis Cluster)."
)


def cluster_refusal(settings: StoreSettings) -> str | None:
    """Why the product cannot run on ``DEVACT_REDIS_URL`` (None: it can, or Redis does not
    answer yet, which the services wait out themselves)."""
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
    )
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return CLUSTER_NOT_SUPPORTED if str(enabled) == "1" else None


def connect_cluster(settings: StoreSettings) -> RedisCluster:
    """The library's Redis Cluster client for ``DEVACT_REDIS_URL`` (any node): it learns the
    others and the slot map from it; timeouts as ``connect``'s."""
    return RedisCluster.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        decode_responses=True,
    )
