"""The heartbeat event and its validation (docs/events.md). Pure: bytes in, heartbeats or
rejections out.

Rules that need the client's timezone (the retention window) are judged later, in ``plan``.

A message over a cap (``MessageLimits``: bytes, or elements of an array) is refused whole, as
one ``message_too_large``, before any of its events is judged; an array within the caps is judged
a slice of elements at a time (``decode_pieces``), so its caller can hand the event loop back
in between.

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
from collections.abc import Iterable, Iterator
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
    "message_too_large",
    "unknown_client",
]

MAX_USER_ID_LENGTH = 256
MAX_ACTIVITY_COUNT = 1_000_000
FUTURE_TOLERANCE = timedelta(hours=24)
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DATE_LENGTH = len("YYYY-MM-DD")
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_MESSAGE_ELEMENTS = 10_000
"""Defaults of the worker's caps (stream/settings.py says why these)."""


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """What one message may hold; a message over either cap is refused whole, as one
    ``message_too_large`` dead letter (the whole value), and none of its events is judged."""

    max_bytes: int = MAX_MESSAGE_BYTES
    """Bytes of the value."""
    max_elements: int = MAX_MESSAGE_ELEMENTS
    """Events of a value that is a JSON array."""


DEFAULT_LIMITS = MessageLimits()


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


def decode(raw: bytes, now: datetime, limits: MessageLimits = DEFAULT_LIMITS) -> list[Element]:
    """Split one Kafka message value into judged elements (one, or one per array element)."""
    return decode_until(raw, now + FUTURE_TOLERANCE, limits)


def decode_until(
    raw: bytes, latest: datetime, limits: MessageLimits = DEFAULT_LIMITS
) -> list[Element]:
    """``decode`` given ``latest = now + FUTURE_TOLERANCE``, which a batch works out once."""
    return [element for piece in decode_pieces(raw, latest, limits, _WHOLE) for element in piece]


def decode_pieces(
    raw: bytes, latest: datetime, limits: MessageLimits, size: int
) -> Iterable[list[Element]]:
    """``decode_until`` in pieces of at most ``size`` elements, an array's judged as they are
    taken. Only an array gets a generator: one per message made judging 5,000 single events
    12 to 24 % slower than before pieces, a tuple of one piece 6 %."""
    if len(raw) > limits.max_bytes:
        detail = f"the value is {len(raw)} bytes, more than the {limits.max_bytes} allowed"
        return ([Element(Rejection("message_too_large", detail))],)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            doc = _read_text(raw)
        except _Invalid as exc:
            return ([Element(exc.rejection)],)
    if not isinstance(doc, list):
        return ([Element(_judge(doc, latest))],)
    if not doc:
        return ([Element(Rejection("empty_array", "a JSON array with no events"))],)
    if len(doc) > limits.max_elements:
        detail = f"an array of {len(doc)} events, more than the {limits.max_elements} allowed"
        return ([Element(Rejection("message_too_large", detail))],)
    return _array_pieces(doc, latest, size)


def _array_pieces(doc: list[Any], latest: datetime, size: int) -> Iterator[list[Element]]:
    for start in range(0, len(doc), size):
        piece = doc[start : start + size]
        yield [Element(_judge(item, latest), index) for index, item in enumerate(piece, start)]


_WHOLE = 1 << 30
"""A piece size no message reaches."""


def _read_text(raw: bytes) -> object:
    """The value by way of the text, for a value orjson refused as bytes: either they are not
    UTF-8, or the text is not JSON (orjson parses the same bytes in both cases). This tells
    which, and words a JSON error as the text parse does (positions counted in characters).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(Rejection("invalid_utf8", f"value is not UTF-8: {exc.reason}")) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(Rejection("invalid_json", f"value is not JSON: {exc}")) from None


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
        return Rejection(
            "event_in_future", "generated_at_utc is more than 24 h after Kafka received the event"
        )
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
        raise _invalid(name, f"not a UUID: {_shown(value)}")
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
        raise _invalid("generated_at_utc", f"not an ISO-8601 instant: {_shown(value)}")
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
        raise _invalid("total_activity_count", f"must be an integer 0 to 1000000: {_shown(value)}")
    return value


# --- a value, shown in a rejection's detail -------------------------------------------------

_SHOWN = 80
"""Characters of a value a detail shows."""


def _shown(value: object) -> str:
    """``f"{value!r:.80}"``, without writing out all of a large or deep array or object first:
    a field holding an array of 500,000 numbers took 50 ms to show, and one nested 1,000 deep
    raised RecursionError, which failed its batch again at every retry."""
    return _repr_within(value, _SHOWN)[:_SHOWN]


def _repr_within(value: object, room: int) -> str:
    """``repr(value)``, or a prefix of it at least ``room`` characters long. Each level of
    nesting writes a character before going down, so the depth is bounded by ``room`` too."""
    items: Iterable[tuple[str, object]]
    if isinstance(value, list):
        opening, closing, items = "[", "]", (("", item) for item in value)
    elif isinstance(value, dict):
        opening, closing, items = "{", "}", ((f"{k!r}: ", item) for k, item in value.items())
    else:
        return repr(value)
    text = opening
    for n, (label, item) in enumerate(items):
        text += (", " if n else "") + label
        if len(text) >= room:
            return text
        text += _repr_within(item, room - len(text))
        if len(text) >= room:
            return text
    return text + closing
