"""docs/events.md, ``message_too_large``: a message over the byte cap or the element cap is one
dead letter holding the whole value; a message at a cap is judged event by event as always.

Messages are built to an exact size here, so each is known to sit at, or one past, its cap.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from stream.dlq import to_records
from stream.model import MAX_MESSAGE_BYTES, MAX_MESSAGE_ELEMENTS, MessageLimits, Rejection
from stream.plan import Message, decode_batch, plan_batch
from stream.settings import WorkerSettings

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
GOOD = (
    '{"client_id": "' + CLIENT + '", "device_id": "' + DEVICE + '", "user_id": "u",'
    ' "generated_at_utc": "2026-03-09T12:00:00Z", "total_activity_count": 3}'
).encode()


def zeros(count: int) -> bytes:
    """A JSON array of ``count`` zeros: ``count`` events, none of them an object."""
    return b"[" + b",".join([b"0"] * count) + b"]"


def of_size(size: int) -> bytes:
    """The valid heartbeat GOOD, padded with spaces to exactly ``size`` bytes."""
    assert size >= len(GOOD)
    return GOOD + b" " * (size - len(GOOD))


async def go_on() -> None:
    """A pace that never pauses."""


def dead_letters(value: bytes, limits: MessageLimits) -> list[tuple[str, int | None, bytes]]:
    """(reason, element index, the record's bytes) of each dead letter of one message."""
    message = Message("heartbeats", 2, 17, b"key", value)
    plan = plan_batch(decode_batch([message], NOW, limits), {CLIENT: "UTC"}, NOW, 400)
    records = asyncio.run(to_records(plan.dead_letters, go_on))
    return [
        (d.rejection.reason, d.index, r.value)
        for d, r in zip(plan.dead_letters, records, strict=True)
    ]


def test_an_array_at_the_element_cap_is_judged_element_by_element() -> None:
    value = zeros(MAX_MESSAGE_ELEMENTS)
    letters = dead_letters(value, MessageLimits())
    assert letters == [("not_an_object", i, b"0") for i in range(MAX_MESSAGE_ELEMENTS)]


def test_an_array_one_past_the_element_cap_is_one_dead_letter_of_the_whole_message() -> None:
    value = zeros(MAX_MESSAGE_ELEMENTS + 1)
    assert dead_letters(value, MessageLimits()) == [("message_too_large", None, value)]


def test_the_element_cap_counts_valid_events_too() -> None:
    value = b"[" + b",".join([GOOD] * 4) + b"]"
    assert dead_letters(value, MessageLimits(max_elements=4)) == []
    assert dead_letters(value, MessageLimits(max_elements=3)) == [
        ("message_too_large", None, value)
    ]


@pytest.mark.parametrize("size", [len(GOOD), MAX_MESSAGE_BYTES], ids=["small", "at-cap"])
def test_a_value_at_the_byte_cap_is_judged(size: int) -> None:
    assert dead_letters(of_size(size), MessageLimits()) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(of_size(MAX_MESSAGE_BYTES + 1), id="valid-heartbeat"),
        pytest.param(zeros(MAX_MESSAGE_BYTES // 2), id="array-under-no-cap"),
        pytest.param(b"\xff" * (MAX_MESSAGE_BYTES + 1), id="not-utf8"),
    ],
)
def test_a_value_past_the_byte_cap_is_one_dead_letter_of_the_whole_message(value: bytes) -> None:
    assert len(value) == MAX_MESSAGE_BYTES + 1
    assert dead_letters(value, MessageLimits()) == [("message_too_large", None, value)]


def test_the_dead_letter_says_which_cap_and_by_how_much() -> None:
    message = Message("heartbeats", 0, 0, None, zeros(11))
    [judged] = decode_batch([message], NOW, MessageLimits(max_elements=10))
    assert judged.element.verdict == Rejection(
        "message_too_large", "an array of 11 events, more than the 10 allowed"
    )
    [judged] = decode_batch([message], NOW, MessageLimits(max_bytes=22))
    assert judged.element.verdict == Rejection(
        "message_too_large", "the value is 23 bytes, more than the 22 allowed"
    )


def test_an_empty_array_stays_empty_array_whatever_the_caps() -> None:
    assert dead_letters(b"[]", MessageLimits(max_bytes=2, max_elements=1)) == [
        ("empty_array", None, b"[]")
    ]


def test_the_worker_settings_give_the_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVACT_MAX_MESSAGE_BYTES", raising=False)
    monkeypatch.delenv("DEVACT_MAX_MESSAGE_ELEMENTS", raising=False)
    assert WorkerSettings().message_limits() == MessageLimits(1024 * 1024, 10_000)
    monkeypatch.setenv("DEVACT_MAX_MESSAGE_BYTES", "5000")
    monkeypatch.setenv("DEVACT_MAX_MESSAGE_ELEMENTS", "50")
    assert WorkerSettings().message_limits() == MessageLimits(5000, 50)
