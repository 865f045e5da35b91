"""state/routing.py on a real local Redis Cluster (three primaries, a replica each): packed
commands reach the primary of their slot, and MOVED and ASK redirects are followed."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from devtools.services.redis_cluster import LocalRedisCluster
from state import resp
from state.routing import Routed, send_routed

pytestmark = pytest.mark.backends("cluster", reason="slots, MOVED and ASK exist on a cluster only")


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> LocalRedisCluster:
    return redis_cluster


def _run(cluster: LocalRedisCluster, body: Any) -> Any:
    async def main() -> Any:
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
        await client.initialize()
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _oracle(cluster: LocalRedisCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.url, decode_responses=True)


def test_commands_of_every_slot_reach_their_primary_and_replies_keep_their_order(
    cluster: LocalRedisCluster,
) -> None:
    keys = [f"routing:{n}" for n in range(300)]

    async def body(client: RedisCluster) -> list[Any]:
        writes = [Routed(k, resp.command("SET", k, f"v{n}")) for n, k in enumerate(keys)]
        await send_routed(client, writes)
        reads = [Routed(k, resp.command("GET", k)) for k in reversed(keys)]
        script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        sha = await client.script_load(script)  # loaded on every primary
        counters = [Routed(f"{k}:n", resp.command("EVALSHA", sha, 1, f"{k}:n", 2)) for k in keys]
        return await send_routed(client, reads + counters + counters)

    replies = _run(cluster, body)
    assert replies[:300] == [f"v{n}" for n in reversed(range(300))]
    assert replies[300:600] == [2] * 300
    assert replies[600:] == [4] * 300
    oracle = _oracle(cluster)
    try:
        owners = {oracle.nodes_manager.get_node_from_slot(oracle.keyslot(k)).port for k in keys}
        assert len(owners) == 3  # the keys spread over the three primaries
        assert [oracle.get(k) for k in keys] == [f"v{n}" for n in range(300)]
    finally:
        oracle.close()


def _node_ids(port: int) -> dict[int, str]:
    """Port -> node id, from a node's CLUSTER NODES."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "nodes"], capture_output=True, text=True
    ).stdout
    return {int(line.split()[1].split(":")[1].split("@")[0]): line.split()[0]
            for line in out.splitlines()}  # fmt: skip


def _primaries(cluster: LocalRedisCluster) -> list[int]:
    out = subprocess.run(
        ["redis-cli", "-p", str(cluster.nodes[0].port), "cluster", "nodes"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sorted(
        int(line.split()[1].split(":")[1].split("@")[0])
        for line in out.splitlines()
        if "master" in line.split()[2]
    )


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_moved_slot_is_followed_and_the_library_s_map_updated(
    cluster: LocalRedisCluster,
) -> None:
    key = "routing:moved"
    oracle = _oracle(cluster)
    try:
        oracle.set(key, "here")
        slot = oracle.keyslot(key)
        source = oracle.nodes_manager.get_node_from_slot(slot).port
    finally:
        oracle.close()
    target = next(p for p in _primaries(cluster) if p != source)
    ids = _node_ids(source)

    async def body(client: RedisCluster) -> tuple[list[Any], int, int]:
        before = client.nodes_manager.get_node_from_slot(slot).port
        # Move the slot by hand while the client's map still names the source.
        _cli(target, "cluster", "setslot", str(slot), "importing", ids[source])
        _cli(source, "cluster", "setslot", str(slot), "migrating", ids[target])
        _cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", key)
        for port in _primaries(cluster):
            _cli(port, "cluster", "setslot", str(slot), "node", ids[target])
        replies = await send_routed(client, [Routed(key, resp.command("GET", key))])
        return replies, before, client.nodes_manager.get_node_from_slot(slot).port

    replies, before, after = _run(cluster, body)
    assert replies == ["here"]
    assert (before, after) == (source, target)


def test_an_ask_during_a_migration_is_followed_without_changing_the_map(
    cluster: LocalRedisCluster,
) -> None:
    key = "routing:asked"
    oracle = _oracle(cluster)
    try:
        oracle.set(key, "moving")
        slot = oracle.keyslot(key)
        source = oracle.nodes_manager.get_node_from_slot(slot).port
    finally:
        oracle.close()
    target = next(p for p in _primaries(cluster) if p != source)
    ids = _node_ids(source)
    _cli(target, "cluster", "setslot", str(slot), "importing", ids[source])
    _cli(source, "cluster", "setslot", str(slot), "migrating", ids[target])
    _cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", key)
    try:

        async def body(client: RedisCluster) -> tuple[list[Any], int]:
            replies = await send_routed(client, [Routed(key, resp.command("GET", key))])
            return replies, client.nodes_manager.get_node_from_slot(slot).port

        replies, owner = _run(cluster, body)
        assert replies == ["moving"]  # the source said ASK: the key is on the target already
        assert owner == source  # an ASK does not move the slot in the map
    finally:
        for port in _primaries(cluster):
            _cli(port, "cluster", "setslot", str(slot), "node", ids[target])
