"""Request dependencies: what a route takes as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Unauthorized
from api.settings import ApiSettings
from state.reader import Reader

_bearer = HTTPBearer(auto_error=False, description="An API token from `devact token create`")


def get_reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or 401."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Missing bearer token: send Authorization: Bearer <token>")
    return credentials.credentials


ReaderDep = Annotated[Reader, Depends(get_reader)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
TokenDep = Annotated[str, Depends(bearer_token)]
