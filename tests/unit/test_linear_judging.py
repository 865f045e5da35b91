"""Judging a message costs time in proportion to its size, whatever it holds (issue: "the service
holds under crowds and hostile input").

What made it quadratic: the dead letter of array element i was given its original bytes by a
scan of the message from its start, for each i. Now one scan per message serves all its dead
letters; these tests count the bytes scanned instead of timing anything. A value shown in a
rejection's detail is cut to 80 characters without writing all of it out first.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream.dlq
from stream.dlq import DeadLetterRecord, to_records
from stream.model import Rejection, validate
from stream.plan import DeadLetter, Message, decode_batch, plan_batch
from stream.sources import STEP_BYTES, ArraySource, original_bytes

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"

ELEMENT_TEXTS = [
    "0",
    ' {"a": [1, "x,]\\"", {"b": {}}]}',
    '"\u00e9,[\\\\"',
    "\n[[], [[]]]\t",
    "null",
]
"""Elements of every shape, with whitespace around some: commas, brackets, escapes and
multi-byte characters inside strings, nesting. Element i of an array is ELEMENT_TEXTS[i % 5]."""


def array_of(count: int) -> tuple[bytes, list[bytes]]:
    """An array value of ``count`` elements, and each element's exact source bytes."""
    texts = [ELEMENT_TEXTS[i % len(ELEMENT_TEXTS)] for i in range(count)]
    raw = ("[" + ",".join(texts) + "]").encode()
    return raw, [t.strip(" \t\n\r").encode() for t in texts]


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> list[ArraySource]:
    """Every ArraySource that stream.dlq makes during the test, to add up their scans."""
    made: list[ArraySource] = []

    class Remembered(ArraySource):
        def __init__(self, raw: bytes) -> None:
            super().__init__(raw)
            made.append(self)

    monkeypatch.setattr(stream.dlq, "ArraySource", Remembered)
    return made


