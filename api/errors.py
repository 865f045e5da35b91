"""The contract's error shape, and the one place that maps every failure to it."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from state.errors import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 200, in the contract's shape."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class InvalidParameter(ApiError):
    status, code = 400, "invalid_parameter"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, details: dict[str, Any], retry_after_s: int) -> None:
        super().__init__(message, details, headers={"Retry-After": str(retry_after_s)})


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_response(error: ApiError) -> Response:
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return Response(
        orjson.dumps(body),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"No route for {request.url.path}"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error_response(
            MethodNotAllowed(
                f"Method {request.method} not allowed",
                {"method": request.method},
                headers={"Allow": allowed} if allowed else None,
            )
        )
    error = ApiError(str(exc.detail))
    error.status = exc.status_code
    error.code = "http_error"
    return error_response(error)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    name = str(first.get("loc", ("", "request"))[-1])
    return error_response(InvalidParameter(f"Invalid {name}", {name: first.get("input")}))


async def _unavailable(_: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", exc)
    return error_response(Unavailable("The data store is unavailable; try again shortly"))


async def _internal(_: Request, exc: Exception) -> Response:
    log.exception("Unhandled error", exc_info=exc)
    return error_response(ApiError("Internal server error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(Exception, _internal)
