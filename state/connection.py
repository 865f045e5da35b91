"""Creating the Redis client, with timeouts that keep every caller responsive."""

from __future__ import annotations

import logging
import time

import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError

from state.errors import StoreRefused
from state.settings import StoreSettings, redacted_url

Store = Redis | RedisCluster
"""A client of one Redis or of a Redis Cluster (``open_store``)."""

POOL_RESERVE = 8
"""Connections a pool holds beyond ``redis_max_connections`` (per node on a cluster): for the
live hub's subscription and calls outside the gate (state/gate.py), so the pool never raises."""


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
        max_connections=settings.redis_max_connections + POOL_RESERVE,
        **settings.redis_tls_options(),
    )


_PROBE_DEADLINE_S = 10.0
"""How long ``open_store`` asks whether ``DEVACT_REDIS_URL`` is a cluster node, while Redis
does not answer yet (a service started with the stack)."""

log = logging.getLogger(__name__)


def is_cluster(settings: StoreSettings) -> bool | None:
    """Whether ``DEVACT_REDIS_URL`` names a node of a Redis Cluster (``INFO cluster``); None
    when Redis does not answer. A refused user (wrong password, missing right) raises
    ``StoreRefused`` at once: waiting would not change the answer."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        decode_responses=True,
        **settings.redis_tls_options(),
    )
    try:
        return str(client.info("cluster").get("cluster_enabled")) == "1"
    except (redis.AuthenticationError, NoPermissionError) as exc:
        raise StoreRefused(
            f"Redis at {redacted_url(settings.redis_url)} refused this process: {exc}"
        ) from exc
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def open_store(settings: StoreSettings) -> Store:
    """``connect`` or ``connect_cluster``, as ``DEVACT_REDIS_URL`` names one Redis or a node of
    a cluster: ``DEVACT_REDIS_CLUSTER`` when set, else asked once, at start, for up to
    ``_PROBE_DEADLINE_S`` while Redis does not answer; after that, one Redis is assumed (and
    said in the log)."""
    if settings.redis_cluster is not None:
        return connect_cluster(settings) if settings.redis_cluster else connect(settings)
    deadline = time.monotonic() + _PROBE_DEADLINE_S
    while (cluster := is_cluster(settings)) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if cluster is None:
        log.warning("Redis at %s does not answer: assuming one Redis, not a cluster",
                    redacted_url(settings.redis_url))  # fmt: skip
    return connect_cluster(settings) if cluster else connect(settings)


def connect_cluster(settings: StoreSettings) -> RedisCluster:
    """The library's Redis Cluster client for ``DEVACT_REDIS_URL`` (any node): it learns the
    others and the slot map from it; timeouts as ``connect``'s. With ``rediss://`` every node
    is reached over TLS with the same CA and user (the nodes run ``tls-cluster yes``, so the
    slot map names their TLS ports)."""
    return RedisCluster.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        decode_responses=True,
        max_connections=settings.redis_max_connections + POOL_RESERVE,
        **settings.redis_tls_options(),
    )
