"""Issue 10: the client-wide series and compare=previous_period, end to end (Kafka, worker,
Redis, API), against the oracle. Each rule of docs/api.md's fleet section is its own test.

Two clients in timezones far from UTC, six devices each, users shared across a client's devices
(a user on two devices the same day is one user of the client that day), events over the last
40 days.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness.kafka import heartbeat_message
from .harness.output import show
from .harness.stack import Stack
from .oracle import Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

ZONES = ("Asia/Kathmandu", "America/New_York")
DEVICES = 6
EVENTS = 2_400
DAYS = 40
CATCH_UP_TIMEOUT_S = 90.0
CLIENT_PATH = "/v2/clients/{client}/analytics/activity"
RANKING_PATH = "/v2/clients/{client}/analytics/devices"
LIVE_PATH = "/v2/clients/{client}/analytics/devices/{device}/activity/live"
LIVE_DEADLINE_S = 30.0
"""Generous: the contract's 1 s is a benchmark figure, reported by the test, not asserted."""


@dataclass
class Fleet:
    clients: dict[str, str]  # id -> zone
    devices: dict[str, list[str]]  # client -> device ids
    events: list[dict[str, Any]]
    oracle: Oracle
    today: dict[str, date]  # client -> its local today
    token: str
    other_token: str  # a token of the first client only


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@pytest.fixture(scope="module")
def fleet(stack: Stack) -> Fleet:
    rng = random.Random(20261202)
    now = datetime.now(UTC)
    clients = {_uuid(rng): zone for zone in ZONES}
    devices = {c: [_uuid(rng) for _ in range(DEVICES)] for c in clients}
    events: list[dict[str, Any]] = []
    for _ in range(EVENTS):
        client = rng.choice(list(clients))
        instant = now - timedelta(seconds=rng.uniform(60, DAYS * 86_400))
        event: dict[str, Any] = {
            "client_id": client,
            "device_id": rng.choice(devices[client]),
            "generated_at_utc": instant.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "total_activity_count": rng.randint(0, 30),
        }
        if rng.random() < 0.9:  # ten users a client, each on several of its devices
            event["user_id"] = f"user-{rng.randrange(10)}"
        events.append(event)
    for client, zone in clients.items():
        stack.add_client(client, zone)
    stack.start()
    stack.produce([heartbeat_message(e) for e in events])
    token = stack.create_token(all_clients=True)
    first = next(iter(clients))
    fleet = Fleet(
        clients,
        devices,
        events,
        Oracle(events, clients),
        {c: now.astimezone(ZoneInfo(z)).date() for c, z in clients.items()},
        token,
        stack.create_token(first),
    )
    expected = sum(int(e["total_activity_count"]) for e in events)
    stack.wait_for(
        lambda: True if _counted(stack, fleet) == expected else None,
        timeout_s=CATCH_UP_TIMEOUT_S,
        what=f"the fleet's {expected} activity in the client-wide series",
    )
    return fleet


def _counted(stack: Stack, fleet: Fleet) -> int:
    total = 0
    for client, today in fleet.today.items():
        for start in (today - timedelta(days=89), today - timedelta(days=179)):
            end = start + timedelta(days=89)
            body = _client(stack, fleet.token, client, "activity-count", start, end).json()
            total += sum(p["value"] for p in body.get("data", []))
    return total


