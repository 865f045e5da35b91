"""docs/events.md heartbeat rules, one test per rule, through ``stream.model``.

Events are written as JSON text and judged through ``decode`` (the worker's path), so "3.0" or
"true" reach the validator exactly as a producer sent them. Expected values are written out by
hand: lower-cased UUIDs as literals, UTC instants from known offsets.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stream.model import Element, Heartbeat, Rejection, decode, validate
from stream.sources import original_bytes

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
CLIENT_UPPER = "AA7CF840-9CA9-46A3-9778-9015D6580D50"
DEVICE_MIXED = "F1e2D3c4-B5a6-7890-AbCd-eF1234567890"

REQUIRED_FIELDS = ("client_id", "device_id", "generated_at_utc", "total_activity_count")
ABSENT = object()
"""Marks a field to leave out of the event."""


def event(**changes: Any) -> dict[str, Any]:
    """The contract's example event, with fields replaced or (with ``ABSENT``) left out."""
    base: dict[str, Any] = {
        "client_id": CLIENT,
        "device_id": DEVICE,
        "user_id": "u-1842",
        "generated_at_utc": "2026-01-15T13:45:00Z",
        "total_activity_count": 12,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not ABSENT}


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def judge(raw: bytes, now: datetime = NOW) -> Heartbeat | Rejection:
    """The verdict on a message value that holds a single event."""
    elements = decode(raw, now)
    assert len(elements) == 1
    assert elements[0].index is None
    return elements[0].verdict


def accepted(doc: Any, now: datetime = NOW) -> Heartbeat:
    verdict = judge(encode(doc), now)
    assert isinstance(verdict, Heartbeat), verdict
    return verdict


def refused(doc: Any, now: datetime = NOW) -> Rejection:
    verdict = judge(encode(doc), now)
    assert isinstance(verdict, Rejection), verdict
    return verdict


# --- client_id, device_id -------------------------------------------------------------------


def test_the_spec_example_event_is_accepted_as_written() -> None:
    assert accepted(event()) == Heartbeat(
        client_id=CLIENT,
        device_id=DEVICE,
        user_id="u-1842",
        generated_at=datetime(2026, 1, 15, 13, 45, tzinfo=UTC),
        count=12,
    )


def test_uuids_in_any_case_are_stored_lower_case() -> None:
    heartbeat = accepted(event(client_id=CLIENT_UPPER, device_id=DEVICE_MIXED))
    assert heartbeat.client_id == "aa7cf840-9ca9-46a3-9778-9015d6580d50"
    assert heartbeat.device_id == "f1e2d3c4-b5a6-7890-abcd-ef1234567890"


NON_CANONICAL_UUIDS = [
    pytest.param("aa7cf8409ca946a397789015d6580d50", id="no-hyphens"),
    pytest.param("{aa7cf840-9ca9-46a3-9778-9015d6580d50}", id="braces"),
    pytest.param("urn:uuid:aa7cf840-9ca9-46a3-9778-9015d6580d50", id="urn"),
    pytest.param("aa7cf840-9ca9-46a3-9778-9015d6580d5", id="one-digit-short"),
    pytest.param("aa7cf840-9ca9-46a3-9778-9015d6580d50\n", id="trailing-newline"),
    pytest.param(" aa7cf840-9ca9-46a3-9778-9015d6580d50", id="leading-space"),
    pytest.param("ga7cf840-9ca9-46a3-9778-9015d6580d50", id="non-hex-digit"),
    pytest.param("aa7cf840-9ca946a3-9778-9015d6580d50", id="hyphen-missing-inside"),
    pytest.param("", id="empty"),
    pytest.param(42, id="number"),
    pytest.param(["aa7cf840-9ca9-46a3-9778-9015d6580d50"], id="array"),
]


@pytest.mark.parametrize("name", ["client_id", "device_id"])
@pytest.mark.parametrize("value", NON_CANONICAL_UUIDS)
def test_non_canonical_uuid_forms_are_invalid_field(name: str, value: object) -> None:
    rejection = refused(event(**{name: value}))
    assert rejection.reason == "invalid_field"
    assert rejection.field == name


