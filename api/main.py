"""Entry point for uvicorn: ``uvicorn --factory api.main:app_factory``."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings
from state.logs import configure_logging

LOG_LEVEL = "INFO"
"""What `devact api` logs at: the app's warnings and errors, the server's own lines at the level
it was started with (`devact api`: warning)."""


def app_factory() -> FastAPI:
    # Here, not only in `devact api`: the factory runs in every server process (uvicorn's
    # --workers start fresh interpreters, which inherit no logging set-up) and after the server
    # installed its own log handlers, which DEVACT_LOG_FORMAT=json takes over.
    configure_logging(LOG_LEVEL)
    return create_app(ApiSettings())
