"""`devact token create|list|revoke`: API tokens with an id, a name, an optional expiry and a
last-used time; the secret is printed once, at creation, and never again (docs/security.md)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from devact.common import uuid_or_exit, with_redis
from devact.literal import literal, visible
from state.registry import TOKEN_PREFIX, AmbiguousTokenId, TokenInfo, hash_token
from state.registry import token_id as id_of

token_app = typer.Typer(help="Create, list and revoke API tokens.")

_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_LIFETIME = timedelta(days=3660)
"""Ten years: a longer expiry is a typo more often than a wish (leave it out for none)."""


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``: a whole number and one unit; ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not a duration: {text!r} (a whole number and s, m, h or d: 30d)")
    lifetime = timedelta(**{_UNITS[found[2]]: int(found[1])})
    if lifetime > MAX_LIFETIME:
        raise ValueError(f"{text} is more than ten years: leave --expires-in out for no expiry")
    return lifetime


@token_app.command("create")
def token_create(
    client: Annotated[list[str] | None, typer.Option(help="A client the token may read.")] = None,
    all_clients: Annotated[bool, typer.Option(help="Grant every client.")] = False,
    name: Annotated[str, typer.Option(help="What the token is for (shown in lists).")] = "",
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime: a number and s, m, h or d (30d). Default: none.")
    ] = None,
) -> None:
    """Create a token; print it alone on stdout, this once (its id goes to stderr)."""
    if not client and not all_clients:
        typer.echo("error: give --client at least once, or --all-clients", err=True)
        raise typer.Exit(2)
    try:
        lifetime = None if expires_in is None else parse_duration(expires_in)
    except ValueError as exc:
        typer.echo(f"error: --expires-in: {exc}", err=True)
        raise typer.Exit(2) from None
    clients = [uuid_or_exit(c) for c in client or []]
    now = datetime.now(UTC).replace(microsecond=0)
    token = with_redis(lambda r: r.create_token(clients, all_clients, name, now, lifetime))
    typer.echo(token)
    expiry = "never expires" if lifetime is None else f"expires {_when(now + lifetime)}"
    typer.echo(f"token {id_of(hash_token(token))} created; {expiry}", err=True)


@token_app.command("list")
def token_list(
    client: Annotated[
        str | None, typer.Option(help="Only the tokens that may read this client.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="A JSON list of objects.")] = False,
) -> None:
    """List tokens: id, name, clients, creation, expiry, last use; never the secret."""
    wanted = None if client is None else uuid_or_exit(client)
    tokens = with_redis(lambda r: r.list_tokens(wanted))
    if json:
        sys.stdout.buffer.write(orjson.dumps([t.to_json() for t in tokens]) + b"\n")
        return
    Console().print(token_table(tokens, datetime.now(UTC)))
    typer.echo(f"{len(tokens)} token{'' if len(tokens) == 1 else 's'}")


def token_table(tokens: list[TokenInfo], now: datetime) -> Table:
    table = Table("id", "name", "clients", "created", "expires", "last used")
    table.columns[2].overflow = "fold"  # whole ids, on several lines if need be
    for t in tokens:
        expires = "never" if t.expires_at is None else _when(t.expires_at)
        if t.expired(now):
            expires += " (expired)"
        table.add_row(
            literal(t.id), literal(t.name), literal(" ".join(t.clients)), _when(t.created_at),
            literal(expires), _when(t.last_used_at, "never"),
        )  # fmt: skip
    return table


def _when(moment: datetime | None, missing: str = "-") -> str:
    return missing if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, from `devact token list`.")],
) -> None:
    """Revoke a token by its id: 401 from then on, and its live streams end."""
    wanted = token_id
    if token_id.startswith(TOKEN_PREFIX):  # the secret: named by its id from here on
        wanted = id_of(hash_token(token_id))
        typer.echo(
            f"warning: that is the token's secret, now in your shell history: pass its id "
            f"({wanted}) next time",
            err=True,
        )
    try:
        revoked = with_redis(lambda r: r.revoke_token_id(wanted))
    except AmbiguousTokenId as exc:
        typer.echo(f"error: {exc}: give the whole 12-character id", err=True)
        raise typer.Exit(2) from None
    if not revoked:
        typer.echo(f"error: no token has the id {visible(wanted)}", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")