def _client(
    stack: Stack, token: str | None, client: str, metric: str, start: date, end: date, **extra: str
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    params = {"metric": metric, "start_date": start.isoformat(), "end_date": end.isoformat()}
    return stack.http.get(
        CLIENT_PATH.format(client=client), params={**params, **extra}, headers=headers
    )


def _distinct_users(fleet: Fleet, client: str, start: date, end: date, device: str = "") -> int:
    """Distinct users over a whole range, straight from the events (the compare totals)."""
    zone = ZoneInfo(fleet.clients[client])
    users = {
        e["user_id"]
        for e in fleet.events
        if e["client_id"] == client
        and (not device or e["device_id"] == device)
        and e.get("user_id") is not None
        and start
        <= datetime.fromisoformat(e["generated_at_utc"].replace("Z", "+00:00"))
        .astimezone(zone)
        .date()
        <= end
    }
    return len(users)


@pytest.mark.parametrize("granularity", ["daily", "weekly", "monthly", "quarterly"])
@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_the_client_wide_series_is_its_devices_together(
    stack: Stack, fleet: Fleet, metric: str, granularity: str
) -> None:
    for client, today in fleet.today.items():
        start, end = today - timedelta(days=DAYS + 5), today
        response = _client(stack, fleet.token, client, metric, start, end, granularity=granularity)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["granularity"] == granularity
        assert body["data"] == fleet.oracle.client_series(client, start, end, metric, granularity)  # type: ignore[arg-type]


def test_a_user_on_two_devices_the_same_day_is_one_user_of_the_client(
    stack: Stack, fleet: Fleet
) -> None:
    """Some day has a user on two devices: the client's daily users are fewer than the sum of
    its devices' (the oracle agrees, so the test checks the data has such a day at all)."""
    client, today = next(iter(fleet.today.items()))
    start, end = today - timedelta(days=DAYS), today
    client_users = fleet.oracle.client_series(client, start, end, "user-count", "daily")
    summed = [0] * len(client_users)
    for device in fleet.devices[client]:
        for n, point in enumerate(
            fleet.oracle.series((client, device), start, end, "user-count", "daily")
        ):
            summed[n] += point["value"]
    assert any(c["value"] < s for c, s in zip(client_users, summed, strict=True))
    body = _client(stack, fleet.token, client, "user-count", start, end).json()
    assert body["data"] == client_users


@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
@pytest.mark.parametrize("route", ["client", "device"])
def test_compare_previous_period_sets_the_same_number_of_days_before_it(
    stack: Stack, fleet: Fleet, metric: str, route: str
) -> None:
    client, today = next(iter(fleet.today.items()))
    device = fleet.devices[client][0]
    start, end = today - timedelta(days=14), today  # 15 days; the previous: the 15 before
    before_start, before_end = start - timedelta(days=15), start - timedelta(days=1)
    if route == "client":
        response = _client(
            stack, fleet.token, client, metric, start, end, compare="previous_period"
        )

        def series(first: date, last: date) -> list[dict[str, Any]]:
            return fleet.oracle.client_series(client, first, last, metric, "daily")  # type: ignore[arg-type]
    else:
        response = stack.activity(
            client,
            device,
            fleet.token,
            metric=metric,
            start_date=start.isoformat(),
            end_date=end.isoformat(),
            compare="previous_period",
        )

        def series(first: date, last: date) -> list[dict[str, Any]]:
            return fleet.oracle.series((client, device), first, last, metric, "daily")  # type: ignore[arg-type]

    assert response.status_code == 200, response.text
    body = response.json()
    now_points, before_points = series(start, end), series(before_start, before_end)
    if metric == "activity-count":
        total = sum(p["value"] for p in now_points)
        before = sum(p["value"] for p in before_points)
    else:
        only = "" if route == "client" else device
        total = _distinct_users(fleet, client, start, end, only)
        before = _distinct_users(fleet, client, before_start, before_end, only)
    assert body["data"] == now_points
    assert body["total"] == total
    assert body["previous"] == {
        "period": {"start": before_start.isoformat(), "end": before_end.isoformat()},
        "total": before,
        "data": before_points,
    }
    assert body["change"] == (None if before == 0 else pytest.approx((total - before) / before))


def test_compare_with_calendar_buckets_clips_the_previous_period_its_own_way(
    stack: Stack, fleet: Fleet
) -> None:
    """A month-long range starting mid-month: the previous period starts mid-month too, and
    its buckets are clipped where it starts, not where this range does."""
    client, today = next(iter(fleet.today.items()))
    start = today - timedelta(days=20)
    end = start + timedelta(days=29)
    before_start, before_end = start - timedelta(days=30), start - timedelta(days=1)
    body = _client(
        stack,
        fleet.token,
        client,
        "activity-count",
        start,
        end,
        granularity="weekly",
        compare="previous_period",
    ).json()
    expected = fleet.oracle.client_series(
        client, before_start, before_end, "activity-count", "weekly"
    )
    assert body["previous"]["data"] == expected
    assert body["previous"]["data"][0]["date"] == before_start.isoformat()


def test_change_is_null_when_the_previous_period_has_nothing(stack: Stack, fleet: Fleet) -> None:
    client, today = next(iter(fleet.today.items()))
    start = today - timedelta(days=DAYS + 100)  # the previous period: long before any event
    body = _client(
        stack, fleet.token, client, "activity-count", start, start + timedelta(days=89),
        compare="previous_period",
    ).json()  # fmt: skip
    assert body["previous"]["total"] == 0
    assert body["change"] is None


def test_an_unknown_compare_is_400_after_the_token_is_judged(stack: Stack, fleet: Fleet) -> None:
    client, today = next(iter(fleet.today.items()))
    bad = {"compare": "last_year"}
    response = _client(stack, fleet.token, client, "activity-count", today, today, **bad)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == bad
    unknown_token = _client(stack, "da_nobody", client, "activity-count", today, today, **bad)
    assert unknown_token.status_code == 401


def test_the_client_route_checks_401_403_400_404_in_that_order(stack: Stack, fleet: Fleet) -> None:
    first, second = list(fleet.clients)
    today = fleet.today[first]
    assert _client(stack, None, first, "activity-count", today, today).status_code == 401
    # A token of the first client: 403 on the second's fleet, even with a bad parameter.
    forbidden = _client(stack, fleet.other_token, second, "bad-metric", today, today)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert _client(stack, fleet.token, first, "bad-metric", today, today).status_code == 400
    unknown = str(uuid.uuid4())
    missing = _client(stack, fleet.token, unknown, "activity-count", today, today)
    assert missing.status_code == 404
    assert missing.json()["error"]["details"] == {"client_id": unknown}


# --- ranking ------------------------------------------------------------------------------


def _ranking(
    stack: Stack, token: str | None, client: str, metric: str, start: date, end: date, **extra: str
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    params = {"metric": metric, "start_date": start.isoformat(), "end_date": end.isoformat()}
    return stack.http.get(
        RANKING_PATH.format(client=client), params={**params, **extra}, headers=headers
    )


def _expected_ranking(
    fleet: Fleet, client: str, metric: str, start: date, end: date, order: str
) -> list[dict[str, Any]]:
    """Every device of the client with its value over the range, zeros included, ordered by
    value (then device id), from the events alone."""
    values = {}
    for device in fleet.devices[client]:
        if metric == "activity-count":
            values[device] = fleet.oracle.total_activity((client, device), start, end)
        else:
            values[device] = _distinct_users(fleet, client, start, end, device)
    sign = -1 if order == "desc" else 1
    ranked = sorted(values, key=lambda d: (sign * values[d], d))
    return [{"device_id": d, "value": values[d]} for d in ranked]


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_the_ranking_lists_every_device_of_the_client_by_its_value(
    stack: Stack, fleet: Fleet, metric: str, order: str
) -> None:
    for client, today in fleet.today.items():
        start, end = today - timedelta(days=DAYS), today
        response = _ranking(
            stack, fleet.token, client, metric, start, end, order=order, limit="1000"
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["devices"] == _expected_ranking(fleet, client, metric, start, end, order)
        assert body["total_devices"] == DEVICES
        assert body["order"] == order
        assert body["label"] == ("Total Activity" if metric == "activity-count" else "Users")
        assert body["period"] == {"start": start.isoformat(), "end": end.isoformat()}


def test_idle_devices_rank_first_ascending_at_zero_ties_by_device_id(
    stack: Stack, fleet: Fleet
) -> None:
    """A day on which most devices were idle: they are listed at 0, in device id order."""
    client, today = next(iter(fleet.today.items()))
    day = today - timedelta(days=DAYS + 3)  # before every event: all devices idle
    body = _ranking(stack, fleet.token, client, "activity-count", day, day, order="asc").json()
    assert body["devices"] == [{"device_id": d, "value": 0} for d in sorted(fleet.devices[client])]


def test_limit_keeps_the_first_devices_of_the_order(stack: Stack, fleet: Fleet) -> None:
    client, today = next(iter(fleet.today.items()))
    start = today - timedelta(days=DAYS)
    expected = _expected_ranking(fleet, client, "activity-count", start, today, "desc")
    default = _ranking(stack, fleet.token, client, "activity-count", start, today).json()
    assert default["limit"] == 10
    assert default["order"] == "desc"
    assert default["devices"] == expected[:10]
    two = _ranking(stack, fleet.token, client, "activity-count", start, today, limit="2").json()
    assert two["devices"] == expected[:2]
    assert two["total_devices"] == DEVICES


def test_a_ranking_never_lists_another_client_s_device(stack: Stack, fleet: Fleet) -> None:
    first, second = list(fleet.clients)
    today = fleet.today[first]
    body = _ranking(
        stack, fleet.token, first, "activity-count", today - timedelta(days=DAYS), today,
        limit="1000",
    ).json()  # fmt: skip
    assert {d["device_id"] for d in body["devices"]} == set(fleet.devices[first])
    assert not {d["device_id"] for d in body["devices"]} & set(fleet.devices[second])
    forbidden = _ranking(stack, fleet.other_token, second, "activity-count", today, today)
    assert forbidden.status_code == 403


@pytest.mark.parametrize(
    ("extra", "details"),
    [
        ({"order": "up"}, {"order": "up"}),
        ({"limit": "0"}, {"limit": "0"}),
        ({"limit": "1001"}, {"limit": "1001"}),
        ({"limit": "ten"}, {"limit": "ten"}),
        ({"limit": "2.5"}, {"limit": "2.5"}),
    ],
)
def test_a_bad_order_or_limit_is_400(
    stack: Stack, fleet: Fleet, extra: dict[str, str], details: dict[str, str]
) -> None:
    client, today = next(iter(fleet.today.items()))
    response = _ranking(stack, fleet.token, client, "activity-count", today, today, **extra)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == details


def test_the_ranking_checks_the_range_like_the_series(stack: Stack, fleet: Fleet) -> None:
    client, today = next(iter(fleet.today.items()))
    too_long = _ranking(
        stack, fleet.token, client, "activity-count", today - timedelta(days=90), today
    )
    assert too_long.status_code == 400
    longest = _ranking(
        stack, fleet.token, client, "activity-count", today - timedelta(days=89), today
    )
    assert longest.status_code == 200
    unknown = _ranking(stack, fleet.token, str(uuid.uuid4()), "activity-count", today, today)
    assert unknown.status_code == 404


def test_inspect_without_a_device_shows_the_client_s_aggregates(stack: Stack, fleet: Fleet) -> None:
    client = next(iter(fleet.clients))
    out = json.loads(stack.cli("inspect", "--client", client))
    shown = {d["date"]: d["activity_count"] for d in out["days"]}
    keys_ = [(client, device) for device in fleet.devices[client]]
    expected = {
        day.isoformat(): sum(fleet.oracle.total_activity(key, day, day) for key in keys_)
        for key in keys_
        for day in fleet.oracle.local_days(key)
    }
    assert shown == expected
    assert out["devices"] == DEVICES
    assert out["index"]["devices"] == DEVICES  # every device of the fixture had activity
    assert out["applied_offsets"]["key"].endswith(":offsets")
    assert out["months"]
    for month in out["months"]:
        first = date.fromisoformat(f"{month['month']}-01")
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        pairs = sum(len(fleet.oracle.users(key, first, last)) for key in keys_)
        active = sum(1 for key in keys_ if fleet.oracle.users(key, first, last))
        assert (month["device_user_pairs"], month["devices"]) == (pairs, active)


# --- live ---------------------------------------------------------------------------------


def test_live_sends_today_then_each_change_within_a_second(
    stack: Stack, fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Opens the stream, reads today's point, sends a heartbeat for the device now, and reads
    the changed point; reports the delay (asserted only against a generous deadline), then
    waits for the keep-alive comment."""
    client, today = next(iter(fleet.today.items()))
    device = fleet.devices[client][0]
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo(fleet.clients[client])).date()
    before = fleet.oracle.total_activity((client, device), today, today)
    url = LIVE_PATH.format(client=client, device=device)
    points: list[dict[str, Any]] = []
    comments = 0
    sent_at = received_at = 0.0
    with stack.http.stream(
        "GET",
        url,
        params={"metric": "activity-count"},
        headers={"Authorization": f"Bearer {fleet.token}"},
        timeout=LIVE_DEADLINE_S,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                points.append(json.loads(line[len("data:") :]))
                if len(points) == 1:
                    event = {
                        "client_id": client,
                        "device_id": device,
                        "generated_at_utc": now.isoformat(timespec="seconds"),
                        "total_activity_count": 7,
                        "user_id": "live-user",
                    }
                    fleet.oracle.add(event)
                    sent_at = time.monotonic()
                    stack.produce([heartbeat_message(event)])
                else:
                    received_at = time.monotonic()
            elif line.startswith(":"):
                comments += 1
            if len(points) >= 2 and comments >= 1:
                break
    assert points[0] == {"date": today.isoformat(), "value": before}
    assert points[1] == {"date": today.isoformat(), "value": before + 7}
    show(request, f"\n[live] heartbeat sent to event received: {received_at - sent_at:.3f} s")


def test_live_checks_the_token_and_the_metric_first(stack: Stack, fleet: Fleet) -> None:
    client = next(iter(fleet.clients))
    device = fleet.devices[client][0]
    url = LIVE_PATH.format(client=client, device=device)
    assert stack.http.get(url, params={"metric": "activity-count"}).status_code == 401
    bad = stack.http.get(
        url, params={"metric": "nope"}, headers={"Authorization": f"Bearer {fleet.token}"}
    )
    assert bad.status_code == 400
    unknown = stack.http.get(
        LIVE_PATH.format(client=client, device=str(uuid.uuid4())),
        params={"metric": "activity-count"},
        headers={"Authorization": f"Bearer {fleet.token}"},
    )
    assert unknown.status_code == 404


# --- never a 500 ----------------------------------------------------------------------------

_DATES = st.dates(min_value=date.min, max_value=date.max)
_EDGES = st.sampled_from(
    [date.min, date.min + timedelta(days=1), date.max, date.max - timedelta(days=89)]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.one_of(_DATES, _EDGES),
    length=st.integers(min_value=-2, max_value=95),
    granularity=st.sampled_from(["daily", "weekly", "monthly", "quarterly"]),
    metric=st.sampled_from(["activity-count", "user-count"]),
    route=st.sampled_from(["device", "client", "ranking"]),
    compare=st.booleans(),
)
def test_no_range_of_the_calendar_gets_a_500(
    stack: Stack,
    fleet: Fleet,
    start: date,
    length: int,
    granularity: str,
    metric: str,
    route: str,
    compare: bool,
) -> None:
    """Ranges drawn across 0001-01-01 to 9999-12-31, edges included, on every series route:
    a 200 for a valid range, a 400 for an invalid one, never a 500."""
    try:
        end = start + timedelta(days=length)
    except OverflowError:
        end = date.max if length > 0 else date.min
    client = next(iter(fleet.clients))
    params = {
        "metric": metric,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "granularity": granularity,
    }
    if compare:
        params["compare"] = "previous_period"
    path = {
        "device": f"/v2/clients/{client}/analytics/devices/{fleet.devices[client][0]}/activity",
        "client": CLIENT_PATH.format(client=client),
        "ranking": RANKING_PATH.format(client=client),
    }[route]
    response = stack.http.get(
        path, params=params, headers={"Authorization": f"Bearer {fleet.token}"}
    )
    valid = start <= end and (end - start).days < 90
    assert response.status_code == (200 if valid else 400), (params, response.text)
