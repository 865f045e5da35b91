"""The `devact` console script the tests run, as the venv installed it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def devact_executable() -> str:
    sibling = Path(sys.executable).parent / "devact"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("devact")
    if found is None:
        raise RuntimeError("the `devact` console script is not installed")
    return found