# --- user_id --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id", [pytest.param(None, id="null"), pytest.param(ABSENT, id="absent")]
)
def test_user_id_null_or_absent_means_nobody_signed_in(user_id: object) -> None:
    assert accepted(event(user_id=user_id)).user_id is None


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("a", id="one-char"),
        pytest.param("a" * 256, id="256-ascii"),
        pytest.param("é" * 256, id="256-two-byte-chars"),
        pytest.param("😀" * 256, id="256-astral-chars"),
        pytest.param(" ", id="a-space-is-not-empty"),
    ],
)
def test_user_id_of_1_to_256_characters_is_kept_as_given(user_id: str) -> None:
    assert accepted(event(user_id=user_id)).user_id == user_id


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 257, id="257-ascii"),
        pytest.param("é" * 257, id="257-two-byte-chars"),
    ],
)
def test_user_id_empty_or_over_256_characters_is_refused(user_id: str) -> None:
    rejection = refused(event(user_id=user_id))
    assert (rejection.reason, rejection.field) == ("invalid_field", "user_id")


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param(1842, id="integer"),
        pytest.param(18.5, id="float"),
        pytest.param(True, id="bool"),
        pytest.param(["u-1842"], id="array"),
        pytest.param({"id": "u-1842"}, id="object"),
    ],
)
def test_user_id_that_is_not_a_string_is_refused(user_id: object) -> None:
    rejection = refused(event(user_id=user_id))
    assert (rejection.reason, rejection.field) == ("invalid_field", "user_id")


def test_one_megabyte_user_id_is_refused_with_a_short_detail() -> None:
    rejection = refused(event(user_id="x" * 1_000_000))
    assert (rejection.reason, rejection.field) == ("invalid_field", "user_id")
    assert len(rejection.detail) < 1_000  # it travels in a Kafka header


# --- generated_at_utc -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        pytest.param("2026-01-15T13:45:00Z", datetime(2026, 1, 15, 13, 45), id="Z"),
        pytest.param(
            "2026-01-15T13:45:00.250Z", datetime(2026, 1, 15, 13, 45, 0, 250_000), id="ms"
        ),
        pytest.param("2026-01-15T13:45:00+00:00", datetime(2026, 1, 15, 13, 45), id="+00:00"),
    ],
)
def test_generated_at_with_z_is_that_utc_instant(text: str, instant: datetime) -> None:
    generated_at = accepted(event(generated_at_utc=text)).generated_at
    assert generated_at == instant.replace(tzinfo=UTC)
    assert generated_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "utc_wall_time"),
    [
        # 13:45 at +05:45 (Kathmandu) is 08:00 UTC.
        pytest.param("2026-01-15T13:45:00+05:45", datetime(2026, 1, 15, 8, 0), id="+05:45"),
        # 05:00 at +12:45 (Chatham) is 16:15 UTC on the previous day.
        pytest.param("2026-01-15T05:00:00+12:45", datetime(2026, 1, 14, 16, 15), id="+12:45"),
        # 22:00 at -03:30 (Newfoundland) is 01:30 UTC on the next day.
        pytest.param("2026-01-14T22:00:00-03:30", datetime(2026, 1, 15, 1, 30), id="-03:30"),
    ],
)
def test_generated_at_with_an_offset_is_converted_to_utc(
    text: str, utc_wall_time: datetime
) -> None:
    generated_at = accepted(event(generated_at_utc=text)).generated_at
    assert generated_at == utc_wall_time.replace(tzinfo=UTC)
    assert generated_at.utcoffset() == timedelta(0)


def test_generated_at_without_an_offset_is_utc() -> None:
    generated_at = accepted(event(generated_at_utc="2026-01-15T13:45:00")).generated_at
    assert generated_at == datetime(2026, 1, 15, 13, 45, tzinfo=UTC)
    assert generated_at.utcoffset() == timedelta(0)


