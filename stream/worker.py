"""Running the Faust worker (`devact worker`)."""

from __future__ import annotations

import asyncio
import gc

import faust

from stream.app import create_app, ensure_topics
from stream.settings import WorkerSettings

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation (Python's default: 700). A
batch allocates a few objects per heartbeat, all freed together, and none in cycles; at 700 the
collector ran dozens of times per batch and cost 1.5-2 us per heartbeat."""


def tune_gc() -> None:
    """Fewer garbage collections in a batch-processing process (call once set up: what exists
    then, modules and the app, lives as long as the process and is never scanned again)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run_worker(settings: WorkerSettings) -> None:
    """Block until the worker is stopped (SIGTERM or SIGINT)."""
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    tune_gc()
    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
