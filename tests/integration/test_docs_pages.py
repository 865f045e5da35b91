"""docs/api.md, the documentation pages: /docs (Swagger UI) and /redoc (ReDoc) render the real
API's /openapi.json in a real browser (Debian's chromium driven by Playwright) from files the
product serves: every request goes to the API's own origin, and nothing breaks the pages'
Content-Security-Policy. Screenshots of both go to tests/artifacts/ (not in git)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from .harness.stack import Stack

pytestmark = pytest.mark.backends(
    "redis",
    reason=(
        "the pages are files the API serves and its /openapi.json: nothing on them comes from "
        "the store"
    ),
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
UI_TIMEOUT_MS = 30_000
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass
class Visit:
    """What a page did while it loaded and was used."""

    page: Page
    requested: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self, origin: str) -> None:
        """Nothing from another origin (a ``blob:`` URL names its origin after the scheme), no
        policy violation or any other error in the console, no uncaught exception."""
        assert self.requested
        elsewhere = [u for u in self.requested if not u.removeprefix("blob:").startswith(origin)]
        assert elsewhere == []
        assert self.console_errors == []
        assert self.page_errors == []


def visit(browser: Browser, url: str) -> Visit:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    seen = Visit(page)
    page.on("request", lambda r: seen.requested.append(r.url))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":  # a CSP violation is reported as one
            seen.console_errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
    page.goto(url)
    return seen


@pytest.fixture(scope="module")
def openapi(stack: Stack) -> dict[str, Any]:
    stack.start()
    document: dict[str, Any] = stack.http.get("/openapi.json").json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, summary) of every operation the document describes."""
    return [
        (method, path, op.get("summary", ""))
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_docs_renders_every_operation_from_the_products_own_files(
    stack: Stack, openapi: dict[str, Any], browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    expected = operations(openapi)
    seen = visit(browser, stack.base_url + "/docs")
    blocks = seen.page.locator(".opblock")
    expect(blocks).to_have_count(len(expected))
    paths = seen.page.locator(".opblock-summary-path").all_inner_texts()
    assert sorted(p.replace("\u200b", "") for p in paths) == sorted(p for _, p, _ in expected)
    # Used, not only loaded: an operation opened, "Try it out", the models.
    seen.page.locator(".opblock-summary").first.click()
    seen.page.locator("button.try-out__btn").first.click()
    # What the screenshot shows is asserted, not "no request for 500 ms" (networkidle: flaky,
    # and discouraged by Playwright's documentation).
    expect(seen.page.locator("button.execute").first).to_be_visible()
    seen.page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=False)
    assert seen.requested[0] == stack.base_url + "/docs"
    assert stack.base_url + "/openapi.json" in seen.requested
    seen.assert_clean(stack.base_url)


def test_redoc_renders_every_operation_and_searches_from_the_products_own_files(
    stack: Stack, openapi: dict[str, Any], browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    expected = operations(openapi)
    seen = visit(browser, stack.base_url + "/redoc")
    expect(seen.page.locator("h1")).to_contain_text(openapi["info"]["title"])
    headings = seen.page.locator("h2")
    expect(headings).to_have_count(len(expected))
    assert sorted(headings.all_inner_texts()) == sorted(s for _, _, s in expected)
    # The search runs in ReDoc's worker (worker-src blob:): it answers.
    seen.page.fill("input.search-input", "Prometheus")
    expect(seen.page.locator('[data-role="search:results"] li')).to_contain_text(
        ["Prometheus metrics"]
    )
    seen.page.fill("input.search-input", "")
    expect(seen.page.locator('[data-role="search:results"] li')).to_have_count(0)
    seen.page.screenshot(path=str(ARTIFACTS / "redoc.png"), full_page=False)
    assert stack.base_url + "/openapi.json" in seen.requested
    assert any(u.startswith("blob:" + stack.base_url) for u in seen.requested)  # the worker
    seen.assert_clean(stack.base_url)
