"""Building the FastAPI app. Clients are created in the lifespan, never at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.access_log import AccessLog
from api.auth import Authenticator
from api.docs import docs_router
from api.errors import install_error_handlers
from api.fast_path import SeriesFastPath
from api.head import HeadAsGet
from api.live import LiveHub
from api.metrics import ApiMetrics, MetricsMiddleware
from api.overload import InFlightLimit
from api.request_id import RequestIdMiddleware
from api.routes import STATIC, router, series_routes
from api.security_headers import SecurityHeaders
from api.settings import ApiSettings
from state.connection import open_store
from state.errors import StoreUnavailable
from state.gate import Gate
from state.reader import Reader
from state.registry import Registry

log = logging.getLogger(__name__)


async def _write_token_uses(auth: Authenticator, registry: Registry, every_s: float) -> None:
    """Every ``every_s``, note when each token served since was last used (one HSET)."""
    while True:
        await asyncio.sleep(every_s)
        uses = auth.take_uses()
        try:
            await registry.record_token_uses(uses)
        except StoreUnavailable as exc:  # noted at the next minute instead
            log.warning("token uses not written (%s): trying again in a minute", exc)
            auth.put_back(uses)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = open_store(settings)
        gate = Gate(settings.redis_max_connections, settings.redis_queue_timeout_s)
        app.state.reader = Reader(redis, gate)
        app.state.auth = Authenticator(app.state.reader, settings.auth_cache_s)
        app.state.live = LiveHub(
            redis,
            app.state.reader,
            app.state.auth,
            settings.live_max_streams,
            settings.live_max_streams_per_token,
            app.state.metrics,
        )
        app.state.live.start()
        uses = asyncio.create_task(
            _write_token_uses(app.state.auth, Registry(redis), settings.token_uses_every_s)
        )
        try:
            yield
        finally:
            uses.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uses
            with contextlib.suppress(Exception):  # the last minute's, best effort
                await Registry(redis).record_token_uses(app.state.auth.take_uses())
            await app.state.live.stop()
            await redis.aclose()

    app = FastAPI(
        title="device-activity",
        version="0.1.0",
        description="Near-real-time activity time series of shared devices.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are api/docs.py's: the viewers the product ships
        redoc_url=None,
        # FastAPI's native OpenTelemetry asks on every request whether a provider is set up; the
        # product sets none up (its metrics are Prometheus', api/metrics.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = ApiMetrics()
    # Innermost first: a request refused for overload is still counted, timed and given its id.
    app.add_middleware(SeriesFastPath, routes=series_routes())
    app.add_middleware(InFlightLimit, limit=settings.max_in_flight, metrics=app.state.metrics)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(HeadAsGet)  # outermost: HEAD is GET to everything inside
    if settings.access_log:  # with the method as sent, the request id, every status
        app.add_middleware(AccessLog)
    app.add_middleware(RequestIdMiddleware)  # around even that: every answer carries the id
    app.add_middleware(SecurityHeaders)  # around everything: on every answer, errors included
    install_error_handlers(app)
    app.include_router(router)
    if settings.api_docs:
        app.include_router(docs_router)
    # The page's script, styles and the vendored chart library: everything it loads.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
