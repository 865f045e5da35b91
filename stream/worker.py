"""Running the Faust worker (`devact worker`)."""

from __future__ import annotations

import asyncio

import faust

from stream.app import create_app, ensure_topics
from stream.settings import WorkerSettings


def run_worker(settings: WorkerSettings) -> None:
    """Block until the worker is stopped (SIGTERM or SIGINT)."""
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
