"""Request dependencies: what a route takes as parameters.

They are coroutines although they never wait: FastAPI runs a plain function dependency in its
thread pool, a thread hand-off per dependency and request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from api.auth import Authenticator
from api.errors import Unauthorized
from api.settings import ApiSettings
from state.reader import Reader

MISSING_TOKEN = "Missing bearer token: send Authorization: Bearer <token>"


class BearerToken(HTTPBearer):
    """The token of an ``Authorization: Bearer <token>`` header, or 401.

    The scheme itself rather than a dependency on it: one dependency fewer to solve per request,
    and the OpenAPI document still lists the scheme.
    """

    async def __call__(self, request: HTTPConnection) -> str:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None or not credentials.credentials:
            raise Unauthorized(MISSING_TOKEN)
        return credentials.credentials


_bearer = BearerToken(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="An API token from `devact token create`",
)


async def get_reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


async def get_auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def app_settings(request: HTTPConnection) -> ApiSettings:
    """The app's settings, for a route that reads them directly: each dependency costs a route
    some 15 microseconds of FastAPI's bookkeeping per request, and settings are never swapped."""
    settings: ApiSettings = request.app.state.settings
    return settings


ReaderDep = Annotated[Reader, Depends(get_reader)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
TokenDep = Annotated[str, Security(_bearer)]
