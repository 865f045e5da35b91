"""Printing what a test measured, past pytest's output capture."""

from __future__ import annotations

import pytest


def show(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's output capture: for tests whose measured figures are the point."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print(text)
