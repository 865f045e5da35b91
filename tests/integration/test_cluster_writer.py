"""state/writer.py over state/cluster_transport.py on a real local Redis Cluster: batches
counted exactly and once, positions and markers on every primary, a primary that lost writes
caught."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis

from devtools.services.redis_cluster import LocalRedisCluster
from state import keys
from state.batch import Contribution, DayBatch, DeviceBatch
from state.connection import connect_cluster
from state.errors import LostWrites
from state.queries import RankingQuery, SeriesQuery
from state.reader import Reader
from state.registry import Registry
from state.settings import StoreSettings
from state.writer import ApplyProgress, Positions, Span, Writer

pytestmark = pytest.mark.backends(
    "cluster",
    reason="the writer and reader over the cluster transport; test_round_trips.py has one Redis's",
)

EXPIRE_AT = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
DAYS = [date(2026, 11, 20) + timedelta(days=n) for n in range(5)]


def _events(seed: int, devices: list[tuple[str, str]], count: int) -> list[tuple[Any, ...]]:
    """(client, device, day, partition, offset, count, user), offsets rising per partition."""
    rng = random.Random(seed)
    offsets = [0, 0]
    out = []
    for _ in range(count):
        client, device = rng.choice(devices)
        partition = rng.randrange(2)
        out.append((client, device, rng.choice(DAYS), partition, offsets[partition],
                    rng.randint(0, 9), f"u{rng.randrange(5)}"))  # fmt: skip
        offsets[partition] += 1
    return out


def _oracle(events: list[tuple[Any, ...]]) -> dict[tuple[str, date], int]:
    """Each device-day's activity: the sum of its events' counts."""
    oracle: dict[tuple[str, date], int] = {}
    for _, device, day, _, _, count, _ in events:
        oracle[(device, day)] = oracle.get((device, day), 0) + count
    return oracle


def _batch(events: list[tuple[Any, ...]], topic: str = "cw") -> tuple[list[DeviceBatch], Positions]:
    by_device: dict[str, DeviceBatch] = {}
    spans: dict[int, list[int]] = {}
    for client, device, day, partition, offset, count, user in events:
        batch = by_device.setdefault(device, DeviceBatch(client, device))
        batch.days.setdefault(day, DayBatch(EXPIRE_AT)).contributions.append(
            Contribution(partition, offset, count, user)
        )
        span = spans.setdefault(partition, [offset, offset])
        span[1] = offset
    return list(by_device.values()), Positions(
        topic, {p: Span(first, last) for p, (first, last) in spans.items()}
    )


def _counters(cluster: LocalRedisCluster, cells: set[tuple[str, date]]) -> dict[Any, int]:
    client = redis.RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        found = {
            (device, day): client.hget(keys.device_month(device, day), str(day.day))
            for device, day in cells
        }
        return {cell: int(value) for cell, value in found.items() if value is not None}
    finally:
        client.close()


def test_batches_on_a_cluster_are_counted_exactly_once(redis_cluster: LocalRedisCluster) -> None:
    client = str(uuid.uuid4())
    devices = [(client, str(uuid.uuid4())) for _ in range(60)]
    events = _events(1, devices, 3000)
    oracle = _oracle(events)

    async def body() -> tuple[dict[int, int | None], dict[int, int | None]]:
        store = connect_cluster(StoreSettings(redis_url=redis_cluster.url, redis_timeout_s=5))
        try:
            writer = Writer(store)
            for first in range(0, len(events), 700):
                batches, positions = _batch(events[first : first + 700])
                await writer.apply(batches, positions)
            applied = await writer.applied_positions("cw", [0, 1])
            # The same events again, cut elsewhere (a replay after a crash): nothing moves.
            again = Writer(store)
            for first in range(0, len(events), 1000):
                batches, positions = _batch(events[first : first + 1000])
                await again.apply(batches, positions)
            return applied, await again.applied_positions("cw", [0, 1])
        finally:
            await store.aclose()

    applied, after_replay = asyncio.run(body())
    last = {p: max(e[4] for e in events if e[3] == p) for p in (0, 1)}
    assert applied == after_replay == last
    assert _counters(redis_cluster, set(oracle)) == oracle
    probe = redis.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        owners = {probe.keyslot(keys.device_meta(d)) for _, d in devices}
        nodes = {probe.nodes_manager.get_node_from_slot(s).name for s in owners}
        assert len(nodes) == 3  # the devices spread over every primary
        # Every primary holds the positions; no batch marker is left at rest.
        positions = [k for k in probe.scan_iter(match="da:{n:*}:applied:cw:*")]
        assert len(positions) == 3 * 2
        assert not list(probe.scan_iter(match="da:{n:*}:batch:*"))
    finally:
        probe.close()


def test_a_primary_that_lost_a_round_trip_is_caught(redis_cluster: LocalRedisCluster) -> None:
    """One primary's marker of the batch in flight disappears (what a restart from an AOF
    missing its last second does): the next round trip raises LostWrites, and the batch applied
    again from its start counts everything exactly once."""
    client = str(uuid.uuid4())
    devices = [(client, str(uuid.uuid4())) for _ in range(40)]
    events = _events(2, devices, 600)
    oracle = _oracle(events)

    async def body() -> bool:
        store = connect_cluster(StoreSettings(redis_url=redis_cluster.url, redis_timeout_s=5))
        try:
            writer = Writer(store)
            batches, positions = _batch(events)
            packed = writer.pack(batches)
            # Round trips of 10 scripts: the batch takes several.
            packed = type(packed)(packed.batches, packed.commands,
                                  [range(i, min(i + 10, len(batches)))
                                   for i in range(0, len(batches), 10)],
                                  packed.clients)  # fmt: skip
            progress = ApplyProgress()
            lost = False

            original = writer._record_devices

            def record(trip: int, replies: list[Any], progress: ApplyProgress) -> None:
                nonlocal lost
                original(trip, replies, progress)
                if trip == 1 and not lost:  # after round trip 1: one primary forgets it
                    lost = True
                    sync = redis.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
                    markers = [
                        m
                        for m in sync.scan_iter(match=keys.node_batch_marker("da:{n:*}", "*"))
                        if (sync.get(m) or "").startswith(progress.batch_id)
                    ]
                    assert len(markers) == 3  # one per primary
                    sync.delete(markers[0])
                    sync.close()

            writer._record_devices = record  # type: ignore[method-assign]
            caught = False
            try:
                await writer.apply_packed(packed, positions, progress)
            except LostWrites:
                caught = True
                await writer.apply_packed(packed, positions, progress)
            return caught
        finally:
            await store.aclose()

    assert asyncio.run(body())
    assert _counters(redis_cluster, set(oracle)) == oracle


def test_the_reader_answers_from_every_primary(redis_cluster: LocalRedisCluster) -> None:
    """What the API reads, on a cluster: a device's series, the client's series and its
    ranking, each request's keys on several primaries, against the oracle of the events."""
    client = str(uuid.uuid4())
    devices = [(client, str(uuid.uuid4())) for _ in range(30)]
    events = _events(3, devices, 900)
    per_day: dict[tuple[str, date], int] = {}
    for _, device, day, _, _, count, _ in events:
        per_day[(device, day)] = per_day.get((device, day), 0) + count

    async def body() -> tuple[Any, ...]:
        store = connect_cluster(StoreSettings(redis_url=redis_cluster.url, redis_timeout_s=5))
        try:
            registry = Registry(store)  # type: ignore[arg-type]
            await registry.add_client(client, "UTC", "cluster", datetime.now(UTC))
            batches, positions = _batch(events)
            await Writer(store).apply(batches, positions)
            reader = Reader(store)
            views = [
                await reader.series(SeriesQuery(client, d, "activity-count", DAYS[0], DAYS[-1]))
                for _, d in devices
            ]
            fleet = await reader.series(
                SeriesQuery(client, None, "activity-count", DAYS[0], DAYS[-1])
            )
            ranking = await reader.ranking(
                RankingQuery(client, "activity-count", DAYS[0], DAYS[-1], "desc", len(devices))
            )
            return views, fleet, ranking
        finally:
            await store.aclose()

    views, fleet, ranking = asyncio.run(body())
    for (_, device), view in zip(devices, views, strict=True):
        assert view.missing is None
        assert view.series.values == [per_day.get((device, day), 0) for day in DAYS]
    assert fleet.missing is None
    every = [sum(per_day.get((d, day), 0) for _, d in devices) for day in DAYS]
    assert fleet.series.values == every
    assert ranking.total_devices == len(devices)
    totals = dict(ranking.devices)
    assert totals == {d: sum(per_day.get((d, day), 0) for day in DAYS) for _, d in devices}


