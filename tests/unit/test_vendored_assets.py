"""docs/operations.md, vendored assets: the pages load only files the product ships. Every file
a page names exists, each vendored library keeps its licence beside it, the wheel takes every
static file, and ReDoc's bundle keeps the one change made to it (no logo from Redocly's CDN)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from api.routes import STATIC

ROOT = STATIC.parent.parent
PAGES = sorted(STATIC.glob("*.html"))
VENDORED = sorted(p for p in (STATIC / "vendor").iterdir() if p.is_dir())
NAMED = re.compile(r'(?:src|href)="(/static/[^"]+)"|from "(/static/[^"]+)"')


def named_files(text: str) -> list[str]:
    return [a or b for a, b in NAMED.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_a_page_names_is_shipped(page: Path) -> None:
    named = named_files(page.read_text())
    assert named
    missing = [n for n in named if not (STATIC / n.removeprefix("/static/")).is_file()]
    assert missing == []


def test_the_docs_pages_are_served_from_their_own_files() -> None:
    assert {p.name for p in PAGES} >= {"index.html", "docs.html", "redoc.html"}
    assert named_files((STATIC / "docs.html").read_text()) == [
        "/static/vendor/swagger-ui-dist-5.36.0/swagger-ui.css",
        "/static/vendor/swagger-ui-dist-5.36.0/swagger-ui-bundle.js",
        "/static/docs.js",
    ]
    assert named_files((STATIC / "redoc.html").read_text()) == [
        "/static/redoc.css",
        "/static/vendor/redoc-2.5.4/redoc.standalone.js",
        "/static/redoc.js",
    ]


@pytest.mark.parametrize("library", VENDORED, ids=lambda p: p.name)
def test_a_vendored_library_is_pinned_and_keeps_its_licence(library: Path) -> None:
    assert re.fullmatch(r"[a-z-]+-\d+\.\d+\.\d+", library.name)  # <npm name>-<exact version>
    assert (library / "LICENSE").is_file()
    assert all(p.is_file() for p in library.iterdir())  # flat: package-data's vendor/*/*


def test_redoc_loads_no_logo_from_redoclys_cdn() -> None:
    bundle = (STATIC / "vendor" / "redoc-2.5.4" / "redoc.standalone.js").read_text()
    assert "cdn.redoc.ly" not in bundle
    assert bundle.count('alt:"redocly logo",onError:()=>t(!1),src:"data:,"') == 1


def test_the_wheel_takes_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    package = STATIC.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    assert {p for p in STATIC.rglob("*") if p.is_file()} == shipped
