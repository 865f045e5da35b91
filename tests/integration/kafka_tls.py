"""A throwaway certificate authority and a broker certificate for 127.0.0.1, made with the
`openssl` command line: what the SASL_SSL listener of tests/integration/test_kafka_security.py
serves (a PKCS12 keystore for Kafka) and what its clients trust (the CA's PEM)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "2"
_CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
"""EC keys: made in milliseconds, where RSA keys take a noticeable share of a second each."""


@dataclass(frozen=True)
class BrokerTls:
    ca_file: Path
    """PEM of the CA that signed the broker's certificate: the clients' DEVACT_KAFKA_CA_FILE."""
    keystore: Path
    """PKCS12 with the broker's key and certificate chain."""
    keystore_password: str
    other_ca_file: Path
    """PEM of a second CA that signed nothing the broker serves: a client trusting only it
    must refuse the broker."""


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def _authority(directory: Path, name: str) -> Path:
    """A self-signed CA certificate (``<name>.pem``) and its key (``<name>.key``)."""
    _openssl(
        "req", "-x509", *_CURVE, "-nodes", "-days", _DAYS,
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=devact test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def make_broker_tls(directory: Path) -> BrokerTls:
    """A CA, a broker certificate it signed for ``127.0.0.1`` and ``localhost`` (the names
    clients verify), the keystore holding it, and an unrelated second CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _authority(directory, "ca")
    other = _authority(directory, "other-ca")
    _openssl(
        "req", *_CURVE, "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", _DAYS, "-extfile", "broker.ext", "-out", "broker.pem",
        cwd=directory,
    )  # fmt: skip
    password = secrets.token_urlsafe(18)
    password_file = directory / "keystore.pass"
    password_file.write_text(password)  # a file: the password stays out of openssl's argv
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "kafka", "-out", "broker.p12", "-passout", f"file:{password_file}",
        cwd=directory,
    )  # fmt: skip
    return BrokerTls(ca, directory / "broker.p12", password, other)
