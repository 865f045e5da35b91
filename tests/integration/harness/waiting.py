"""Waiting for something to become true, by polling it: never a sleep standing in for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Faust needs a few seconds to join its group; the API starts in about one.
READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
) -> T:
    """Call ``check`` until it returns something other than None, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}\n{diagnostics()}"
            )
        time.sleep(POLL_INTERVAL_S)