@pytest.fixture
def machine_in_kathmandu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local timezone set to UTC+05:45, so "local" and "UTC" readings differ."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_in_kathmandu")
def test_generated_at_without_an_offset_is_utc_whatever_the_machines_timezone() -> None:
    assert datetime(2026, 1, 15).astimezone().utcoffset() == timedelta(hours=5, minutes=45)
    generated_at = accepted(event(generated_at_utc="2026-01-15T13:45:00")).generated_at
    assert generated_at == datetime(2026, 1, 15, 13, 45, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-01-15", "20260115"])
def test_generated_at_that_is_only_a_date_is_refused(text: str) -> None:
    rejection = refused(event(generated_at_utc=text))
    assert (rejection.reason, rejection.field) == ("invalid_field", "generated_at_utc")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-01-15Z",
        "2026-01-15T",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-15T24:01:00Z",
        "2026-01-15T13:45:00+25:00",
        "15/01/2026 13:45",
        "x" * 10_000,
    ],
)
def test_generated_at_that_is_not_an_iso_instant_is_refused(text: str) -> None:
    rejection = refused(event(generated_at_utc=text))
    assert (rejection.reason, rejection.field) == ("invalid_field", "generated_at_utc")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1768484700, id="unix-seconds"),
        pytest.param(1768484700.5, id="float"),
        pytest.param(True, id="bool"),
        pytest.param(["2026-01-15T13:45:00Z"], id="array"),
    ],
)
def test_generated_at_that_is_not_a_string_is_refused(value: object) -> None:
    rejection = refused(event(generated_at_utc=value))
    assert (rejection.reason, rejection.field) == ("invalid_field", "generated_at_utc")


@pytest.mark.parametrize(
    "text",
    [
        # Valid ISO text whose UTC instant falls outside what datetime can hold.
        pytest.param("9999-12-31T23:30:00-01:00", id="after-year-9999-in-utc"),
        pytest.param("0001-01-01T00:30:00+01:00", id="before-year-1-in-utc"),
    ],
)
def test_generated_at_beyond_the_representable_range_is_refused_not_raised(text: str) -> None:
    assert isinstance(validate(event(generated_at_utc=text), NOW), Rejection)


# --- total_activity_count -------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 999_999, 1_000_000])
def test_activity_count_from_0_to_1000000_is_accepted(count: int) -> None:
    assert accepted(event(total_activity_count=count)).count == count


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(-1, id="minus-one"),
        pytest.param(1_000_001, id="over-a-million"),
        pytest.param(10**20, id="beyond-64-bit"),
        pytest.param(1.5, id="fraction"),
        pytest.param(3.0, id="integral-float"),
        pytest.param("12", id="string"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param([12], id="array"),
    ],
)
def test_activity_count_that_is_not_an_integer_0_to_1000000_is_refused(count: object) -> None:
    rejection = refused(event(total_activity_count=count))
    assert (rejection.reason, rejection.field) == ("invalid_field", "total_activity_count")


def test_activity_count_null_is_refused() -> None:
    rejection = refused(event(total_activity_count=None))
    assert rejection.reason in ("missing_field", "invalid_field")
    assert rejection.field == "total_activity_count"


# --- the object as a whole ------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_FIELDS)
def test_each_required_field_missing_is_missing_field_naming_it(name: str) -> None:
    rejection = refused(event(**{name: ABSENT}))
    assert (rejection.reason, rejection.field) == ("missing_field", name)


def test_unknown_extra_fields_are_ignored() -> None:
    extras = {"firmware": "4.2.1", "battery": 0.87, "tags": ["lab"], "meta": {"a": None}}
    assert accepted(event(**extras)) == accepted(event())


# --- the message value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe{}", id="stray-bytes"),
        pytest.param('{"user_id": "café"}'.encode("latin-1"), id="latin-1"),
        pytest.param(b'{"user_id": "\xed\xa0\x80"}', id="utf-8-encoded-surrogate"),
        pytest.param(b'{"user_id": "caf\xc3', id="truncated-sequence"),
    ],
)
def test_value_that_is_not_utf8_is_invalid_utf8(raw: bytes) -> None:
    verdict = judge(raw)
    assert isinstance(verdict, Rejection)
    assert verdict.reason == "invalid_utf8"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="blank"),
        pytest.param(b"{", id="unterminated"),
        pytest.param(b"{'client_id': 'x'}", id="single-quotes"),
        pytest.param(b"[{}, ]", id="trailing-comma"),
        pytest.param(b"{} {}", id="two-documents"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"hello", id="text"),
    ],
)
def test_value_that_is_not_json_is_invalid_json(raw: bytes) -> None:
    verdict = judge(raw)
    assert isinstance(verdict, Rejection)
    assert verdict.reason == "invalid_json"


