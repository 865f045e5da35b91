"""A throwaway certificate authority and a server certificate for 127.0.0.1, made with the
openssl command line: what the TLS tests start their Redis with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devtools.services.redis import TlsFiles

_DAYS = "2"
"""Long enough for any test session; a stolen copy is worthless the day after."""
_CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
"""EC keys: made in milliseconds, where RSA keys take a noticeable share of a second each."""


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA (``ca.crt``) and a certificate it signed for 127.0.0.1 and localhost, usable by a
    server and as a client certificate (a Redis Cluster node presents it to the others)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_CURVE, "-nodes", "-days", _DAYS,
             "-subj", "/CN=devact throwaway test CA", "-keyout", "ca.key", "-out", "ca.crt",
             cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "basicConstraints = critical, CA:FALSE\n"
    )
    _openssl("req", *_CURVE, "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", _DAYS, "-extfile", "server.ext", "-out", "server.crt",
             cwd=directory)  # fmt: skip
    (directory / "server.key").chmod(0o600)
    return TlsFiles(directory / "server.crt", directory / "server.key", directory / "ca.crt")
