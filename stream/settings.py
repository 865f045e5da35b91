"""Settings of the worker process (`devact worker`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from state.settings import StoreSettings
from stream.kafka import KafkaSettings
from stream.model import MAX_MESSAGE_BYTES, MAX_MESSAGE_ELEMENTS, MessageLimits


class WorkerSettings(StoreSettings, KafkaSettings):
    """Redis (StoreSettings), Kafka and its security (KafkaSettings: stream/kafka.py), and the
    worker's own."""

    topic: str = "heartbeats"
    dlq_topic: str = "heartbeats.dlq"
    app_id: str = "device-activity"
    """Faust app id: also the Kafka consumer group."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions the worker creates the topics with when they do not exist yet."""
    unknown_clients: Literal["register", "dead_letter"] = "register"
    """What a heartbeat of a client nobody registered does: ``register`` it with
    ``default_timezone`` and count it (the contract's default, and `make run`'s), or go to the
    dead-letter topic as ``unknown_client`` (``dead_letter``: for production, where clients are
    managed with `devact client add`, so that a producer cannot create clients)."""
    worker_dir: Path = Path(".run/worker")
    """Faust's data directory (it keeps no table state here, only its own files)."""
    batch_max: int = Field(default=5000, ge=1)
    """Messages applied in one batch at most (more when one fetch alone is larger). A batch
    never waits to fill: it takes what has been fetched, so a quiet stream adds no delay."""
    batch_max_bytes: int = Field(default=1024 * 1024, ge=1)
    """Message bytes applied in one batch at most (at least one message): what bounds a batch
    of gateway arrays, 100 heartbeats a message. 1 MiB is about 5,000 single heartbeats, so
    for those ``batch_max`` and this bound coincide (docs/design.md, "Batches, round trips")."""
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=1)
    """A message value larger than this is refused whole, unread: one dead letter
    ``message_too_large`` holding the value (docs/events.md). 1 MiB is above what Kafka's
    default broker limit lets through (``message.max.bytes`` 1,048,588 bytes for a whole record
    batch), so with it this cap only acts on a broker configured for more. Parsing is what one
    message costs in one go: orjson took 5 ms for 1 MiB of an array of zeros, 60 ms for 1 MiB of
    empty arrays nested in one (on the 2-core test machine)."""
    max_message_elements: int = Field(default=MAX_MESSAGE_ELEMENTS, ge=1)
    """A message that is a JSON array of more events than this is refused whole, as one dead
    letter ``message_too_large``, instead of one dead letter per element. Gateways send arrays of
    about 100 heartbeats (docs/design.md); 10,000 leaves them a hundredfold. A message at the cap
    whose every element is refused took 0.12 s to judge and turn into dead letters, and 1.1 s to
    send its 10,000 dead letters (tests/integration/test_hostile_messages.py: the heartbeat
    behind it was counted 1.6 s after it was produced, on the 2-core test machine); 200,000
    elements (a 400 KB array of zeros) would take twenty times that, and nobody learns anything
    from the 199,999th dead letter."""
    fetch_max: int = Field(default=2000, ge=1)
    """Messages one fetch returns at most (Kafka's max.poll.records)."""
    worker_instance_id: str | None = None
    """Kafka static group membership id (unique per worker process, kept across restarts)."""
    session_timeout_s: float = Field(default=10.0, ge=6.0)
    """How long the group waits for a silent worker before giving its partitions away."""
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    """Port of the worker's /healthz and /readyz (0: not served)."""
    worker_metrics_host: str = "127.0.0.1"
    """Loopback by default: /metrics tells an outsider the traffic. A container sets 0.0.0.0
    for Prometheus on its network (docker-compose.yml does)."""
    log_level: str = "info"

    def message_limits(self) -> MessageLimits:
        return MessageLimits(self.max_message_bytes, self.max_message_elements)
