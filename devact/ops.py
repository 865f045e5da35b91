"""The operators' commands: `devact status` and `devact dlq list|redrive` (docs/operations.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from devact.literal import literal
from stream.dlq import StoredDeadLetter

if TYPE_CHECKING:
    from devact.status import Status
    from stream.settings import WorkerSettings

dlq_app = typer.Typer(help="Read the dead-letter topic and send dead letters back.")

ReasonOption = Annotated[
    list[str] | None, typer.Option("--reason", help="Only this reason (repeatable).")
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="Only dead letters written at or after this ISO-8601 instant."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts instead of a table.")]


def check_kafka(settings: WorkerSettings) -> None:
    """Stop with one clear error (exit 1) when Kafka refuses the settings' credentials or
    certificate, before a client starts: an aiokafka client would log why it cannot bootstrap
    and fail with "Unable to bootstrap", or retry. A Kafka that cannot be reached at all is
    left to the command, which reports it as it always did."""
    from aiokafka.errors import KafkaConnectionError

    from stream.kafka import KafkaAccessRefused, check_access

    try:
        asyncio.run(check_access(settings.kafka_connection()))
    except KafkaConnectionError:
        return
    except KafkaAccessRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def status(
    max_lag: Annotated[
        int | None,
        typer.Option("--max-lag", help="Exit 1 when the group's total lag is above this."),
    ] = None,
    api_url: Annotated[
        str, typer.Option("--api", envvar="DEVACT_API_URL", help="The API's base URL.")
    ] = "http://127.0.0.1:8000",
    worker_urls: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            envvar="DEVACT_WORKER_URLS",
            help="A worker's metrics base URL (repeatable).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """One screen of the pipeline: lag per partition, dead letters, Redis, readiness."""
    from devact.status import gather
    from stream.settings import WorkerSettings

    settings = WorkerSettings()
    check_kafka(settings)
    workers = worker_urls or [f"http://127.0.0.1:{settings.worker_metrics_port}"]
    found = asyncio.run(gather(settings, api_url, workers))
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2, default=str))
    else:
        show_status(found, Console())
    if max_lag is not None and (found.lag is None or found.lag > max_lag):
        raise typer.Exit(1)


def show_status(found: Status, console: Console) -> None:
    """The status screen. Every value is printed as text (devact/literal.py): topic names, reasons,
    addresses and errors come from Kafka, Redis and other processes."""
    lag = "?" if found.lag is None else f"{found.lag:,}"
    group = literal(f" (group {found.group}): lag {lag}")
    console.print(Text.assemble(literal(found.topic, "bold"), group))
    table = Table("partition", "start", "end", "committed", "applied", "lag")
    for p in found.partitions:
        table.add_row(*(literal(str(v) if v is not None else "-") for v in (
            p.partition, p.start, p.end, p.committed, p.applied, p.lag)))  # fmt: skip
    console.print(table)
    letters = found.dead_letters
    if letters:
        by_reason = ", ".join(f"{r} {n}" for r, n in letters["by_reason"].items()) or "none"
        console.print(literal(f"dead letters: {letters['total']} ({by_reason})"))
    redis = found.redis
    if redis:
        memory = redis["used_memory"]
        kind = "Redis Cluster" if redis["cluster"] else "Redis"
        size = "?" if memory is None else f"{memory / 1e6:,.1f} MB"
        console.print(literal(f"{kind}: {size}, {redis['keys']} keys"))
        nodes = Table("node", "role", "healthy", "memory MB", "keys")
        for n in redis["nodes"]:
            memory_mb = "-" if n["used_memory"] is None else f"{n['used_memory'] / 1e6:,.1f}"
            healthy = "yes" if n["healthy"] else f"NO: {n['error']}"
            keys = str(n["keys"] if n["keys"] is not None else "-")
            nodes.add_row(*map(literal, (n["address"], n["role"], healthy, memory_mb, keys)))
        console.print(nodes)
    for name, ready in [("api", found.api), *(("worker", w) for w in found.workers)]:
        if ready is not None:
            state = "ready" if ready.ready else "NOT READY: " + "; ".join(ready.problems)
            console.print(literal(f"{name} {ready.url}: {state}"))
    for error in found.errors:
        console.print(literal(f"could not read {error}", "red"))


def _chooser(reasons: list[str] | None, since: str | None) -> Callable[[StoredDeadLetter], bool]:
    start = _instant(since) if since is not None else None
    wanted = set(reasons or [])

    def choose(letter: StoredDeadLetter) -> bool:
        if wanted and letter.reason not in wanted:
            return False
        return start is None or letter.timestamp >= start

    return choose


def _instant(text: str) -> datetime:
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        typer.echo(f"error: not an ISO-8601 instant: {text}", err=True)
        raise typer.Exit(2) from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _as_json(letter: StoredDeadLetter) -> dict[str, Any]:
    try:
        value: dict[str, Any] = {"value": letter.value.decode("utf-8")}
    except UnicodeDecodeError:
        value = {"value_base64": base64.b64encode(letter.value).decode()}
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp.isoformat(),
        "reason": letter.reason,
        "field": letter.field,
        "detail": letter.detail,
        "source": letter.source,
        "element": letter.element,
        "key": None if letter.key is None else letter.key.decode("utf-8", "replace"),
        **value,
    }


def dead_letter_table(letters: list[StoredDeadLetter]) -> Table:
    """The table of ``devact dlq list``. Every cell is heartbeat content or a header anyone who
    can write to the dead-letter topic chose: printed as text (devact/literal.py)."""
    table = Table("at", "reason", "field", "detail", "source", "original bytes")
    for letter in letters:
        at = f"{letter.partition}/{letter.offset}"
        original = repr(letter.value)[2:-1][:200]  # bytes escaped, as Python writes them
        cells = (at, letter.reason, letter.field or "", letter.detail, letter.source, original)
        table.add_row(*map(literal, cells))
    return table


@dlq_app.command("list")
def dlq_list(
    reason: ReasonOption = None,
    since: SinceOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show dead letters: reason, field, detail, source, and the original bytes."""
    from stream.dlq import read_dead_letters
    from stream.settings import WorkerSettings

    settings = WorkerSettings()
    check_kafka(settings)
    letters = asyncio.run(read_dead_letters(settings.kafka_connection(), settings.dlq_topic))
    chosen = [letter for letter in letters if _chooser(reason, since)(letter)][:limit]
    if as_json:
        for letter in chosen:
            sys.stdout.write(json.dumps(_as_json(letter)) + "\n")
        return
    Console().print(dead_letter_table(chosen))
    typer.echo(f"{len(chosen)} of {len(letters)} dead letters")


@dlq_app.command("redrive")
def dlq_redrive(
    reason: ReasonOption = None,
    since: SinceOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent.")] = False,
) -> None:
    """Send dead letters back to the heartbeats topic, to be judged again (each at most once,
    however often this runs)."""
    from stream.redrive import redrive
    from stream.settings import WorkerSettings

    settings = WorkerSettings()
    check_kafka(settings)
    summary = asyncio.run(
        redrive(
            settings.kafka_connection(),
            settings.dlq_topic,
            settings.topic,
            _chooser(reason, since),
            dry_run,
        )
    )
    verb = "would send" if dry_run else "sent"
    count = len(summary.chosen) if dry_run else summary.sent
    typer.echo(f"{verb} {count} events back to {settings.topic}; "
               f"{summary.already} matching ones were sent back before")  # fmt: skip