@pytest.mark.parametrize("raw", [b'"a string"', b"42", b"3.5", b"true", b"null"])
def test_json_that_is_not_an_object_is_not_an_object(raw: bytes) -> None:
    verdict = judge(raw)
    assert isinstance(verdict, Rejection)
    assert verdict.reason == "not_an_object"


@pytest.mark.parametrize("raw", [b"[]", b" [ \n ] "])
def test_empty_array_is_empty_array(raw: bytes) -> None:
    verdict = judge(raw)
    assert isinstance(verdict, Rejection)
    assert verdict.reason == "empty_array"


def test_array_elements_are_judged_each_on_their_own() -> None:
    other_device = "0b8e3c1a-1111-4222-8333-944455556666"
    raw = encode(
        [
            event(),
            event(device_id=ABSENT),
            "not an event",
            event(device_id=other_device, user_id=None),
            event(total_activity_count=-1),
        ]
    )
    elements = decode(raw, NOW)

    assert [e.index for e in elements] == [0, 1, 2, 3, 4]
    first, second, third, fourth, fifth = (e.verdict for e in elements)
    assert isinstance(first, Heartbeat)
    assert first.device_id == DEVICE
    assert isinstance(second, Rejection)
    assert (second.reason, second.field) == ("missing_field", "device_id")
    assert isinstance(third, Rejection)
    assert third.reason == "not_an_object"
    assert isinstance(fourth, Heartbeat)
    assert (fourth.device_id, fourth.user_id) == (other_device, None)
    assert isinstance(fifth, Rejection)
    assert (fifth.reason, fifth.field) == ("invalid_field", "total_activity_count")


def test_an_array_of_one_element_still_carries_its_index() -> None:
    assert decode(encode([event()]), NOW) == [Element(accepted(event()), 0)]


# --- time window ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-01-16T12:00:00Z", id="exactly-now-plus-24h"),
        pytest.param("2026-01-16T17:45:00+05:45", id="exactly-now-plus-24h-at-+05:45"),
        pytest.param("2026-01-16T11:59:59Z", id="just-inside"),
    ],
)
def test_up_to_24h_in_the_future_is_accepted(text: str) -> None:
    assert accepted(event(generated_at_utc=text)).generated_at <= NOW + timedelta(hours=24)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-01-16T12:00:01Z", id="now-plus-24h-plus-1s"),
        pytest.param("2026-01-16T12:00:00.000001Z", id="now-plus-24h-plus-1us"),
        pytest.param("2026-01-16T17:45:01+05:45", id="now-plus-24h-plus-1s-at-+05:45"),
        pytest.param("2027-01-01T00:00:00Z", id="next-year"),
    ],
)
def test_more_than_24h_in_the_future_is_event_in_future(text: str) -> None:
    assert refused(event(generated_at_utc=text)).reason == "event_in_future"


def test_future_is_measured_from_the_now_passed_in() -> None:
    later = NOW + timedelta(days=30)
    text = "2026-02-14T12:00:00Z"  # later + 24 h: in the future for NOW, fine for ``later``
    assert refused(event(generated_at_utc=text), NOW).reason == "event_in_future"
    assert accepted(event(generated_at_utc=text), later).generated_at == datetime(
        2026, 2, 14, 12, tzinfo=UTC
    )


def test_old_events_are_left_to_the_retention_check_of_the_plan() -> None:
    old = accepted(event(generated_at_utc="2001-01-01T00:00:00Z"))
    assert old.generated_at == datetime(2001, 1, 1, tzinfo=UTC)


# --- original bytes of an array element -----------------------------------------------------

# Elements written by hand; the array text is assembled from them with odd spacing, so each
# element's exact source text is known without parsing anything.
ELEMENTS = [
    '{"client_id": "' + CLIENT + '",\n\t"device_id":"' + DEVICE + '" ,'
    '  "user_id" : "Zoë 😀 ],[ \\"quoted\\"",'
    ' "generated_at_utc": "2026-01-15T13:45:00Z", "total_activity_count": 12}',
    '{ "user_id" : "日本語, [with] {brackets}" , "nested": [1, [2, {"b": "]"}]] }',
    '"a string, with a comma ]"',
    "-1.5e3",
    "[ 1 ,2 ]",
    "{}",
]
SEPARATORS = ["\r\n  [ \t", " ,\n\t", "\r\n,", ",", "  ,   ", "\t,\n"]
ARRAY_TEXT = "".join(sep + element for sep, element in zip(SEPARATORS, ELEMENTS, strict=True))
ARRAY_TEXT += " \n ]\n"


