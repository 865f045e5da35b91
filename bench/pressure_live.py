"""Live streams under pressure: 1,000 Server-Sent Events streams (200 in a quick run) on one API
process, over 10 devices of one client, while a real ``devact worker`` consumes Kafka.

The streams (``GET .../activity/live?metric=activity-count``) are spread over the 10 devices and
over tokens of 250 streams each (a token may hold 500 per process, DEVACT_LIVE_MAX_STREAMS_PER_
TOKEN). Each stream is a plain asyncio protocol that notes the monotonic time at which each
``data:`` line reaches it (httpx would spend more of this process's CPU per event, which the
later streams of a round would wait on).

A round: one heartbeat per device (activity 1), produced in one call; the change-to-event
latency of a stream is from just before that call to the arrival of the event showing the new
value, so it holds the producer, the broker, the worker's fetch and batch, Redis, the worker's
change message, the API's read and the event's way to the client. Five rounds (three in a quick
run), each after the last round reached every stream and a pause of ``GAP_S``.

The first stream of a round to show it gives the pipeline's part (Kafka, worker, Redis, one
read); the round's spread, its last stream less its first, is the API writing the event to
every stream one after the other (and this process noting them).

Redis reads per change: ``INFO commandstats`` counts every ``EVALSHA``, the worker's scripts
(state/writer.py: one per device and batch, one per partition and batch advancing its applied
position, one per client and batch for the fleet aggregates) as well as the API's reads. So the
same rounds run first with no stream open: their ``EVALSHA`` delta is the worker's own. A round
the worker happens to split over two batches costs it one client script more (and one more
advance if a partition's heartbeats fall on both sides): the worker's batch count (its
``/metrics``) in both phases accounts for the first. The API's reads, the stream phase's
delta less the worker's, are divided by the device changes (devices x rounds). The API shares
one read per device and change among the streams watching it (api/live.py, ``Channel``): about
1 is expected, not the 100 streams per device.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from redis.asyncio import Redis

from bench.common import Child, children, create_topic, kafka, waiting, worker_env
from bench.query_data import BenchError
from bench.query_load import HttpServer, _tree_cpu_s
from devact.progress import Meter
from devtools.demo.producer import Publisher
from devtools.services import Endpoints, free_port
from state.registry import Registry

log = logging.getLogger(__name__)

CLIENT = "00000000-0000-4000-8000-00000000b1e5"
DEVICES = 10
STREAMS_PER_TOKEN = 250
TOPIC = "bench.pressure"
PARTITIONS = 6
GROUP = "bench-pressure"
ACTIVITY = 1
"""Activity of each heartbeat of a round: every stream's value goes up by one a round."""
GAP_S = 2.0
JOIN_DEADLINE_S = 120.0
OPEN_DEADLINE_S = 60.0
ROUND_DEADLINE_S = 30.0
SETTLE_S = 0.5
"""Pause before and after the counted rounds: reads under way finish before Redis is asked."""
POLL_S = 0.01
MS = 1000.0


@dataclass(frozen=True)
class Live:
    devices: list[str]
    tokens: list[str]
    streams: int


async def prepare(redis_url: str, streams: int) -> Live:
    """Register the live client (UTC) and its tokens, on the Redis the section loaded."""
    redis = Redis.from_url(redis_url)
    try:
        registry = Registry(redis)
        await registry.add_client(CLIENT, "UTC", "pressure live", datetime.now(UTC))
        tokens = [
            await registry.create_token([CLIENT], all_clients=False, name=f"bench live {n}")
            for n in range(math.ceil(streams / STREAMS_PER_TOKEN))
        ]
    finally:
        await redis.aclose()
    names = uuid.UUID(CLIENT)
    devices = [str(uuid.uuid5(names, f"live/{n}")) for n in range(DEVICES)]
    return Live(devices, tokens, streams)


# --- A stream -----------------------------------------------------------------------------------


