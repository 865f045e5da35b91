"""Security headers on every answer, as a pure ASGI middleware: the page, its assets, the JSON
routes, errors and live streams alike (docs/api.md, "Security headers").

The Content-Security-Policy lets a page load and contact only its own origin, run only the
product's script files (no inline script, no ``eval``), and be framed by nobody. The API's JSON
gets the same: nothing reads a policy there, and it costs nothing to be sure.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SAME_ORIGIN = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
)
PAGE_POLICY = "; ".join(_SAME_ORIGIN)
"""What the device page and /docs need (checked in Chromium: no violation while they load and
are used): their files, the API, styles set through the CSSOM (uPlot's, Swagger UI's React
``style`` props), which a policy does not govern, and the data: images of their stylesheets."""

REDOC_POLICY = "; ".join(
    [*(d for d in _SAME_ORIGIN if not d.startswith("style-src")),
     "style-src 'self' 'unsafe-inline'", "worker-src blob:"]
)  # fmt: skip
"""/redoc: ReDoc injects ``<style>`` elements (styled-components) and runs its search index in a
worker it makes from a ``blob:`` URL of its own bundle. Still no other origin, and scripts
still only from the product's files."""
_PAGE_POLICY = PAGE_POLICY.encode()

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # for browsers that predate frame-ancestors
)
_REPLACED = frozenset(name for name, _ in _COMMON)
_CSP = b"content-security-policy"


class SecurityHeaders:
    """Sets the headers on the start of every HTTP answer, replacing any of the same name; the
    Content-Security-Policy is ``PAGE_POLICY`` unless the answer brings its own (/redoc, from
    api/docs.py), so a page's policy goes wherever its route does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in _REPLACED]  # fmt: skip
                headers += _COMMON
                if all(k.lower() != _CSP for k, _ in headers):
                    headers.append((_CSP, _PAGE_POLICY))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