@pytest.mark.parametrize("index", range(len(ELEMENTS)))
def test_original_bytes_of_an_array_element_is_its_exact_source_slice(index: int) -> None:
    raw = ARRAY_TEXT.encode("utf-8")
    assert original_bytes(raw, index) == ELEMENTS[index].encode("utf-8")


def test_original_bytes_follows_the_indexes_decode_gives() -> None:
    raw = ARRAY_TEXT.encode("utf-8")
    elements = decode(raw, NOW)
    assert [e.index for e in elements] == list(range(len(ELEMENTS)))
    assert isinstance(elements[0].verdict, Heartbeat)
    assert [original_bytes(raw, e.index) for e in elements] == [
        element.encode("utf-8") for element in ELEMENTS
    ]


def test_original_bytes_of_a_single_event_is_the_whole_value() -> None:
    raw = b'  {"client_id": "nope"}  \n'
    assert original_bytes(raw, None) == raw


# --- every rule at once, against a reference written out here -------------------------------
# The worker recognises the usual event in one pass and judges anything else rule by rule; both
# must give exactly the verdicts of the rules as written plainly below, rejection texts included.

_REFERENCE_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def reference_field(obj: dict[str, Any], name: str) -> object:
    """The value of one field, or the rejection of it (docs/events.md, one rule after the other)."""
    value = obj.get(name)
    if name == "user_id":
        if value is None:
            return None
        if not isinstance(value, str):
            return ("user_id", f"must be a string or null, got {type(value).__name__}")
        if not 1 <= len(value) <= 256:
            return ("user_id", f"length must be 1 to 256, got {len(value)}")
        return value
    if value is None:
        return Rejection("missing_field", f"{name} is required", name)
    if name in ("client_id", "device_id"):
        if isinstance(value, str) and _REFERENCE_UUID.fullmatch(value):
            return value.lower()
        return (name, f"not a UUID: {value!r:.80}")
    if name == "total_activity_count":
        if type(value) is int and 0 <= value <= 1_000_000:
            return value
        return (name, f"must be an integer 0 to 1000000: {value!r:.80}")
    if not isinstance(value, str) or len(value) <= 10:
        return (name, f"not an ISO-8601 instant: {value!r:.80}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return (name, f"not an ISO-8601 instant: {value!r:.80}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return (name, f"instant out of range: {value!r:.80}")


def reference_verdict(obj: object, now: datetime) -> Heartbeat | Rejection:
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    names = ("client_id", "device_id", "user_id", "generated_at_utc", "total_activity_count")
    values = []
    for name in names:
        value = reference_field(obj, name)
        if isinstance(value, Rejection):
            return value
        if isinstance(value, tuple):
            return Rejection("invalid_field", f"{value[0]}: {value[1]}", value[0])
        values.append(value)
    heartbeat = Heartbeat(*values)  # type: ignore[arg-type]
    if heartbeat.generated_at > now + timedelta(hours=24):
        return Rejection(
            "event_in_future", "generated_at_utc is more than 24 h after Kafka received the event"
        )
    return heartbeat


def reference_decode(raw: bytes, now: datetime) -> list[Element]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Element(Rejection("invalid_utf8", f"value is not UTF-8: {exc.reason}"))]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [Element(Rejection("invalid_json", f"value is not JSON: {exc}"))]
    if not isinstance(doc, list):
        return [Element(reference_verdict(doc, now))]
    if not doc:
        return [Element(Rejection("empty_array", "a JSON array with no events"))]
    return [Element(reference_verdict(item, now), i) for i, item in enumerate(doc)]


def assert_decoded_as_the_reference_says(raw: bytes, now: datetime = NOW) -> None:
    got, expected = decode(raw, now), reference_decode(raw, now)
    assert got == expected
    assert repr(got) == repr(expected)  # the same timezone objects and types, too