@dataclass(eq=False)
class SseStream(asyncio.Protocol):
    """One live stream on a socket of its own: the HTTP/1.1 answer's status, and each event's
    arrival time and value."""

    request: bytes
    status: int = 0
    closed: bool = False
    events: list[tuple[float, int]] = field(default_factory=list)
    transport: asyncio.BaseTransport | None = None
    _buffer: bytes = b""
    _text: bytes = b""
    _head: bool = True
    _chunked: bool = False

    @property
    def value(self) -> int | None:
        return self.events[-1][1] if self.events else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buffer += data
        if self._head:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1").lower()
            self._buffer = self._buffer[end + 4 :]
            self._head = False
            self.status = int(head.split(" ", 2)[1])
            self._chunked = "transfer-encoding: chunked" in head
        if self._chunked:
            while (eol := self._buffer.find(b"\r\n")) >= 0:
                size = int(self._buffer[:eol].split(b";")[0], 16)
                if len(self._buffer) < eol + size + 4:
                    break
                self._text += self._buffer[eol + 2 : eol + 2 + size]
                self._buffer = self._buffer[eol + size + 4 :]
        else:
            self._text, self._buffer = self._text + self._buffer, b""
        *lines, self._text = self._text.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self.events.append((now, int(orjson.loads(line[5:])["value"])))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _request(api: HttpServer, device: str, token: str) -> bytes:
    path = f"/v2/clients/{CLIENT}/analytics/devices/{device}/activity/live?metric=activity-count"
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


async def _open(api: HttpServer, live: Live) -> list[SseStream]:
    """Every stream, until each has its first event (or its refusal); stream n watches device
    n % 10 with token n % tokens."""
    loop = asyncio.get_running_loop()
    streams = [
        SseStream(_request(api, live.devices[n % DEVICES], live.tokens[n % len(live.tokens)]))
        for n in range(live.streams)
    ]
    try:
        with Meter("pressure: opening live streams", len(streams), "streams") as opened:
            for stream in streams:
                await loop.create_connection(lambda s=stream: s, "127.0.0.1", api.port)
            limit = time.monotonic() + OPEN_DEADLINE_S
            while True:
                ready = sum(1 for s in streams if s.events or s.closed or s.status >= 300)
                opened.update(ready)
                if ready == len(streams):
                    break
                if time.monotonic() > limit:
                    raise BenchError(f"{ready} of {len(streams)} live streams answered in time")
                await asyncio.sleep(POLL_S)
    except BaseException:
        _close(streams)
        raise
    refused = Counter(s.status for s in streams if s.status != 200 or s.closed)
    if refused:
        _close(streams)
        raise BenchError(f"live streams refused or closed, by status: {dict(refused)}")
    return streams


def _close(streams: list[SseStream]) -> None:
    for stream in streams:
        stream.close()


# --- The worker and Redis -----------------------------------------------------------------------


@dataclass
class WorkerProbe:
    """The worker's ``/metrics``: events applied and batches, as counted by the worker."""

    http: httpx.AsyncClient
    url: str
    worker: Child

    async def read(self) -> tuple[int, int]:
        text = (await self.http.get(self.url)).text
        applied = batches = 0.0
        for line in text.splitlines():
            if line.startswith('devact_worker_events_total{outcome="applied"} '):
                applied = float(line.split()[-1])
            elif line.startswith("devact_worker_batch_messages_count "):
                batches = float(line.split()[-1])
        return int(applied), int(batches)

    async def until_applied(self, events: int, deadline_s: float) -> int:
        """Poll until the worker has applied ``events`` in all; its batches then."""
        limit = time.monotonic() + deadline_s
        while True:
            self.worker.check_alive()
            try:
                applied, batches = await self.read()
            except httpx.TransportError:  # its health server not up yet
                applied = batches = -1
            if applied >= events:
                return batches
            if time.monotonic() > limit:
                raise BenchError(f"the worker applied {applied} of {events} events in time")
            await asyncio.sleep(POLL_S)


