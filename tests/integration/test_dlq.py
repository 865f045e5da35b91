"""Invalid heartbeats go to the dead-letter topic with their reason; the valid ones around them
are all counted, exactly (docs/events.md, docs/contract.md).

Phase 1 sends valid events of clients X and Y shuffled among one message of each invalid kind.
Phase 2, once phase 1 is counted, sends a heartbeat of Y naming a device X already owns, and more
valid events after it.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from .harness.kafka import Message, encode, heartbeat_message
from .harness.stack import Stack
from .oracle import DeviceKey, Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

SEED = 4242
X_ZONE, Y_ZONE = "Europe/Berlin", "America/New_York"
COUNT_TIMEOUT_S = 90.0
DLQ_TIMEOUT_S = 60.0

# (case, reason header, field header)
INVALID_CASES: list[tuple[str, str, str | None]] = [
    ("not_utf8", "invalid_utf8", None),
    ("not_json", "invalid_json", None),
    ("json_number", "not_an_object", None),
    ("json_string", "not_an_object", None),
    ("json_null", "not_an_object", None),
    ("empty_array", "empty_array", None),
    ("array_with_a_bad_element", "invalid_field", "total_activity_count"),
    ("array_with_a_scalar_element", "not_an_object", None),
    ("missing_client_id", "missing_field", "client_id"),
    ("missing_device_id", "missing_field", "device_id"),
    ("missing_generated_at_utc", "missing_field", "generated_at_utc"),
    ("missing_total_activity_count", "missing_field", "total_activity_count"),
    ("client_id_not_a_uuid", "invalid_field", "client_id"),
    ("client_id_a_number", "invalid_field", "client_id"),
    ("device_id_not_a_uuid", "invalid_field", "device_id"),
    ("device_id_bad_hex_digit", "invalid_field", "device_id"),
    ("user_id_empty", "invalid_field", "user_id"),
    ("user_id_257_characters", "invalid_field", "user_id"),
    ("user_id_a_number", "invalid_field", "user_id"),
    ("count_negative", "invalid_field", "total_activity_count"),
    ("count_over_a_million", "invalid_field", "total_activity_count"),
    ("count_fraction", "invalid_field", "total_activity_count"),
    ("count_whole_float", "invalid_field", "total_activity_count"),
    ("count_string", "invalid_field", "total_activity_count"),
    ("count_boolean", "invalid_field", "total_activity_count"),
    ("timestamp_not_iso", "invalid_field", "generated_at_utc"),
    ("timestamp_impossible_date", "invalid_field", "generated_at_utc"),
    ("timestamp_a_number", "invalid_field", "generated_at_utc"),
    ("more_than_24h_in_future", "event_in_future", None),
    ("older_than_retention", "event_too_old", None),
    ("device_of_another_client", "device_client_mismatch", None),
]


@dataclass
class Case:
    message: Message
    element: Any = None  # for an array element: the JSON value the DLQ message must hold
    device: str | None = None  # a device named only by this rejected event


@dataclass
class Scenario:
    now: datetime
    x: str
    y: str
    devices: dict[str, DeviceKey] = field(default_factory=dict)
    phase1_valid: list[dict[str, Any]] = field(default_factory=list)
    phase2_valid: list[dict[str, Any]] = field(default_factory=list)
    arrayed: list[dict[str, Any]] = field(default_factory=list)  # valid, sent inside arrays
    cases: dict[str, Case] = field(default_factory=dict)

    def at(self, delta: timedelta) -> str:
        return (self.now + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    def event(self, key: DeviceKey, **fields: Any) -> dict[str, Any]:
        base = {
            "client_id": key[0],
            "device_id": key[1],
            "user_id": "u-1",
            "generated_at_utc": self.at(timedelta(hours=-3)),
            "total_activity_count": 2,
        }
        return base | fields

    def rejected(self, **fields: Any) -> tuple[dict[str, Any], str | None]:
        """An event of X on a fresh device, changed by ``fields`` (None removes a field).

        Also returns the fresh device id, unless ``fields`` replaced or removed it.
        """
        device = str(uuid.uuid4())
        event = {k: v for k, v in (self.event((self.x, device)) | fields).items() if v is not None}
        return event, device if event.get("device_id") == device else None


def build_scenario() -> Scenario:
    rng = random.Random(SEED)
    s = Scenario(now=datetime.now(UTC), x=str(uuid.uuid4()), y=str(uuid.uuid4()))
    for name, client in [
        ("main", s.x),
        ("bounds", s.x),
        ("ahead", s.x),
        ("old", s.x),
        ("owned", s.x),
        ("array", s.x),
        ("of_y", s.y),
    ]:
        s.devices[name] = (client, str(uuid.uuid4()))
    d = s.devices

    for _ in range(40):
        s.phase1_valid.append(
            s.event(
                d["main"],
                user_id=rng.choice(["u-1", "u-2", "u-3", None]),
                generated_at_utc=s.at(-timedelta(minutes=rng.randint(5, 20 * 24 * 60))),
                total_activity_count=rng.randint(0, 100),
            )
        )
    s.phase1_valid += [
        s.event(d["bounds"], total_activity_count=0, user_id="zero-activity-user"),
        s.event(d["bounds"], total_activity_count=1_000_000, user_id="v" * 256),
        s.event(d["bounds"], user_id=None, total_activity_count=1),
        {k: v for k, v in s.event(d["bounds"], total_activity_count=10).items() if k != "user_id"},
        s.event(d["bounds"], firmware="9.1", sensors={"door": [1, 0]}, total_activity_count=100),
        s.event(d["ahead"], generated_at_utc=s.at(timedelta(hours=1)), total_activity_count=5),
        s.event(d["old"], generated_at_utc=s.at(-timedelta(days=380)), total_activity_count=6),
        s.event(d["owned"], total_activity_count=3, user_id="owner-1"),
        s.event(d["owned"], total_activity_count=4, user_id="owner-2"),
        s.event(d["of_y"], total_activity_count=7),
    ]
    s.phase2_valid = [
        s.event(d["owned"], generated_at_utc=s.at(-timedelta(hours=2)), total_activity_count=40),
        s.event(d["of_y"], generated_at_utc=s.at(-timedelta(hours=2)), total_activity_count=8),
    ]
    add_invalid_cases(s)
    return s


def add_invalid_cases(s: Scenario) -> None:
    def raw(name: str, value: bytes) -> None:
        s.cases[name] = Case(Message(value, str(uuid.uuid4()).encode()))

    def changed(name: str, **fields: Any) -> None:
        event, device = s.rejected(**fields)
        key = str(event.get("device_id", uuid.uuid4())).encode()
        s.cases[name] = Case(Message(encode(event), key), device=device)

    raw("not_utf8", b'{"client_id": "' + s.x.encode() + b'", "junk": "\xff\xfe\xc3\x28"}')
    raw("not_json", b'{"client_id": "' + s.x.encode() + b'", "device_id": ')
    raw("json_number", b"42")
    raw("json_string", b'"heartbeat"')
    raw("json_null", b"null")
    raw("empty_array", b"[]")
    bad, bad_device = s.rejected(total_activity_count=-5)
    good = s.event(s.devices["array"], total_activity_count=11, user_id="array-user")
    s.cases["array_with_a_bad_element"] = Case(
        Message(encode([bad, good]), str(uuid.uuid4()).encode()), element=bad, device=bad_device
    )
    also_good = s.event(s.devices["array"], total_activity_count=22, user_id="array-user-2")
    s.cases["array_with_a_scalar_element"] = Case(Message(encode([7, also_good]), None), element=7)
    s.phase1_valid += [good, also_good]
    s.arrayed += [good, also_good]
    for name in ["client_id", "device_id", "generated_at_utc", "total_activity_count"]:
        changed(f"missing_{name}", **{name: None})
    changed("client_id_not_a_uuid", client_id="client-x")
    changed("client_id_a_number", client_id=12345)
    changed("device_id_not_a_uuid", device_id="device-" + uuid.uuid4().hex[:8])
    changed("device_id_bad_hex_digit", device_id="g" + str(uuid.uuid4())[1:])
    changed("user_id_empty", user_id="")
    changed("user_id_257_characters", user_id="w" * 257)
    changed("user_id_a_number", user_id=42)
    changed("count_negative", total_activity_count=-1)
    changed("count_over_a_million", total_activity_count=1_000_001)
    changed("count_fraction", total_activity_count=1.5)
    changed("count_whole_float", total_activity_count=3.0)
    changed("count_string", total_activity_count="12")
    changed("count_boolean", total_activity_count=True)
    changed("timestamp_not_iso", generated_at_utc="yesterday at noon")
    changed("timestamp_impossible_date", generated_at_utc="2026-02-30T10:00:00Z")
    changed("timestamp_a_number", generated_at_utc=1_767_225_600)
    changed("more_than_24h_in_future", generated_at_utc=s.at(timedelta(hours=30)))
    changed("older_than_retention", generated_at_utc=s.at(-timedelta(days=430)))
    # Phase 2: Y names X's device, in upper case, with numbers that would show if counted.
    owned = s.devices["owned"][1]
    intruder = {
        "client_id": s.y,
        "device_id": owned.upper(),
        "user_id": "intruder",
        "generated_at_utc": s.at(-timedelta(hours=2)),
        "total_activity_count": 999,
    }
    s.cases["device_of_another_client"] = Case(Message(encode(intruder), owned.encode()))


@dataclass
class Outcome:
    stack: Stack
    scenario: Scenario
    oracle: Oracle
    token: str
    records: list[ConsumerRecord[bytes, bytes]]
    matches: dict[str, list[ConsumerRecord[bytes, bytes]]]


def query_range(oracle: Oracle, key: DeviceKey) -> tuple[date, date]:
    days = oracle.local_days(key)
    return min(days) - timedelta(days=1), max(days) + timedelta(days=1)


def series(
    stack: Stack,
    token: str,
    key: DeviceKey,
    metric: str,
    first: date,
    last: date,
    granularity: str = "daily",
) -> list[dict[str, Any]] | None:
    return stack.series(key, token, metric, first, last, granularity)


def wait_until_counted(stack: Stack, token: str, oracle: Oracle, what: str) -> None:
    differing: list[str] = []

    def counted() -> bool | None:
        for key in oracle.devices():
            first, last = query_range(oracle, key)
            for metric in ("activity-count", "user-count"):
                expected = oracle.series(key, first, last, metric, "daily")
                actual = series(stack, token, key, metric, first, last)
                if actual != expected:
                    differing[:] = [f"{key} {metric}: expected {expected}, got {actual}"]
                    return None
        return True

    stack.wait_for(
        counted, timeout_s=COUNT_TIMEOUT_S, what=what, progress=lambda: "; ".join(differing)
    )


def matching(case: Case, records: list[ConsumerRecord[bytes, bytes]]) -> list[Any]:
    if case.element is None:
        return [r for r in records if r.value == case.message.value]
    found = []
    for record in records:
        try:
            if json.loads(record.value or b"") == case.element:
                found.append(record)
        except ValueError:
            continue
    return found


@pytest.fixture(scope="module")
def outcome(stack: Stack) -> Outcome:
    s = build_scenario()
    stack.add_client(s.x, X_ZONE, name="dlq X")
    stack.add_client(s.y, Y_ZONE, name="dlq Y")
    stack.start()
    token = stack.create_token(all_clients=True)
    zones = {s.x: X_ZONE, s.y: Y_ZONE}

    phase1 = [heartbeat_message(e) for e in s.phase1_valid if all(e is not a for a in s.arrayed)]
    phase1 += [c.message for n, c in s.cases.items() if n != "device_of_another_client"]
    random.Random(SEED).shuffle(phase1)
    stack.produce(phase1)
    wait_until_counted(stack, token, Oracle(s.phase1_valid, zones), "phase 1 to be counted")

    stack.produce(
        [s.cases["device_of_another_client"].message]
        + [heartbeat_message(e) for e in s.phase2_valid]
    )
    oracle = Oracle(s.phase1_valid + s.phase2_valid, zones)
    wait_until_counted(stack, token, oracle, "phase 2 to be counted")

    records = stack.read_dlq(at_least=len(INVALID_CASES), timeout_s=DLQ_TIMEOUT_S)
    matches = {name: matching(case, records) for name, case in s.cases.items()}
    return Outcome(stack, s, oracle, token, records, matches)


@pytest.mark.parametrize(
    ("case", "reason", "field_name"),
    [pytest.param(c, r, f, id=c) for c, r, f in INVALID_CASES],
)
def test_invalid_event_is_dead_lettered_with_its_reason(
    outcome: Outcome, case: str, reason: str, field_name: str | None
) -> None:
    found = outcome.matches[case]
    sent = outcome.scenario.cases[case].message
    assert len(found) == 1, (
        f"expected one DLQ message holding {sent.value!r}, found {len(found)}; the DLQ holds: "
        + "\n".join(f"{r.value!r} {r.headers}" for r in outcome.records)
    )
    record = found[0]
    headers = {k: v.decode() for k, v in record.headers}
    assert headers.get("reason") == reason, headers
    if field_name is not None:
        assert headers.get("field") == field_name, headers
    assert headers.get("detail"), headers
    assert record.key == sent.key


def test_dead_letter_topic_holds_only_the_rejected_events(outcome: Outcome) -> None:
    matched = {id(r) for found in outcome.matches.values() for r in found}
    extra = [(r.value, r.headers) for r in outcome.records if id(r) not in matched]
    assert not extra, f"unexpected DLQ messages: {extra}"
    assert len(outcome.records) == len(INVALID_CASES)


def test_valid_events_among_invalid_ones_are_all_counted(outcome: Outcome) -> None:
    oracle = outcome.oracle
    for key in oracle.devices():
        first, last = query_range(oracle, key)
        for metric in ("activity-count", "user-count"):
            for granularity in ("daily", "weekly"):
                assert series(
                    outcome.stack, outcome.token, key, metric, first, last, granularity
                ) == oracle.series(key, first, last, metric, granularity), (key, metric)


def total(outcome: Outcome, device: str, metric: str = "activity-count") -> int:
    key = outcome.scenario.devices[device]
    first, last = query_range(outcome.oracle, key)
    points = series(outcome.stack, outcome.token, key, metric, first, last, "quarterly")
    assert points is not None, (device, key)
    return sum(p["value"] for p in points)


def test_good_elements_of_mixed_arrays_are_counted(outcome: Outcome) -> None:
    assert total(outcome, "array") == 33
    assert total(outcome, "array", "user-count") == 2


def test_boundary_values_are_accepted(outcome: Outcome) -> None:
    # count 0 and 1,000,000, a 256-character user, null and absent users, extra fields
    assert total(outcome, "bounds") == 0 + 1_000_000 + 1 + 10 + 100
    assert total(outcome, "bounds", "user-count") == 3  # u-1, zero-activity-user, "v" * 256


def test_event_an_hour_ahead_is_counted(outcome: Outcome) -> None:
    assert total(outcome, "ahead") == 5


def test_event_380_days_old_is_counted(outcome: Outcome) -> None:
    assert total(outcome, "old") == 6


def test_rejected_events_create_no_device(outcome: Outcome) -> None:
    s = outcome.scenario
    devices = [c.device for c in s.cases.values() if c.device is not None]
    assert devices
    today = s.now.date().isoformat()
    for device in devices:
        response = outcome.stack.activity(
            s.x, device, outcome.token, metric="activity-count", start_date=today, end_date=today
        )
        assert response.status_code == 404, (device, response.text)


def test_device_stays_with_its_first_client(outcome: Outcome) -> None:
    s = outcome.scenario
    owned = s.devices["owned"][1]
    assert total(outcome, "owned") == 3 + 4 + 40
    assert total(outcome, "owned", "user-count") == 3  # owner-1, owner-2, u-1: not the intruder
    today = s.now.date().isoformat()
    for device in (owned, owned.upper()):
        response = outcome.stack.activity(
            s.y, device, outcome.token, metric="activity-count", start_date=today, end_date=today
        )
        assert response.status_code == 404, response.text


def test_worker_keeps_going_after_invalid_events(outcome: Outcome) -> None:
    outcome.stack.assert_alive()
    assert total(outcome, "of_y") == 7 + 8
