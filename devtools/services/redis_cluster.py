"""A local Redis Cluster: three primaries with one replica each, on consecutive ports."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from devtools.services.process import ServiceError, free_port, port_is_free
from devtools.services.redis import RedisSecurity, RedisServer, ensure_redis_installed

log = logging.getLogger(__name__)

PRIMARIES = 3
REPLICAS_PER_PRIMARY = 1
READY_DEADLINE_S = 30.0


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` free consecutive ports whose cluster bus ports (+10000) are free."""
    while True:
        first = free_port()
        if first + count + 10_000 < 65_536 and all(
            port_is_free(p) and port_is_free(p + 10_000) for p in range(first, first + count)
        ):
            return first


class LocalRedisCluster:
    """Six ``redis-server --cluster-enabled yes`` under `<run dir>/redis-cluster-<n>`, ports
    ``first_port`` to ``first_port + 5``, joined by ``redis-cli --cluster create`` the first
    time; a restart finds the cluster in each node's ``nodes.conf``. With ``security``, every
    node has the same users and TLS files, and the nodes talk TLS to each other too."""

    def __init__(
        self, run_dir: Path, first_port: int, security: RedisSecurity | None = None
    ) -> None:
        count = PRIMARIES * (1 + REPLICAS_PER_PRIMARY)
        self.security = security
        self.nodes = [
            RedisServer(
                run_dir, first_port + n, name=f"redis-cluster-{n}", cluster=True, security=security
            )
            for n in range(count)
        ]

    @property
    def url(self) -> str:
        """Any node will do: the client learns the others from it (state/connection.py)."""
        return self.nodes[0].url

    @property
    def processes(self) -> list[tuple[str, RedisServer]]:
        return [(node.name, node) for node in self.nodes]

    def start(self) -> None:
        ensure_redis_installed()
        for node in self.nodes:
            node.start()
        if self._state(self.nodes[0].port).get("cluster_known_nodes") != str(len(self.nodes)):
            self._create()
        self._wait_ok()
        # Imported here: `down`, `status` and `--help` run on the standard library alone.
        from state.settings import redacted_url

        log.info("redis cluster: ready, %d nodes, on %s", len(self.nodes), redacted_url(self.url))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServiceError("redis-cli not found (Debian's redis-tools, with redis-server)")
        argv = [cli, *self._cli_args(), "--cluster", "create"]
        argv += [f"127.0.0.1:{node.port}" for node in self.nodes]
        argv += ["--cluster-replicas", str(REPLICAS_PER_PRIMARY), "--cluster-yes"]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=self._cli_env()
        )
        if done.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def _wait_ok(self) -> None:
        """Until every node says ``cluster_state:ok``, knows every other, and sees the three
        replicas as replicas (a replica is announced as one a moment after the cluster is ok)."""
        deadline = time.monotonic() + READY_DEADLINE_S
        replicas = PRIMARIES * REPLICAS_PER_PRIMARY
        while True:
            states = [self._state(node.port) for node in self.nodes]
            if all(
                s.get("cluster_state") == "ok" and s.get("cluster_known_nodes") == str(len(states))
                for s in states
            ) and all(self._replicas_seen(node.port) == replicas for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"redis cluster not ok after {READY_DEADLINE_S} s: {states}")
            time.sleep(0.1)

    def _replicas_seen(self, port: int) -> int:
        """How many replicas a node's ``CLUSTER NODES`` lists."""
        cli = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(
            [cli, *self._cli_args(), "-p", str(port), "cluster", "nodes"],
            capture_output=True, text=True, timeout=5, check=False, env=self._cli_env(),
        )  # fmt: skip
        return sum("slave" in line.split()[2].split(",") for line in done.stdout.splitlines())

    def _state(self, port: int) -> dict[str, str]:
        """A node's ``CLUSTER INFO`` ({} when it does not answer)."""
        cli = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(
            [cli, *self._cli_args(), "-p", str(port), "cluster", "info"],
            capture_output=True, text=True, timeout=5, check=False, env=self._cli_env(),
        )  # fmt: skip
        pairs = (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def _cli_args(self) -> list[str]:
        return [] if self.security is None else self.security.cli_args()

    def _cli_env(self) -> dict[str, str] | None:
        """None: redis-cli inherits our environment, as without ``security``."""
        return None if self.security is None else self.security.cli_env()
