"""Settings every process that talks to Redis shares; each process kind extends them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, FilePath, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HIDDEN = "***"
"""What stands for a password in a Redis URL shown anywhere (``redacted_url``)."""


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and screens: ``redis://devact-api:***@host:6379/0``
    (a URL with no password comes back as it was). Whatever cannot be parsed is hidden whole,
    since it may hold the password anywhere."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return HIDDEN
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}"))


class StoreSettings(BaseSettings):
    # An invalid setting is reported without the values given: they hold the Redis password.
    model_config = SettingsConfigDict(
        env_prefix="DEVACT_", extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = "redis://localhost:6379/0"
    """``redis://`` or ``rediss://`` (TLS), with the process's ACL user and password:
    ``rediss://devact-api:<password>@host:6379/0`` (docs/security.md, state/acl.py). Shown
    everywhere without the password (``redacted_url``)."""
    redis_ca_file: FilePath | None = None
    """The CA that signed the Redis server's certificate (``rediss://`` only); unset: the
    system's trusted CAs."""
    redis_cert_file: FilePath | None = None
    """This process's client certificate, for a Redis with ``tls-auth-clients yes``."""
    redis_key_file: FilePath | None = None
    """The private key of ``redis_cert_file``."""
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

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> StoreSettings:
        """Certificates given for a plaintext URL would be ignored: a typo'd scheme must not
        quietly send the password in clear."""
        tls_files = (self.redis_ca_file, self.redis_cert_file, self.redis_key_file)
        if any(f is not None for f in tls_files) and not self.redis_tls:
            raise ValueError(
                "DEVACT_REDIS_CA_FILE, DEVACT_REDIS_CERT_FILE and DEVACT_REDIS_KEY_FILE need a "
                f"rediss:// DEVACT_REDIS_URL, not {redacted_url(self.redis_url)}"
            )
        if (self.redis_cert_file is None) != (self.redis_key_file is None):
            raise ValueError("DEVACT_REDIS_CERT_FILE and DEVACT_REDIS_KEY_FILE go together")
        return self

    @property
    def redis_tls(self) -> bool:
        return self.redis_url.startswith("rediss://")

    def redis_tls_options(self) -> dict[str, Any]:
        """The client's TLS arguments (redis-py's ``ssl_*``, for one Redis and a cluster alike);
        empty for a plaintext URL, whose connections take none."""
        if not self.redis_tls:
            return {}
        return {
            "ssl_ca_certs": None if self.redis_ca_file is None else str(self.redis_ca_file),
            "ssl_certfile": None if self.redis_cert_file is None else str(self.redis_cert_file),
            "ssl_keyfile": None if self.redis_key_file is None else str(self.redis_key_file),
        }

    def __repr_args__(self) -> Any:
        """Printed settings (a log line, an error) show the Redis URL without its password."""
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "redis_url" else value
