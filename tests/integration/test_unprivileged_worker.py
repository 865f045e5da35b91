"""The image's worker starts as its unprivileged user, in a directory it may not write.

No container engine runs here, so the image's conditions are made by hand: a working directory
owned by root (the image's /app), the user id of nobody, and DEVACT_WORKER_DIR as the Dockerfile
sets it, on a directory of that user's own (the image's /var/lib/devact). The process keeps one
capability, to read and search any directory, because the interpreter and the venv of this
machine may sit under root's home; it gains no right to write anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.services import free_port

from .harness.processes import devact_executable
from .harness.waiting import poll_until

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the worker's start as an unprivileged user is about its file system rights, not its store"
    ),
)

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
NOBODY = 65534
START_TIMEOUT_S = 60.0


def dockerfile_env() -> dict[str, str]:
    """The ENV instructions of the Dockerfile (``ENV K=V \\`` continued over lines)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def dockerfile_user() -> str:
    users = re.findall(r"^USER (\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users, "the Dockerfile names no USER: the image would run as root"
    return users[-1]


AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=-all,+dac_read_search",
]


@pytest.fixture
def worker_env(services: Any, tmp_path: Path) -> dict[str, str]:
    tmp_path.chmod(0o755)
    suffix = uuid.uuid4().hex
    return {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "DEVACT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DEVACT_REDIS_URL": services.redis_url,
        "DEVACT_TOPIC": f"heartbeats-{suffix}",
        "DEVACT_DLQ_TOPIC": f"heartbeats-{suffix}.dlq",
        "DEVACT_APP_ID": f"device-activity-{suffix}",
        "DEVACT_TOPIC_PARTITIONS": "1",
        "DEVACT_WORKER_METRICS_HOST": "127.0.0.1",
        "DEVACT_WORKER_METRICS_PORT": str(free_port()),
    }


def start(tmp: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`devact worker` as nobody, in a root-owned working directory (the image's /app)."""
    app = tmp / "app"
    app.mkdir(mode=0o755, exist_ok=True)
    os.chown(app, 0, 0)
    return subprocess.Popen(
        [*AS_NOBODY, devact_executable(), "worker"],
        cwd=app,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def healthy(port: str) -> bool | None:
    try:
        return True if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200 else None
    except httpx.TransportError:
        return None


def test_the_image_runs_as_a_user_of_its_own() -> None:
    assert dockerfile_user() not in {"root", "0"}


def test_the_worker_starts_as_nobody_with_the_images_worker_dir(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    image_dir = dockerfile_env()["DEVACT_WORKER_DIR"]
    # The image's directory, relocated here and owned by the user as the Dockerfile makes it.
    own = tmp_path / "var-lib-devact"
    own.mkdir()
    os.chown(own, NOBODY, NOBODY)
    worker_dir = own / Path(image_dir).name
    worker = start(tmp_path, {**worker_env, "DEVACT_WORKER_DIR": str(worker_dir)})
    port = worker_env["DEVACT_WORKER_METRICS_PORT"]
    try:
        # Healthy, or exited (then the assertion below shows why).
        poll_until(
            lambda: True if worker.poll() is not None else healthy(port),
            timeout_s=START_TIMEOUT_S,
            what="the worker's /healthz, as nobody",
        )
        exited = worker.poll()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode()
    assert exited is None, output[-3000:]
    assert worker_dir.is_dir()
    assert worker_dir.stat().st_uid == NOBODY


def test_without_a_writable_worker_dir_it_says_what_to_set(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    # As the image was before: DEVACT_WORKER_DIR unset, so .run/worker inside the root-owned
    # working directory.
    worker = start(tmp_path, worker_env)
    output = worker.communicate(timeout=START_TIMEOUT_S)[0].decode()
    assert worker.returncode != 0
    assert "DEVACT_WORKER_DIR" in output, output[-3000:]
    assert "Permission denied" in output, output[-3000:]
