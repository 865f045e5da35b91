"""A throwaway PostgreSQL for the SQL baseline: Debian's binaries, a child process, a run dir.

Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the bench loads a data
set once and only reads it afterwards, and a crash only loses a bench run. None of these settings
changes how a read query runs.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from devtools.services.process import ServiceError, ensure_apt_package, log_tail

log = logging.getLogger(__name__)

READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.1
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: nothing written outside the run dir
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # The whole data set (about 0.5 GB at 3 million rows) stays cached, as the probe's did.
    "shared_buffers": "512MB",
    "max_connections": "100",
}


def bin_dir() -> Path:
    """The newest installed server's bin dir (/usr/lib/postgresql/<version>/bin), installing
    Debian's `postgresql` when there is none. `pg_ctlcluster` comes with the server package."""
    ensure_apt_package("pg_ctlcluster", "postgresql")
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise ServiceError("no PostgreSQL server under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _as_owner() -> dict[str, Any]:
    """Popen arguments that drop to the `postgres` user when we are root: the server refuses to
    run as root."""
    return (
        {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    )


class PostgresServer:
    """PostgreSQL with its data in `<run dir>/postgres`, log in `<run dir>/postgres.log`."""

    def __init__(self, run_dir: Path, port: int) -> None:
        self.port = port
        self.run_dir = run_dir
        self.data_dir = run_dir / "postgres"
        self.log_file = run_dir / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        binaries = bin_dir()
        self._init_data_dir(binaries)
        argv = [str(binaries / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_owner(),
            )
        self._wait_ready(binaries)
        log.info("postgres: ready on %s (pid %d)", self.dsn, self._process.pid)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint), SIGKILL after the deadline."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            log.warning("postgres: pid %d ignored SIGINT, killing it", process.pid)
            process.kill()
            process.wait()

    def _init_data_dir(self, binaries: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.data_dir, *_postgres_ids())
            _let_others_traverse(self.data_dir.parent)
        argv = [str(binaries / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        # trust: the server listens on 127.0.0.1 only and holds nothing but generated bench data.
        argv += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        with self.log_file.open("ab") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, **_as_owner())
        if done.returncode != 0:
            raise ServiceError(f"initdb failed\n{log_tail(self.log_file)}")

    def _wait_ready(self, binaries: Path) -> None:
        assert self._process is not None
        probe = [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + READY_DEADLINE_S
        while subprocess.run(probe, check=False).returncode != 0:
            if self._process.poll() is not None:
                raise ServiceError(f"postgres exited during start-up\n{log_tail(self.log_file)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"postgres not ready after {READY_DEADLINE_S:.0f} s")
            time.sleep(POLL_INTERVAL_S)


def _let_others_traverse(directory: Path) -> None:
    """The server user must reach its data dir: a run dir made by ``mkdtemp`` (mode 0700) and its
    parents get the search bit for others (enter, not list), when they lack it."""
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("postgres: letting the server user traverse %s", path)
            path.chmod(mode | stat.S_IXOTH)


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
