"""docs/api.md, the device page: its scripts put what the API answers into the page as text
(``textContent``, ``setAttribute``, elements built one by one), never as HTML to parse. Checked
on the source, since no test input could reach every place such a sink might be written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.routes import STATIC

HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|srcdoc")
"""What parses a string as HTML (or writes it into the document unparsed)."""
CODE_FROM_TEXT = re.compile(r"\beval\s*\(|new\s+Function\s*\(|setTimeout\s*\(\s*[\"'`]")
"""What runs a string as code: also refused by the page's Content-Security-Policy."""

OUR_SCRIPTS = sorted(STATIC.glob("*.js"))
"""The product's own scripts (``vendor/`` holds third-party bundles, checked by their
maintainers and by the CSP, not by this test)."""


def test_the_page_has_scripts_of_its_own() -> None:
    assert {p.name for p in OUR_SCRIPTS} >= {"app.js"}


@pytest.mark.parametrize("script", OUR_SCRIPTS, ids=lambda p: p.name)
def test_a_script_of_the_page_never_inserts_text_as_html(script: Path) -> None:
    found = [f"{n}: {line.strip()}" for n, line in enumerate(script.read_text().splitlines(), 1)
             if HTML_SINKS.search(line)]  # fmt: skip
    assert found == []


@pytest.mark.parametrize("script", OUR_SCRIPTS, ids=lambda p: p.name)
def test_a_script_of_the_page_never_runs_text_as_code(script: Path) -> None:
    found = [f"{n}: {line.strip()}" for n, line in enumerate(script.read_text().splitlines(), 1)
             if CODE_FROM_TEXT.search(line)]  # fmt: skip
    assert found == []


def test_the_pages_load_no_inline_script() -> None:
    """The CSP allows scripts from the product's own files only: an inline one would not run."""
    for page in STATIC.glob("*.html"):
        html = page.read_text()
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], page.name
        assert not re.search(r"\son[a-z]+\s*=", html), page.name  # onclick= and the like