FIELD_FORMS: dict[str, list[object]] = {
    "client_id": [
        CLIENT, CLIENT_UPPER, DEVICE_MIXED, CLIENT[:-1], CLIENT + "0", "{" + CLIENT[1:-1] + "}",
        "g" + CLIENT[1:], CLIENT.replace("-", "0"), "é" * 36, "", 42, None, ABSENT, [CLIENT],
    ],
    "device_id": [DEVICE, DEVICE_MIXED, DEVICE[:8] + DEVICE[9:] + "-", " " + DEVICE[1:], 7, ABSENT],
    "user_id": ["u-1842", None, ABSENT, "", "a", "x" * 256, "x" * 257, "é" * 256, 5, True, ["u"]],
    "generated_at_utc": [
        "2026-01-15T13:45:00Z", "2026-01-15T13:45:00.250Z", "2026-01-15T13:45:00+00:00",
        "2026-01-15T13:45:00-00:00", "2026-01-15T13:45:00+05:45", "2026-01-15T13:45:00",
        "2026-01-15", "2026-01-15T", "20260115T134500Z", "2026-01-16T12:00:00Z",
        "2026-01-16T12:00:00.000001Z", "2026-01-16T17:45:00+05:45", "9999-12-31T23:30:00-01:00",
        "0001-01-01T00:30:00+01:00", "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "yesterday",
        1768484700, None, ABSENT,
    ],
    "total_activity_count": [
        12, 0, 1_000_000, 1_000_001, -1, 3.0, True, "12", 10**20, None, ABSENT,
    ],
}  # fmt: skip


def test_each_form_of_each_field_is_judged_as_the_rules_say() -> None:
    for name, forms in FIELD_FORMS.items():
        for form in forms:
            assert_decoded_as_the_reference_says(encode(event(**{name: form})))


def test_random_mixes_of_field_forms_are_judged_as_the_rules_say() -> None:
    rng = random.Random(15)
    for _ in range(3_000):
        doc = event(**{name: rng.choice(forms) for name, forms in FIELD_FORMS.items()})
        assert_decoded_as_the_reference_says(encode(doc))


def test_arrays_of_mixed_elements_are_judged_as_the_rules_say() -> None:
    rng = random.Random(16)
    for _ in range(300):
        elements: list[object] = [
            event(**{name: rng.choice(forms) for name, forms in FIELD_FORMS.items()})
            for _ in range(rng.randint(1, 5))
        ]
        elements.insert(rng.randint(0, len(elements)), rng.choice(["x", 3, None, [], {}]))
        assert_decoded_as_the_reference_says(encode(elements))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xef\xbb\xbf" + encode(event()), id="byte-order-mark"),
        pytest.param(encode(event()) + b" \xff", id="stray-byte-after-the-document"),
        pytest.param(b"\xff" + encode(event()), id="stray-byte-before-the-document"),
        pytest.param(b'{"user_id": "\xed\xa0\x80"}', id="encoded-surrogate"),
        pytest.param(b'{"user_id": "\xf4\x90\x80\x80"}', id="beyond-u-10ffff"),
        pytest.param(b'{"user_id": "\xc0\xaf"}', id="overlong"),
        pytest.param(b'{"user_id": "\\ud800"}', id="escaped-lone-surrogate"),
        pytest.param('{"user_id": "Zoë 😀", "x": [1, }'.encode(), id="bad-json-after-multibyte"),
        pytest.param('["Zoë 😀", {"a": 1},'.encode(), id="unterminated-array-after-multibyte"),
        pytest.param(b"[" + encode(event()) + b", \xe2\x82]", id="truncated-sequence-in-array"),
    ],
)
def test_values_orjson_refuses_as_bytes_are_judged_as_the_rules_say(raw: bytes) -> None:
    assert_decoded_as_the_reference_says(raw)


def test_random_byte_damage_is_judged_as_the_rules_say() -> None:
    rng = random.Random(17)
    pristine = bytearray(encode([event(user_id="Zoë 😀"), event(device_id=DEVICE_MIXED)]))
    for _ in range(3_000):
        damaged = bytearray(pristine)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        assert_decoded_as_the_reference_says(bytes(damaged))
