"""Prometheus metrics of the API, as a pure ASGI middleware (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "devact_api_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "devact_api_request_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.live_streams = Gauge(
            "devact_api_live_streams",
            "Live streams open in this process",
            registry=self.registry,
        )
        self.refused = Counter(
            "devact_api_refused",
            "Requests refused unread because a limit was reached: overload (503, the in-flight "
            "limit), live_streams (429, a cap on open live streams)",
            ["limit"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        """The labelled children per (route, status): ``labels()`` looks them up under a lock
        on every call. Bounded: the app's routes (and ``unmatched``) times the statuses."""

    def observe(self, route: str, status: int, seconds: float) -> None:
        series = self._series.get((route, status))
        if series is None:
            series = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._series[(route, status)] = series
        requests, latency = series
        requests.inc()
        latency.observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.metrics.observe(name, status, time.perf_counter() - started)
