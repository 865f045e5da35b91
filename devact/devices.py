"""`devact device show|move`: who a device belongs to, and giving it to another client on
purpose (docs/security.md, "Devices change hands on purpose only")."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from devact.common import uuid_or_exit, with_redis
from devact.literal import visible

device_app = typer.Typer(help="Show a device's owner, or move it to another client.")


@device_app.command("show")
def device_show(
    device: str,
    json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show which client a device belongs to."""
    owner = with_redis(lambda r: r.device_owner(uuid_or_exit(device)))
    if json:
        typer.echo(orjson.dumps({
            "device_id": owner.device_id, "client_id": owner.client_id,
            "client_name": owner.client_name, "listed": owner.listed,
            "partitions": owner.partitions,
        }))  # fmt: skip
        return
    name = f" ({visible(owner.client_name)})" if owner.client_name else ""
    typer.echo(f"device {owner.device_id} belongs to client {owner.client_id}{name}")
    if not owner.listed:
        typer.echo("  not listed in the client's devices: run `devact device move` to repair")


@device_app.command("move")
def device_move(
    device: str,
    to: Annotated[str, typer.Option("--to", help="The registered client to give it to.")],
) -> None:
    """Give a device to another client: its heartbeats count for that client from now on."""
    did, cid = uuid_or_exit(device), uuid_or_exit(to)
    before = with_redis(lambda r: r.move_device(did, cid))
    if before.client_id == cid:
        typer.echo(f"device {did} already belongs to client {cid}")
        return
    typer.echo(f"device {did} moved from client {before.client_id} to client {cid}")
    typer.echo(
        "  heartbeats refused while it belonged to the other client can be sent back: "
        "devact dlq redrive --reason device_client_mismatch"
    )
