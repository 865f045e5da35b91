"""The access log: one line per request, saying who read what (docs/security.md).

Each line carries the route template (never the raw path, whose ids a client chose), the
client id the route names, the status, the duration, and the **id** of the bearer token
presented (the first 12 hex digits of its hash: never the token). With ``DEVACT_LOG_FORMAT=json``
they are fields of the line's JSON object, next to the request id.

A pure ASGI middleware inside the request id's; the authenticator fills in the token id
(``note_token``) through a context variable the middleware sets for the request.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from state.logs import log_fields

log = logging.getLogger("devact.access")

_CLIENT_ID = re.compile(r"[0-9A-Fa-f-]{36}")
"""A client id worth logging: the path's text otherwise is whatever the caller sent."""
_token_of_request: ContextVar[list[str] | None] = ContextVar("devact_access_token", default=None)


def note_token(token_id: str) -> None:
    """Say which token the current request presented (by id), for its access log line."""
    slot = _token_of_request.get()
    if slot is not None and not slot:
        slot.append(token_id)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        token: list[str] = []
        reset = _token_of_request.set(token)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _token_of_request.reset(reset)
            route: Any = scope.get("route")
            template = getattr(route, "path", "unmatched")
            client = scope.get("path_params", {}).get("client_id")
            fields = {
                "method": scope["method"],
                "route": template,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "token_id": token[0] if token else None,
                "client_id": client.lower()
                if isinstance(client, str) and _CLIENT_ID.fullmatch(client)
                else None,
            }
            with log_fields(**fields):
                log.info("%s %s %d", scope["method"], template, status)
