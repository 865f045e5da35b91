"""A closed-loop HTTP/1.1 load of many connections, for the pressure section (bench/pressure.py).

Each connection sends a request, waits for its whole answer, and sends the next, for a warm-up
and then the measured window, without reconnecting in between. Counted, with its status and its
latency from its sending: every request answered from the window's start on (one sent during
the warm-up included) and every request still in flight at the window's end, waited for up to
``DRAIN_S`` (then counted as ``unanswered``). So a connection the server leaves waiting for
seconds counts with its wait, at whichever end of the window it falls; ``wrk`` drops the
requests still in flight when its run ends, which at 1,024 connections on one saturated process
are many, and among the slowest. Requests per second: answers that arrived within the window,
over its length.

An answer 503 with Retry-After (the API's in-flight limit, api/overload.py) is followed by that
wait before the connection's next request, as a well-behaved client does. Without it, a
connection refused at once asks again at once: the few connections beyond the limit then spin
on fast 503s, whose count says more about the client than about the server.

Plain asyncio protocols with requests formatted beforehand: a response costs this process a few
tens of microseconds (reported as ``loadgen_cpu_pct``), against about a millisecond of the API's.
Only 127.0.0.1 is targeted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

DRAIN_S = 30.0
"""Longest wait, after the window, for the answers of requests sent in it; those still missing
then are counted as errors (``unanswered``)."""
CONNECT_DEADLINE_S = 60.0
MAX_RETRY_AFTER_S = 5.0


@dataclass
class Tally:
    """The requests counted: statuses and latencies (seconds)."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ok_latencies: list[float] = field(default_factory=list)
    """Those of the answers 200 alone."""
    in_window: int = 0
    """Answers that arrived within the window (whenever their request was sent)."""
    ok_in_window: int = 0
    first_answers: list[float] = field(default_factory=list)
    """Per connection, from the first request (all sent at once, as the warm-up starts) to its
    answer: how long a crowd that has just connected waits for its first answers."""
    retry_waits: int = 0
    """Answers 503 with Retry-After in the window, after which the connection waited."""


@dataclass
class Window:
    start: float
    """Monotonic time the measured window starts; before it, the warm-up."""
    end: float

    def sending(self, now: float) -> bool:
        return now < self.end


def _header(head: bytes, name: bytes) -> bytes | None:
    """A header's value, from a lower-cased head."""
    found = head.find(b"\r\n" + name + b":")
    if found < 0:
        return None
    start = found + len(name) + 3
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else len(head)].strip()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers framed by Content-Length. An
    answer 503 with Retry-After is followed by that wait (at most ``MAX_RETRY_AFTER_S``), as a
    well-behaved client does, and the next request."""

    def __init__(
        self, pick: Callable[[], bytes], window: Window, tally: Tally, idle: Callable[[], None]
    ) -> None:
        self._pick, self._window, self._tally, self._idle = pick, window, tally, idle
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._sent_at: float | None = None
        self._answered = 0

    @property
    def unanswered(self) -> bool:
        """A request is still waiting for its answer."""
        return self._sent_at is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self) -> None:
        assert self._transport is not None
        now = time.monotonic()
        if self._transport.is_closing() or not self._window.sending(now):
            self._sent_at = None
            self._idle()
            return
        self._sent_at = now
        self._transport.write(self._pick())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._sent_at is None:
            return
        head = self._buffer[:end].lower()
        length = _header(head, b"content-length")
        if length is None:
            self._fail("no_content_length")
            return
        if len(self._buffer) < end + 4 + int(length):
            return
        self._buffer = self._buffer[end + 4 + int(length) :]
        status, latency = head[9:12].decode(), now - self._sent_at
        self._sent_at = None
        if not self._answered:
            self._tally.first_answers.append(latency)
        self._answered += 1
        tally, window = self._tally, self._window
        if now >= window.start:
            tally.statuses[status] += 1
            tally.latencies.append(latency)
            if status == "200":
                tally.ok_latencies.append(latency)
        if window.start <= now < window.end:
            tally.in_window += 1
            tally.ok_in_window += status == "200"
        retry_after = _header(head, b"retry-after") if status == "503" else None
        if retry_after is not None and retry_after.isdigit():
            tally.retry_waits += now >= window.start
            wait = min(MAX_RETRY_AFTER_S, float(retry_after))
            asyncio.get_running_loop().call_later(wait, self.send)
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sent_at is not None:
            self._fail("socket_closed")

    def _fail(self, reason: str) -> None:
        if self._sent_at is not None and time.monotonic() >= self._window.start:
            self._tally.statuses[reason] += 1
        self._sent_at = None
        if self._transport is not None:
            self._transport.close()
        self._idle()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def closed_loop(
    port: int,
    requests: Sequence[bytes],
    connections: int,
    warmup_s: float,
    duration_s: float,
    seed: int,
    at_window: Callable[[str], Awaitable[None]],
) -> Tally:
    """``connections`` connections to 127.0.0.1:``port``, each sending random ``requests`` one
    after the other for ``warmup_s`` then ``duration_s``. ``at_window("start")`` and
    ``at_window("end")`` are called as the measured window opens and closes (to read CPU
    counters). Bounded: connects within ``CONNECT_DEADLINE_S``, drains within ``DRAIN_S``."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    tally = Tally()
    window = Window(float("inf"), float("inf"))
    idle = asyncio.Event()
    busy = connections

    def one_idle() -> None:
        nonlocal busy
        busy -= 1
        if busy == 0:
            idle.set()

    def pick() -> bytes:
        return requests[rng.randrange(len(requests))]

    opened: list[_Connection] = []
    try:
        async with asyncio.timeout(CONNECT_DEADLINE_S):
            for _ in range(connections):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(pick, window, tally, one_idle), "127.0.0.1", port
                )
                opened.append(protocol)
        now = time.monotonic()
        window.start, window.end = now + warmup_s, now + warmup_s + duration_s
        for connection in opened:
            connection.send()
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        await at_window("start")
        await asyncio.sleep(max(0.0, window.end - time.monotonic()))
        await at_window("end")
        try:
            async with asyncio.timeout(DRAIN_S):
                await idle.wait()
        except TimeoutError:
            pass
        unanswered = sum(1 for c in opened if c.unanswered)
        if unanswered:
            tally.statuses["unanswered"] += unanswered
    finally:
        for connection in opened:
            connection.close()
    return tally


def request(path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
