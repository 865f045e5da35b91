"""Settings every process that talks to Redis shares; each process kind extends them."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEVACT_", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    default_timezone: str = "UTC"
    retention_days: int = Field(default=400, ge=1)
    redis_timeout_s: float = Field(default=1.0, gt=0)
    """Socket connect and read timeout; keeps the API's 503 within 2 s when Redis is gone."""
    redis_max_connections: int = Field(default=64, ge=1)
    """Round trips one process has in flight at most (state/gate.py); more wait their turn. The
    pools hold a few connections more, for subscriptions, so they never run out. Redis runs one
    command at a time anyway: 64 keeps it busy from one process without a thousand sockets."""
    redis_queue_timeout_s: float = Field(default=5.0, gt=0)
    """How long a round trip waits for its turn before it is answered as unavailable: only a
    backstop (a healthy Redis serves a queue of 1,000 requests in well under a second)."""
    redis_cluster: bool | None = None
    """Whether ``redis_url`` names a node of a Redis Cluster; unset: asked at start (``INFO
    cluster``, state/connection.open_store). ``make services`` starts a local cluster when it
    is 1, and everything started with the same environment then knows without asking."""
    fleet_aggregates: bool = True
    """Whether the worker keeps the client-wide aggregates the fleet views read (state/fleet.py).
    Off, ingest does less work and the fleet routes answer from whatever the aggregates held:
    for deployments that never use fleet views, and for the benchmark that prices them."""
