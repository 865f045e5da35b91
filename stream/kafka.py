"""How every Kafka client of the project reaches the brokers: the bootstrap servers and the
security (TLS, SASL), read from the settings once and handed to aiokafka and to Faust from one
object, ``KafkaConnection``; and the check, at start, that Kafka accepts them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from pydantic import FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
_TLS: tuple[SecurityProtocol, ...] = ("SSL", "SASL_SSL")
_SASL: tuple[SecurityProtocol, ...] = ("SASL_PLAINTEXT", "SASL_SSL")
CHECK_TIMEOUT_S = 10.0
"""How long the start-up check waits for one broker to connect and authenticate."""


class KafkaSettings(BaseSettings):
    """The ``DEVACT_KAFKA_*`` settings of every process that talks to Kafka."""

    # hide_input_in_errors: a validation error would otherwise quote every input, the password
    # among them, in its message.
    model_config = SettingsConfigDict(
        env_prefix="DEVACT_", extra="ignore", hide_input_in_errors=True
    )

    kafka_bootstrap: str = "localhost:9092"
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    """Used with SASL_PLAINTEXT and SASL_SSL only."""
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ca_file: FilePath | None = None
    """PEM certificates the brokers' certificate must chain to (SSL, SASL_SSL); unset: the
    system's trusted certificates."""
    kafka_cert_file: FilePath | None = None
    """PEM client certificate (with ``kafka_key_file``, or holding the key too), for brokers
    that ask clients for a certificate (mutual TLS)."""
    kafka_key_file: FilePath | None = None

    @field_validator(
        "kafka_username",
        "kafka_password",
        "kafka_ca_file",
        "kafka_cert_file",
        "kafka_key_file",
        mode="before",
    )
    @classmethod
    def _kafka_empty_is_unset(cls, value: object) -> object:
        """``DEVACT_KAFKA_PASSWORD=`` (as compose writes an unset variable) means none."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _kafka_consistent(self) -> KafkaSettings:
        """Fail at start on settings that would otherwise be silently ignored (credentials sent
        nowhere, a CA never loaded) or would fail at the first connection."""
        protocol = self.kafka_security_protocol
        named = f"DEVACT_KAFKA_SECURITY_PROTOCOL={protocol}"
        if protocol in _SASL and (not self.kafka_username or self.kafka_password is None):
            raise ValueError(f"{named} needs DEVACT_KAFKA_USERNAME and DEVACT_KAFKA_PASSWORD")
        if protocol not in _SASL and (self.kafka_username or self.kafka_password is not None):
            raise ValueError(
                f"DEVACT_KAFKA_USERNAME and DEVACT_KAFKA_PASSWORD are only sent with "
                f"SASL_PLAINTEXT or SASL_SSL, not with {named}"
            )
        files = (self.kafka_ca_file, self.kafka_cert_file, self.kafka_key_file)
        if protocol not in _TLS and any(f is not None for f in files):
            raise ValueError(
                f"DEVACT_KAFKA_CA_FILE, _CERT_FILE and _KEY_FILE are only used with SSL or "
                f"SASL_SSL, not with {named}"
            )
        if self.kafka_key_file is not None and self.kafka_cert_file is None:
            raise ValueError("DEVACT_KAFKA_KEY_FILE needs DEVACT_KAFKA_CERT_FILE")
        return self

    def kafka_connection(self) -> KafkaConnection:
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_username,
            password=self.kafka_password,
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
        )


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and how to prove who we are to them: what every consumer,
    producer and admin client of the project is built with. PLAINTEXT is Kafka's default, so a
    connection of only ``bootstrap`` makes the clients it always made."""

    bootstrap: str
    """Comma-separated ``host:port`` of one or more brokers."""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    """A SecretStr, so that printing the connection (or an error holding it) shows ``****``."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.security_protocol in _TLS

    @property
    def sasl(self) -> bool:
        return self.security_protocol in _SASL

    def hosts(self) -> list[tuple[str, int]]:
        """The bootstrap servers as (host, port); a port left out is Kafka's 9092."""
        found = []
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            found.append((host, int(port)) if host else (port, 9092))
        return found

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the brokers' certificate and host name (what
        aiokafka's ``create_ssl_context`` makes, without its log line per client)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def security_kwargs(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for the security protocol, TLS and SASL."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self._password()
        return kwargs

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes (``AIOKafkaConsumer``,
        ``AIOKafkaProducer``, ``AIOKafkaAdminClient``): pass them along with the client's own."""
        return {"bootstrap_servers": self.bootstrap, **self.security_kwargs()}

    def faust_broker(self) -> list[str]:
        """Faust's ``broker`` setting."""
        return [f"kafka://{server.strip()}" for server in self.bootstrap.split(",")]

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials``: Faust hands them to each client it makes (consumer,
        producer, its admin client) as the same aiokafka arguments as ``security_kwargs``."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            return SASLCredentials(
                username=self.username,
                password=self._password(),
                ssl_context=self.ssl_context() if self.tls else None,
                mechanism=self.sasl_mechanism,
            )
        if self.tls:
            return SSLCredentials(self.ssl_context())
        return None

    def environment(self) -> dict[str, str]:
        """The ``DEVACT_KAFKA_*`` variables that give a child process this connection, every
        one of them (empty: unset), so that none is inherited from elsewhere."""
        files = {"CA_FILE": self.ca_file, "CERT_FILE": self.cert_file, "KEY_FILE": self.key_file}
        return {
            "DEVACT_KAFKA_BOOTSTRAP": self.bootstrap,
            "DEVACT_KAFKA_SECURITY_PROTOCOL": self.security_protocol,
            "DEVACT_KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "DEVACT_KAFKA_USERNAME": self.username or "",
            "DEVACT_KAFKA_PASSWORD": self._password() or "",
            **{f"DEVACT_KAFKA_{name}": "" if f is None else str(f) for name, f in files.items()},
        }

    def describe(self) -> str:
        """For log lines: where, how and as whom (never the password)."""
        user = f" as {self.username}" if self.sasl else ""
        return f"{self.bootstrap} ({self.security_protocol}{user})"

    def _password(self) -> str | None:
        return None if self.password is None else self.password.get_secret_value()


