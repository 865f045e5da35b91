"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) from Maven Central jars."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from devtools.services.process import (
    ManagedProcess,
    ServiceError,
    ensure_apt_package,
    free_port,
    port_is_free,
)

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.0.0"
READY_DEADLINE_S = 90.0
_JVM_OPTS = ("-Xms256m", "-Xmx768m", "-Djava.awt.headless=true")
_API_VERSIONS_KEY = 18
SCRAM_ITERATIONS = 8192
"""PBKDF2 rounds of a SCRAM credential the local broker is formatted with (Kafka's minimum for
SCRAM-SHA-512 is 4096)."""


def cache_dir() -> Path:
    """Where downloaded jars live: outside the checkout, shared by every clone."""
    explicit = os.environ.get("DEVACT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "device-activity"


def ensure_kafka_jars() -> Path:
    """The directory of the broker's runtime classpath, fetched through Maven when not cached."""
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    # Written only after a complete copy, so an interrupted download is redone next time.
    marker = home / "libs.complete"
    if marker.exists() and libs.is_dir():
        return libs
    ensure_apt_package("java", "openjdk-17-jre-headless")
    mvn = ensure_apt_package("mvn", "maven")
    home.mkdir(parents=True, exist_ok=True)
    log.info("fetching Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
    with tempfile.TemporaryDirectory(dir=home, prefix="fetch-") as tmp:
        work = Path(tmp)
        pom = work / "pom.xml"
        pom.write_bytes(resources.files("devtools.services").joinpath("pom.xml").read_bytes())
        staged = work / "libs"
        subprocess.run(
            [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staged}", "-DincludeScope=runtime",
            ],
            check=True,
            cwd=work,
            stdout=sys.stderr,  # our stdout is for the DEVACT_... lines of `up`
        )  # fmt: skip
        if not any(staged.glob("kafka_2.13-*.jar")):
            raise ServiceError(f"Maven finished but no Kafka jar is in {staged}")
        shutil.rmtree(libs, ignore_errors=True)
        staged.rename(libs)
    marker.write_text(f"kafka {KAFKA_VERSION}\n")
    return libs


def new_cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: 16 random bytes, urlsafe base64, no padding."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def api_versions_ok(port: int, timeout_s: float = 1.0) -> bool:
    """True when the broker answers an ApiVersions v0 request with error code 0."""
    correlation_id = 0x0DE7AC7
    # Request header v1: api_key, api_version, correlation_id, client_id (-1: null string).
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation_id, -1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            answer = _recv_exact(sock, size)
    except (OSError, struct.error):
        return False
    # Response: correlation_id int32, then error_code int16.
    got_id, error_code = struct.unpack(">ih", answer[:6])
    return bool(got_id == correlation_id and error_code == 0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def scram_credential(name: str, password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """A SCRAM-SHA-512 user as `kafka-storage format --add-scram` takes it, in its salted form:
    the password itself never reaches the tool's command line, its output or the broker's log
    (SCRAM's SaltedPassword is PBKDF2-HMAC-SHA512 of the password; RFC 5802, RFC 7677)."""
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    encoded = {
        "salt": base64.b64encode(salt).decode(),
        "saltedpassword": base64.b64encode(salted).decode(),
    }
    return (
        f"SCRAM-SHA-512=[name={name},iterations={iterations},"
        f'salt="{encoded["salt"]}",saltedpassword="{encoded["saltedpassword"]}"]'
    )


@dataclass(frozen=True)
class SaslSslListener:
    """A second listener of the local broker that takes only TLS clients authenticated with
    SASL SCRAM-SHA-512 (tests/integration/test_kafka_security.py). The broker's own traffic
    (controller, inter-broker) stays on its PLAINTEXT listeners."""

    port: int
    keystore: Path
    """PKCS12 holding the broker's private key and certificate (chain)."""
    keystore_password: str
    scram_users: Sequence[str] = ()
    """Users created when the storage is formatted, each as ``scram_credential`` writes it."""

    def settings(self) -> dict[str, str]:
        prefix = "listener.name.sasl_ssl"
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            f"{prefix}.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            f"{prefix}.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}.ssl.keystore.type": "PKCS12",
            f"{prefix}.ssl.keystore.location": str(self.keystore),
            f"{prefix}.ssl.keystore.password": self.keystore_password,
            f"{prefix}.ssl.client.auth": "none",
        }  # fmt: skip


class KafkaServer:
    """The broker of one run dir: config, data and logs under `<run dir>/kafka`."""

    def __init__(self, run_dir: Path, port: int, sasl_ssl: SaslSslListener | None = None) -> None:
        """With ``sasl_ssl``, the broker also listens on ``sasl_ssl.port`` for TLS clients that
        authenticate with SCRAM (``sasl_ssl_bootstrap``)."""
        self.run_dir = run_dir
        self.port = port
        self.sasl_ssl = sasl_ssl
        self.home = run_dir / "kafka"
        self.properties = self.home / "server.properties"
        self.log_file = run_dir / "kafka.log"
        self.out_file = run_dir / "kafka.out"
        self.process = ManagedProcess("kafka", run_dir, str(self.properties))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        assert self.sasl_ssl is not None, "no SASL_SSL listener configured"
        return f"127.0.0.1:{self.sasl_ssl.port}"

    def start(self) -> None:
        running = self.process.running()
        if running is not None:
            if running.port != self.port:
                raise ServiceError(
                    f"kafka of {self.run_dir} already runs on port {running.port}, not {self.port}"
                )
            log.info("kafka: already running (pid %d) on port %d", running.pid, running.port)
            return
        restart = self.properties.exists()
        # On a restart the port may still hold the old broker's closing connections; the broker
        # binds with SO_REUSEADDR and copes, so only a first start checks for a squatter.
        if not restart and not port_is_free(self.port):
            raise ServiceError(f"kafka: port {self.port} is taken by another process")
        libs = ensure_kafka_jars()
        if not restart:
            self._configure()  # a restart keeps the config, and with it the controller port
        self._format_storage(libs)
        java = ensure_apt_package("java", "openjdk-17-jre-headless")
        argv = [
            java, *_JVM_OPTS, "-cp", f"{libs}/*",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.run_dir}",
            "kafka.Kafka", str(self.properties),
        ]  # fmt: skip
        self.process.spawn(argv, self.port, self.out_file, cwd=self.home)
        self.process.wait_ready(self._ready, READY_DEADLINE_S, [self.log_file, self.out_file])
        log.info("kafka: ready on %s", self.bootstrap)

    def stop(self) -> None:
        self.process.stop()

    def _ready(self) -> bool:
        """The broker answers on its PLAINTEXT listener, and the SASL_SSL one accepts too."""
        if not api_versions_ok(self.port):
            return False
        return self.sasl_ssl is None or _accepts(self.sasl_ssl.port)

    def _configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        controller_port = self.port + 1 if port_is_free(self.port + 1) else free_port()
        listeners = {"PLAINTEXT": self.port, "CONTROLLER": controller_port}
        protocols = {"CONTROLLER": "PLAINTEXT", "PLAINTEXT": "PLAINTEXT"}
        if self.sasl_ssl is not None:
            listeners["SASL_SSL"] = self.sasl_ssl.port
            protocols["SASL_SSL"] = "SASL_SSL"
        advertised = {name: port for name, port in listeners.items() if name != "CONTROLLER"}
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": _listeners(listeners),
            "advertised.listeners": _listeners(advertised),
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(self.home / "data"),
            # One broker: internal topics cannot have more replicas than that.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # Nobody else will join the group; waiting 3 s for them only slows tests.
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            # A restarted node waits out its own previous broker session before it may register
            # again (DUPLICATE_BROKER_REGISTRATION); the 9 s default made every restart ~14 s.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Topics are declared by the application; a typo must not create a new one.
            "auto.create.topics.enable": "false",
            **(self.sasl_ssl.settings() if self.sasl_ssl is not None else {}),
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        self.properties.write_text("# generated by devtools.services\n" + "\n".join(lines) + "\n")
        log4j = resources.files("devtools.services").joinpath("log4j2.properties").read_bytes()
        (self.home / "log4j2.properties").write_bytes(log4j)

    def _format_storage(self, libs: Path) -> None:
        """Format the data dir once; later starts reuse it, so topics survive a restart."""
        if (self.home / "data" / "meta.properties").exists():
            return
        java = ensure_apt_package("java", "openjdk-17-jre-headless")
        argv = [
            java, "-cp", f"{libs}/*",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.run_dir}",
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            # "=": an id may start with "-", which argparse would take for an option.
            f"--cluster-id={new_cluster_id()}", "-c", str(self.properties),
        ]  # fmt: skip
        for user in self.sasl_ssl.scram_users if self.sasl_ssl is not None else ():
            argv += ["--add-scram", user]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"kafka storage format failed:\n{done.stdout}{done.stderr}")
        log.info("kafka: formatted %s", self.home / "data")


def _accepts(port: int, timeout_s: float = 1.0) -> bool:
    """Something listens on 127.0.0.1:``port`` (connecting, not binding: a bind of ours could
    take the port from under a broker about to bind it)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listeners(ports: dict[str, int]) -> str:
    return ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())
