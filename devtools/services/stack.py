"""Kafka and Redis together, owning one run directory and its `env` file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from devtools.services.kafka import KafkaServer, ensure_kafka_jars
from devtools.services.redis import RedisServer, ensure_redis_installed
from devtools.services.redis_cluster import LocalRedisCluster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str


class LocalStack:
    """Local Kafka and Redis processes whose pid files, logs, data and env file share `run_dir`."""

    def __init__(
        self, run_dir: Path, kafka_port: int, redis_port: int, redis_cluster: bool = False
    ) -> None:
        """With ``redis_cluster``, Redis is a local Redis Cluster of six nodes on ports
        ``redis_port`` to ``redis_port + 5`` (``LocalRedisCluster``)."""
        self.run_dir = run_dir.resolve()
        self.env_file = self.run_dir / "env"
        self._kafka = KafkaServer(self.run_dir, kafka_port)
        self._redis: RedisServer | LocalRedisCluster = (
            LocalRedisCluster(self.run_dir, redis_port)
            if redis_cluster
            else RedisServer(self.run_dir, redis_port)
        )

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(kafka_bootstrap=self._kafka.bootstrap, redis_url=self._redis.url)

    def start(self) -> Endpoints:
        """Start both (or reuse what already runs), wait until they answer, write `env`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Provision first, so a failed download leaves nothing running.
        ensure_redis_installed()
        ensure_kafka_jars()
        self.start_redis()
        self.start_kafka()
        endpoints = self.endpoints
        self.env_file.write_text(
            f"DEVACT_KAFKA_BOOTSTRAP={endpoints.kafka_bootstrap}\n"
            f"DEVACT_REDIS_URL={endpoints.redis_url}\n"
        )
        return endpoints

    def stop(self) -> None:
        """Stop both; safe to call when nothing runs. Redis is stopped in either form (one
        server, or a local cluster), whichever the run dir holds: `make stop` need not be told
        that `make run` ran with DEVACT_REDIS_CLUSTER=1."""
        self.stop_kafka()
        self.stop_redis()
        other = (
            RedisServer(self.run_dir, 0)
            if isinstance(self._redis, LocalRedisCluster)
            else LocalRedisCluster(self.run_dir, 0)
        )
        other.stop()
        self.env_file.unlink(missing_ok=True)

    def status(self) -> dict[str, str]:
        """Per service, `running pid N port P` or `stopped`."""
        result = {}
        redis = (
            [(n.name, n.process) for n in self._redis.nodes]
            if isinstance(self._redis, LocalRedisCluster)
            else [("redis", self._redis.process)]
        )
        for name, process in [("kafka", self._kafka.process), *redis]:
            record = process.running()
            result[name] = (
                "stopped" if record is None else f"running pid {record.pid} port {record.port}"
            )
        return result

    def start_kafka(self) -> None:
        self._kafka.start()

    def stop_kafka(self) -> None:
        self._kafka.stop()

    def start_redis(self) -> None:
        self._redis.start()

    def stop_redis(self) -> None:
        self._redis.stop()
