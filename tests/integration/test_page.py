"""Issue 10: the device page at `/`, in a real browser (Debian's chromium driven by
Playwright), against a stack with known data and the oracle.

It enters a token, lets the page pick the client, checks that the fleet table lists the least
used device first, picks a device and checks the table under the chart against the oracle
(series and previous period), then sends a heartbeat and waits for today's value to change.
Full-page screenshots (desktop, and a 390 px wide phone) go to tests/artifacts/ (not in git).
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, expect

from .harness.kafka import heartbeat_message
from .harness.stack import Stack
from .oracle import Oracle

pytestmark = pytest.mark.backends("redis", "cluster")

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ZONE = "Europe/Berlin"
DEVICES = 8
EVENTS = 1_200
DAYS = 25
CATCH_UP_TIMEOUT_S = 90.0
UI_TIMEOUT_MS = 30_000


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, Any]:
    rng = random.Random(10_000)
    now = datetime.now(UTC)
    client = _uuid(rng)
    devices = sorted(_uuid(rng) for _ in range(DEVICES))
    idle = devices[3]  # active only long before the page's range: 0 in it
    events = []
    for n in range(EVENTS):
        device = idle if n < 5 else rng.choice([d for d in devices if d != idle])
        back = rng.uniform(60, DAYS * 86_400) if device != idle else rng.uniform(50, 55) * 86_400
        events.append(
            {
                "client_id": client,
                "device_id": device,
                "generated_at_utc": (now - timedelta(seconds=back)).isoformat(timespec="seconds"),
                "total_activity_count": rng.randint(1, 20),
                "user_id": f"u{rng.randrange(6)}",
            }
        )
    stack.add_client(client, ZONE, name="Page test")
    stack.start()
    stack.produce([heartbeat_message(e) for e in events])
    token = stack.create_token(client)
    oracle = Oracle(events, {client: ZONE})
    expected = sum(e["total_activity_count"] for e in events)
    first = now.date() - timedelta(days=88)  # to tomorrow: 90 days

    def counted() -> bool | None:
        body = stack.http.get(
            f"/v2/clients/{client}/analytics/activity",
            params={"metric": "activity-count", "start_date": first.isoformat(),
                    "end_date": (now.date() + timedelta(days=1)).isoformat()},
            headers={"Authorization": f"Bearer {token}"},
        ).json()  # fmt: skip
        return True if sum(p["value"] for p in body.get("data", [])) == expected else None

    stack.wait_for(counted, timeout_s=CATCH_UP_TIMEOUT_S, what="the page's data in Redis")
    return {"client": client, "devices": devices, "idle": idle, "oracle": oracle, "token": token}


def send_heartbeat(stack: Stack, client: str, device: str, count: int) -> None:
    """One heartbeat of the device, now. Playwright's sync API runs an event loop in this
    thread: it is produced from another one."""
    event = {
        "client_id": client,
        "device_id": device,
        "generated_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_activity_count": count,
        "user_id": "u-live",
    }
    sender = threading.Thread(target=stack.produce, args=([heartbeat_message(event)],))
    sender.start()
    sender.join()


def _table(page: Page, selector: str) -> list[list[str]]:
    rows = page.locator(f"{selector} tbody tr")
    return [
        [cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def test_the_page_shows_the_fleet_the_series_and_today_live(
    stack: Stack, world: dict[str, Any], browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    oracle: Oracle = world["oracle"]
    client = world["client"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(stack.base_url + "/")
    page.fill("#token", world["token"])
    page.click("#token-form button")
    expect(page.locator("#fleet-least tbody tr")).to_have_count(DEVICES)
    start = date.fromisoformat(page.input_value("#start"))
    end = date.fromisoformat(page.input_value("#end"))

    # The fleet table: the least used first (0 in the range), ties by device id.
    totals = {d: oracle.total_activity((client, d), start, end) for d in world["devices"]}
    least_first = sorted(totals, key=lambda d: (totals[d], d))
    assert page.locator("#fleet-least tbody tr").first.get_attribute("data-device") == world["idle"]
    shown = [r.get_attribute("data-device") for r in page.locator("#fleet-least tbody tr").all()]
    assert shown == least_first
    assert [row[1] for row in _table(page, "#fleet-least")] == [str(totals[d]) for d in shown]

    # Pick the most used device: the table under the chart holds the oracle's numbers.
    busiest = least_first[-1]
    page.locator(f'#fleet-most tbody tr[data-device="{busiest}"]').click()
    expect(page.locator("#device-title")).to_contain_text(busiest)
    series = oracle.series((client, busiest), start, end, "activity-count", "daily")
    days = (end - start).days + 1
    before = oracle.series(
        (client, busiest), start - timedelta(days=days), start - timedelta(days=1),
        "activity-count", "daily",
    )  # fmt: skip
    expected_rows = [
        [now["date"], str(now["value"]), prev["date"], str(prev["value"])]
        for now, prev in zip(series, before, strict=True)
    ]
    expect(page.locator("#series-table tbody tr")).to_have_count(len(series))
    assert _table(page, "#series-table") == expected_rows

    # Today, live: the value changes after a heartbeat of the device.
    today = datetime.now(ZoneInfo(ZONE)).date()
    today_value = oracle.total_activity((client, busiest), today, today)
    expect(page.locator("#live-value")).to_have_text(str(today_value))
    page.screenshot(path=str(ARTIFACTS / "page-desktop.png"), full_page=True)
    send_heartbeat(stack, client, busiest, 11)
    expect(page.locator("#live-value")).to_have_text(str(today_value + 11))

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.set_default_timeout(UI_TIMEOUT_MS)
    phone.goto(stack.base_url + "/")
    phone.fill("#token", world["token"])
    phone.click("#token-form button")
    expect(phone.locator("#series-table tbody tr")).to_have_count(len(series))
    phone.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)


def test_the_page_loads_nothing_from_outside(
    stack: Stack, world: dict[str, Any], browser: Browser
) -> None:
    """No CDN: every request the page makes goes to the product itself."""
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(stack.base_url + "/")
    page.fill("#token", world["token"])
    page.click("#token-form button")
    expect(page.locator("#fleet-most tbody tr")).to_have_count(DEVICES)
    assert requested
    assert all(url.startswith(stack.base_url) for url in requested), requested


def test_the_page_breaks_no_rule_of_its_content_security_policy(
    stack: Stack, world: dict[str, Any], browser: Browser
) -> None:
    """Served with a same-origin policy (api/security_headers.py): the fleet tables, their
    sparklines, the chart and the series table all render, and the console reports no
    violation (nor any other error)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = page.goto(stack.base_url + "/")
    assert response is not None
    assert "script-src 'self';" in response.headers["content-security-policy"]
    page.fill("#token", world["token"])
    page.click("#token-form button")
    expect(page.locator("#fleet-most tbody tr")).to_have_count(DEVICES)
    expect(page.locator("#fleet-least tbody tr svg.spark polyline")).to_have_count(DEVICES)
    expect(page.locator("#series-table tbody tr").first).to_be_visible()
    expect(page.locator("#chart canvas")).to_have_count(1)
    expect(page.locator("#live-value")).to_have_text(re.compile(r"^\d+$"))  # the stream ran
    first = page.locator("#fleet-least tbody tr").first
    device = first.get_attribute("data-device")
    assert device is not None
    assert first.locator("td").first.get_attribute("title") == device  # the full id, as text
    assert errors == []


def test_the_live_value_comes_back_after_the_server_restarts(
    stack: Stack, world: dict[str, Any], browser: Browser
) -> None:
    """A stream that ends is opened again, after a growing jittered wait (api/static/app.js):
    the API is restarted under the open page, then a heartbeat must still reach it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(stack.base_url + "/")
    page.fill("#token", world["token"])
    page.click("#token-form button")
    expect(page.locator("#fleet-most tbody tr")).to_have_count(DEVICES)
    device = page.locator("#fleet-most tbody tr").first.get_attribute("data-device")
    assert device is not None
    page.locator(f'#fleet-most tbody tr[data-device="{device}"]').click()
    expect(page.locator("#device-title")).to_contain_text(device)
    today = datetime.now(ZoneInfo(ZONE)).date().isoformat()
    expect(page.locator("#live-date")).to_have_text(today)
    before = int(page.locator("#live-value").inner_text())
    stack.restart_api()
    send_heartbeat(stack, world["client"], device, 7)
    # The page retries 1, 2, 4 s after the stream ended (half of it jitter): within 30 s.
    expect(page.locator("#live-value")).to_have_text(str(before + 7), timeout=UI_TIMEOUT_MS)
