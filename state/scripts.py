"""The Lua scripts of state/, loaded from ``state/lua`` and registered on a client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

T = TypeVar("T")


class ScriptsMissing(NoScriptError):
    """Redis answered NOSCRIPT: a restart emptied its script cache (``raise_errors``)."""


def raise_errors(replies: Sequence[Any]) -> None:
    """Raise :class:`ScriptsMissing` when a reply is NOSCRIPT, else the first error reply."""
    if any(isinstance(reply, NoScriptError) for reply in replies):
        raise ScriptsMissing("NOSCRIPT: Redis does not know the scripts")
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def _source(name: str) -> str:
    return files("state").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _with_lib(name: str) -> str:
    """A script that uses the helpers of lib_days.lua, after them."""
    return _source("lib_days") + "\n" + _source(name)


def _with_months(name: str) -> str:
    """A script that writes device-months: after lib_days.lua and lib_months.lua."""
    return _source("lib_days") + "\n" + _source("lib_months") + "\n" + _source(name)


@dataclass(frozen=True, slots=True)
class Scripts:
    apply_device: AsyncScript
    apply_client: AsyncScript
    advance_applied: AsyncScript
    read_counts: AsyncScript
    read_users: AsyncScript
    read_device_counts: AsyncScript
    read_device_users: AsyncScript
    migrate_month: AsyncScript

    @classmethod
    def register(cls, redis: Redis | RedisCluster) -> Scripts:
        """Bind the scripts to ``redis``; they are sent by SHA and loaded on first NOSCRIPT."""
        return cls(
            apply_device=redis.register_script(_with_months("apply_device")),
            apply_client=redis.register_script(_with_lib("apply_client")),
            advance_applied=redis.register_script(_source("advance_applied")),
            read_counts=redis.register_script(_source("read_counts")),
            read_users=redis.register_script(_source("read_users")),
            read_device_counts=redis.register_script(_source("read_device_counts")),
            read_device_users=redis.register_script(_with_lib("read_device_users")),
            migrate_month=redis.register_script(_with_months("migrate_month")),
        )

    async def load(self, redis: Redis | RedisCluster) -> None:
        """Load every script into the server's cache (after a restart emptied it)."""
        for script in (
            self.apply_device,
            self.apply_client,
            self.advance_applied,
            self.read_counts,
            self.read_users,
            self.read_device_counts,
            self.read_device_users,
            self.migrate_month,
        ):
            await redis.script_load(script.script)

    async def reloading(
        self, redis: Redis | RedisCluster, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """``attempt()``; when Redis did not know the scripts (:class:`ScriptsMissing`), they
        are loaded and it is made once more. Safe for what state/ sends: reads, and scripts that
        skip what they already applied (a writer's attempt resumes after what was answered).
        The one place of state/ that handles NOSCRIPT."""
        try:
            return await attempt()
        except ScriptsMissing:
            await self.load(redis)
        return await attempt()
