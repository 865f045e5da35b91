"""Running one local service as a detached child process: pid files, probing, stopping.

A pid file holds two lines, the pid and the port the service listens on, so a second `up`
can tell "already running here" from "running on another port".
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.15
STOP_DEADLINE_S = 30.0
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A local service could not be provisioned, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ensure_apt_package(command: str, package: str) -> str:
    """Path of `command`, installing Debian's `package` first when it is missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ServiceError(f"{command} is missing; install the Debian package {package!r}")
    log.info("%s is missing: installing %s with apt-get", command, package)
    # RUNLEVEL=1 keeps the package's init script from starting a system-wide service.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", package],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise ServiceError(f"apt-get installed {package} but {command} is still not found")
    return found


def log_tail(*paths: Path, lines: int = LOG_TAIL_LINES) -> str:
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            parts.append(f"--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
    return "\n".join(parts) or "(no log written)"


@dataclass(frozen=True)
class PidRecord:
    pid: int
    port: int


def _is_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # The state is the field after the parenthesised command name.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class ManagedProcess:
    """One service process, remembered through `<run dir>/<name>.pid`."""

    def __init__(self, name: str, run_dir: Path, cmdline_marker: str) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        # Guards against a recycled pid: the live process must mention this in its command line.
        self._marker = cmdline_marker
        self._child: subprocess.Popen[bytes] | None = None

    def running(self) -> PidRecord | None:
        """The live process of the pid file; a stale pid file is removed."""
        try:
            pid_text, port_text = self.pid_file.read_text().split()[:2]
            record = PidRecord(int(pid_text), int(port_text))
        except (OSError, ValueError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if self._alive(record.pid) and self._marker in _cmdline(record.pid):
            return record
        log.info("%s: removing stale pid file %s", self.name, self.pid_file)
        self.pid_file.unlink(missing_ok=True)
        return None

    def spawn(self, argv: Sequence[str], port: int, output: Path, cwd: Path) -> None:
        """Start `argv` detached from our session, its stdout and stderr going to `output`."""
        with output.open("ab") as out:
            self._child = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._child.pid}\n{port}\n")
        log.info("%s: started pid %d on port %d", self.name, self._child.pid, port)

    def wait_ready(
        self, probe: Callable[[], bool], deadline_s: float, logs: Sequence[Path]
    ) -> None:
        """Poll `probe` until it passes; fail at once if the process dies, or at the deadline."""
        if self._child is None:
            raise ServiceError(f"{self.name}: wait_ready() without spawn()")
        # Not running(): right after fork the command line is still ours, not the service's.
        pid = self._child.pid
        deadline = time.monotonic() + deadline_s
        while not probe():
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(f"{self.name} exited during start-up\n{log_tail(*logs)}")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} not ready after {deadline_s:.0f} s\n{log_tail(*logs)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_DEADLINE_S, then SIGKILL; the pid file goes either way."""
        record = self.running()
        if record is None:
            return
        log.info("%s: stopping pid %d", self.name, record.pid)
        _signal(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while self._alive(record.pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        if self._alive(record.pid):
            log.warning("%s: pid %d ignored SIGTERM, killing it", self.name, record.pid)
            _signal(record.pid, signal.SIGKILL)
            while self._alive(record.pid):
                time.sleep(POLL_INTERVAL_S)
        self.pid_file.unlink(missing_ok=True)
        self._child = None

    def _alive(self, pid: int) -> bool:
        # Our own child must be reaped through Popen, or it lingers as a zombie.
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is None
        return _is_alive(pid)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")
