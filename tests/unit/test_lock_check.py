"""`make test` refuses a uv.lock that no longer matches pyproject.toml (docs/operations.md,
"Dependencies"), at once and saying what to run: `make lock-check` on a copy of the project.

It runs the project's pinned uv (installed by `make install`, which `make test` runs first) with
``--offline``: no network, so it is a unit test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("Makefile", "pyproject.toml", "uv.lock", "README.md", "scripts/uv-requirements.txt")
MESSAGE = "uv.lock does not match pyproject.toml: run 'make lock'"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    # VENV: make's default is .venv under the copy; the check never touches it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VENV"))}
    return subprocess.run(
        ["make", "-s", "lock-check"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_committed_lock_matches_pyproject(project: Path) -> None:
    done = lock_check(project)
    assert done.returncode == 0, done.stderr


def test_a_dependency_added_to_pyproject_without_locking_stops_with_what_to_run(
    project: Path,
) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    anchor = '    "numpy>=2,<3",\n'
    assert anchor in text
    pyproject.write_text(text.replace(anchor, anchor + '    "six>=1.16",\n'))
    done = lock_check(project)
    assert done.returncode != 0
    assert MESSAGE in done.stderr, done.stderr


def test_a_range_moved_in_pyproject_without_locking_stops_too(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '"orjson>=3.10,<4"' in text
    pyproject.write_text(text.replace('"orjson>=3.10,<4"', '"orjson>=3.11,<4"'))
    done = lock_check(project)
    assert done.returncode != 0
    assert MESSAGE in done.stderr, done.stderr
