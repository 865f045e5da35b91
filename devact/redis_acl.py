"""`devact redis-acl`: the ACL users of the worker and the API, as commands for every Redis node
(state/acl.py; docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from state.acl import API, WORKER, Grant

PasswordFile = Annotated[
    Path,
    typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="A file holding the user's password (its first line): out of shell history and ps.",
    ),
]  # fmt: skip


def redis_acl(
    worker_password_file: PasswordFile,
    api_password_file: PasswordFile,
    acl_file: Annotated[
        bool, typer.Option("--acl-file", help="Lines of an ACL file instead of ACL SETUSER.")
    ] = False,
) -> None:
    """Print the ACL SETUSER commands of devact-worker and devact-api (passwords hashed).

    Send them to every Redis node, replicas included (a cluster does not share its users),
    for example piped to redis-cli --user <admin> --askpass; then ACL SAVE where the nodes
    keep an ACL file. Each command resets its user first: the rules and the password printed
    are all the user keeps (docs/security.md: rotating a password without downtime)."""
    for grant, path in ((WORKER, worker_password_file), (API, api_password_file)):
        password = _password(path, grant)
        typer.echo(grant.acl_file_line(password) if acl_file else " ".join(grant.setuser(password)))


def _password(path: Path, grant: Grant) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    password = lines[0].strip() if lines else ""
    if len(password) < 16:
        raise typer.BadParameter(
            f"{path}: the password of {grant.user} needs 16 characters or more"
        )
    return password
