"""HEAD on every GET route, answered as GET without a body (RFC 9110 §9.3.2): proxies and
uptime checks use it, and FastAPI routes declared with ``get`` refuse it with 405."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_SCOPE_KEY = "devact.head"


class HeadAsGet:
    """ASGI middleware: a HEAD request runs as GET; the status and headers (Content-Length
    included) go out, the body does not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # HEAD_SCOPE_KEY tells a streaming route (api/live.py) to answer its headers alone.
        await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive, without_body)
