"""Logging of every process: readable text, or one JSON object per line (``DEVACT_LOG_FORMAT``),
and the context fields (a request id, a batch's partition and offsets) that ``log_fields`` adds
to every record logged inside it. It imports nothing of ours, so it sits at the bottom of the
import graph with state/, where the worker, the API and the CLI all can use it."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
_FORMATS: Mapping[str, LogFormat] = MappingProxyType({"text": "text", "json": "json"})
FORMAT_ENV = "DEVACT_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RESERVED_FIELDS = frozenset({"time", "level", "logger", "message", "exc_info", "stack_info"})
"""The keys of a JSON line itself: a context field of that name would hide one."""
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""Loggers uvicorn gives handlers of its own (text) and stops from propagating: in JSON mode
they are handed back to the root logger."""

_NO_FIELDS: Mapping[str, object] = MappingProxyType({})
_fields: ContextVar[Mapping[str, object]] = ContextVar("devact_log_fields", default=_NO_FIELDS)


class LogFormatError(ValueError):
    """``DEVACT_LOG_FORMAT`` (or the format asked for) is not one we write."""


def log_format(value: str | None = None) -> LogFormat:
    """The format asked for, or ``DEVACT_LOG_FORMAT``'s when None (unset or empty: text)."""
    raw = os.environ.get(FORMAT_ENV, "") if value is None else value
    chosen = _FORMATS.get(raw.strip().lower() or "text")
    if chosen is None:
        source = FORMAT_ENV if value is None else "the log format"
        choices = " or ".join(repr(name) for name in _FORMATS)
        raise LogFormatError(f"{source} must be {choices}, not {raw!r}")
    return chosen


@contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside, in this task and the tasks it starts (a
    context variable: it follows ``await`` and stays out of concurrent tasks). Nested: the
    inner value of a name wins until the inner block ends."""
    clash = RESERVED_FIELDS & fields.keys()
    if clash:
        raise ValueError(f"reserved log field names: {sorted(clash)}")
    token = _fields.set(MappingProxyType({**_fields.get(), **fields}))
    try:
        yield
    finally:
        _fields.reset(token)


def current_fields() -> Mapping[str, object]:
    """The context fields in effect here."""
    return _fields.get()


class TextFormatter(logging.Formatter):
    """The readable format, with the context fields appended as ``key=value``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = current_fields()
        if not fields:
            return line
        return line + " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())


_QUOTED = re.compile(r"[\s\"'=]")
"""What makes a value quoted: whitespace (``\\s`` of a str pattern is ``str.isspace``, Unicode's
spaces included), a quote or ``=``. One regex search: a character loop in Python cost the API's
access log line more than the rest of it (issue 22)."""


def _text_value(value: object) -> str:
    text = str(value)
    if not text or _QUOTED.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the context fields, and the
    traceback as ``exc_info`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_fields(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:
            # A lone surrogate (undecodable bytes a library turned into text) that orjson
            # refuses: the standard library escapes it, and the line is still written.
            return json.dumps(entry, default=str)


def _iso_utc(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC to the millisecond, e.g. ``2026-01-15T13:45:00.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def logging_config(level: str, format: str | None = None) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a process: one handler on standard error. Also what
    the worker hands to Faust (``mode.Worker(logging_config=...)``), which installs it itself."""
    chosen = log_format(format)
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if chosen == "json" else {"()": TextFormatter, "fmt": TEXT_FORMAT}
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {chosen: formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": chosen,
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
    if chosen == "json":
        # Clears their own handlers; their levels (the server's --log-level) are kept.
        config["loggers"] = {name: {"handlers": [], "propagate": True} for name in SERVER_LOGGERS}
    return config


def configure_logging(level: str, format: str | None = None) -> None:
    """Set up this process's logging at ``level`` in ``format`` (None: ``DEVACT_LOG_FORMAT``);
    raises LogFormatError for a format we do not write. Calling it again replaces the setup."""
    chosen = log_format(format)
    logging.config.dictConfig(logging_config(level, chosen))
    if chosen == "json":
        # What would otherwise reach standard error as text, breaking the one-object-per-line.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("devact").critical("uncaught exception", exc_info=(kind, error, traceback))
