"""`devact status`: one look at the pipeline for an operator (a table) or a script (``--json``).

What it gathers, each from the component that knows it:
- Kafka (stream/lag.py): per partition of the heartbeats topic, the log's first and next offset
  and the group's committed offset, hence the lag;
- Redis: the applied position per partition (as the worker reads it: on a cluster the lowest a
  primary holds), each node's role, health, memory and keys;
- the dead-letter topic, read once from its start: dead letters by reason;
- the API's and the workers' ``/readyz``.

A part that does not answer is reported as such (``"error"``), never as zero.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from state.connection import Store, open_store
from state.writer import new_writer
from stream.dlq import read_dead_letters
from stream.lag import group_offsets
from stream.settings import WorkerSettings

_HTTP_TIMEOUT_S = 2.0


@dataclass
class PartitionStatus:
    partition: int
    start: int
    end: int
    committed: int | None
    applied: int | None
    lag: int


@dataclass
class NodeStatus:
    address: str
    role: str
    healthy: bool
    used_memory: int | None = None
    keys: int | None = None
    error: str | None = None


@dataclass
class Readiness:
    url: str
    ready: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class Status:
    topic: str
    group: str
    partitions: list[PartitionStatus] = field(default_factory=list)
    lag: int | None = None
    dead_letters: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    api: Readiness | None = None
    workers: list[Readiness] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """What could not be read, one line each."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def gather(settings: WorkerSettings, api_url: str, worker_urls: list[str]) -> Status:
    status = Status(topic=settings.topic, group=settings.app_id)
    redis = open_store(settings)
    try:
        await asyncio.gather(
            _kafka(status, settings, redis),
            _dead_letters(status, settings),
            _redis(status, redis),
            _readiness(status, api_url, worker_urls),
        )
    finally:
        await redis.aclose()
    return status


async def _kafka(status: Status, settings: WorkerSettings, redis: Store) -> None:
    try:
        offsets = await group_offsets(settings.kafka_connection(), settings.app_id, settings.topic)
    except Exception as exc:  # reported, not raised: the rest of the screen still helps
        status.errors.append(f"kafka: {exc or type(exc).__name__}")
        return
    applied: dict[int, int | None] = {}
    try:
        applied = await new_writer(redis).applied_positions(
            settings.topic, [p.partition for p in offsets]
        )
    except Exception as exc:
        status.errors.append(f"applied positions: {exc or type(exc).__name__}")
    status.partitions = [
        PartitionStatus(p.partition, p.start, p.end, p.committed, applied.get(p.partition), p.lag)
        for p in offsets
    ]
    status.lag = sum(p.lag for p in offsets)


async def _dead_letters(status: Status, settings: WorkerSettings) -> None:
    try:
        letters = await read_dead_letters(settings.kafka_connection(), settings.dlq_topic)
    except Exception as exc:
        status.errors.append(f"dead-letter topic: {exc or type(exc).__name__}")
        return
    reasons = Counter(letter.reason for letter in letters)
    status.dead_letters = {"total": len(letters), "by_reason": dict(sorted(reasons.items()))}


async def _redis(status: Status, redis: Store) -> None:
    nodes: list[NodeStatus] = []
    if isinstance(redis, RedisCluster):
        try:
            await redis.initialize()
        except Exception as exc:
            status.errors.append(f"redis: {exc or type(exc).__name__}")
            return
        for node in redis.get_nodes():
            client = Redis(host=node.host, port=int(node.port), socket_timeout=_HTTP_TIMEOUT_S,
                           socket_connect_timeout=_HTTP_TIMEOUT_S)  # fmt: skip
            try:
                nodes.append(await _node(node.name, "node", client))
            finally:
                await client.aclose()
        cluster = True
    else:
        nodes.append(await _node(_address(redis), "standalone", redis))
        cluster = False
    known = [n for n in nodes if n.used_memory is not None]
    status.redis = {
        "cluster": cluster,
        "nodes": [asdict(n) for n in nodes],
        "used_memory": sum(n.used_memory or 0 for n in known) if known else None,
        "keys": sum(n.keys or 0 for n in known if n.role in ("primary", "standalone")) if known
        else None,
    }  # fmt: skip


async def _node(address: str, role: str, client: Redis) -> NodeStatus:
    """A node's health, memory and keys; its role as it says (``standalone``: one Redis)."""
    try:
        async with asyncio.timeout(_HTTP_TIMEOUT_S):
            memory = await client.info("memory")
            keys = await client.dbsize()
            replication = await client.info("replication")
    except Exception as exc:
        return NodeStatus(address, role, False, error=str(exc) or type(exc).__name__)
    if role != "standalone":
        role = "primary" if replication.get("role") == "master" else "replica"
    return NodeStatus(address, role, True, int(memory["used_memory"]), int(keys))


def _address(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


async def _readiness(status: Status, api_url: str, worker_urls: list[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        found = await asyncio.gather(*(_ready(http, url) for url in [api_url, *worker_urls]))
    status.api, status.workers = found[0], list(found[1:])


async def _ready(http: aiohttp.ClientSession, url: str) -> Readiness:
    try:
        async with http.get(url.rstrip("/") + "/readyz") as response:
            code, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Readiness(url, False, [f"unreachable: {exc or type(exc).__name__}"])
    try:
        problems = list(json.loads(text).get("problems", []))
    except (ValueError, AttributeError):
        problems = []
    if code != 200 and not problems:
        problems = [f"HTTP {code}: {text[:200]}"]
    return Readiness(url, code == 200, problems)
