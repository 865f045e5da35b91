"""Request ids, as a pure ASGI middleware: the caller's ``X-Request-ID`` when sane, else a new one,
returned on every answer and carried by every log record of the request (``state.logs``)."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from state.logs import log_fields

HEADER = b"x-request-id"
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""What we echo: short enough for a log line, nothing a log or a header could be forged with."""

ErrorHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


def new_id() -> str:
    """A random uuid4 as 32 hex digits, what ``uuid.uuid4().hex`` gives, without building the
    UUID object: its version (4) and variant (RFC 4122) bits set on 16 random bytes."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def request_id(scope: Scope) -> str:
    """The request's own id when it sent a sane one, else a new uuid4 (32 hex digits)."""
    for name, value in scope["headers"]:
        if name == HEADER:
            sent: str = value.decode("latin-1")
            if SANE_ID.fullmatch(sent):
                return sent
            break
    return new_id()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        with log_fields(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started or not await _answer_unhandled(scope, receive, send_with_id, exc):
                    raise


async def _answer_unhandled(scope: Scope, receive: Receive, send: Send, exc: Exception) -> bool:
    """Answer an exception no handler inside took, with the app's own handler for it (the 500
    of api/errors.py), here: Starlette's ServerErrorMiddleware, outside every middleware an app
    adds, would answer it without the id and log it outside the request's fields. Not raised
    again once answered (False when the app has no such handler): the handler has logged it,
    and ServerErrorMiddleware would log it a second time."""
    app: Any = scope.get("app")
    handler: ErrorHandler | None = getattr(app, "exception_handlers", {}).get(Exception)
    if handler is None:
        return False
    response = handler(Request(scope, receive), exc)
    if isawaitable(response):
        response = await response
    await response(scope, receive, send)
    return True
