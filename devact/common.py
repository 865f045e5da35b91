"""What the `devact` commands share: the registry in Redis, and ids given on the command line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer

from state.connection import open_store
from state.errors import StateError
from state.registry import Registry
from state.settings import StoreSettings

T = TypeVar("T")


def with_redis(action: Callable[[Registry], Awaitable[T]]) -> T:
    """Run ``action`` on the registry of ``DEVACT_REDIS_URL``; a Redis error exits 2, said."""

    async def run() -> T:
        redis = open_store(StoreSettings())
        try:
            return await action(Registry(redis))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except StateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def uuid_or_exit(value: str) -> str:
    """``value`` as a canonical lower-case UUID, or exit 2 saying it is not one."""
    try:
        return str(uuid.UUID(value)).lower() if len(value) == 36 else _bad_uuid(value)
    except ValueError:
        return _bad_uuid(value)


def _bad_uuid(value: str) -> NoReturn:
    typer.echo(f"error: not a UUID: {value}", err=True)
    raise typer.Exit(2)
