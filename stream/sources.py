"""The exact source bytes of an array message's elements, for their dead letters (docs/events.md).

One scan per message finds where every element starts and ends, and each element's bytes are a
slice of the value: finding an element never starts again from the message's start. A scan that
started again for each element made judging an array of rejected elements quadratic in their
number (4,000 took 2 s, 200,000 would take an hour, all of it holding the event loop).

The scan goes only as far as asked, a step of 64 KiB at a time, so its caller can hand the event
loop back between steps whatever an element holds (``stream.dlq.to_records``). Each step is a
handful of numpy passes over its bytes instead of a Python loop over them: 1 MiB of nested empty
arrays took 23 ms to scan, 0.6 s with a Python loop of one regex match per bracket (on the 2-core
test machine, busy). It works
on the bytes, not on decoded text: every character it looks for is ASCII, and in UTF-8 no byte of
a multi-byte character is ASCII.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STEP_BYTES = 64 * 1024
"""Bytes one ``scan`` step covers: 2 to 6 ms of CPU for the worst shapes of bytes (brackets,
escaped quotes, runs of backslashes), on the same machine."""

_OTHER, _OPEN, _CLOSE, _COMMA, _QUOTE, _BACKSLASH = range(6)
_KINDS = bytearray(256)
for _chars, _kind in ((b"[{", _OPEN), (b"]}", _CLOSE), (b",", _COMMA), (b'"', _QUOTE),
                      (b"\\", _BACKSLASH)):  # fmt: skip
    for _char in _chars:
        _KINDS[_char] = _kind
_KIND_OF = bytes(_KINDS)
"""``bytes.translate`` table: each byte to its kind."""
_DEPTH_CHANGE = np.array([0, 1, -1, 0, 0, 0], dtype=np.int32)
"""By kind: how a bracket or brace outside strings changes the nesting depth."""
_JSON_WHITESPACE = b" \t\n\r"

Positions = npt.NDArray[np.intp]


class ArraySource:
    """The elements of one JSON array value (one that parsed), found by a scan that resumes
    where it stopped, with its state (depth, inside a string, escaped) carried between steps.
    No recursion: an element nested 1,024 deep (as deep as orjson reads) costs nothing more."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._pos = self._start = raw.index(b"[") + 1
        self._depth = 0
        """Nesting depth inside the element being scanned (0: between elements)."""
        self._in_string = False
        self._escaped = False
        """The next byte is escaped: the step before ended in a backslash that escapes it."""
        self._bounds: list[tuple[int, int]] = []
        """Per element found, where it starts and ends, whitespace around it included."""
        self._done = False

    @property
    def scanned(self) -> int:
        """Bytes scanned so far: each byte of the value is scanned once at most."""
        return self._pos

    def found(self, index: int) -> bool:
        """Whether the scan has gone past element ``index`` (or past the array's end)."""
        return index < len(self._bounds) or self._done

    def element(self, index: int) -> bytes:
        """The exact source bytes of element ``index``, once :meth:`found`."""
        start, end = self._bounds[index]
        return self._raw[start:end].strip(_JSON_WHITESPACE)

    def scan(self, size: int = STEP_BYTES) -> None:
        """Scan the next ``size`` bytes, recording every element that ends in them."""
        if self._done:
            return
        base, stop = self._pos, min(self._pos + size, len(self._raw))
        if base >= stop:
            raise ValueError("not a JSON array: it never ends")  # parsed values always do
        kinds = np.frombuffer(self._raw[base:stop].translate(_KIND_OF), dtype=np.uint8)
        at = np.flatnonzero(kinds)
        kind = kinds[at]
        quotes = self._unescaped(kinds, at[kind == _QUOTE])
        marks = (kind == _OPEN) | (kind == _CLOSE) | (kind == _COMMA)
        at, kind = at[marks], kind[marks]
        # A mark is inside a string when an odd number of quotes (with the carried state)
        # precede it.
        outside = ((np.searchsorted(quotes, at) + self._in_string) & 1) == 0
        at, kind = at[outside], kind[outside]
        change = _DEPTH_CHANGE[kind]
        depth_after = self._depth + np.cumsum(change, dtype=np.int32)
        # Between elements, a comma ends one, and a closing bracket ends the last and the array.
        ends = at[(depth_after - change == 0) & (kind != _OPEN)]
        self._in_string = bool((self._in_string + len(quotes)) & 1)
        self._depth = int(depth_after[-1]) if len(depth_after) else self._depth
        self._pos = stop
        for end in (ends + base).tolist():
            self._bounds.append((self._start, end))
            self._start = end + 1
            if self._raw[end] == ord("]"):
                self._done = True
                break

    def _unescaped(self, kinds: npt.NDArray[np.uint8], quotes: Positions) -> Positions:
        """The ``quotes`` (positions in this step) that no backslash escapes; carries the
        escape of the step's first byte over from the step before, and of the next one on.

        A byte is escaped when the run of backslashes right before it is odd (backslashes
        appear only in strings, where each escapes the byte after it); a run that reaches back
        to the step's start counts one more when the step before ended escaping.
        """
        slash = kinds == _BACKSLASH
        if not self._escaped and not slash.any():
            return quotes
        count = np.cumsum(slash, dtype=np.int32)  # backslashes up to and including each byte
        run = count - np.maximum.accumulate(np.where(slash, 0, count))  # the run ending there
        before = np.where(quotes > 0, run[np.maximum(quotes - 1, 0)], 0)
        reaches_start = before == quotes
        escaped = ((before + (reaches_start & self._escaped)) & 1) == 1
        last = int(run[-1])
        self._escaped = bool((last + (last == len(kinds) and self._escaped)) & 1)
        unescaped: Positions = quotes[~escaped]
        return unescaped


def original_bytes(raw: bytes, index: int | None) -> bytes:
    """The exact source bytes of an event, for the DLQ: the whole value, or the element's slice
    of a JSON array (for one element; for several of a message, reuse one ``ArraySource``)."""
    if index is None:
        return raw
    source = ArraySource(raw)
    while not source.found(index):
        source.scan()
    return source.element(index)
