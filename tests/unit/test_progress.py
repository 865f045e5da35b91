"""devact/progress.py: a bar on a terminal; elsewhere log lines every 5 s and every tenth, with
counts, rate and ETA. Time is a fake clock the tests move."""

from __future__ import annotations

import logging
import sys
from io import StringIO
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress, TaskID

from devact.progress import LINE_EVERY_S, Meter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=False), out


def terminal_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=True, force_interactive=True, width=120), out


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "devact.progress"]


@pytest.fixture(autouse=True)
def _progress_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devact.progress")


def test_off_a_terminal_a_line_every_five_seconds_with_count_share_rate_and_eta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    console, out = plain_console()
    clock = FakeClock()
    total, per_second = 100_000, 1_000  # a tenth takes 10 s: the 5 s lines come first
    with Meter("replay", unit="messages", console=console, clock=clock) as meter:
        assert lines(caplog) == []  # a count says nothing before its total is known
        meter.update(0, total)
        for _ in range(20):
            clock.now += 1
            meter.advance(per_second)
    # rich's ETA at 5 s: what is left over the rate, rounded up.
    assert -(-(total - 5 * per_second) // per_second) == 95
    assert lines(caplog) == [
        "replay: 0/100,000 messages (0%)",
        "replay: 5,000/100,000 messages (5%), 1,000/s, ETA 1 min 35 s",
        "replay: 10,000/100,000 messages (10%), 1,000/s, ETA 1 min 30 s",
        "replay: 15,000/100,000 messages (15%), 1,000/s, ETA 1 min 25 s",
        "replay: 20,000/100,000 messages (20%), 1,000/s, ETA 1 min 20 s",
        # The last line: the rate over the whole work, and its time.
        "replay: 20,000/100,000 messages (20%), 1,000/s, done in 20 s",
    ]
    assert out.getvalue() == ""  # lines go through logging, never raw onto the stream


def test_off_a_terminal_a_line_at_every_tenth_when_tenths_come_faster_than_five_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    console, _ = plain_console()
    clock = FakeClock()
    with Meter("produce", 1_000, "heartbeats", console=console, clock=clock) as meter:
        for _ in range(20):  # 50 every half second: a tenth a second
            clock.now += 0.5
            meter.advance(50)
    shares = [line.split("(")[1].split(")")[0] for line in lines(caplog)]
    assert shares == [f"{p}%" for p in range(0, 100, 10)] + ["100%"]  # the last: at the end
    assert lines(caplog)[-1] == "produce: 1,000/1,000 heartbeats (100%), 100/s, done in 10 s"


def test_reports_come_per_event_but_reach_rich_at_most_four_times_a_second(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[object] = []
    update = Progress.update

    def counted(self: Progress, task_id: TaskID, **changes: Any) -> None:
        pushed.append(changes.get("completed"))
        update(self, task_id, **changes)

    monkeypatch.setattr(Progress, "update", counted)
    console, _ = plain_console()
    clock = FakeClock()
    tick = 1 / 1024  # exact in binary: the pushes fall on the quarter seconds exactly
    with Meter("ingest_eps", 10 * 1024, "messages", console=console, clock=clock) as meter:
        for _ in range(2 * 1024):  # a report every tick for two seconds
            clock.now += tick
            meter.advance(1)
    # At the start, every quarter second, at the end.
    assert pushed == [0, *(256 * n for n in range(1, 9)), 2048]
    assert [line.split(" (")[0] for line in lines(caplog)] == [
        "ingest_eps: 0/10,240 messages",
        "ingest_eps: 1,024/10,240 messages",
        "ingest_eps: 2,048/10,240 messages",
        "ingest_eps: 2,048/10,240 messages",
    ]


def test_a_wait_of_unknown_length_shows_the_time_spent(caplog: pytest.LogCaptureFixture) -> None:
    console, _ = plain_console()
    clock = FakeClock()
    with Meter("accuracy: user-count error table", console=console, clock=clock) as meter:
        for _ in range(28):
            clock.now += 0.25
            meter.poll()
    assert lines(caplog) == [
        "accuracy: user-count error table: 0 s elapsed",
        f"accuracy: user-count error table: {LINE_EVERY_S:.0f} s elapsed",
        "accuracy: user-count error table: done in 7 s",
    ]


def test_work_that_fails_ends_with_a_stopped_line(caplog: pytest.LogCaptureFixture) -> None:
    console, _ = plain_console()
    clock = FakeClock()

    def replay() -> None:
        with Meter("replay", unit="messages", console=console, clock=clock) as meter:
            meter.update(0, 400)
            clock.now += 2
            meter.update(100)
            raise RuntimeError("unreadable batch")

    with pytest.raises(RuntimeError):
        replay()
    assert lines(caplog)[-1] == "replay: 100/400 messages (25%), 50/s, stopped after 2 s"


def test_on_a_terminal_a_bar_with_count_rate_and_eta_and_no_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    console, out = terminal_console()
    clock = FakeClock()
    with Meter("replay", 1_000, "messages", console=console, clock=clock) as meter:
        for _ in range(4):
            clock.now += 1
            meter.advance(100)
    drawn = out.getvalue()
    assert "\x1b[" in drawn  # escape sequences: colours, and the cursor moves of a live display
    assert "━" in drawn  # rich's bar
    assert "replay" in drawn
    assert "400/1,000 messages (40%), 100/s, done in 4 s" in drawn
    assert lines(caplog) == []


def test_on_a_terminal_log_lines_print_above_the_bar() -> None:
    console, out = terminal_console()
    original = sys.stderr
    handler = logging.StreamHandler(original)  # as logging.basicConfig makes it
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with Meter("replay", 10, "messages", console=console, clock=FakeClock()):
            logging.getLogger("stream.replay").warning("replaying 10 messages of 4 partitions")
            assert handler.stream is sys.stderr  # rich's proxy, while the bar is drawn
    finally:
        root.removeHandler(handler)
    drawn = out.getvalue()
    assert "replaying 10 messages of 4 partitions" in drawn
    assert drawn.index("replaying 10 messages") < drawn.rindex("0/10 messages")
    assert handler.stream is original
