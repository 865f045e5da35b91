"""docs/events.md dead letters: the original bytes (of the element, for an array), the original
key, and the reason in a header; through ``stream.dlq.to_record``.

Array values are assembled from element texts written by hand, so each element's expected bytes
are known without parsing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream.dlq import to_record
from stream.model import Rejection
from stream.plan import DeadLetter, Message, decode_batch, plan_batch

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"

GOOD = (
    '{"client_id": "' + CLIENT + '", "device_id": "' + DEVICE + '", "user_id": "Zoë",'
    ' "generated_at_utc": "2026-03-09T12:00:00Z", "total_activity_count": 3}'
)
BAD_COUNT = GOOD.replace('"total_activity_count": 3', '"total_activity_count" :\t-1 ')
NOT_AN_OBJECT = '"ünïcode, [not] an {object}"'
ARRAY = "[\n  " + GOOD + " ,\n  " + BAD_COUNT + ",\r\n\t" + NOT_AN_OBJECT + "\n]"


def single(value: bytes, key: bytes | None = b"device-key") -> Message:
    return Message("heartbeats", 3, 4711, key, value)


def headers_of(letter: DeadLetter) -> dict[str, bytes]:
    names = [name for name, _ in to_record(letter).headers]
    assert len(names) == len(set(names)), names
    return dict(to_record(letter).headers)


def test_headers_carry_reason_detail_and_source_topic_partition_offset() -> None:
    letter = DeadLetter(single(b"{"), None, Rejection("invalid_json", "value is not JSON: eof"))
    assert to_record(letter).headers == [
        ("reason", b"invalid_json"),
        ("detail", b"value is not JSON: eof"),
        ("source", b"heartbeats/3/4711"),
    ]


def test_detail_header_is_utf8() -> None:
    letter = DeadLetter(single(b"{}"), None, Rejection("invalid_field", "user_id: 'Zoë 😀'", "x"))
    assert headers_of(letter)["detail"] == "user_id: 'Zoë 😀'".encode()


@pytest.mark.parametrize(
    ("rejection", "field"),
    [
        pytest.param(
            Rejection("missing_field", "device_id is required", "device_id"),
            b"device_id",
            id="missing",
        ),
        pytest.param(
            Rejection("invalid_field", "bad", "total_activity_count"),
            b"total_activity_count",
            id="invalid",
        ),
        pytest.param(Rejection("not_an_object", "expected a JSON object"), None, id="no-field"),
        pytest.param(Rejection("event_too_old", "past retention"), None, id="too-old"),
    ],
)
def test_field_header_is_present_only_when_the_rejection_names_a_field(
    rejection: Rejection, field: bytes | None
) -> None:
    assert headers_of(DeadLetter(single(b"{}"), None, rejection)).get("field") == field


@pytest.mark.parametrize(
    ("index", "element"),
    [
        pytest.param(None, None, id="single-event"),
        pytest.param(0, b"0", id="first-element"),
        pytest.param(2, b"2", id="third-element"),
    ],
)
def test_element_header_is_present_only_for_array_elements(
    index: int | None, element: bytes | None
) -> None:
    value = ARRAY.encode() if index is not None else GOOD.encode()
    letter = DeadLetter(single(value), index, Rejection("event_too_old", "past retention"))
    assert headers_of(letter).get("element") == element


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"f1e2d3c4-b5a6-7890-abcd-ef1234567890", id="device-id"),
        pytest.param(b"\x00\xffbinary", id="binary"),
        pytest.param(None, id="no-key"),
    ],
)
def test_key_is_the_original_key(key: bytes | None) -> None:
    letter = DeadLetter(single(b"{", key), None, Rejection("invalid_json", "eof"))
    assert to_record(letter).key == key


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\xff\xfe not utf-8 \x80", id="not-utf8"),
        pytest.param(b"  {not json  \n", id="not-json"),
        pytest.param(ARRAY.encode(), id="whole-array-when-no-index"),
    ],
)
def test_value_of_a_whole_message_rejection_is_the_original_value(value: bytes) -> None:
    letter = DeadLetter(single(value), None, Rejection("invalid_json", "whatever"))
    assert to_record(letter).value == value


@pytest.mark.parametrize(
    ("index", "element"),
    [(0, GOOD), (1, BAD_COUNT), (2, NOT_AN_OBJECT)],
)
def test_value_of_an_array_element_is_that_elements_original_bytes(
    index: int, element: str
) -> None:
    letter = DeadLetter(single(ARRAY.encode()), index, Rejection("event_too_old", "old"))
    assert to_record(letter).value == element.encode("utf-8")


def test_records_of_a_planned_batch_carry_each_rejected_elements_bytes() -> None:
    gateway = Message("heartbeats", 0, 99, None, ARRAY.encode())
    broken = Message("heartbeats", 1, 5, b"dev", b"\xc3")
    plan = plan_batch(decode_batch([gateway, broken], NOW), {CLIENT: "UTC"}, NOW, 400)

    records = [to_record(letter) for letter in plan.dead_letters]
    assert [(r.key, r.value) for r in records] == [
        (None, BAD_COUNT.encode()),
        (None, NOT_AN_OBJECT.encode()),
        (b"dev", b"\xc3"),
    ]
    headers = [dict(r.headers) for r in records]
    assert all(h.pop("detail") for h in headers)  # wording is free, presence is not
    assert headers == [
        {
            "reason": b"invalid_field",
            "source": b"heartbeats/0/99",
            "field": b"total_activity_count",
            "element": b"1",
        },
        {"reason": b"not_an_object", "source": b"heartbeats/0/99", "element": b"2"},
        {"reason": b"invalid_utf8", "source": b"heartbeats/1/5"},
    ]
