"""The heartbeat event and its validation (docs/events.md). Pure: bytes in, heartbeats or
rejections out.

Rules that need the client's timezone (the retention window) are judged later, in ``plan``.

Every event passes through here, so the common case is kept cheap, with verdicts exactly as the
rules below give them:
- an event in the usual form (canonical UUIDs, a UTC instant, fields in range) is recognised in
  one pass; anything else is judged rule by rule, which also words the rejection;
- canonical UUIDs already seen are looked up instead of matched again;
- bytes go to orjson directly, which checks their UTF-8 itself; only a value it refuses is
  decoded as text, to tell invalid UTF-8 from invalid JSON;
- the per-event types are slot dataclasses but not frozen: a frozen one sets each field through
  ``object.__setattr__``, which costs more than the rest of its construction. Treat them as
  immutable all the same (``unsafe_hash`` keeps them hashable by value, as they were).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

Reason = Literal[
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "empty_array",
    "missing_field",
    "invalid_field",
    "event_in_future",
    "event_too_old",
    "device_client_mismatch",
]

MAX_USER_ID_LENGTH = 256
MAX_ACTIVITY_COUNT = 1_000_000
FUTURE_TOLERANCE = timedelta(hours=24)
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE_LENGTH = len("YYYY-MM-DD")


@dataclass(slots=True, unsafe_hash=True)
class Heartbeat:
    client_id: str
    device_id: str
    user_id: str | None
    generated_at: datetime
    """Aware, in UTC."""
    count: int


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    field: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Element:
    """One event of a message: its verdict, and where it sits in the message value."""

    verdict: Heartbeat | Rejection
    index: int | None = None
    """Position in a JSON-array message; None when the value is a single event."""


def decode(raw: bytes, now: datetime) -> list[Element]:
    """Split one Kafka message value into judged elements (one, or one per array element)."""
    return decode_until(raw, now + FUTURE_TOLERANCE)


def decode_until(raw: bytes, latest: datetime) -> list[Element]:
    """``decode`` given ``latest = now + FUTURE_TOLERANCE``, which a batch works out once."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _decode_text(raw, latest)
    return _elements(doc, latest)


