"""Progress of long work (replay, produce, migrate, every phase of the bench): a bar on a terminal,
periodic log lines elsewhere.

On a terminal (standard error, as rich's ``Console.is_interactive`` judges it) it is a
``rich.progress`` bar with counts, rate and ETA. Elsewhere (CI, a log file) rich's live display
draws nothing until it stops, so the meter writes a line itself, through ``logging``, every
``every_s`` seconds and at every tenth of the total, and a last one when the work ends:
``replay: 120,000/500,000 messages (24%), 8,100/s, ETA 47 s``. Going through ``logging`` gives
those lines the process's log format (a timestamp; one JSON object per line with
``DEVACT_LOG_FORMAT=json``) instead of bare text among the log records. Both modes keep their
figures in the same rich ``Task`` (rate over its last 30 s, ETA) and word them with the same
function.

Callers may report per batch, as often as they like: a report costs an addition and a clock
read, and reaches rich at most ``1 / REFRESH_S`` times a second. Nothing is done per event.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

Clock = Callable[[], float]
"""Seconds, monotonic."""

REFRESH_S = 0.25
"""The shortest time between two updates that reach rich, and between two redraws of a bar."""
LINE_EVERY_S = 5.0
LINE_STEP_PERCENT = 10

_log = logging.getLogger(__name__)


class Meter:
    """One piece of long work's progress; a context manager around the work.

    ``total`` may be None while unknown (``update`` can give it later) or for work of unknown
    size; ``unit`` names what is counted (``"messages"``), and with no unit and no total the
    meter only shows the time spent waiting. ``rate=False`` leaves out the rate (a bar of
    seconds).
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        unit: str = "",
        *,
        rate: bool = True,
        console: Console | None = None,
        clock: Clock = time.monotonic,
        every_s: float = LINE_EVERY_S,
        log: logging.Logger = _log,
    ) -> None:
        self._console = console or Console(stderr=True)
        self._bar = self._console.is_interactive
        self._clock = clock
        self._every_s = every_s
        self._logger = log
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),  # a topic's name is no markup
            BarColumn(),
            _FiguresColumn(),
            console=self._console,
            get_time=clock,
            refresh_per_second=1 / REFRESH_S,
            redirect_stdout=False,  # stdout is the command's answer; it must not reach stderr
            disable=not self._bar,
        )
        self._task = self._progress.add_task(
            description, total=total, unit=unit, rate=rate, ended=None
        )
        self._done = 0
        self._total = total
        self._next_push = -math.inf
        self._last_line_at: float | None = None
        self._last_step = -1
        self._moved_logs: list[tuple[logging.StreamHandler[Any], IO[str]]] = []

    def __enter__(self) -> Meter:
        if self._bar:
            self._progress.start()
            self._moved_logs = _logs_above_the_bar()
        elif self._total is not None or not self._progress.tasks[0].fields["unit"]:
            self._push(self._clock())  # what it waits for, at once; a count waits for its total
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        ok = kind is None
        total = self._done if ok and self._total is None and self._done else self._total
        self._progress.update(
            self._task, completed=self._done, total=total, ended="done" if ok else "stopped"
        )
        self._progress.stop_task(self._task)  # freezes its elapsed time
        if self._bar:
            for handler, stream in self._moved_logs:
                handler.setStream(stream)
            self._progress.stop()
        else:
            self._line(self._clock())

    def advance(self, n: int = 1) -> None:
        """``n`` more done."""
        self._done += n
        now = self._clock()
        if now >= self._next_push:
            self._push(now)

    def update(self, completed: int, total: int | None = None) -> None:
        """``completed`` done so far, of ``total`` when given (it may become known late)."""
        self._done = completed
        if total is not None and total != self._total:
            self._total = total
            self._next_push = -math.inf
        now = self._clock()
        if now >= self._next_push:
            self._push(now)

    def poll(self) -> None:
        """Nothing new: lets a line come on time while the work waits for something."""
        now = self._clock()
        if now >= self._next_push:
            self._push(now)

    def _push(self, now: float) -> None:
        self._next_push = now + REFRESH_S
        self._progress.update(self._task, completed=self._done, total=self._total)
        if not self._bar and self._line_due(now):
            self._line(now)

    def _line_due(self, now: float) -> bool:
        if self._last_line_at is None:
            return True
        if self._total is not None and self._done >= self._total:
            return False  # all done: the line at the end says so, with the time it took
        if now - self._last_line_at >= self._every_s:
            return True
        return _step(self._done, self._total) > self._last_step

    def _line(self, now: float) -> None:
        self._last_line_at = now
        self._last_step = _step(self._done, self._total)
        task = self._progress.tasks[0]
        self._logger.info("%s: %s", task.description, figures(task))


def _step(done: int, total: int | None) -> int:
    """Which tenth of the total is reached (-1: no total)."""
    if total is None:
        return -1
    return 100 // LINE_STEP_PERCENT if total <= 0 else done * 100 // total // LINE_STEP_PERCENT


def figures(task: Task) -> str:
    """A task's count, share, rate and ETA (or time spent), in words: the text after the bar on
    a terminal, and after ``description:`` in a line."""
    unit: str = task.fields["unit"]
    ended: str | None = task.fields["ended"]
    done, total = int(task.completed), task.total
    elapsed = task.elapsed or 0.0
    parts = []
    if total is not None:
        share = 100 if total <= 0 else min(100, int(100 * done / total))
        parts.append(f"{done:,}/{int(total):,}{' ' + unit if unit else ''} ({share}%)")
    elif unit:
        parts.append(f"{done:,} {unit}")
    if task.fields["rate"] and (unit or total is not None):
        # Over the whole work once it ended; until then over its last 30 s (rich's window).
        speed = (done / elapsed if elapsed > 0 else None) if ended else task.speed
        if speed is not None:
            parts.append(f"{_number(speed)}/s")
    if ended:
        parts.append(f"{ended} {'in' if ended == 'done' else 'after'} {_duration(elapsed)}")
    elif total is None:
        parts.append(f"{_duration(elapsed)} elapsed")
    elif task.time_remaining is not None:
        parts.append(f"ETA {_duration(task.time_remaining)}")
    return ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}".removesuffix(".0")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _FiguresColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(figures(task))


def _logs_above_the_bar() -> list[tuple[logging.StreamHandler[Any], IO[str]]]:
    """While a bar is drawn rich puts a proxy in ``sys.stderr`` that prints above the bar, but the
    handlers logging was set up with still hold the real stream, and their lines would tear the
    bar: point them at the proxy. Returns what to put back."""
    real = getattr(sys.stderr, "rich_proxied_file", None)
    if real is None:
        return []
    moved = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is real:
            before = handler.setStream(sys.stderr)
            if before is not None:
                moved.append((handler, before))
    return moved
