"""docs/operations.md, dead letters: what comes from outside (heartbeats, dead-letter headers, the
registry, other processes' answers) is printed literally on an operator's screen. Rich markup in
it stays text, a link stays text, and a control character is shown as its escape (``\\x1b``)
instead of reaching the terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
from rich.console import Console

from devact.cli import client_line
from devact.literal import visible
from devact.ops import dead_letter_table, show_status
from devact.progress import Meter
from devact.status import PartitionStatus, Readiness, Status
from state.registry import Client
from stream.dlq import StoredDeadLetter

ESC = "\x1b"
HOSTILE = [
    "[/x]",
    "[link=http://evil.example]a[/link]",
    "[bold]",
    ":smile:",
]
"""Markup, a link, a style and an emoji code: each must come out as these very characters."""
ANSI = f"{ESC}[31mred{ESC}[0m"
SHOWN_ANSI = "\\x1b[31mred\\x1b[0m"
OSC8 = f"{ESC}]8;"
"""How a terminal is told to start a hyperlink."""


def render(renderable: object) -> str:
    """What a colour terminal 300 columns wide receives."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=300)
    console.print(renderable)
    return out.getvalue()


def printed(show: object) -> str:
    out = StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=300)
    show(console)  # type: ignore[operator]
    return out.getvalue()


def assert_literal(output: str, texts: list[str]) -> None:
    for text in texts:
        assert text in output, f"{text!r} not shown as itself in:\n{output}"
    assert OSC8 not in output
    assert ANSI not in output
    assert SHOWN_ANSI in output


def letter(text: str) -> StoredDeadLetter:
    return StoredDeadLetter(
        partition=1,
        offset=7,
        timestamp=datetime(2026, 3, 10, tzinfo=UTC),
        key=text.encode(),
        value=f'{{"device_id": "{text}"}}'.encode(),
        reason=text,
        detail=f"device_id: not a UUID: {text}",
        source=f"heartbeats/{text}",
        field=text,
    )


def test_visible_escapes_control_characters_and_keeps_the_rest() -> None:
    assert visible("plain [b]ünïcode[/b] \\x1b") == "plain [b]ünïcode[/b] \\x1b"
    assert visible(ANSI) == SHOWN_ANSI
    assert visible("a\tb\nc\rd\x00\x7f\x9b") == "a\\tb\\nc\\rd\\x00\\x7f\\x9b"
    assert visible("\u202eevil") == "\\u202eevil"  # a bidi override reorders what follows


@pytest.mark.parametrize("text", [*HOSTILE, ANSI])
def test_dlq_list_prints_hostile_ids_literally(text: str) -> None:
    output = render(dead_letter_table([letter(text), letter("-")]))
    shown = SHOWN_ANSI if text == ANSI else text
    assert f"device_id: not a UUID: {shown}" in output
    assert f"heartbeats/{shown}" in output
    assert OSC8 not in output
    assert ESC + "[31m" not in output


def test_dlq_list_prints_every_hostile_id_of_one_screen_literally() -> None:
    output = render(dead_letter_table([letter(t) for t in [*HOSTILE, ANSI]]))
    assert_literal(output, HOSTILE)


def test_status_prints_names_reasons_and_errors_literally() -> None:
    hostile = " ".join([*HOSTILE, ANSI])
    found = Status(
        topic=hostile,
        group=hostile,
        partitions=[PartitionStatus(0, 0, 5, 5, 4, 0)],
        lag=0,
        dead_letters={"total": 2, "by_reason": {hostile: 2}},
        redis={
            "cluster": False,
            "used_memory": 1_000_000,
            "keys": 3,
            "nodes": [
                {
                    "address": hostile,
                    "role": "standalone",
                    "healthy": False,
                    "used_memory": None,
                    "keys": None,
                    "error": hostile,
                },
            ],
        },
        api=Readiness(hostile, False, [hostile]),
        workers=[Readiness("http://127.0.0.1:9101", True)],
        errors=[f"kafka: {hostile}"],
    )
    output = printed(lambda console: show_status(found, console))
    assert_literal(output, HOSTILE)
    assert f"could not read kafka: {HOSTILE[0]}" in output


def test_client_list_prints_names_literally() -> None:
    line = client_line(Client("aa7cf840-9ca9-46a3-9778-9015d6580d50", "UTC", ANSI + "\tx", 2))
    assert line == f"aa7cf840-9ca9-46a3-9778-9015d6580d50\tUTC\t{SHOWN_ANSI}\\tx\t2 devices"


def test_a_progress_bar_prints_its_description_literally() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=True, force_interactive=True, width=200)
    description = "ingest: producing heartbeats-[/x][link=http://evil.example]a[/link]"
    with Meter(description, 10, "messages", console=console) as meter:
        meter.advance(10)
    assert description in out.getvalue()
    assert OSC8 not in out.getvalue()
