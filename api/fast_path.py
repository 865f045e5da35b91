"""The lean path of the series routes: a GET of a device's or a client's series is answered here,
before FastAPI's routing, without its per-request dependency solving (issue 22: about half of
the API's CPU per request went to FastAPI's request handling).

The answer is the one the route would give, byte for byte: the same ``series_answer``
(api/routes.py), the bearer token read as ``HTTPBearer`` reads it (api/deps.py), the query's
parameters as Starlette's ``QueryParams`` gives them (the last of each name), errors answered by
the app's own exception handlers, found as Starlette's ExceptionMiddleware finds them; and the
scope gets the ``route``, ``endpoint`` and ``path_params`` the router would set, for the access
log and the metrics outside. Anything else (another method, path or root path, or an app
whose dependencies a test overrides) goes on to FastAPI unchanged, and the routes stay declared
there for the OpenAPI document.

A pure ASGI middleware, the innermost: inside the in-flight limit, the metrics, the access log
and the request id, like the router it stands in for.
"""

from __future__ import annotations

from inspect import isawaitable
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import MISSING_TOKEN
from api.errors import Unauthorized
from api.routes import series_answer

_AUTHORIZATION = b"authorization"


def bearer_token(headers: Any) -> str:
    """The token of the first ``Authorization`` header, as ``BearerToken`` takes it, or 401."""
    authorization = ""
    for name, value in headers:
        if name == _AUTHORIZATION:
            authorization = value.decode("latin-1")
            break
    scheme, _, param = authorization.partition(" ")
    token = param.strip()
    if not (scheme and token) or scheme.lower() != "bearer":
        raise Unauthorized(MISSING_TOKEN)
    return token


def query_args(query: str) -> dict[str, str]:
    """The query's parameters, the last of each name, as Starlette's ``QueryParams`` reads them
    (``parse_qsl`` keeping blank values); without its unquoting when nothing is quoted."""
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    args: dict[str, str] = {}
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            args[name] = value
    return args


class SeriesFastPath:
    def __init__(self, app: ASGIApp, routes: list[APIRoute]) -> None:
        self.app = app
        self.routes = routes
        """The series routes, whose path patterns (Starlette's own regexes) are matched here."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope.get("root_path")
            or scope["app"].dependency_overrides  # a test's stand-ins: FastAPI's to apply
        ):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for route in self.routes:
            matched = route.path_regex.match(path)
            if matched is not None:
                break
        else:
            await self.app(scope, receive, send)
            return
        params = matched.groupdict()
        scope["route"], scope["endpoint"] = route, route.endpoint
        scope["path_params"] = {**scope.get("path_params", {}), **params}
        try:
            token = bearer_token(scope["headers"])
            args = query_args(scope["query_string"].decode("latin-1"))
            state = scope["app"].state
            response = await series_answer(
                params, args, token, state.auth, state.reader, state.settings
            )
        except Exception as exc:
            handler = _handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # answered outside, as it would be coming out of the router
            response = handler(Request(scope, receive), exc)
            if isawaitable(response):
                response = await response
        await response(scope, receive, send)


def _handler(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's handler of ``exc`` as Starlette's ExceptionMiddleware looks it up (by the
    exception's classes, most derived first), None for those it leaves to the outside (a
    handler of ``Exception`` itself is the server error middleware's)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None
