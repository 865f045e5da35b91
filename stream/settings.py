"""Settings of the worker process (`devact worker`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from state.settings import StoreSettings


class WorkerSettings(StoreSettings):
    kafka_bootstrap: str = "localhost:9092"
    topic: str = "heartbeats"
    dlq_topic: str = "heartbeats.dlq"
    app_id: str = "device-activity"
    """Faust app id: also the Kafka consumer group."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions the worker creates the topics with when they do not exist yet."""
    worker_dir: Path = Path(".run/worker")
    """Faust's data directory (it keeps no table state here, only its own files)."""
    batch_max: int = Field(default=5000, ge=1)
    """Messages applied in one batch at most (more when one fetch alone is larger). A batch
    never waits to fill: it takes what has been fetched, so a quiet stream adds no delay."""
    batch_max_bytes: int = Field(default=1024 * 1024, ge=1)
    """Message bytes applied in one batch at most (at least one message): what bounds a batch
    of gateway arrays, 100 heartbeats a message. 1 MiB is about 5,000 single heartbeats, so
    for those ``batch_max`` and this bound coincide (docs/design.md, "Batches, round trips")."""
    fetch_max: int = Field(default=2000, ge=1)
    """Messages one fetch returns at most (Kafka's max.poll.records)."""
    worker_instance_id: str | None = None
    """Kafka static group membership id (unique per worker process, kept across restarts)."""
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    """How long the group waits for a silent worker before giving its partitions away."""
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    """Port of the worker's /healthz and /readyz (0: not served)."""
    worker_metrics_host: str = "0.0.0.0"
    log_level: str = "info"

    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap.split(",")]
