"""The Kafka settings become the arguments of every client (stream/kafka.py): aiokafka's keyword
arguments and Faust's broker credentials say the same thing, PLAINTEXT makes the clients the
project always made, inconsistent settings stop the process at start, the password is never
printed, and a refusal by Kafka is said in one line naming the setting to check."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from stream.kafka import KafkaConnection, KafkaSettings, refusal
from stream.settings import WorkerSettings

PASSWORD = "pw-6c1f0e7d-never-printed"
CA = Path(certifi.where())


@pytest.fixture(autouse=True)
def _no_kafka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: nothing from the environment the tests run in."""
    for name in KafkaConnection("x:1").environment():
        monkeypatch.delenv(name, raising=False)


def set_environment(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"DEVACT_KAFKA_{name.upper()}", value)


def sasl_ssl(**overrides: Any) -> KafkaConnection:
    fields: dict[str, Any] = {
        "bootstrap": "broker-1:9093,broker-2:9093",
        "security_protocol": "SASL_SSL",
        "username": "alice",
        "password": SecretStr(PASSWORD),
        "ca_file": CA,
    }
    return KafkaConnection(**(fields | overrides))


def test_the_default_is_a_plaintext_local_broker() -> None:
    assert WorkerSettings().kafka_connection() == KafkaConnection("localhost:9092")


def test_plaintext_clients_get_only_the_bootstrap_servers_and_kafkas_default_protocol() -> None:
    kafka = KafkaConnection("127.0.0.1:9092")
    assert kafka.client_kwargs() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.faust_credentials() is None
    assert kafka.faust_broker() == ["kafka://127.0.0.1:9092"]


def test_sasl_ssl_from_the_environment_gives_aiokafka_scram_over_verified_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_environment(
        monkeypatch,
        bootstrap="broker-1:9093, broker-2:9093",
        security_protocol="SASL_SSL",
        username="alice",
        password=PASSWORD,
        ca_file=str(CA),
    )
    kwargs = WorkerSettings().kafka_connection().client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "bootstrap_servers": "broker-1:9093, broker-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs(), "the CA file was not loaded"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_the_sasl_mechanism_is_passed_through(
    monkeypatch: pytest.MonkeyPatch, mechanism: str
) -> None:
    set_environment(
        monkeypatch,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        username="alice",
        password=PASSWORD,
    )
    kwargs = KafkaSettings().kafka_connection().client_kwargs()
    assert kwargs["sasl_mechanism"] == mechanism
    assert "ssl_context" not in kwargs


def test_an_unknown_sasl_mechanism_stops_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    set_environment(
        monkeypatch,
        security_protocol="SASL_SSL",
        sasl_mechanism="GSSAPI",
        username="alice",
        password=PASSWORD,
    )
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        KafkaSettings()


@pytest.mark.parametrize(
    "kafka",
    [
        KafkaConnection("h:9092"),
        KafkaConnection("h:9093", "SSL", ca_file=CA),
        KafkaConnection("h:9093", "SASL_PLAINTEXT", "SCRAM-SHA-256", "alice", SecretStr(PASSWORD)),
        sasl_ssl(),
    ],
    ids=lambda k: k.security_protocol,
)
def test_faust_hands_its_clients_the_same_arguments_as_ours(kafka: KafkaConnection) -> None:
    """Faust turns ``broker_credentials`` into aiokafka arguments itself: they must be ours."""
    ours = kafka.security_kwargs()
    faust = dict(credentials_to_aiokafka_auth(kafka.faust_credentials()))
    our_context, faust_context = ours.pop("ssl_context", None), faust.pop("ssl_context", None)
    assert faust == ours
    assert (our_context is None) == (faust_context is None)
    if faust_context is not None:
        assert faust_context.verify_mode == ssl.CERT_REQUIRED
        assert faust_context.check_hostname


