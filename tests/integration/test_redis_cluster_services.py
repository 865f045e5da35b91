"""`make services` with DEVACT_REDIS_CLUSTER=1: a real local Redis Cluster of three primaries
with a replica each (devtools/services/redis_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from devtools.services.redis import ping_ok
from devtools.services.redis_cluster import LocalRedisCluster, consecutive_free_ports

pytestmark = pytest.mark.backends(
    "cluster", reason="the local cluster that `make services` starts, itself"
)

VENV_BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parents[2]
"""Where `python -m devtools.services` runs, as `make services` does: devtools/ is not installed."""


def _roles(port: int) -> list[str]:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        lines = client.execute_command("CLUSTER", "NODES")
        if isinstance(lines, dict):  # redis-py parses CLUSTER NODES into a dict
            return sorted("master" if "master" in v["flags"] else "slave" for v in lines.values())
        return sorted(
            "master" if "master" in line.split()[2] else "slave" for line in lines.splitlines()
        )
    finally:
        client.close()


def test_a_local_cluster_of_three_primaries_with_a_replica_each(tmp_path: Path) -> None:
    first = consecutive_free_ports(6)
    cluster = LocalRedisCluster(tmp_path, first)
    try:
        cluster.start()
        assert cluster.url == f"redis://127.0.0.1:{first}/0"
        assert _roles(first) == ["master"] * 3 + ["slave"] * 3
        client = redis.RedisCluster(host="127.0.0.1", port=first, decode_responses=True)
        try:
            for n in range(50):  # keys over every primary's slots
                client.set(f"k{n}", n)
            assert [int(client.get(f"k{n}")) for n in range(50)] == list(range(50))
            written = {client.keyslot(f"k{n}") for n in range(50)}
            owners = {client.nodes_manager.get_node_from_slot(s).port for s in written}
            assert len(owners) == 3
        finally:
            client.close()
        # Stopped and started again: the nodes find their cluster in nodes.conf.
        cluster.stop()
        again = LocalRedisCluster(tmp_path, first)
        again.start()
        assert _roles(first + 5) == ["master"] * 3 + ["slave"] * 3
        client = redis.RedisCluster(host="127.0.0.1", port=first + 3, decode_responses=True)
        try:
            assert int(client.get("k7")) == 7  # from the append-only files
        finally:
            client.close()
    finally:
        cluster.stop()


def test_make_services_with_redis_cluster_prints_the_cluster_s_url(tmp_path: Path) -> None:
    """`DEVACT_REDIS_CLUSTER=1 make services` is `python -m devtools.services up` with that
    variable: it starts Kafka and the cluster, and prints the URL to use; `down` stops them
    without being told about the cluster."""
    first = consecutive_free_ports(6)
    env = {
        **os.environ,
        "DEVACT_RUN_DIR": str(tmp_path / "run"),
        "DEVACT_REDIS_CLUSTER": "1",
        "DEVACT_REDIS_PORT": str(first),
        "DEVACT_KAFKA_PORT": str(consecutive_free_ports(2)),
    }
    env.pop("DEVACT_KAFKA_BOOTSTRAP", None)
    env.pop("DEVACT_REDIS_URL", None)
    services = [sys.executable, "-m", "devtools.services"]
    try:
        up = subprocess.run([*services, "up"], env=env, cwd=CHECKOUT, capture_output=True,
                            text=True, timeout=180, check=False)  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert f"DEVACT_REDIS_URL=redis://127.0.0.1:{first}/0" in up.stdout.splitlines()
        assert _roles(first) == ["master"] * 3 + ["slave"] * 3
    finally:
        down = subprocess.run([*services, "down"], env={**env, "DEVACT_REDIS_CLUSTER": "0"},
                              cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not any(ping_ok(p) for p in range(first, first + 6))  # every node stopped
