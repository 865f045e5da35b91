"""`devact` commands the fault tests start, SIGKILL and restart, and the API with its client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from devtools.services import free_port
from tests.integration.harness.processes import devact_executable
from tests.integration.harness.waiting import poll_until
from tests.integration.oracle import DeviceKey

from .constants import PROCESS_STOP_TIMEOUT_S

LOG_TAIL_LINES = 60


class Process:
    """One `devact` command run in its own session, its output appended to one log file.

    ``start`` may be called again after the process ended: each run is an incarnation, and the
    log marks where each begins, so a failure report shows what every incarnation said.
    """

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self.incarnations = 0
        self.wanted = False
        """True from ``start`` until ``kill`` or ``terminate``: it must be alive meanwhile."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} never started"
        return self._process.pid

    def start(self) -> float:
        """Spawn the process; returns the ``time.monotonic()`` of the spawn."""
        assert not self.alive, f"{self.name} is already running"
        self._close_log()
        self.incarnations += 1
        self._log_file = self.log.open("ab")
        self._log_file.write(
            f"\n===== {self.name}: incarnation {self.incarnations} =====\n".encode()
        )
        self._log_file.flush()
        started = time.monotonic()
        self.wanted = True
        self._process = subprocess.Popen(
            [devact_executable(), *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return started

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        """SIGKILL the whole session of the process (only what we started) and reap it."""
        assert self._process is not None, f"{self.name} never started"
        assert self.alive, f"{self.name} is not running"
        self.wanted = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=PROCESS_STOP_TIMEOUT_S)

    def terminate(self, timeout_s: float = PROCESS_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end in time. Returns the exit code, or None
        when it had to be killed."""
        self.wanted = False
        if not self.alive:
            return self.returncode
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"----- last lines of `devact {self.name}` ({self.log}) -----\n" + "\n".join(
            text[-lines:]
        )

    def close(self) -> None:
        self.terminate()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class Api(Process):
    """`devact api` on a free port, with an HTTP client."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        super().__init__("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)], env, log)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10.0)

    def status(self, path: str) -> int | None:
        try:
            return self.http.get(path).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool | None:
            assert self.alive, f"the API exited\n{self.tail()}"
            return True if self.status("/readyz") == 200 else None

        poll_until(ready, timeout_s=timeout_s, what="GET /readyz -> 200", diagnostics=self.tail)

    def activity(self, key: DeviceKey, token: str, **params: str) -> httpx.Response:
        return self.http.get(
            f"/v2/clients/{key[0]}/analytics/devices/{key[1]}/activity",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )

    def close(self) -> None:
        self.http.close()
        super().close()
