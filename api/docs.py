"""/docs (Swagger UI) and /redoc (ReDoc): the interactive documentation of /openapi.json, from
files the product ships (api/static/, the viewers vendored in api/static/vendor/), not from a
CDN. FastAPI's own pages load both viewers from jsDelivr; the app turns them off
(``docs_url=None``) and serves these instead, unless ``DEVACT_API_DOCS=false``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from api.routes import STATIC
from api.security_headers import REDOC_POLICY

docs_router = APIRouter(include_in_schema=False)


@docs_router.get("/docs")
async def swagger_ui() -> Response:
    return FileResponse(STATIC / "docs.html")  # the page's policy (api/security_headers.py)


@docs_router.get("/redoc")
async def redoc() -> Response:
    return FileResponse(STATIC / "redoc.html", headers={"Content-Security-Policy": REDOC_POLICY})