class KafkaAccessRefused(Exception):
    """Kafka answered and refused this client: wrong credentials, a certificate not trusted, a
    SASL mechanism it does not offer. Unlike a broker not up yet, trying again changes nothing:
    the settings must."""


def refusal(exc: BaseException, kafka: KafkaConnection, where: str) -> KafkaAccessRefused | None:
    """The refusal ``exc`` means, said once and naming the settings to check; None when
    ``exc`` is not one (a broker down or not reachable may be back soon)."""
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return KafkaAccessRefused(
            f"Kafka at {where} refused the credentials of user {kafka.username!r} "
            f"(SASL {kafka.sasl_mechanism} authentication failed): check "
            f"DEVACT_KAFKA_USERNAME and DEVACT_KAFKA_PASSWORD"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return KafkaAccessRefused(
            f"Kafka at {where} does not offer SASL {kafka.sasl_mechanism} ({exc}): check "
            f"DEVACT_KAFKA_SASL_MECHANISM"
        )
    if isinstance(exc, IllegalSaslStateError):
        return KafkaAccessRefused(
            f"Kafka at {where} does not take SASL on that listener: check "
            f"DEVACT_KAFKA_SECURITY_PROTOCOL ({kafka.security_protocol})"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaAccessRefused(
            f"the certificate of Kafka at {where} is not trusted ({_ssl_reason(exc)}): check "
            f"DEVACT_KAFKA_CA_FILE"
        )
    if isinstance(exc, ssl.SSLError):
        return KafkaAccessRefused(
            f"TLS with Kafka at {where} failed ({_ssl_reason(exc)}): check "
            f"DEVACT_KAFKA_SECURITY_PROTOCOL ({kafka.security_protocol}: does that listener "
            f"speak TLS?) and, for mutual TLS, DEVACT_KAFKA_CERT_FILE and DEVACT_KAFKA_KEY_FILE"
        )
    return None


def _ssl_reason(exc: ssl.SSLError) -> str:
    """What OpenSSL said went wrong, in its own short words when it gave them."""
    said = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    return str(said or exc)


async def check_access(kafka: KafkaConnection, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect to the bootstrap servers as the clients will, and authenticate, with one
    connection and before any client starts: a client would only log why it could not
    bootstrap and go on trying. Returns once one server accepted us.

    Raises ``KafkaAccessRefused`` when a server refused us (not worth trying again), and
    ``KafkaConnectionError`` when none could be reached (maybe not up yet)."""
    unreachable = []
    for host, port in kafka.hosts():
        where = f"{host}:{port}"
        try:
            conn = await create_conn(
                host, port, request_timeout_ms=int(timeout_s * 1000), **kafka.security_kwargs()
            )
        except Exception as exc:  # classified below: anything else is "not reachable"
            refused = refusal(exc, kafka, where)
            if refused is not None:
                raise refused from None  # the one line says it all; no chain of causes
            unreachable.append(f"{where}: {exc or type(exc).__name__}")
            continue
        conn.close()
        return
    raise KafkaConnectionError("; ".join(unreachable))