async def _commands(redis_url: str) -> Counter[str]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    redis = Redis.from_url(redis_url)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def _ran(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    ignored = {"info", "ping", "hello", "client|setinfo"}
    return {
        k: after[k] - before[k] for k in sorted(after) if after[k] > before[k] and k not in ignored
    }


# --- Rounds -------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one series of rounds cost Redis and the worker."""

    commands: dict[str, int]
    batches: int
    api_cpu_s: float
    rounds: list[list[float]] = field(default_factory=list)
    """Per round, each stream's latency (seconds)."""
    missed: int = 0

    @property
    def latencies(self) -> list[float]:
        return [latency for each in self.rounds for latency in each]

    @property
    def evalsha(self) -> int:
        """Script calls: the API's read-only ones go by EVALSHA_RO (state/reader.py)."""
        return self.commands.get("evalsha", 0) + self.commands.get("evalsha_ro", 0)


def _events(live: Live) -> list[dict[str, object]]:
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [
        {
            "client_id": CLIENT,
            "device_id": device,
            "user_id": None,
            "generated_at_utc": at,
            "total_activity_count": ACTIVITY,
        }
        for device in live.devices
    ]


async def _rounds(
    redis_url: str,
    api: HttpServer,
    publisher: Publisher,
    probe: WorkerProbe,
    live: Live,
    rounds: int,
    streams: list[SseStream],
) -> Phase:
    """``rounds`` rounds; with ``streams``, each until every stream shows it (else until the
    worker applied it), and each stream's latency."""
    assert api.process is not None
    applied, batches_before = await probe.read()
    base = [s.value or 0 for s in streams]
    await asyncio.sleep(SETTLE_S)
    before, cpu_before = await _commands(redis_url), _tree_cpu_s(api.process.pid)
    per_round: list[list[float]] = []
    missed = 0
    label = f"pressure: rounds, {len(streams) or 'no'} live streams open"
    with Meter(label, rounds, "rounds") as done:
        for r in range(1, rounds + 1):
            sent = time.monotonic()
            await publisher.publish(_events(live))
            applied += DEVICES
            if streams:
                targets = [b + r * ACTIVITY for b in base]
                latencies: list[float] = []
                missed += await _until_shown(streams, targets, sent, latencies, probe.worker)
                per_round.append(latencies)
            else:
                await probe.until_applied(applied, ROUND_DEADLINE_S)
            done.advance(1)
            if r < rounds:
                await asyncio.sleep(GAP_S)
    batches = await probe.until_applied(applied, ROUND_DEADLINE_S)
    await asyncio.sleep(SETTLE_S)
    ran = _ran(before, await _commands(redis_url))
    cpu = _tree_cpu_s(api.process.pid) - cpu_before
    return Phase(ran, batches - batches_before, cpu, per_round, missed)


async def _until_shown(
    streams: list[SseStream],
    targets: list[int],
    sent: float,
    latencies: list[float],
    worker: Child,
) -> int:
    """Wait until every stream shows its target, adding each one's latency; the number that
    did not within ``ROUND_DEADLINE_S``."""
    limit = sent + ROUND_DEADLINE_S
    waiting_for = set(range(len(streams)))
    while waiting_for and time.monotonic() < limit:
        await asyncio.sleep(POLL_S)
        worker.check_alive()
        for n in list(waiting_for):
            value = streams[n].value
            if value is not None and value >= targets[n]:
                waiting_for.discard(n)
    for n, stream in enumerate(streams):
        if n not in waiting_for:
            at = next(t for t, v in stream.events if v >= targets[n])
            latencies.append(at - sent)
    if waiting_for:
        log.warning("live: %d streams did not show the round in time", len(waiting_for))
    return len(waiting_for)


def _percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def run(
    endpoints: Endpoints, api: HttpServer, run_dir: Path, live: Live, rounds: int
) -> dict[str, object]:
    """The live part, on the running ``api``: a worker of its own on a topic of its own."""
    await create_topic(kafka(endpoints), TOPIC, PARTITIONS)
    port = free_port()
    env = worker_env(endpoints, TOPIC, GROUP, run_dir) | {
        "DEVACT_WORKER_METRICS_HOST": "127.0.0.1",
        "DEVACT_WORKER_METRICS_PORT": str(port),
    }
    worker = [str(Path(api.argv[0])), "worker"]
    with children(("pressure-worker", worker, env), logs=run_dir / "logs") as (child,):
        async with (
            httpx.AsyncClient(timeout=5.0) as http,
            Publisher(kafka(endpoints), TOPIC) as publisher,
        ):
            probe = WorkerProbe(http, f"http://127.0.0.1:{port}/metrics", child)
            # The devices' first heartbeats: the worker joins its group, the devices exist.
            await publisher.publish(_events(live))
            await waiting(
                "pressure: the worker joins its group",
                probe.until_applied(DEVICES, JOIN_DEADLINE_S),
            )
            quiet = await _rounds(endpoints.redis_url, api, publisher, probe, live, rounds, [])
            streams = await _open(api, live)
            try:
                busy = await _rounds(
                    endpoints.redis_url, api, publisher, probe, live, rounds, streams
                )
            finally:
                _close(streams)
    return _figures(live, rounds, quiet, busy)


def _figures(live: Live, rounds: int, quiet: Phase, busy: Phase) -> dict[str, object]:
    latencies = busy.latencies
    if not latencies:
        raise BenchError("no live event arrived in any round")
    # The first stream of a round to show it: Kafka, the worker, Redis and one read; the rest
    # of the round's spread is the API writing the event to every stream, one after another.
    first = sorted(min(each) for each in busy.rounds if each)
    spread = sorted(max(each) - min(each) for each in busy.rounds if each)
    changes = rounds * DEVICES
    # The worker's scripts: those of the quiet rounds, plus one (the client's aggregates) per
    # batch more than the quiet rounds took, when the same heartbeats came in more batches.
    worker_scripts = quiet.evalsha + (busy.batches - quiet.batches)
    api_reads = busy.evalsha - worker_scripts
    prefix = f"live_{live.streams}"
    figures: dict[str, object] = {
        "live_streams": live.streams,
        f"{prefix}_p50_ms": round(_percentile(latencies, 50) * MS, 1),
        f"{prefix}_p99_ms": round(_percentile(latencies, 99) * MS, 1),
        f"{prefix}_max_ms": round(max(latencies) * MS, 1),
        f"{prefix}_first_stream_p50_ms": round(_percentile(first, 50) * MS, 1),
        f"{prefix}_spread_p50_ms": round(_percentile(spread, 50) * MS, 1),
        f"{prefix}_reads_per_change": round(api_reads / changes, 2),
        f"{prefix}_api_reads": api_reads,
        f"{prefix}_device_changes": changes,
        f"{prefix}_events": len(latencies),
        f"{prefix}_missed": busy.missed,
        f"{prefix}_tokens": len(live.tokens),
        f"{prefix}_rounds": rounds,
        f"{prefix}_devices": DEVICES,
        f"{prefix}_evalsha": busy.evalsha,
        f"{prefix}_worker_evalsha": worker_scripts,
        f"{prefix}_batches": busy.batches,
        f"{prefix}_quiet_evalsha": quiet.evalsha,
        f"{prefix}_quiet_batches": quiet.batches,
        f"{prefix}_commands": busy.commands,
        f"{prefix}_quiet_commands": quiet.commands,
        # What the streams added, by command: the API's reads (one pipelined round trip each)
        # and its token lookups (api/auth.py's cache); exact when both phases took as many
        # batches.
        f"{prefix}_api_commands": {
            k: n - quiet.commands.get(k, 0)
            for k, n in busy.commands.items()
            if n != quiet.commands.get(k, 0)
        },
        f"{prefix}_api_cpu_ms_per_event": round(MS * busy.api_cpu_s / len(latencies), 3),
        f"{prefix}_api_cpu_s": round(busy.api_cpu_s, 2),
        f"{prefix}_quiet_api_cpu_s": round(quiet.api_cpu_s, 2),
    }
    log.info("pressure, live: %s", figures)
    return figures