class Paces:
    """A ``pace`` for ``to_records`` that counts its calls and never pauses."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


def records_of(letters: list[DeadLetter], pace: Paces | None = None) -> list[DeadLetterRecord]:
    return asyncio.run(to_records(letters, pace or Paces()))


def rejected_letters(raw: bytes, offset: int = 0) -> list[DeadLetter]:
    """The dead letters of one message, as the worker plans them (all its elements are
    rejected: none is a heartbeat)."""
    message = Message("heartbeats", 0, offset, b"key", raw)
    return plan_batch(decode_batch([message], NOW), {}, NOW, 400).dead_letters


# --- the original bytes of many elements: one scan ------------------------------------------


@pytest.mark.parametrize("count", [2_000, 8_000])
def test_the_bytes_of_every_rejected_element_come_from_one_scan_of_the_message(
    sources: list[ArraySource], count: int
) -> None:
    raw, expected = array_of(count)
    letters = rejected_letters(raw)
    assert len(letters) == count
    assert [r.value for r in records_of(letters)] == expected
    assert len(sources) == 1
    assert sources[0].scanned == len(raw)


def test_letters_out_of_element_order_are_served_by_the_same_scan(
    sources: list[ArraySource],
) -> None:
    raw, expected = array_of(40)
    message = Message("heartbeats", 0, 0, None, raw)
    order = [5, 2, 39, 7, 2, 0]  # device_client_mismatch letters come after the others
    letters = [DeadLetter(message, i, Rejection("event_too_old", "old")) for i in order]
    assert [r.value for r in records_of(letters)] == [expected[i] for i in order]
    assert len(sources) == 1
    assert sources[0].scanned == len(raw)


def test_each_message_gets_a_scan_of_its_own(sources: list[ArraySource]) -> None:
    raw, expected = array_of(10)
    letters = rejected_letters(raw, offset=1) + rejected_letters(raw, offset=2)
    assert [r.value for r in records_of(letters)] == expected + expected
    assert [s.scanned for s in sources] == [len(raw), len(raw)]


def test_a_scan_goes_no_further_than_the_element_asked_for() -> None:
    raw, expected = array_of(100)
    source = ArraySource(raw)
    while not source.found(3):
        source.scan(1)
    assert source.element(3) == expected[3]
    through_element_3 = ("[" + ",".join(ELEMENT_TEXTS[:4]) + ",").encode()
    assert raw.startswith(through_element_3)
    assert source.scanned == len(through_element_3)


def test_a_long_element_is_scanned_in_steps_with_a_pace_between_them() -> None:
    inner = "[" + ",".join(["[]"] * (2 * STEP_BYTES)) + "]"  # 6 steps of brackets
    raw = f"[0, {inner}, 1]".encode()
    message = Message("heartbeats", 0, 0, None, raw)
    letters = [DeadLetter(message, 2, Rejection("not_an_object", "a number"))]
    pace = Paces()
    assert [r.value for r in records_of(letters, pace)] == [b"1"]
    assert pace.calls >= len(raw) // STEP_BYTES


def test_one_elements_bytes_alone_are_found_as_before() -> None:
    raw, expected = array_of(12)
    assert [original_bytes(raw, i) for i in range(12)] == expected
    assert original_bytes(raw, None) == raw


# --- the scan, in steps of any size ------------------------------------------------------------


def elements_one_character_at_a_time(raw: bytes) -> list[bytes]:
    """The reference: each element's text, by a loop over the decoded text that follows
    strings, escapes and nesting one character at a time (what stream/model.py did before)."""
    text = raw.decode()
    found, depth, in_string, escaped = [], 0, False, False
    start = text.index("[") + 1
    for pos in range(start, len(text)):
        char = text[pos]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}" and depth > 0:
            depth -= 1
        elif char in ",]" and depth == 0:
            found.append(text[start:pos].strip(" \t\n\r").encode())
            start = pos + 1
            if char == "]":
                return found
    raise AssertionError("the array never ends")


TRICKY_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}"\\ \u00e9\u4e2d\U0001f600'), max_size=12)
"""Strings full of what the scan must not take for structure: escaped quotes and backslashes
in runs, brackets, commas, multi-byte characters."""
ARRAYS = st.lists(
    st.recursive(
        st.none() | st.integers() | TRICKY_TEXT,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
        ),
        max_leaves=12,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(ARRAYS, st.sampled_from([None, 0, 2]), st.integers(min_value=1, max_value=9))
def test_a_scan_in_steps_of_any_size_finds_each_element_exactly(
    elements: list[Any], indent: int | None, step: int
) -> None:
    raw = json.dumps(elements, ensure_ascii=False, indent=indent).encode()
    source = ArraySource(raw)
    while not source.found(len(elements) - 1):
        source.scan(step)
    found = [source.element(i) for i in range(len(elements))]
    assert found == elements_one_character_at_a_time(raw)
    assert [json.loads(f) for f in found] == elements


# --- a value shown in a detail ---------------------------------------------------------------


def detail_of(value: Any) -> str:
    verdict = validate({"client_id": value, "device_id": DEVICE}, NOW)
    assert isinstance(verdict, Rejection), verdict
    return verdict.detail


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES.filter(lambda v: not isinstance(v, str) and v is not None))
def test_a_value_is_shown_as_its_repr_cut_to_80_characters(value: Any) -> None:
    assert detail_of(value) == f"client_id: not a UUID: {value!r:.80}"


def test_a_value_nested_1000_deep_is_shown_without_recursing_1000_deep() -> None:
    value = orjson.loads("[" * 1_000 + "]" * 1_000)  # deeper than repr() can go here
    assert detail_of(value) == "client_id: not a UUID: " + "[" * 80


def test_a_large_value_is_shown_by_its_first_80_characters() -> None:
    value = [0] * 500_000
    assert detail_of(value) == "client_id: not a UUID: " + "[" + "0, " * 26 + "0"
