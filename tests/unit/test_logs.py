"""Process logging (devact/logs.py): JSON lines with their context fields, or the readable text."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from state.logs import (
    SERVER_LOGGERS,
    TEXT_FORMAT,
    JsonFormatter,
    LogFormatError,
    TextFormatter,
    configure_logging,
    log_fields,
)

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)")

Lines = Callable[[], list[str]]


def logger_into(formatter: logging.Formatter, name: str) -> tuple[logging.Logger, Lines]:
    """A logger of its own, not propagating, whose lines the test reads back."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.logs.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, lambda: stream.getvalue().splitlines()


@pytest.fixture
def json_log(request: pytest.FixtureRequest) -> tuple[logging.Logger, Callable[[], list[Any]]]:
    logger, lines = logger_into(JsonFormatter(), request.node.name)
    return logger, lambda: [json.loads(line) for line in lines()]


@pytest.fixture
def process_logging() -> Iterator[None]:
    """configure_logging changes the process: put back what it changes."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    servers = {n: logging.getLogger(n) for n in SERVER_LOGGERS}
    server_state = {n: (lg.handlers[:], lg.propagate) for n, lg in servers.items()}
    hook = sys.excepthook
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level
        for name, (server_handlers, propagate) in server_state.items():
            servers[name].handlers[:] = server_handlers
            servers[name].propagate = propagate
        logging.captureWarnings(False)
        sys.excepthook = hook


def test_a_json_line_carries_time_level_logger_and_message(json_log: Any) -> None:
    logger, lines = json_log
    before = datetime.now(UTC).replace(microsecond=0)
    logger.warning("applied %d events", 12)
    after = datetime.now(UTC)
    [line] = lines()
    assert list(line) == ["time", "level", "logger", "message"]
    assert ISO_UTC_MS.fullmatch(line["time"]), line["time"]
    assert before <= datetime.fromisoformat(line["time"]) <= after
    assert line["level"] == "WARNING"
    assert line["logger"] == logger.name
    assert line["message"] == "applied 12 events"


def test_every_record_inside_log_fields_carries_them(json_log: Any) -> None:
    logger, lines = json_log
    with log_fields(partition=3, first_offset=10, last_offset=99):
        logger.info("one")
        logger.debug("two")
    logger.info("after")
    one, two, after = lines()
    for line in (one, two):
        assert {k: line[k] for k in ("partition", "first_offset", "last_offset")} == {
            "partition": 3,
            "first_offset": 10,
            "last_offset": 99,
        }
    assert "partition" not in after


def test_nested_log_fields_add_to_the_outer_ones_and_win_until_they_end(json_log: Any) -> None:
    logger, lines = json_log
    with log_fields(partition=3, first_offset=10):
        with log_fields(partition=4, request_id="r-1"):
            logger.info("inner")
        logger.info("outer again")
    inner, outer = lines()
    assert (inner["partition"], inner["first_offset"], inner["request_id"]) == (4, 10, "r-1")
    assert (outer["partition"], outer["first_offset"]) == (3, 10)
    assert "request_id" not in outer


def test_fields_follow_await_and_stay_in_their_own_task(json_log: Any) -> None:
    logger, lines = json_log

    async def main() -> None:
        a_inside, b_inside, a_logged = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def a() -> None:
            with log_fields(request_id="a"):
                a_inside.set()
                await b_inside.wait()  # b is inside its own fields now
                logger.info("a")
                a_logged.set()

        async def b() -> None:
            await a_inside.wait()
            with log_fields(request_id="b", partition=1):
                b_inside.set()
                await a_logged.wait()  # a logged meanwhile, inside its fields
                logger.info("b")

        await asyncio.gather(a(), b())
        logger.info("main")

    asyncio.run(main())
    by_message = {line["message"]: line for line in lines()}
    assert by_message["a"]["request_id"] == "a"
    assert "partition" not in by_message["a"]
    assert (by_message["b"]["request_id"], by_message["b"]["partition"]) == ("b", 1)
    assert "request_id" not in by_message["main"]


def test_an_exception_is_logged_with_its_traceback_text(json_log: Any) -> None:
    logger, lines = json_log
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("batch failed")
    [line] = lines()
    assert line["message"] == "batch failed"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("ValueError: boom")


def test_field_values_json_cannot_hold_are_written_as_text(json_log: Any) -> None:
    logger, lines = json_log
    with log_fields(when=datetime(2026, 1, 15, 13, 45, tzinfo=UTC), what={1, 2} - {2}):
        logger.info("x")
    [line] = lines()
    assert (line["when"], line["what"]) == ("2026-01-15T13:45:00+00:00", "{1}")


def test_the_names_of_a_line_itself_cannot_be_fields() -> None:
    with pytest.raises(ValueError, match="message"), log_fields(message="hidden"):
        pass


def test_text_lines_are_unchanged_and_fields_come_after_the_message(
    request: pytest.FixtureRequest,
) -> None:
    logger, lines = logger_into(TextFormatter(TEXT_FORMAT), request.node.name)
    plain = logging.Formatter(TEXT_FORMAT)
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "ready", (), None)
    assert TextFormatter(TEXT_FORMAT).format(record) == plain.format(record)
    with log_fields(partition=3, note="two words"):
        logger.info("applied")
    [line] = lines()
    assert line.endswith(
        " INFO tests.logs." + request.node.name + ': applied partition=3 note="two words"'
    )


def test_configure_logging_json_writes_json_lines_on_stderr(
    process_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    logging.getLogger("devact.test").debug("below the level")
    with log_fields(request_id="r-9"):
        logging.getLogger("devact.test").info("hello")
    [line] = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    assert (line["logger"], line["message"], line["request_id"]) == ("devact.test", "hello", "r-9")


def test_the_format_comes_from_devact_log_format_when_not_given(
    process_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVACT_LOG_FORMAT", "json")
    configure_logging("INFO")
    logging.getLogger("devact.test").info("hello")
    assert json.loads(capsys.readouterr().err)["message"] == "hello"


def test_text_is_the_default_and_keeps_the_readable_format(
    process_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEVACT_LOG_FORMAT", raising=False)
    configure_logging("INFO")
    logging.getLogger("devact.test").info("hello")
    match = TEXT_LINE.fullmatch(capsys.readouterr().err.rstrip("\n"))
    assert match is not None
    assert match.groups() == ("INFO", "devact.test", "hello")


def test_json_takes_over_the_servers_own_log_handlers_and_text_leaves_them(
    process_logging: None,
) -> None:
    access = logging.getLogger("uvicorn.access")
    own = logging.StreamHandler(io.StringIO())
    access.handlers[:], access.propagate = [own], False
    configure_logging("INFO", "text")
    assert (access.handlers, access.propagate) == ([own], False)
    configure_logging("INFO", "json")
    assert (access.handlers, access.propagate) == ([], True)


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_an_unknown_format_is_refused_before_anything_changes(
    process_logging: None, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    handlers = logging.getLogger().handlers[:]
    if source == "environment":
        monkeypatch.setenv("DEVACT_LOG_FORMAT", "xml")
        expected = "DEVACT_LOG_FORMAT must be 'text' or 'json', not 'xml'"
    else:
        expected = "the log format must be 'text' or 'json', not 'xml'"
    with pytest.raises(LogFormatError, match=re.escape(expected)):
        configure_logging("INFO", "xml" if source == "argument" else None)
    assert logging.getLogger().handlers == handlers


def test_a_text_value_is_quoted_exactly_when_a_character_is_whitespace_a_quote_or_equals() -> None:
    """Every code point of the Basic Multilingual Plane, alone and inside a word: quoted exactly
    when ``str.isspace`` or one of ``"'=``, as the formatter has always decided."""
    from state.logs import _text_value

    for code in range(0x10000):
        c = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates: not text a value could hold here
        quoted = c.isspace() or c in "\"'="
        for text in (c, f"a{c}b"):
            assert (_text_value(text) != text) == quoted, (hex(code), text)
    assert _text_value("") == '""'
    assert _text_value(None) == "None"
