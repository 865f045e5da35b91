"""Entry point for uvicorn: ``uvicorn --factory api.main:app_factory``."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings


def app_factory() -> FastAPI:
    return create_app(ApiSettings())
