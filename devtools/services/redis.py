"""A local Redis server from Debian's `redis-server`, with append-only persistence."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.services.process import ManagedProcess, ServiceError, ensure_apt_package, port_is_free

log = logging.getLogger(__name__)

READY_DEADLINE_S = 20.0


def ensure_redis_installed() -> str:
    """Path of `redis-server`, installed with apt-get when missing."""
    return ensure_apt_package("redis-server", "redis-server")


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA that signed it (PEM files)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class RedisSecurity:
    """A local Redis locked down as a deployment would be (tests/integration/
    test_redis_security.py; ``make services`` starts none of it): TLS only (``--port 0``),
    the default user with ``admin_password``, and further ACL users (lines of an ACL file,
    ``state.acl.Grant.acl_file_line``)."""

    admin_password: str
    users: Sequence[str] = ()
    tls: TlsFiles | None = None

    def cli_args(self) -> list[str]:
        """redis-cli's TLS options (its password goes through ``cli_env``, out of ps)."""
        return [] if self.tls is None else ["--tls", "--cacert", str(self.tls.ca_file)]

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "REDISCLI_AUTH": self.admin_password}


def ping_ok(port: int, timeout_s: float = 0.5, security: RedisSecurity | None = None) -> bool:
    """True when Redis answers PING with +PONG (it says -LOADING while replaying AOF); with
    ``security``, over TLS and after AUTH as the default user."""
    ask, expected = b"PING\r\n", b"+PONG"
    if security is not None:
        password = security.admin_password.encode()
        ask = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n%s" % (len(password), password, ask)
        expected = b"+OK\r\n+PONG"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as raw:
            sock = raw
            if security is not None and security.tls is not None:
                context = ssl.create_default_context(cafile=str(security.tls.ca_file))
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(ask)
            answer = b""
            while len(answer) < len(expected) and (chunk := sock.recv(64)):
                answer += chunk
            return answer.startswith(expected)
    except OSError:  # ssl.SSLError included
        return False


class RedisServer:
    """The Redis of one run dir: data under `<run dir>/<name>`, log in `<run dir>/<name>.log`.
    With ``cluster``, a node of a Redis Cluster (``LocalRedisCluster`` joins them)."""

    def __init__(
        self,
        run_dir: Path,
        port: int,
        name: str = "redis",
        cluster: bool = False,
        security: RedisSecurity | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.port = port
        self.name = name
        self.cluster = cluster
        self.security = security
        self.data_dir = run_dir / name
        self.log_file = run_dir / f"{name}.log"
        self.out_file = run_dir / f"{name}.out"
        self.process = ManagedProcess(name, run_dir, "redis-server")

    @property
    def url(self) -> str:
        """Without credentials; ``rediss://`` when it listens with TLS."""
        tls = self.security is not None and self.security.tls is not None
        return f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"

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
        argv = [server, *self._secured()]
        argv += [
            "--port", "0" if self._tls() else str(self.port),
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
            lambda: ping_ok(self.port, security=self.security),
            READY_DEADLINE_S,
            [self.log_file, self.out_file],
        )
        # Imported here: `down`, `status` and `--help` run on the standard library alone.
        from state.settings import redacted_url

        log.info("%s: ready on %s", self.name, redacted_url(self.url))

    def stop(self) -> None:
        self.process.stop()

    def _tls(self) -> TlsFiles | None:
        return None if self.security is None else self.security.tls

    def _secured(self) -> list[str]:
        """With ``security``: a configuration file, as redis-server's first argument, and the
        TLS options. The passwords go in files only readable by us, never on the command
        line (ps shows it): the ACL file holds them hashed, the configuration file the one a
        replica gives its primary."""
        if self.security is None:
            return []
        admin = hashlib.sha256(self.security.admin_password.encode()).hexdigest()
        acl_file = self.data_dir / "users.acl"
        conf_file = self.data_dir / "security.conf"
        for path in (acl_file, conf_file):
            path.touch(mode=0o600)
            path.chmod(0o600)
        acl_file.write_text(
            "\n".join([f"user default on #{admin} ~* &* +@all", *self.security.users]) + "\n"
        )
        conf_file.write_text(
            f"aclfile {acl_file}\nmasteruser default\nmasterauth {self.security.admin_password}\n"
        )
        tls = self.security.tls
        if tls is None:
            return [str(conf_file)]
        return [
            str(conf_file),
            "--tls-port", str(self.port),
            "--tls-cert-file", str(tls.cert_file),
            "--tls-key-file", str(tls.key_file),
            "--tls-ca-cert-file", str(tls.ca_file),
            "--tls-auth-clients", "no",  # clients are known by their ACL user
            # A replica's link and the cluster bus over TLS too (the bus always verifies both
            # ends: the node's certificate serves as client certificate as well).
            "--tls-replication", "yes",
            *(["--tls-cluster", "yes"] if self.cluster else []),
        ]  # fmt: skip
