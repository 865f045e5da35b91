"""Dead letters keep the exact source bytes of a rejected array element, whatever its shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream.model import Rejection, decode
from stream.sources import original_bytes

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def test_a_deeply_nested_element_is_sliced_without_recursion() -> None:
    nested = "[" * 1000 + "]" * 1000  # orjson accepts up to 1,024 levels
    raw = f'[{nested} , {{"x": 1}}]'.encode()
    assert original_bytes(raw, 0) == nested.encode()
    assert original_bytes(raw, 1) == b'{"x": 1}'


@pytest.mark.parametrize(
    "elements",
    [
        ['"a,]b"', '"\\\\"', '"\\"]"'],  # commas, brackets, escapes inside strings
        ["{}", "[]", '{"a": [1, {"b": "]"}]}'],
        ['"\u00e9\u4e2d"', "1e5", "null"],
    ],
)
def test_elements_are_sliced_exactly_between_commas_and_whitespace(elements: list[str]) -> None:
    raw = ("[ " + " ,\n\t".join(elements) + "\r\n]").encode()
    assert [original_bytes(raw, i) for i in range(len(elements))] == [e.encode() for e in elements]


def test_an_empty_value_is_invalid_json() -> None:
    [element] = decode(b"", NOW)
    assert isinstance(element.verdict, Rejection)
    assert element.verdict.reason == "invalid_json"
