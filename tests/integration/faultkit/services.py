"""The fault tests' own Kafka and Redis: start them, find Redis's pid and AOF, kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from devtools.services import LocalStack, ServiceError, free_port
from tests.integration.harness.waiting import poll_until

from .constants import PROCESS_STOP_TIMEOUT_S


def start_own_stack(run_dir: Path) -> LocalStack:
    """A started LocalStack on free ports (Kafka's controller takes the port after Kafka's)."""
    kafka_port = free_port()
    redis_port = free_port()
    while redis_port in (kafka_port, kafka_port + 1):
        redis_port = free_port()
    stack = LocalStack(run_dir, kafka_port, redis_port)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def redis_pid(stack: LocalStack) -> int:
    """The pid of the stack's redis-server, from its pid file (first line: pid, second: port)."""
    return int((stack.run_dir / "redis.pid").read_text().split()[0])


def redis_aof_tail(stack: LocalStack) -> Path:
    """The AOF file Redis appends to now: the newest `*.incr.aof` of its appendonlydir."""
    found = sorted(
        (stack.run_dir / "redis").glob("appendonlydir/*.incr.aof"),
        key=lambda p: int(p.name.split(".")[-3]),
    )
    assert found, f"no incremental AOF file under {stack.run_dir / 'redis'}"
    return found[-1]


def restart_redis(stack: LocalStack) -> None:
    """``start_redis`` on the same port and data; when it refuses, say who holds the port."""
    try:
        stack.start_redis()
    except ServiceError as exc:
        port = stack.endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]
        sockets = subprocess.run(
            ["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True,
            text=True,
            check=False,
        )
        raise AssertionError(
            f"Redis did not start again: {exc}\nsockets on port {port}:\n{sockets.stdout}"
        ) from exc


def ensure_services(stack: LocalStack, timeout_s: float = 90.0) -> None:
    """Start whichever of Kafka and Redis a test left stopped (a no-op for a running one), so
    that one failed test does not fail the next. Polls: a port the old process held may stay
    unusable for a while (TCP TIME_WAIT lasts 60 s)."""

    def started() -> bool | None:
        try:
            stack.start_redis()
            stack.start_kafka()
        except ServiceError:
            return None
        return True

    poll_until(started, timeout_s=timeout_s, what="Kafka and Redis running again")


def kill_redis(stack: LocalStack) -> None:
    """SIGKILL redis-server, as a crash would, and wait until the stack sees it gone."""
    os.kill(redis_pid(stack), signal.SIGKILL)
    poll_until(
        lambda: True if stack.status()["redis"] == "stopped" else None,
        timeout_s=PROCESS_STOP_TIMEOUT_S,
        what="redis-server to die after SIGKILL",
    )
