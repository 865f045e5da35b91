"""The `devact` command: worker, api, client, token, inspect, migrate, produce
(docs/operations.md)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

import orjson
import typer

from devact.common import uuid_or_exit, with_redis
from devact.devices import device_app
from devact.literal import visible
from devact.ops import check_kafka, dlq_app, status
from devact.redis_acl import redis_acl
from devact.tokens import token_app
from state.connection import open_store
from state.errors import StateError
from state.inspect import inspect_client, inspect_device, retention_days_back
from state.logs import LogFormatError, configure_logging
from state.migrate import Migrated
from state.migrate import migrate as migrate_layout
from state.registry import Client, validate_timezone
from state.settings import StoreSettings

T = TypeVar("T")

app = typer.Typer(help="device-activity: heartbeats in, device activity series out.")
client_app = typer.Typer(help="Register and list clients.")
app.add_typer(client_app, name="client")
app.add_typer(token_app, name="token")
app.add_typer(device_app, name="device")
app.command("redis-acl")(redis_acl)
app.add_typer(dlq_app, name="dlq")
app.command()(status)


class Compression(StrEnum):
    """Kafka's record batch codecs (devtools.demo.producer.COMPRESSIONS), for typer's --help."""

    none = "none"
    gzip = "gzip"
    snappy = "snappy"
    lz4 = "lz4"
    zstd = "zstd"


DEMO_CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEMO_DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"


def _setup_logging(level: str = "INFO") -> None:
    """Text, or JSON lines with ``DEVACT_LOG_FORMAT=json`` (devact/logs.py)."""
    try:
        configure_logging(level)
    except LogFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def worker() -> None:
    """Run the Faust worker: heartbeats topic -> Redis (until SIGTERM)."""
    from stream.settings import WorkerSettings
    from stream.worker import run_worker

    settings = WorkerSettings()
    _setup_logging(settings.log_level)
    run_worker(settings)


@app.command()
def replay(
    since: Annotated[
        str | None,
        typer.Option("--from", help="Replay from this ISO-8601 instant instead of the beginning."),
    ] = None,
) -> None:
    """Re-read the heartbeats topic into Redis; what Redis already holds is left unchanged."""
    from devact.progress import Meter
    from stream.replay import replay as run_replay
    from stream.settings import WorkerSettings
    from stream.topics import TopicNotFound
    from stream.unreadable import UnreadableBatch

    _setup_logging()
    settings = WorkerSettings()
    check_kafka(settings)
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            typer.echo(f"error: not an ISO-8601 instant: {since}", err=True)
            raise typer.Exit(2) from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    try:
        with Meter("replay", unit="messages") as replayed:
            summary = asyncio.run(run_replay(settings, start, replayed.update))
    except (TopicNotFound, UnreadableBatch) as exc:
        # An unreadable batch stops the replay there: everything before it is applied, and
        # nothing after it is skipped silently (docs/operations.md says what to do).
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"replayed {summary.messages} messages: {summary.applied} events applied, "
        f"{summary.skipped} already there, {summary.refused_before} refused before "
        f"(dead letters, or sent back by a redrive), {summary.expired} in days expired since, "
        f"{summary.rejected} rejected now (not sent to the DLQ)"
    )


class ApiServer(StrEnum):
    """The HTTP servers `devact api` runs the same ASGI app under (docs/operations.md)."""

    uvicorn = "uvicorn"
    granian = "granian"


DEFAULT_API_SERVER = ApiServer.uvicorn
"""The default stays uvicorn unless granian answers more than 10% more series per second on one
process (bench/query.py measures both in the same run: query_uvicorn_*, query_granian_*). Issue
22's runs: granian never did, and cost more API CPU per request in three runs of four (0.57 to
0.64 ms against uvicorn's 0.46 to 0.64)."""


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 1,
    server: Annotated[
        ApiServer, typer.Option(help="The HTTP server: uvicorn or granian.")
    ] = DEFAULT_API_SERVER,
) -> None:
    """Run the HTTP API."""
    _setup_logging()
    if server is ApiServer.granian:
        _serve_granian(host, port, workers)
        return
    import uvicorn

    uvicorn.run(
        "api.main:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


def _serve_granian(host: str, port: int, workers: int) -> None:
    """Granian's ASGI interface, lifespan included: a worker whose startup fails (Redis settings
    refused, say) stops the server, as under uvicorn. Its own log at warning, without its access
    log (the app writes its own, api/access_log.py); the factory sets the app's logging up in
    each worker process (api/main.py)."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        "api.main:app_factory",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()


@client_app.command("add")
def client_add(
    client_id: str,
    timezone: Annotated[str, typer.Option(help="IANA timezone, e.g. Europe/Berlin.")],
    name: Annotated[str, typer.Option(help="A display name.")] = "",
) -> None:
    """Register a client, or change its timezone or name."""
    cid = uuid_or_exit(client_id)
    try:
        validate_timezone(timezone)
    except StateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    with_redis(lambda r: r.add_client(cid, timezone, name, datetime.now(UTC)))
    typer.echo(f"client {cid} timezone={timezone}")


@client_app.command("list")
def client_list(
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List clients with their timezone, name and number of devices."""
    for c in with_redis(lambda r: r.list_clients()):
        if json:
            typer.echo(orjson.dumps(asdict(c)))
        else:
            typer.echo(client_line(c))


def client_line(c: Client) -> str:
    """A client as ``client list`` prints it: its name is whatever was registered, shown
    literally (devact/literal.py); a tab in it could not shift the columns."""
    fields = (c.client_id, c.timezone, c.name)
    return "\t".join(map(visible, fields)) + f"\t{c.device_count} devices"


@app.command()
def inspect(
    client: Annotated[str, typer.Option(help="Client id.")],
    device: Annotated[
        str | None, typer.Option(help="Device id; without it, the client's aggregates.")
    ] = None,
    day: Annotated[
        str | None, typer.Option("--date", help="One local day (YYYY-MM-DD); default: all.")
    ] = None,
) -> None:
    """Print, as JSON, what Redis holds for a device, or for a client's fleet views."""
    settings = StoreSettings()
    cid = uuid_or_exit(client)
    did = None if device is None else uuid_or_exit(device)
    if day is not None:
        days = [date.fromisoformat(day)]
    else:
        days = retention_days_back(datetime.now(UTC).date(), settings.retention_days)

    async def run() -> dict[str, object]:
        redis = open_store(settings)
        try:
            if did is None:
                return await inspect_client(redis, cid, days)
            return await inspect_device(redis, cid, did, days)
        finally:
            await redis.aclose()

    typer.echo(orjson.dumps(asyncio.run(run()), option=orjson.OPT_INDENT_2).decode())


@app.command()
def migrate() -> None:
    """Move a Redis written before device-months (two keys a device-day) to their layout, in
    place: resumable and idempotent. Stop the workers first (docs/operations.md#upgrading)."""
    from devact.progress import Meter

    _setup_logging()  # off a terminal, progress comes as log lines
    settings = StoreSettings()

    async def run(advance: Callable[[int], None]) -> Migrated:
        redis = open_store(settings)
        try:
            return await migrate_layout(redis, advance)
        finally:
            await redis.aclose()

    with Meter("migrate", unit="device-days moved") as moved:
        done = asyncio.run(run(moved.advance))
    typer.echo(f"moved {done.days} device-days into their device-months ({done.months} calls)")


@app.command()
def produce(
    rate: Annotated[float, typer.Option(help="Live heartbeats per second.")] = 50.0,
    duration: Annotated[
        float | None, typer.Option(help="Seconds of live traffic; default: until stopped.")
    ] = None,
    clients: Annotated[int, typer.Option(help="Number of generated clients.")] = 3,
    devices: Annotated[int, typer.Option(help="Devices per client.")] = 20,
    timezone: Annotated[str, typer.Option(help="Timezone of generated clients.")] = "UTC",
    history_days: Annotated[
        int, typer.Option(help="First send this many past days of history.")
    ] = 0,
    per_message: Annotated[int, typer.Option(help="Heartbeats per message (JSON array).")] = 1,
    compression: Annotated[
        Compression, typer.Option(help="Codec of the record batches, as a producer sets it.")
    ] = Compression.none,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    demo: Annotated[
        bool, typer.Option(help="The demo client and device of the README, 14 days of history.")
    ] = False,
) -> None:
    """Generate realistic heartbeats (working hours, quiet weekends) into the topic (a development
    tool: it runs from a source checkout)."""
    from devact.progress import Meter
    from stream.settings import WorkerSettings

    _require_devtools()
    from devtools.demo.generator import HeartbeatGenerator
    from devtools.demo.producer import Publisher, publish_at_rate, scheduled

    _setup_logging()
    settings = WorkerSettings()
    check_kafka(settings)
    if demo:
        zones = {DEMO_CLIENT: "America/New_York"}
        generator = HeartbeatGenerator(
            zones, devices, seed, pinned_devices={DEMO_CLIENT: [DEMO_DEVICE]}
        )
        history_days = max(history_days, 14)
    else:
        zones = {str(_client_uuid(seed, n)): timezone for n in range(clients)}
        generator = HeartbeatGenerator(zones, devices, seed)

    async def run() -> None:
        async with Publisher(
            settings.kafka_connection(), settings.topic, per_message, compression.value
        ) as pub:
            if history_days:
                today = datetime.now(ZoneInfo(next(iter(zones.values())))).date()
                # History ends yesterday; today's data comes from the live traffic below.
                yesterday = today - timedelta(days=1)
                first = today - timedelta(days=history_days)
                # The generator draws how many a device-day gets: no total before the end.
                with Meter("produce (history)", unit="heartbeats") as sent:
                    await pub.publish(generator.history(first, yesterday, 96), sent.advance)
            with Meter("produce", scheduled(rate, duration), "heartbeats") as sent:
                await publish_at_rate(pub, generator.live, rate, duration, sent.advance)

    asyncio.run(run())


def _require_devtools() -> None:
    """Make the checkout's devtools/ importable, or exit 2 saying why there is none. An editable
    install maps only the shipped packages, and devtools/ sits beside them in a checkout; the
    wheel and the image have no devtools/ at all."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "devtools" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))
    if importlib.util.find_spec("devtools") is None:
        typer.echo(
            "error: `devact produce` is a development tool, available in a source checkout only",
            err=True,
        )
        raise typer.Exit(2)


def _client_uuid(seed: int, n: int) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"device-activity/demo/{seed}/{n}"))


def main() -> None:
    app(prog_name="devact")


if __name__ == "__main__":
    main()
