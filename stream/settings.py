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
    batch_within_s: float = Field(default=0.1, gt=0)
    """How long a batch waits to fill: bounds the added latency of a quiet stream."""
    worker_instance_id: str | None = None
    """Kafka static group membership id (unique per worker process, kept across restarts)."""
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    """How long the group waits for a silent worker before giving its partitions away."""
    log_level: str = "info"

    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap.split(",")]