def test_scripts_a_cluster_forgot_are_loaded_again_and_counted_once(
    redis_cluster: LocalRedisCluster,
) -> None:
    """Every primary empties its script cache (``SCRIPT FLUSH``, what restarts do) between
    two batches: the next batch's scripts answer NOSCRIPT, are loaded on every primary, and
    the batch is counted exactly once."""
    client = str(uuid.uuid4())
    devices = [(client, str(uuid.uuid4())) for _ in range(30)]
    events = _events(4, devices, 600)
    oracle = _oracle(events)

    async def body() -> dict[int, int | None]:
        store = connect_cluster(StoreSettings(redis_url=redis_cluster.url, redis_timeout_s=5))
        try:
            writer = Writer(store)
            batches, positions = _batch(events[:300], "cw-noscript")
            await writer.apply(batches, positions)
            await store.script_flush()  # on every primary (redis-py routes it so)
            batches, positions = _batch(events[300:], "cw-noscript")
            await writer.apply(batches, positions)
            return await writer.applied_positions("cw-noscript", [0, 1])
        finally:
            await store.aclose()

    positions = asyncio.run(body())
    assert _counters(redis_cluster, set(oracle)) == oracle
    assert positions == {p: max(e[4] for e in events if e[3] == p) for p in (0, 1)}
