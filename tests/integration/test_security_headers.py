"""docs/api.md, security headers: every answer of the real API carries a same-origin
Content-Security-Policy, ``nosniff``, ``no-referrer`` and ``DENY`` framing: the page and its
assets, the JSON routes, errors, and a live stream. /docs and /redoc have a policy of their own,
still of one origin, and ``DEVACT_API_DOCS=false`` turns them off."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api.security_headers import PAGE_POLICY, REDOC_POLICY

from .faultkit.processes import Api
from .harness.kafka import heartbeat_message
from .harness.stack import Stack

pytestmark = pytest.mark.backends(
    "redis", reason="the headers are the API's own, set whatever the store answered"
)

TIMEOUT_S = 60.0
COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def directives(policy: str) -> dict[str, list[str]]:
    parsed = [d.split() for d in policy.split(";") if d.strip()]
    return {name: sources for name, *sources in parsed}


def assert_secured(response: httpx.Response, policy: str = PAGE_POLICY) -> None:
    for name, value in COMMON.items():
        assert response.headers.get_list(name) == [value], (response.url, name)
    assert response.headers.get_list("content-security-policy") == [policy], response.url


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, str]:
    client, device = str(uuid.uuid4()), str(uuid.uuid4())
    stack.add_client(client, "UTC")
    stack.start()
    token = stack.create_token(client)
    at = datetime.now(UTC) - timedelta(minutes=5)
    event = {"client_id": client, "device_id": device, "total_activity_count": 3,
             "generated_at_utc": at.isoformat(timespec="seconds"), "user_id": "u"}  # fmt: skip
    stack.produce([heartbeat_message(event)])
    day = at.date().isoformat()
    stack.wait_for(
        lambda: stack.series((client, device), token, "activity-count", at.date(), at.date())
        == [{"date": day, "value": 3}] or None,
        timeout_s=TIMEOUT_S, what="the heartbeat counted",
    )  # fmt: skip
    return {"client": client, "device": device, "token": token}


def test_the_page_and_its_assets_carry_the_security_headers(stack: Stack, world: object) -> None:
    for path in ["/", "/static/app.js", "/static/app.css",
                 "/static/vendor/uplot-1.6.32/uPlot.iife.min.js"]:  # fmt: skip
        response = stack.http.get(path)
        assert response.status_code == 200, path
        assert_secured(response)


def test_the_page_policy_allows_only_its_own_origin() -> None:
    found = directives(PAGE_POLICY)
    assert found["default-src"] == ["'self'"]
    assert found["script-src"] == ["'self'"]  # no inline script, no eval
    assert found["frame-ancestors"] == ["'none'"]
    assert found["object-src"] == ["'none'"]
    assert found["base-uri"] == ["'none'"]
    for sources in found.values():
        assert all(s in ("'self'", "'none'", "data:") for s in sources), sources


def test_json_routes_carry_the_security_headers(stack: Stack, world: dict[str, str]) -> None:
    for path in ["/healthz", "/readyz", "/openapi.json", "/v2/clients"]:
        response = stack.http.get(path, headers={"Authorization": f"Bearer {world['token']}"})
        assert response.status_code == 200, path
        assert_secured(response)
    assert_secured(stack.http.get("/metrics"))


def test_errors_carry_the_security_headers(stack: Stack, world: dict[str, str]) -> None:
    unknown = stack.http.get("/no/such/route")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert_secured(unknown)
    assert_secured(stack.http.get("/static/no-such-file.js"))
    unauthorized = stack.http.get("/v2/clients")
    assert unauthorized.status_code == 401
    assert_secured(unauthorized)
    wrong_method = stack.http.post("/healthz")
    assert wrong_method.status_code == 405
    assert_secured(wrong_method)
    bad = stack.activity(world["client"], world["device"], world["token"], metric="nonsense")
    assert bad.status_code == 400
    assert_secured(bad)


def test_head_answers_carry_the_security_headers(stack: Stack, world: object) -> None:
    response = stack.http.head("/")
    assert response.status_code == 200
    assert_secured(response)


def test_a_live_stream_carries_the_security_headers(stack: Stack, world: dict[str, str]) -> None:
    path = f"/v2/clients/{world['client']}/analytics/devices/{world['device']}/activity/live"
    headers = {"Authorization": f"Bearer {world['token']}"}
    with stack.http.stream("GET", path, headers=headers, params={"metric": "activity-count"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert_secured(r)
        first = next(line for line in r.iter_lines() if line.startswith("data:"))
    assert '"value":3' in first.replace(" ", "")  # the stream itself still flows


def test_docs_pages_have_the_policies_they_need_of_one_origin(stack: Stack, world: object) -> None:
    docs, redoc = stack.http.get("/docs"), stack.http.get("/redoc")
    assert docs.status_code == redoc.status_code == 200
    assert_secured(docs, PAGE_POLICY)  # Swagger UI needs nothing more
    assert_secured(redoc, REDOC_POLICY)
    found = directives(REDOC_POLICY)
    assert found["script-src"] == ["'self'"]  # still no inline script, no eval
    assert found["connect-src"] == ["'self'"]
    assert found["style-src"] == ["'self'", "'unsafe-inline'"]  # ReDoc's injected <style>s
    assert found["worker-src"] == ["blob:"]  # its search index, from its own bundle
    assert {k: v for k, v in found.items() if k not in ("style-src", "worker-src")} == {
        k: v for k, v in directives(PAGE_POLICY).items() if k != "style-src"
    }


def test_docs_pages_point_at_the_products_own_openapi_document(stack: Stack) -> None:
    for page, script in [("/docs", "/static/docs.js"), ("/redoc", "/static/redoc.js")]:
        html = stack.http.get(page).text
        assert f'<script src="{script}"></script>' in html
        loaded = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert loaded
        assert all(url.startswith("/static/") or url == "data:," for url in loaded), loaded
        init = stack.http.get(script)
        assert init.status_code == 200
        assert '"/openapi.json"' in init.text
    assert stack.http.get("/openapi.json").json()["info"]["title"] == "device-activity"


@pytest.fixture(scope="module")
def api_without_docs(stack: Stack, world: object, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Api]:  # fmt: skip
    log = Path(tmp_path_factory.mktemp("no-docs")) / "api.log"
    api = Api({**stack.env, "DEVACT_API_DOCS": "false"}, log)
    api.start()
    try:
        api.wait_ready(TIMEOUT_S)
        yield api
    finally:
        api.close()


def test_docs_can_be_turned_off(api_without_docs: Api) -> None:
    for path in ["/docs", "/redoc"]:
        response = api_without_docs.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
        assert_secured(response)
    assert api_without_docs.http.get("/openapi.json").status_code == 200
    assert api_without_docs.http.get("/").status_code == 200
