"""Faults of a real local Redis Cluster while the worker counts (three primaries, a replica
each): every device-day ends exact against the oracle of the events (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.services import Endpoints
from devtools.services.redis import RedisServer
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports
from state import keys

from .faultkit.checks import cell_differences, client_differences, wait_until_total
from .faultkit.kafka import produce
from .faultkit.pipeline import Run, create_token, register_clients
from .faultkit.probe import ClusterProbe
from .faultkit.processes import Api
from .faultkit.workload import Workload, build_workload
from .harness.kafka import Message
from .harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "cluster",
    reason=(
        "the faults of a cluster's primaries and replicas, on a cluster of its own; "
        "test_faults.py has one Redis's"
    ),
)

SEED = 9_100
CATCH_UP_S = 240.0


@dataclass(frozen=True)
class _Services:
    """What ``Run`` reads of a stack: where Kafka and Redis are."""

    endpoints: Endpoints


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A cluster of this module's own: its tests kill its nodes."""
    local = LocalRedisCluster(tmp_path_factory.mktemp("faulty"), consecutive_free_ports(6))
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _roles(cluster: LocalRedisCluster) -> dict[int, str]:
    """Port -> master or slave, as the first node that answers sees them."""
    for node in cluster.nodes:
        out = subprocess.run(
            ["redis-cli", "-p", str(node.port), "cluster", "nodes"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        if out.strip():
            roles = {}
            for line in out.splitlines():
                fields = line.split()
                port = int(fields[1].split(":")[1].split("@")[0])
                flags = fields[2].split(",")
                roles[port] = "fail" if "fail" in flags else (
                    "master" if "master" in flags else "slave")  # fmt: skip
            return roles
    return {}


def _primary_of(cluster: LocalRedisCluster, key: str) -> RedisServer:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        port = client.nodes_manager.get_node_from_slot(client.keyslot(key)).port
    finally:
        client.close()
    return next(n for n in cluster.nodes if n.port == port)


def _kill(node: RedisServer) -> None:
    running = node.process.running()
    assert running is not None
    os.kill(running.pid, signal.SIGKILL)
    poll_until(lambda: node.process.running() is None or None, timeout_s=10, what="node dead")


def _cut_aof(node: RedisServer, fraction: float) -> int:
    """Drop the last ``fraction`` of the node's newest AOF part (what a crash loses of the last
    second when the disk did not have it): returns the bytes cut."""
    parts = sorted((node.data_dir / "appendonlydir").glob("*.incr.aof"), key=os.path.getmtime)
    newest = parts[-1]
    size = newest.stat().st_size
    cut = int(size * fraction)
    with open(newest, "r+b") as handle:
        handle.truncate(size - cut)
    return cut


def _check_exact(probe: ClusterProbe, workload: Any) -> None:
    differences = cell_differences(probe, workload) or client_differences(probe, workload)
    assert not differences, differences


def _run(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path, name: str, partitions: int = 6
) -> Run:
    endpoints = Endpoints(kafka_bootstrap=services.kafka_bootstrap, redis_url=cluster.url)
    return Run(_Services(endpoints), tmp_path, name, partitions)  # type: ignore[arg-type]


def test_a_primary_killed_with_its_aof_cut_ends_exact(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path
) -> None:
    """SIGKILL of the primary of the busiest slots while events flow, its AOF cut by a tenth,
    restarted at once (before the cluster fails it over): it comes back without its last
    writes, and the batch markers and per-primary positions send the worker back for them."""
    workload = build_workload(SEED, events=8_000, devices=60, days=10)
    run = _run(cluster, services, tmp_path, "cluster-kill")
    probe = ClusterProbe(cluster.url)
    try:
        register_clients(run.redis_url, workload.timezones)
        half = len(workload.messages) // 2
        produce(run.bootstrap, run.topic, workload.messages[:half])
        run.worker("cw-1").start()
        cells = [c.counter_key for c in workload.cells()]
        poll_until(lambda: probe.total(cells) > 0 or None, timeout_s=CATCH_UP_S,
                   what="the worker counting")  # fmt: skip
        victim = _primary_of(cluster, keys.device_meta(workload.devices[0][1]))
        _kill(victim)
        cut = _cut_aof(victim, 0.1)
        victim.start()
        produce(run.bootstrap, run.topic, workload.messages[half:])
        wait_until_total(probe, workload, run, timeout_s=CATCH_UP_S)
        _check_exact(probe, workload)
        assert cut > 0
    finally:
        probe.close()
        run.close()


def test_a_primary_failed_over_to_its_replica_ends_exact(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path
) -> None:
    """SIGKILL of a primary, kept down until the cluster promotes its replica (which may lack
    the primary's last writes), then started again (it rejoins as a replica): exact."""
    workload = build_workload(SEED + 1, events=8_000, devices=60, days=10)
    run = _run(cluster, services, tmp_path, "cluster-failover")
    probe = ClusterProbe(cluster.url)
    try:
        register_clients(run.redis_url, workload.timezones)
        half = len(workload.messages) // 2
        produce(run.bootstrap, run.topic, workload.messages[:half])
        run.worker("cw-2").start()
        cells = [c.counter_key for c in workload.cells()]
        poll_until(lambda: probe.total(cells) > 0 or None, timeout_s=CATCH_UP_S,
                   what="the worker counting")  # fmt: skip
        victim = _primary_of(cluster, keys.device_meta(workload.devices[0][1]))
        masters_before = sorted(p for p, r in _roles(cluster).items() if r == "master")
        _kill(victim)
        poll_until(
            lambda: (
                sorted(p for p, r in _roles(cluster).items() if r == "master")
                if victim.port not in [p for p, r in _roles(cluster).items() if r == "master"]
                and len([r for r in _roles(cluster).values() if r == "master"]) == 3
                else None
            ),
            timeout_s=30,
            what="a replica promoted in the killed primary's place",
        )
        victim.start()
        produce(run.bootstrap, run.topic, workload.messages[half:])
        wait_until_total(probe, workload, run, timeout_s=CATCH_UP_S)
        _check_exact(probe, workload)
        assert victim.port in masters_before
        poll_until(  # it comes back as a primary without slots, then learns it was replaced
            lambda: _roles(cluster).get(victim.port) == "slave" or None,
            timeout_s=60,
            what="the restarted primary rejoining as a replica",
        )
    finally:
        probe.close()
        run.close()


def test_three_workers_over_twelve_partitions_with_two_killed_and_restarted_end_exact(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path
) -> None:
    """Three workers share a 12-partition topic on the cluster; while events flow, two are
    SIGKILLed (their partitions move to the survivor, then back when they restart): exact."""
    workload = build_workload(SEED + 2, events=12_000, devices=90, days=10)
    run = _run(cluster, services, tmp_path, "cluster-three", partitions=12)
    probe = ClusterProbe(cluster.url)
    try:
        register_clients(run.redis_url, workload.timezones)
        workers = [run.worker(f"cw3-{n}") for n in range(3)]
        for worker in workers:
            worker.start()
        third = len(workload.messages) // 3
        produce(run.bootstrap, run.topic, workload.messages[:third])
        cells = [c.counter_key for c in workload.cells()]
        poll_until(lambda: probe.total(cells) > 0 or None, timeout_s=CATCH_UP_S,
                   what="the workers counting")  # fmt: skip
        workers[0].kill()
        workers[1].kill()
        produce(run.bootstrap, run.topic, workload.messages[third : 2 * third])
        workers[0].start()
        workers[1].start()
        produce(run.bootstrap, run.topic, workload.messages[2 * third :])
        wait_until_total(probe, workload, run, timeout_s=CATCH_UP_S)
        _check_exact(probe, workload)
    finally:
        probe.close()
        run.close()


def test_a_frozen_primary_answers_503_quickly_for_its_devices_and_the_others_still_200(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path
) -> None:
    """A primary paused with SIGSTOP for 5 s: a device on it answers 503 within 2 s; a device
    on another primary answers 200 throughout, even when its token or client lives on the
    frozen one (their last answers stand in, docs/scaling.md)."""
    workload = build_workload(SEED + 3, events=3_000, devices=40, days=5)
    run = _run(cluster, services, tmp_path, "cluster-frozen")
    probe = ClusterProbe(cluster.url)
    api = Api({**run.env}, tmp_path / "api.log")
    try:
        register_clients(run.redis_url, workload.timezones)
        produce(run.bootstrap, run.topic, workload.messages)
        run.worker("cw-f").start()
        wait_until_total(probe, workload, run, timeout_s=CATCH_UP_S)
        token = create_token(run.redis_url)
        api.start()
        api.wait_ready()
        frozen = _primary_of(cluster, keys.device_meta(workload.devices[0][1]))
        on_frozen = workload.devices[0]
        elsewhere = next(
            d for d in workload.devices
            if _primary_of(cluster, keys.device_meta(d[1])).port != frozen.port
        )  # fmt: skip
        today = workload.cells()[0].day.isoformat()
        params = {"start_date": today, "end_date": today, "metric": "activity-count"}
        for key in (on_frozen, elsewhere):  # seen once: the API has their token and client
            assert api.activity(key, token, **params).status_code == 200
        running = frozen.process.running()
        assert running is not None
        os.kill(running.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            stopped = api.activity(on_frozen, token, **params)
            waited = time.monotonic() - started
            assert stopped.status_code == 503, stopped.text
            assert waited < 2.0
            others = []
            while time.monotonic() - started < 5.0:
                others.append(api.activity(elsewhere, token, **params).status_code)
            assert others
            assert set(others) == {200}, others
        finally:
            os.kill(running.pid, signal.SIGCONT)
        poll_until(
            lambda: api.activity(on_frozen, token, **params).status_code == 200 or None,
            timeout_s=30,
            what="the device on the primary frozen before answering 200 again",
        )
    finally:
        api.close()
        probe.close()
        run.close()


def _part(workload: Workload, messages: list[Message]) -> Workload:
    """The workload of some of ``workload``'s messages: their events, and their oracle."""
    events = []
    for message in messages:
        body = json.loads(message.value)
        events += body if isinstance(body, list) else [body]
    part = Workload(workload.seed, workload.timezones, workload.devices, workload.pools,
                    workload.now)  # fmt: skip
    part.events, part.messages = events, list(messages)
    return part


def _replica_of(cluster: LocalRedisCluster, primary: RedisServer) -> RedisServer:
    for node in cluster.nodes:
        info = redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)
        try:
            replication = info.info("replication")
        finally:
            info.close()
        if replication.get("role") == "slave" and int(replication["master_port"]) == primary.port:
            return node
    raise AssertionError(f"no replica of {primary.port}")


def test_a_whole_shard_down_pauses_only_its_devices_and_ends_exact(
    cluster: LocalRedisCluster, services: Any, tmp_path: Path
) -> None:
    """A primary and its replica both SIGKILLed while events flow, so nobody serves their
    slots: the worker goes on with the other primaries, whose devices reach the oracle's
    counts while the shard is down; once the shard is started again, with nothing more to
    read, the worker goes back by itself for what its devices missed (re-read from Kafka),
    and every device-day and every client aggregate ends exact."""
    workload = build_workload(SEED + 4, events=8_000, devices=60, days=10)
    run = _run(cluster, services, tmp_path, "cluster-shard")
    probe = ClusterProbe(cluster.url)
    try:
        register_clients(run.redis_url, workload.timezones)
        third = len(workload.messages) // 3
        produce(run.bootstrap, run.topic, workload.messages[:third])
        worker = run.worker("cw-s")
        worker.start()
        cells = workload.cells()
        poll_until(lambda: probe.total([c.counter_key for c in cells]) > 0 or None,
                   timeout_s=CATCH_UP_S, what="the worker counting")  # fmt: skip
        victim = next(
            node
            for node in (_primary_of(cluster, keys.device_meta(d)) for _, d in workload.devices)
            if node.port != cluster.nodes[0].port
        )
        on_victim = {d for _, d in workload.devices
                     if _primary_of(cluster, keys.device_meta(d)).port == victim.port}  # fmt: skip
        assert on_victim
        assert len(on_victim) < len(workload.devices)
        replica = _replica_of(cluster, victim)
        _kill(replica)  # first, so that it cannot take the primary's place
        _kill(victim)
        produce(run.bootstrap, run.topic, workload.messages[third : 2 * third])
        sent = _part(workload, workload.messages[: 2 * third])
        elsewhere = [c for c in sent.cells() if c.device[1] not in on_victim]

        def others_exact() -> bool | None:
            counts = probe.counts([c.counter_key for c in elsewhere])
            users = probe.device_day_users([c.counter_key for c in elsewhere])
            return (
                all(
                    (n or 0, size) == (c.activity, c.users)
                    for c, n, (_, size) in zip(elsewhere, counts, users, strict=True)
                )
                or None
            )

        poll_until(others_exact, timeout_s=CATCH_UP_S,
                   what="the devices of the primaries still up counted while the shard is down",
                   diagnostics=run.tails)  # fmt: skip
        assert "unreachable" in worker.log.read_text()
        produce(run.bootstrap, run.topic, workload.messages[2 * third :])
        victim.start()
        replica.start()
        wait_until_total(probe, workload, run, timeout_s=CATCH_UP_S)
        _check_exact(probe, workload)
    finally:
        probe.close()
        run.close()
        cluster.start()  # every node up and the cluster ok again, for the next test
