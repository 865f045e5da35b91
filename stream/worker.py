"""Running the Faust worker (`devact worker`)."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import faust

from state.logs import configure_logging, log_format, logging_config
from stream.app import create_app, ensure_topics
from stream.kafka import KafkaAccessRefused
from stream.settings import WorkerSettings

log = logging.getLogger(__name__)

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
    # Before anything logs (creating the topics does), and a bad DEVACT_LOG_FORMAT stops here.
    configure_logging(settings.log_level)
    prepare_worker_dir(settings.worker_dir)
    try:
        asyncio.run(ensure_topics(settings))
    except KafkaAccessRefused as exc:
        # One line that says what to fix, in the worker's log format; no traceback, no retry.
        log.error("%s", exc)
        raise SystemExit(1) from None
    app = create_app(settings)
    tune_gc()
    create_worker(app, settings.log_level).execute_from_commandline()


def prepare_worker_dir(path: Path) -> None:
    """Create Faust's data directory, or stop with what to set: the image runs the worker as
    an unprivileged user in a directory it cannot write (Dockerfile, DEVACT_WORKER_DIR)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"cannot create the worker directory {str(path)!r} ({exc.strerror}): "
            "set DEVACT_WORKER_DIR to a directory this user may write"
        ) from exc


def create_worker(app: faust.App, log_level: str) -> faust.Worker:
    """Faust's worker, logging as DEVACT_LOG_FORMAT says.

    Faust (through mode) installs the root logger's handlers itself when it starts. For text we
    leave it its own readable format; for JSON we hand it our configuration, keep it from
    writing to the terminal itself (``quiet``: its "OK ^" line), and drop its progress spinner,
    whose characters and cursor escapes would go between the JSON lines. What is still printed
    reaches the log as records: Faust redirects stdout and stderr to the ``mode.redirect``
    logger once it is running.
    """
    if log_format() == "text":
        return faust.Worker(app, loglevel=log_level)
    worker = faust.Worker(
        app, loglevel=log_level, logging_config=logging_config(log_level, "json"), quiet=True
    )
    worker.spinner = None
    return worker
