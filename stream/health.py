"""The worker's health endpoints: ``/healthz`` (the process is up) and ``/readyz`` (it can do
its work), and its Prometheus ``/metrics`` (stream/metrics.py), served on
``DEVACT_WORKER_METRICS_PORT`` (0: not served).

Ready means: Redis answers a PING within its timeout, and no partition is held at a record
batch the worker cannot read (stream/unreadable.py). A held partition makes the worker not
ready although it keeps counting every other partition: an operator has to act (docs/
operations.md, "A partition is held"). ``/readyz`` answers 200 or 503 with the reasons:
``{"ready": false, "problems": ["heartbeats[2] offset 1200: record batch unreadable (...)"]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Problems = Callable[[], Awaitable[list[str]]]
Scrape = Callable[[], Awaitable[bytes]]


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class HealthServer:
    """A tiny HTTP server (aiohttp, which Faust already runs on) for probes."""

    def __init__(self, host: str, port: int, problems: Problems, scrape: Scrape) -> None:
        self._host = host
        self._port = port
        self._problems = problems
        self._scrape = scrape
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._port == 0:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError as exc:
            # Counting matters more than probes: say so loudly and go on without them.
            log.error("Cannot serve /healthz, /readyz and /metrics on %s:%d: %s",
                      self._host, self._port, exc)  # fmt: skip
            await runner.cleanup()
            return
        self._runner = runner
        log.info("Health endpoints on http://%s:%d/readyz", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await self._scrape()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _readyz(self, _: web.Request) -> web.Response:
        problems = await self._problems()
        return _json({"ready": not problems, "problems": problems}, 503 if problems else 200)