def _decode_text(raw: bytes, latest: datetime) -> list[Element]:
    """``decode_until`` by way of the text, for a value orjson refused as bytes: either they are
    not UTF-8, or the text is not JSON (orjson parses the same bytes in both cases). This tells
    which, and words a JSON error as the text parse does (positions counted in characters).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Element(Rejection("invalid_utf8", f"value is not UTF-8: {exc.reason}"))]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [Element(Rejection("invalid_json", f"value is not JSON: {exc}"))]
    return _elements(doc, latest)


def _elements(doc: object, latest: datetime) -> list[Element]:
    if not isinstance(doc, list):
        return [Element(_judge(doc, latest))]
    if not doc:
        return [Element(Rejection("empty_array", "a JSON array with no events"))]
    return [Element(_judge(item, latest), i) for i, item in enumerate(doc)]


def validate(obj: object, now: datetime) -> Heartbeat | Rejection:
    """Judge one decoded element. ``now`` is aware; extra fields are ignored."""
    return _judge(obj, now + FUTURE_TOLERANCE)


def _judge(obj: object, latest: datetime) -> Heartbeat | Rejection:
    if type(obj) is dict:
        heartbeat = _usual_heartbeat(obj)
        if heartbeat is not None and heartbeat.generated_at <= latest:
            return heartbeat
    return _judge_rule_by_rule(obj, latest)


def _usual_heartbeat(obj: dict[str, Any]) -> Heartbeat | None:
    """The heartbeat of an event in the usual form, checked in one go: canonical UUIDs, a user id
    of 1 to 256 characters or none, an instant in UTC ("Z" or "+00:00"), a count in range.

    None for any other event, for ``_judge_rule_by_rule`` to judge and word a rejection for.
    A shortcut only: what it accepts, the rules accept, as the same heartbeat.
    """
    client_id = obj.get("client_id")
    device_id = obj.get("device_id")
    user_id = obj.get("user_id")
    text = obj.get("generated_at_utc")
    count = obj.get("total_activity_count")
    if not (
        type(client_id) is str
        and type(device_id) is str
        and (user_id is None or (type(user_id) is str and 0 < len(user_id) <= MAX_USER_ID_LENGTH))
        and type(text) is str
        and len(text) > _DATE_LENGTH
        and type(count) is int
        and 0 <= count <= MAX_ACTIVITY_COUNT
    ):
        return None
    client = _SEEN_UUIDS.get(client_id) or _lower_uuid(client_id)
    device = _SEEN_UUIDS.get(device_id) or _lower_uuid(device_id)
    if client is None or device is None:
        return None
    try:
        generated_at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if generated_at.tzinfo is not UTC:
        return None
    return Heartbeat(client, device, user_id, generated_at, count)


def _judge_rule_by_rule(obj: object, latest: datetime) -> Heartbeat | Rejection:
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        heartbeat = Heartbeat(
            _uuid(obj, "client_id"),
            _uuid(obj, "device_id"),
            _user_id(obj),
            _instant(obj),
            _count(obj),
        )
    except _Invalid as exc:
        return exc.rejection
    if heartbeat.generated_at > latest:
        return Rejection("event_in_future", "generated_at_utc is more than 24 h ahead")
    return heartbeat


# --- the rules, field by field --------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _missing(name: str) -> _Invalid:
    return _Invalid(Rejection("missing_field", f"{name} is required", name))


def _invalid(name: str, detail: str) -> _Invalid:
    return _Invalid(Rejection("invalid_field", f"{name}: {detail}", name))


_SEEN_UUIDS: dict[str, str] = {}
"""Canonical UUIDs seen, as given, to their lower case: a batch names the same clients and
devices again and again. Bounded by ``_SEEN_UUIDS_LIMIT`` entries of 36 characters (a few MB)."""
_SEEN_UUIDS_LIMIT = 1 << 16


def _lower_uuid(value: str) -> str | None:
    """``value`` lower-cased if it is a canonical UUID (then remembered), else None."""
    if not _UUID.fullmatch(value):
        return None
    if len(_SEEN_UUIDS) >= _SEEN_UUIDS_LIMIT:
        _SEEN_UUIDS.clear()
    lowered = _SEEN_UUIDS[value] = value.lower()
    return lowered


def _uuid(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise _missing(name)
    lowered = _lower_uuid(value) if isinstance(value, str) else None
    if lowered is None:
        raise _invalid(name, f"not a UUID: {value!r:.80}")
    return lowered


def _user_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("user_id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid("user_id", f"must be a string or null, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_USER_ID_LENGTH:
        raise _invalid("user_id", f"length must be 1 to {MAX_USER_ID_LENGTH}, got {len(value)}")
    return value


def _instant(obj: dict[str, Any]) -> datetime:
    value = obj.get("generated_at_utc")
    if value is None:
        raise _missing("generated_at_utc")
    # A bare date is not an instant; fromisoformat would read it as midnight.
    if not isinstance(value, str) or len(value) <= _DATE_LENGTH:
        raise _invalid("generated_at_utc", f"not an ISO-8601 instant: {value!r:.80}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("generated_at_utc", f"not an ISO-8601 instant: {value!r:.80}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)  # docs/events.md: a value without an offset is UTC
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:30:00-01:00 is past datetime.max in UTC
        raise _invalid("generated_at_utc", f"instant out of range: {value!r:.80}") from None


def _count(obj: dict[str, Any]) -> int:
    value = obj.get("total_activity_count")
    if value is None:
        raise _missing("total_activity_count")
    # bool is an int subclass in Python; JSON true is not a count. 3.0 is refused too: the
    # contract says integer, and a producer sending floats has a bug worth seeing in the DLQ.
    if type(value) is not int or not 0 <= value <= MAX_ACTIVITY_COUNT:
        raise _invalid("total_activity_count", f"must be an integer 0 to 1000000: {value!r:.80}")
    return value


# --- the source bytes of an element, for the DLQ --------------------------------------------


def original_bytes(raw: bytes, index: int | None) -> bytes:
    """The exact source bytes of an element, for the DLQ: the whole value, or the element's
    slice of a JSON array. Only rejected events pay for this second pass over the text."""
    if index is None:
        return raw
    text = raw.decode("utf-8")
    start, end = _element_span(text, index)
    return text[start:end].encode("utf-8")


def _element_span(text: str, index: int) -> tuple[int, int]:
    """Where the ``index``-th element of a valid top-level JSON array starts and ends.

    A flat scan that tracks nesting depth and strings, so a deeply nested element (orjson
    accepts 1,024 levels) costs no recursion.
    """
    depth, in_string, escaped = 0, False, False
    element, start = 0, text.index("[") + 1
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
            if element == index:
                return _strip(text, start, pos)
            element, start = element + 1, pos + 1
    raise IndexError(index)  # unreachable for an index that decode() produced


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while text[start] in _JSON_WHITESPACE:
        start += 1
    while text[end - 1] in _JSON_WHITESPACE:
        end -= 1
    return start, end


_JSON_WHITESPACE = " \t\n\r"
