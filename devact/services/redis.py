"""A local Redis server from Debian's `redis-server`, with append-only persistence."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from devact.services.process import ManagedProcess, ServiceError, ensure_apt_package, port_is_free

log = logging.getLogger(__name__)

READY_DEADLINE_S = 20.0


def ensure_redis_installed() -> str:
    """Path of `redis-server`, installed with apt-get when missing."""
    return ensure_apt_package("redis-server", "redis-server")


def ping_ok(port: int, timeout_s: float = 0.5) -> bool:
    """True when Redis answers an inline PING with +PONG (it says -LOADING while replaying AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """The Redis of one run dir: data under `<run dir>/<name>`, log in `<run dir>/<name>.log`.
    With ``cluster``, a node of a Redis Cluster (``LocalRedisCluster`` joins them)."""

    def __init__(
        self, run_dir: Path, port: int, name: str = "redis", cluster: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.port = port
        self.name = name
        self.cluster = cluster
        self.data_dir = run_dir / name
        self.log_file = run_dir / f"{name}.log"
        self.out_file = run_dir / f"{name}.out"
        self.process = ManagedProcess(name, run_dir, "redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        running = self.process.running()
        if running is not None:
            if running.port != self.port:
                raise ServiceError(
                    f"redis of {self.run_dir} already runs on port {running.port}, not {self.port}"
                )
            log.info(
                "%s: already running (pid %d) on port %d", self.name, running.pid, running.port
            )
            return
        # On a restart the port may still hold the old server's closing connections; Redis binds
        # with SO_REUSEADDR and copes, so only a first start checks for a squatter.
        if not self.data_dir.exists() and not port_is_free(self.port):
            raise ServiceError(f"{self.name}: port {self.port} is taken by another process")
        server = ensure_redis_installed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            server,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            # Every write reaches the AOF within a second: a restart loses at most that.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            # We detach it ourselves (own session) so that we know its pid at once.
            "--daemonize", "no",
            "--pidfile", str(self.data_dir / "redis-server.pid"),
            "--logfile", str(self.log_file),
        ]  # fmt: skip
        if self.cluster:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.data_dir / "nodes.conf"),
                # A node silent this long is failed over to its replica. Short, for quick
                # failovers in tests; not so short that a busy node on a loaded 2-core machine
                # is taken for dead (2 s was: the accuracy suite's largest days did it).
                "--cluster-node-timeout", "5000",
                # The other primaries keep serving their slots while one is down or failing
                # over (the default answers CLUSTERDOWN for every key then).
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip
        self.process.spawn(argv, self.port, self.out_file, cwd=self.data_dir)
        self.process.wait_ready(
            lambda: ping_ok(self.port), READY_DEADLINE_S, [self.log_file, self.out_file]
        )
        log.info("%s: ready on %s", self.name, self.url)

    def stop(self) -> None:
        self.process.stop()
