"""What Redis ran, from ``INFO commandstats``, summed over every primary of a cluster: the
tests of docs/api.md's "authentication first" and of shared live reads count commands with it."""

from __future__ import annotations

from collections import Counter

import redis
from redis.cluster import RedisCluster

IGNORED = frozenset(
    {
        "info",
        "ping",
        "hello",
        "select",
        "client|setinfo",
        "command",
        "cluster|slots",
        "cluster|shards",
        "replconf",
        "psync",
        "sync",
    }
)
"""The probes of the counting itself, the clients' health checks, what a client says when it
opens a connection, and a replica's replication traffic with its primary (a cluster's replica
acknowledges its offset with REPLCONF ACK about once a second, and commandstats counted one once
in a test: tests/integration/test_auth_first.py on the cluster): none of them reads data."""


def command_calls(url: str) -> Counter[str]:
    """Calls per command (lower-case, ``IGNORED`` left out) since each server started."""
    probe = redis.Redis.from_url(url, decode_responses=True)
    try:
        clustered = str(probe.info("cluster").get("cluster_enabled")) == "1"
    finally:
        probe.close()
    if not clustered:
        return _calls(url)
    cluster = RedisCluster.from_url(url, decode_responses=True)
    try:
        nodes = [f"redis://{n.host}:{n.port}/0" for n in cluster.get_primaries()]
    finally:
        cluster.close()
    total: Counter[str] = Counter()
    for node in nodes:
        total += _calls(node)
    return total


def _calls(url: str) -> Counter[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    calls: Counter[str] = Counter()
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in IGNORED:
            calls[command] = int(fields["calls"])
    return calls


def ran_between(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """The commands run between two readings, by name, without the zeros."""
    return {name: after[name] - before[name] for name in after if after[name] > before[name]}