def test_faust_credentials_are_of_the_protocols_kind() -> None:
    credentials = sasl_ssl().faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    tls_only = KafkaConnection("h:9093", "SSL", ca_file=CA).faust_credentials()
    assert isinstance(tls_only, SSLCredentials)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_username_or_password_stops_at_start(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    set_environment(monkeypatch, security_protocol=protocol, username="alice")
    with pytest.raises(ValidationError, match="needs DEVACT_KAFKA_USERNAME and DEVACT_KAFKA_PASS"):
        KafkaSettings()


def test_credentials_without_sasl_stop_at_start_rather_than_go_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_environment(monkeypatch, security_protocol="SSL", username="alice", password=PASSWORD)
    with pytest.raises(ValidationError, match="only sent with SASL_PLAINTEXT or SASL_SSL"):
        KafkaSettings()


def test_certificates_without_tls_stop_at_start_rather_than_go_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_environment(monkeypatch, ca_file=str(CA))
    with pytest.raises(ValidationError, match="only used with SSL or SASL_SSL"):
        KafkaSettings()


def test_a_ca_file_that_does_not_exist_stops_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_environment(monkeypatch, security_protocol="SSL", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="kafka_ca_file"):
        KafkaSettings()


def test_a_key_without_its_certificate_stops_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    set_environment(monkeypatch, security_protocol="SSL", key_file=str(CA))
    with pytest.raises(ValidationError, match="DEVACT_KAFKA_KEY_FILE needs DEVACT_KAFKA_CERT"):
        KafkaSettings()


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """As compose passes a variable the operator did not set."""
    set_environment(monkeypatch, username="", password="", ca_file="", cert_file="", key_file="")
    assert KafkaSettings().kafka_connection() == KafkaConnection("localhost:9092")


@pytest.mark.parametrize("kafka", [KafkaConnection("h:9092"), sasl_ssl()], ids=["plain", "sasl"])
def test_a_connection_passes_to_a_child_process_whole(
    monkeypatch: pytest.MonkeyPatch, kafka: KafkaConnection
) -> None:
    for name, value in kafka.environment().items():
        monkeypatch.setenv(name, value)
    assert KafkaSettings().kafka_connection() == kafka


def test_the_password_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    set_environment(monkeypatch, security_protocol="SASL_SSL", username="alice", password=PASSWORD)
    settings = WorkerSettings()
    kafka = settings.kafka_connection()
    shown = [repr(settings), str(settings), repr(kafka), str(kafka), kafka.describe()]
    shown.append(repr(kafka.faust_credentials()))
    monkeypatch.setenv("DEVACT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-1")  # invalid: an error
    with pytest.raises(ValidationError) as invalid:
        WorkerSettings()
    shown.append(str(invalid.value))
    monkeypatch.setenv("DEVACT_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("DEVACT_KAFKA_USERNAME", "")  # inconsistent: an error of the model
    with pytest.raises(ValidationError) as inconsistent:
        WorkerSettings()
    shown.append(str(inconsistent.value))
    assert "alice" in kafka.describe()
    for text in shown:
        assert PASSWORD not in text, text


def test_refused_credentials_are_one_line_naming_the_user_and_the_settings() -> None:
    found = refusal(SaslAuthenticationFailed("Authentication failed"), sasl_ssl(), "b1:9093")
    assert found is not None
    assert str(found) == (
        "Kafka at b1:9093 refused the credentials of user 'alice' (SASL SCRAM-SHA-512 "
        "authentication failed): check DEVACT_KAFKA_USERNAME and DEVACT_KAFKA_PASSWORD"
    )


def test_an_untrusted_certificate_names_the_ca_setting() -> None:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] failed")
    found = refusal(error, sasl_ssl(), "b1:9093")
    assert found is not None
    assert "the certificate of Kafka at b1:9093 is not trusted" in str(found)
    assert str(found).endswith("check DEVACT_KAFKA_CA_FILE")


def test_a_mechanism_kafka_does_not_offer_names_the_mechanism_setting() -> None:
    found = refusal(UnsupportedSaslMechanismError("offers PLAIN"), sasl_ssl(), "b1:9093")
    assert found is not None
    assert "DEVACT_KAFKA_SASL_MECHANISM" in str(found)


@pytest.mark.parametrize(
    "error",
    [ConnectionRefusedError(111, "refused"), TimeoutError(), KafkaConnectionError("closed")],
    ids=type,
)
def test_a_broker_not_reachable_is_no_refusal(error: Exception) -> None:
    """Those may pass: the worker waits for Kafka instead of stopping."""
    assert refusal(error, sasl_ssl(), "b1:9093") is None


def test_bootstrap_servers_are_split_into_hosts() -> None:
    kafka = KafkaConnection("a:9093, b:19093,c")
    assert kafka.hosts() == [("a", 9093), ("b", 19093), ("c", 9092)]
