"""More malformed heartbeats (issue 3 item 5), beyond the kinds of test_dlq.py: each one lands in
the dead-letter topic with a reason header and its original bytes, and every valid event around
it is counted exactly (docs/events.md, docs/contract.md).

The corpus covers what test_dlq.py does not: invalid UTF-8 of several byte patterns and UTF-16,
JSON that is not quite JSON (NaN, Infinity, comments, concatenated documents, 10,000 nested
arrays), wrong JSON types for every field, required fields that are null, bad UUID forms, counts
beyond 64 bits, instants at the calendar's ends, a user id of about 1 MB, duplicate keys, arrays
with several bad elements, and devices claimed by a second client.

One module Stack: the valid events of client X go to one device per partition ("lanes"), and each
malformed message is keyed by a lane's device, so it sits in the same partition between valid
events; most of them even name that device, so one wrongly counted would show in its numbers.
Phase 2, once phase 1 is counted, has client Y claim a device X already owns.

Messages that have stalled the worker (a Kafka tombstone, an array element nested deeper than
Python's json recursion limit, a value over Faust's old 1,000,000-byte producer limit) are each
sent to a stack of their own at the end, so that one stuck worker cannot hide the rest.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from .harness.kafka import TOPIC_PARTITIONS, Message, encode, heartbeat_message
from .harness.stack import Stack
from .oracle import GRANULARITIES, METRICS, DeviceKey, Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

SEED = 9_131
X_ZONE, Y_ZONE = "America/New_York", "Asia/Kathmandu"
COUNT_TIMEOUT_S = 90.0
DLQ_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 30.0
# Broker (message.max.bytes 1,048,588) and producers (1,048,576; Faust's default 1,000,000) all
# accept a message this large; its copy in the dead-letter topic adds only the headers.
ONE_MB_MESSAGE_BYTES = 990_000
NESTING = 10_000

INVALID_JSON = frozenset({"invalid_json"})
INVALID_UTF8 = frozenset({"invalid_utf8"})
NOT_AN_OBJECT = frozenset({"not_an_object"})
MISSING = frozenset({"missing_field"})
INVALID = frozenset({"invalid_field"})
# An integer beyond 64 bits: orjson reads it as a float (invalid_field), or refuses the document.
BEYOND_64_BITS = frozenset({"invalid_field", "invalid_json"})
IN_FUTURE = frozenset({"event_in_future"})
TOO_OLD = frozenset({"event_too_old"})
MISMATCH = frozenset({"device_client_mismatch"})

DROP = object()
"""A field value meaning: leave the field out."""


def partition_of(key: bytes) -> int:
    """Where the producer puts a keyed message (aiokafka's default partitioner)."""
    partitions = list(range(TOPIC_PARTITIONS))
    return int(DefaultPartitioner()(key, partitions, partitions))


def stamp(instant: datetime, offset: timedelta | None = timedelta(0)) -> str:
    """ISO-8601 without fractions: ``Z`` for UTC, ``+hh:mm`` otherwise, no offset for None."""
    instant = instant.replace(microsecond=0)
    if offset is None:
        return instant.astimezone(UTC).replace(tzinfo=None).isoformat()
    if offset == timedelta(0):
        return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return instant.astimezone(timezone(offset)).isoformat()


@dataclass(frozen=True)
class Expected:
    """One record the dead-letter topic must hold."""

    value: bytes
    reasons: frozenset[str]
    field: str | None = None
    element: int | None = None


@dataclass
class Case:
    name: str
    message: Message
    expected: list[Expected]
    phase: int = 1


@dataclass
class Corpus:
    now: datetime
    x: str
    y: str
    lanes: list[str]
    """One device of X per partition: lanes[p] is keyed into partition p."""
    devices: dict[str, DeviceKey] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    valid: dict[int, list[Message]] = field(default_factory=dict)
    """Valid messages of each phase, in the order they are sent."""
    counted: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Per phase, every event that must be counted (the oracle's input)."""

    def count(self, phase: int, event: dict[str, Any], message: Message | None = None) -> None:
        """``event`` must be counted; ``message`` (when it travels alone) is sent in ``phase``."""
        self.counted.setdefault(phase, []).append(event)
        if message is not None:
            self.valid.setdefault(phase, []).append(message)

    # --- building blocks ---------------------------------------------------------------------

    def lane(self) -> str:
        """The lane of the next case: round robin over the partitions."""
        return self.lanes[len(self.cases) % len(self.lanes)]

    def base(self, device: str | None = None, client: str | None = None) -> dict[str, Any]:
        """A valid event of X on the next case's lane, with a count that would show if counted."""
        return {
            "client_id": client or self.x,
            "device_id": device or self.lane(),
            "user_id": f"rejected-{len(self.cases)}",
            "generated_at_utc": stamp(self.now - timedelta(hours=1)),
            "total_activity_count": 777,
        }

    def add(
        self,
        name: str,
        value: bytes,
        reasons: frozenset[str],
        field_name: str | None = None,
        *,
        key: str | None = None,
        phase: int = 1,
    ) -> None:
        key_bytes = (key or self.lane()).encode()
        expected = [Expected(value, reasons, field_name)]
        self.cases.append(Case(name, Message(value, key_bytes), expected, phase))

    def changed(
        self, name: str, reasons: frozenset[str], field_name: str | None, **fields: Any
    ) -> None:
        """The lane's event with ``fields`` replaced (DROP removes one), as JSON."""
        event = {k: v for k, v in (self.base() | fields).items() if v is not DROP}
        self.add(name, encode(event), reasons, field_name)

    def spliced(self, name: str, reasons: frozenset[str], user_id: bytes) -> None:
        """The lane's event with raw bytes as the user id's string content."""
        event = self.base()
        del event["user_id"]
        self.add(name, encode(event)[:-1] + b', "user_id": "' + user_id + b'"}', reasons)

    def with_literal(self, name: str, reasons: frozenset[str], count: bytes) -> None:
        """The lane's event with ``count`` written verbatim as total_activity_count."""
        event = self.base()
        del event["total_activity_count"]
        self.add(name, encode(event)[:-1] + b', "total_activity_count": ' + count + b"}", reasons)

    def bad_messages(self, phase: int, key: bytes) -> list[Message]:
        return [
            case.message for case in self.cases if case.phase == phase and case.message.key == key
        ]

    def valid_event(
        self, rng: random.Random, device: str, client: str | None = None
    ) -> dict[str, Any]:
        """A valid heartbeat in one of the many shapes docs/events.md allows."""
        instant = self.now - timedelta(minutes=rng.randint(5, 12 * 24 * 60))
        offset = rng.choice(
            [timedelta(0), timedelta(hours=5, minutes=45), timedelta(hours=-3), None]
        )
        event: dict[str, Any] = {
            "client_id": client or self.x,
            "device_id": device,
            "user_id": rng.choice(VALID_USERS),
            "generated_at_utc": stamp(instant, offset),
            "total_activity_count": rng.choice([0, 1, 2, 5, 40, 100, 1_000_000]),
        }
        shape = rng.randrange(6)
        if shape == 0:
            event["client_id"], event["device_id"] = event["client_id"].upper(), device.upper()
        elif shape == 1:
            event |= {"firmware": "9.1", "sensors": {"door": [1, 0]}, "user": None}
        elif shape == 2:
            del event["user_id"]
        elif shape == 3:
            event["generated_at_utc"] = stamp(instant).replace("Z", ".25Z")
        return event


# Valid user ids that a careless implementation would merge or refuse: case, composed and
# decomposed accents, whitespace, a NUL, astral characters, 256 characters of 2 and 4 bytes.
VALID_USERS: list[str | None] = [
    "u-1",
    "U-1",
    "jos\u00e9",
    "jose\u0301",
    " u-1 ",
    "nul\u0000inside",
    "\U0001f600",
    "\u00e9" * 256,
    "\U0001f600" * 256,
    None,
]


def build_corpus(now: datetime) -> Corpus:
    rng = random.Random(SEED)
    lanes: dict[int, str] = {}
    while len(lanes) < TOPIC_PARTITIONS:
        device = str(uuid.uuid4())
        lanes.setdefault(partition_of(device.encode()), device)
    c = Corpus(now, str(uuid.uuid4()), str(uuid.uuid4()), [lanes[p] for p in sorted(lanes)])
    for p, device in enumerate(c.lanes):
        c.devices[f"lane{p}"] = (c.x, device)
    for name, client in [("old", c.x), ("ahead", c.x), ("race", c.x), ("array", c.x), ("y", c.y)]:
        c.devices[name] = (client, str(uuid.uuid4()))
    add_not_json(c)
    add_invalid_utf8(c)
    add_wrong_shapes(c)
    add_bad_uuids(c)
    add_bad_counts(c)
    add_bad_instants(c)
    add_bad_user_ids(c)
    add_arrays(c)
    add_claims(c)
    add_valid_events(c, rng)
    values = [e.value for case in c.cases for e in case.expected]
    assert len(values) == len(set(values)), "two cases would be indistinguishable in the DLQ"
    return c


def add_not_json(c: Corpus) -> None:
    good = encode(c.base())
    c.add("not_json_truncated", good[: len(good) // 2], INVALID_JSON)
    c.add("not_json_single_quotes", encode(c.base()).replace(b'"', b"'"), INVALID_JSON)
    c.add("not_json_trailing_comma", encode(c.base())[:-1] + b", }", INVALID_JSON)
    c.add("not_json_comment", encode(c.base())[:-1] + b" /* kiosk 7 */}", INVALID_JSON)
    c.add("not_json_two_documents", encode(c.base()) + encode(c.base()), INVALID_JSON)
    c.add("not_json_plain_text", b"heartbeat from kiosk 7 at noon", INVALID_JSON)
    c.add("empty_value", b"", INVALID_JSON)
    c.add("whitespace_only", b" \n\t\r ", INVALID_JSON)
    c.add("utf8_byte_order_mark", b"\xef\xbb\xbf" + encode(c.base()), INVALID_JSON)
    c.spliced("lone_surrogate_escape", INVALID_JSON, b"\\ud800")
    c.with_literal("count_nan", INVALID_JSON, b"NaN")
    c.with_literal("count_infinity", INVALID_JSON, b"Infinity")
    c.with_literal("count_minus_infinity", INVALID_JSON, b"-Infinity")
    c.with_literal("count_beyond_a_double", INVALID_JSON, b"1e400")
    c.add("nested_10000_arrays", b"[" * NESTING + b"]" * NESTING, INVALID_JSON)
    c.add(
        "nested_10000_arrays_in_an_extra_field",
        encode(c.base())[:-1] + b', "extra": ' + b"[" * NESTING + b"]" * NESTING + b"}",
        INVALID_JSON,
    )
    c.add("json_true", b"true", NOT_AN_OBJECT)
    c.add("json_false", b"false", NOT_AN_OBJECT)


def add_invalid_utf8(c: Corpus) -> None:
    c.spliced("utf8_lone_continuation_byte", INVALID_UTF8, b"ab\x80cd")
    c.spliced("utf8_overlong_two_bytes", INVALID_UTF8, b"\xc0\xaf")
    c.spliced("utf8_overlong_three_bytes", INVALID_UTF8, b"\xe0\x80\xaf")
    c.spliced("utf8_truncated_multibyte", INVALID_UTF8, b"euro \xe2\x82 sign")
    c.spliced("utf8_encoded_surrogate", INVALID_UTF8, b"\xed\xa0\x80")
    c.spliced("utf8_beyond_u10ffff", INVALID_UTF8, b"\xf4\x90\x80\x80")
    c.spliced("latin1_text", INVALID_UTF8, "Jos\u00e9".encode("latin-1"))
    c.add("utf8_truncated_at_the_end", encode(c.base()) + b"\xf0\x9f\x98", INVALID_UTF8)
    text = json.dumps(c.base())
    c.add("utf16_le_with_bom", b"\xff\xfe" + text.encode("utf-16-le"), INVALID_UTF8)
    text = json.dumps(c.base())
    c.add("utf16_be_with_bom", b"\xfe\xff" + text.encode("utf-16-be"), INVALID_UTF8)


def add_wrong_shapes(c: Corpus) -> None:
    c.add("empty_object", b"{}", MISSING, "client_id")
    c.changed("client_id_null", MISSING, "client_id", client_id=None)
    c.changed("device_id_null", MISSING, "device_id", device_id=None)
    c.changed("generated_at_utc_null", MISSING, "generated_at_utc", generated_at_utc=None)
    c.changed("count_null", MISSING, "total_activity_count", total_activity_count=None)
    event = c.base()
    c.add(
        "field_names_in_other_case",
        encode({k.upper(): v for k, v in event.items()}),
        MISSING,
        "client_id",
    )
    c.changed("client_id_an_object", INVALID, "client_id", client_id={"id": c.x, "of": c.lane()})
    c.changed("client_id_an_array", INVALID, "client_id", client_id=[c.x, c.lane()])
    c.changed("device_id_a_number", INVALID, "device_id", device_id=int(c.lane()[:8], 16))
    c.changed("device_id_a_boolean", INVALID, "device_id", device_id=True)
    c.changed("user_id_a_boolean", INVALID, "user_id", user_id=False)
    c.changed("user_id_an_object", INVALID, "user_id", user_id={"name": "ann"})
    c.changed("user_id_an_array", INVALID, "user_id", user_id=["ann"])
    stamp_now = stamp(c.now)
    c.changed(
        "generated_at_utc_an_array", INVALID, "generated_at_utc", generated_at_utc=[stamp_now]
    )
    c.changed(
        "generated_at_utc_an_object", INVALID, "generated_at_utc", generated_at_utc={"t": stamp_now}
    )
    c.changed("count_an_object", INVALID, "total_activity_count", total_activity_count={"n": 1})
    c.changed("count_an_array", INVALID, "total_activity_count", total_activity_count=[1])


def add_bad_uuids(c: Corpus) -> None:
    def lane_uuid(transform: Callable[[str], str]) -> str:
        return transform(c.lane())

    c.changed("client_id_too_short", INVALID, "client_id", client_id=c.x[:-1])
    c.changed("device_id_too_short", INVALID, "device_id", device_id=lane_uuid(lambda u: u[:-1]))
    c.changed("device_id_too_long", INVALID, "device_id", device_id=lane_uuid(lambda u: u + "0"))
    c.changed("client_id_not_hex", INVALID, "client_id", client_id="z" + c.x[1:])
    c.changed("client_id_in_braces", INVALID, "client_id", client_id="{" + c.x + "}")
    c.changed(
        "device_id_in_braces", INVALID, "device_id", device_id=lane_uuid(lambda u: "{" + u + "}")
    )
    c.changed("client_id_without_hyphens", INVALID, "client_id", client_id=c.x.replace("-", ""))
    c.changed(
        "device_id_without_hyphens",
        INVALID,
        "device_id",
        device_id=lane_uuid(lambda u: u.replace("-", "")),
    )
    c.changed(
        "device_id_as_urn", INVALID, "device_id", device_id=lane_uuid(lambda u: "urn:uuid:" + u)
    )
    c.changed(
        "device_id_hyphens_misplaced",
        INVALID,
        "device_id",
        device_id=lane_uuid(lambda u: u.replace("-", "")[:4] + "-" + u.replace("-", "")[4:31]),
    )
    c.changed(
        "device_id_with_spaces", INVALID, "device_id", device_id=lane_uuid(lambda u: f" {u} ")
    )
    c.changed(
        "device_id_fullwidth_digit",
        INVALID,
        "device_id",
        device_id=lane_uuid(lambda u: "\uff10" + u[1:]),
    )
    c.changed("client_id_empty", INVALID, "client_id", client_id="")


def add_bad_counts(c: Corpus) -> None:
    count = "total_activity_count"
    c.changed("count_minus_2_pow_63", INVALID, count, total_activity_count=-(2**63))
    c.changed("count_2_pow_63", INVALID, count, total_activity_count=2**63)
    c.changed("count_2_pow_64", BEYOND_64_BITS, None, total_activity_count=2**64)
    c.changed("count_10_pow_30", BEYOND_64_BITS, None, total_activity_count=10**30)
    c.with_literal("count_a_1000_digit_integer", BEYOND_64_BITS, b"9" * 1000)
    c.with_literal("count_in_exponent_form", INVALID, b"1e3")
    c.with_literal("count_negative_zero_float", INVALID, b"-0.0")


def add_bad_instants(c: Corpus) -> None:
    at = "generated_at_utc"
    c.changed("instant_in_year_9999", IN_FUTURE, None, generated_at_utc="9999-12-31T23:59:59Z")
    c.changed(
        "instant_24h_10min_ahead",
        IN_FUTURE,
        None,
        generated_at_utc=stamp(c.now + timedelta(hours=24, minutes=10)),
    )
    c.changed(
        "instant_30h_ahead_with_an_offset",
        IN_FUTURE,
        None,
        generated_at_utc=stamp(c.now + timedelta(hours=30), timedelta(hours=5, minutes=45)),
    )
    c.changed(
        "instant_after_the_calendar", INVALID, at, generated_at_utc="9999-12-31T23:30:00-01:00"
    )
    c.changed(
        "instant_before_the_calendar", INVALID, at, generated_at_utc="0001-01-01T00:00:00+14:00"
    )
    c.changed("instant_at_year_1", TOO_OLD, None, generated_at_utc="0001-01-01T00:00:00Z")
    c.changed("instant_at_the_unix_epoch", TOO_OLD, None, generated_at_utc="1970-01-01T00:00:00Z")
    c.changed(
        "instant_402_days_old", TOO_OLD, None, generated_at_utc=stamp(c.now - timedelta(days=402))
    )
    c.changed("instant_a_bare_date", INVALID, at, generated_at_utc=c.now.date().isoformat())
    c.changed("instant_empty", INVALID, at, generated_at_utc="")
    c.changed("instant_hour_24", INVALID, at, generated_at_utc="2026-01-15T24:00:00Z")
    c.changed("instant_offset_25h", INVALID, at, generated_at_utc="2026-01-15T10:00:00+25:00")


def add_bad_user_ids(c: Corpus) -> None:
    c.changed("user_id_257_two_byte_characters", INVALID, "user_id", user_id="\u00e9" * 257)
    event = c.base()
    event["user_id"] = ""
    padding = ONE_MB_MESSAGE_BYTES - len(encode(event))
    event["user_id"] = "m" * padding
    value = encode(event)
    assert len(value) == ONE_MB_MESSAGE_BYTES
    c.add("user_id_of_about_1_mb", value, INVALID, "user_id")
    # Duplicate keys: the last one wins (orjson), so these are judged by their last value.
    event = c.base()
    del event["total_activity_count"]
    value = encode(event)[:-1] + b', "total_activity_count": 5, "total_activity_count": -5}'
    c.add("duplicate_key_last_count_invalid", value, INVALID, "total_activity_count")
    value = encode(c.base())[:-1] + b', "client_id": "not-a-client"}'
    c.add("duplicate_key_last_client_invalid", value, INVALID, "client_id")


def add_arrays(c: Corpus) -> None:
    array_device = c.devices["array"][1]
    good = c.base(device=array_device) | {"user_id": "array-good", "total_activity_count": 11}
    bad_count = encode(c.base(device=array_device) | {"total_activity_count": -7})
    stray = b'"stray string"'
    value = b"[ " + bad_count + b" ," + encode(good) + b",\n\t" + stray + b" ]"
    c.cases.append(
        Case(
            "array_with_bad_elements_around_a_good_one",
            Message(value, c.lane().encode()),
            [
                Expected(bad_count, INVALID, "total_activity_count", 0),
                Expected(stray, NOT_AN_OBJECT, None, 2),
            ],
        )
    )
    c.count(1, good)
    inner = encode(c.base(device=array_device) | {"user_id": "never-counted"})
    value = b"[[" + inner + b"]]"
    c.cases.append(
        Case(
            "array_of_arrays",
            Message(value, c.lane().encode()),
            [Expected(b"[" + inner + b"]", NOT_AN_OBJECT, None, 0)],
        )
    )
    unnested = encode(c.base(device=array_device) | {"user_id": "never-counted-2"})
    c.add(
        "array_with_an_element_nested_10000_deep",
        b"[" + unnested + b", " + b"[" * NESTING + b"]" * NESTING + b"]",
        INVALID_JSON,
    )


def add_claims(c: Corpus) -> None:
    """A device claimed by a second client: in the same partition right after its first event
    (phase 1), and a device counted long before (phase 2, alone and inside an array)."""
    race = c.devices["race"][1]
    first = c.base(device=race) | {"user_id": "race-owner", "total_activity_count": 3}
    c.count(1, first, heartbeat_message(first))
    c.add(
        "device_claimed_right_after_its_first_event",
        encode(c.base(device=race, client=c.y) | {"user_id": "race-intruder"}),
        MISMATCH,
        key=race,
    )
    owned = c.lanes[0]
    claim = c.base(device=owned, client=c.y) | {"user_id": "intruder", "total_activity_count": 999}
    c.add("device_of_another_client_claimed_later", encode(claim), MISMATCH, key=owned, phase=2)
    claim_in_array = encode(claim | {"user_id": "intruder-2"})
    y_good = c.base(device=c.devices["y"][1], client=c.y) | {"user_id": "y-in-array"}
    c.cases.append(
        Case(
            "device_of_another_client_claimed_in_an_array",
            Message(b"[" + claim_in_array + b", " + encode(y_good) + b"]", owned.encode()),
            [Expected(claim_in_array, MISMATCH, None, 0)],
            phase=2,
        )
    )
    c.count(2, y_good)


def add_valid_events(c: Corpus, rng: random.Random) -> None:
    """Valid events before, between and after the malformed ones of every lane, both phases."""
    for phase in (1, 2):
        for lane in c.lanes:
            for _ in range(len(c.bad_messages(phase, lane.encode())) + 1):
                event = c.valid_event(rng, lane)
                # Keyed by the lower-case id even when the event spells it in upper case.
                c.count(phase, event, Message(encode(event), lane.encode()))
        y_device = c.devices["y"][1]
        y_event = c.valid_event(rng, y_device, client=c.y)
        c.count(phase, y_event, Message(encode(y_event), y_device.encode()))
    for name, delta in [("old", timedelta(days=-398)), ("ahead", timedelta(hours=23))]:
        event = c.base(device=c.devices[name][1]) | {
            "generated_at_utc": stamp(c.now + delta),
            "total_activity_count": 6,
        }
        c.count(1, event, heartbeat_message(event))


def interleaved(c: Corpus, phase: int) -> list[Message]:
    """The phase's messages. Each lane's partition alternates valid and malformed messages,
    valid first and last. Other keys (the race device, old, ahead, Y's device) come first, each
    key's valid messages before its malformed ones."""
    lane_keys = [lane.encode() for lane in c.lanes]
    out = [m for m in c.valid.get(phase, []) if m.key not in lane_keys]
    out += [
        case.message
        for case in c.cases
        if case.phase == phase and case.message.key not in lane_keys
    ]
    for key in lane_keys:
        valid = [m for m in c.valid[phase] if m.key == key]
        bad = c.bad_messages(phase, key)
        assert len(valid) == len(bad) + 1
        for n, m in enumerate(valid):
            out.append(m)
            if n < len(bad):
                out.append(bad[n])
    return out


CASE_NAMES = [case.name for case in build_corpus(datetime(2026, 1, 15, tzinfo=UTC)).cases]


# --- the module's run ----------------------------------------------------------------------------


@dataclass
class Outcome:
    stack: Stack
    corpus: Corpus
    oracle: Oracle
    token: str
    records: list[ConsumerRecord[bytes, bytes]]


def query_range(oracle: Oracle, key: DeviceKey) -> tuple[date, date]:
    days = oracle.local_days(key)
    return min(days) - timedelta(days=1), max(days) + timedelta(days=1)


def series(
    stack: Stack, token: str, key: DeviceKey, metric: str, granularity: str, oracle: Oracle
) -> list[dict[str, Any]] | None:
    first, last = query_range(oracle, key)
    return stack.series(key, token, metric, first, last, granularity)


def wait_until_counted(
    stack: Stack, token: str, oracle: Oracle, what: str, timeout_s: float = COUNT_TIMEOUT_S
) -> None:
    differing: list[str] = []

    def counted() -> bool | None:
        for key in oracle.devices():
            first, last = query_range(oracle, key)
            for metric in METRICS:
                expected = oracle.series(key, first, last, metric, "daily")
                actual = series(stack, token, key, metric, "daily", oracle)
                if actual != expected:
                    differing[:] = [f"{key} {metric}: expected {expected}, got {actual}"]
                    return None
        return True

    stack.wait_for(counted, timeout_s=timeout_s, what=what, progress=lambda: "; ".join(differing))


@pytest.fixture(scope="module")
def outcome(stack: Stack) -> Outcome:
    corpus = build_corpus(datetime.now(UTC))
    assert [case.name for case in corpus.cases] == CASE_NAMES
    stack.add_client(corpus.x, X_ZONE, name="bad input X")
    stack.add_client(corpus.y, Y_ZONE, name="bad input Y")
    stack.start()
    token = stack.create_token(all_clients=True)
    zones = {corpus.x: X_ZONE, corpus.y: Y_ZONE}
    stack.produce(interleaved(corpus, 1))
    wait_until_counted(stack, token, Oracle(corpus.counted[1], zones), "phase 1 to be counted")
    stack.produce(interleaved(corpus, 2))
    oracle = Oracle(corpus.counted[1] + corpus.counted[2], zones)
    wait_until_counted(stack, token, oracle, "phase 2 to be counted")
    expected = sum(len(case.expected) for case in corpus.cases)
    records = stack.read_dlq(at_least=expected, timeout_s=DLQ_TIMEOUT_S)
    return Outcome(stack, corpus, oracle, token, records)


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in record.headers}


def describe(records: list[ConsumerRecord[bytes, bytes]]) -> str:
    return "\n".join(f"{(r.value or b'')[:120]!r} {headers_of(r)}" for r in records)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_malformed_message_is_dead_lettered_with_its_reason_and_original_bytes(
    outcome: Outcome, name: str
) -> None:
    case = next(c for c in outcome.corpus.cases if c.name == name)
    partition = partition_of(case.message.key or b"")
    for expected in case.expected:
        found = [r for r in outcome.records if r.value == expected.value]
        assert len(found) == 1, (
            f"expected one DLQ record holding {expected.value[:200]!r}, found {len(found)}; "
            f"the DLQ holds:\n{describe(outcome.records)}"
        )
        record = found[0]
        headers = headers_of(record)
        assert headers.get("reason") in expected.reasons, headers
        if expected.field is not None:
            assert headers.get("field") == expected.field, headers
        assert headers.get("detail"), headers
        topic, source_partition, _ = headers["source"].rsplit("/", 2)
        assert (topic, int(source_partition)) == (outcome.stack.topic, partition), headers
        if expected.element is None:
            assert "element" not in headers, headers
        else:
            assert headers.get("element") == str(expected.element), headers
        assert record.key == case.message.key


def test_dead_letter_topic_holds_only_the_malformed_messages(outcome: Outcome) -> None:
    expected = [e.value for case in outcome.corpus.cases for e in case.expected]
    extra = [r for r in outcome.records if r.value not in expected]
    assert not extra, f"unexpected DLQ records:\n{describe(extra)}"
    assert len(outcome.records) == len(expected)


def test_valid_events_around_malformed_ones_are_all_counted_exactly(outcome: Outcome) -> None:
    oracle = outcome.oracle
    assert len(oracle.devices()) == len(outcome.corpus.devices)
    for key in oracle.devices():
        for metric in METRICS:
            for granularity in GRANULARITIES:
                actual = series(outcome.stack, outcome.token, key, metric, granularity, oracle)
                first, last = query_range(oracle, key)
                assert actual == oracle.series(key, first, last, metric, granularity), (
                    key,
                    metric,
                    granularity,
                )


def test_device_claimed_by_a_second_client_stays_with_the_first(outcome: Outcome) -> None:
    c, stack, token = outcome.corpus, outcome.stack, outcome.token
    today = c.now.date().isoformat()
    for device in (c.devices["race"][1], c.lanes[0]):
        response = stack.activity(
            c.y, device, token, metric="activity-count", start_date=today, end_date=today
        )
        assert response.status_code == 404, response.text
        response = stack.activity(
            c.x, device, token, metric="activity-count", start_date=today, end_date=today
        )
        assert response.status_code == 200, response.text


def test_worker_and_api_keep_running(outcome: Outcome) -> None:
    outcome.stack.assert_alive()


# --- messages that have stalled the worker, each on a stack of its own ---------------------------


@dataclass(frozen=True)
class Probe:
    value: bytes | None
    dead_letter: bytes | None
    """What the DLQ record must hold; None for a tombstone (None or empty both do)."""
    reasons: frozenset[str] | None
    """Acceptable reasons; None: any reason at all, as long as there is one."""


def probe(kind: str, x: str, device: str, now: datetime) -> tuple[Probe, dict[str, Any]]:
    """The message of ``kind`` on ``device``, and the valid event sent right after it."""
    event = {
        "client_id": x,
        "device_id": device,
        "user_id": "after",
        "generated_at_utc": stamp(now - timedelta(minutes=30)),
        "total_activity_count": 4,
    }
    if kind == "tombstone":
        return Probe(None, None, None), event
    if kind == "array_element_nested_1000_deep":
        # orjson accepts up to 1024 levels; Python's json (used to cut an element's original
        # bytes out of the array) stops near 1000.
        nested = b"[" * 1_000 + b"]" * 1_000
        first = event | {"user_id": "in-array", "total_activity_count": 2}
        return Probe(b"[" + nested + b", " + encode(first) + b"]", nested, NOT_AN_OBJECT), event
    assert kind == "value_of_1040000_bytes"
    big = event | {"user_id": ""}
    big["user_id"] = "m" * (1_040_000 - len(encode(big)))
    value = encode(big)
    return Probe(value, value, INVALID), event


@contextlib.contextmanager
def own_stack(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    the_stack = Stack(services, tmp_path_factory.mktemp("probe"))
    try:
        yield the_stack
    finally:
        the_stack.stop()


@pytest.mark.parametrize(
    "kind", ["tombstone", "array_element_nested_1000_deep", "value_of_1040000_bytes"]
)
def test_worker_dead_letters_a_message_that_has_stalled_it_and_keeps_counting(
    services: Any, tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    x, device = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    message, after = probe(kind, x, device, now)
    counted = [after]
    if kind == "array_element_nested_1000_deep":
        counted.append(after | {"user_id": "in-array", "total_activity_count": 2})
    later = after | {"user_id": "later", "total_activity_count": 9}
    key = device.encode()
    with own_stack(services, tmp_path_factory) as probe_stack:
        probe_stack.add_client(x, X_ZONE, name=f"probe {kind}")
        probe_stack.start()
        token = probe_stack.create_token(x)
        probe_stack.produce([Message(message.value, key), heartbeat_message(after)])  # type: ignore[arg-type]
        wait_until_counted(
            probe_stack,
            token,
            Oracle(counted, {x: X_ZONE}),
            f"the event after the {kind} message to be counted",
            PROBE_TIMEOUT_S,
        )
        # A later batch of the same partition: the worker has moved on.
        probe_stack.produce([heartbeat_message(later)])
        wait_until_counted(
            probe_stack,
            token,
            Oracle([*counted, later], {x: X_ZONE}),
            f"an event produced after the {kind} message was handled to be counted",
            PROBE_TIMEOUT_S,
        )
        records = probe_stack.read_dlq(at_least=1, timeout_s=DLQ_TIMEOUT_S)
        if message.dead_letter is None:
            found = [r for r in records if not r.value]
        else:
            found = [r for r in records if r.value == message.dead_letter]
        assert len(found) == 1, describe(records)
        headers = headers_of(found[0])
        assert headers.get("reason"), headers
        if message.reasons is not None:
            assert headers["reason"] in message.reasons, headers
        assert found[0].key == key
