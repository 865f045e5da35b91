"""The in-flight limit: beyond ``max_in_flight`` requests at once, a fast 503 with Retry-After
instead of a queue that grows until every answer is late (docs/api.md, "Limits")."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import Unavailable, error_response
from api.metrics import ApiMetrics

RETRY_AFTER_S = 1
"""A crowd drains in well under a second at the rates an API process answers (docs/scaling.md)."""
_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes answer whatever the load, so an overloaded process is not restarted."""


class InFlightLimit:
    """Pure ASGI middleware counting the requests being answered. Live streams are not
    counted (they stay open for hours and have their own caps, api/live.py)."""

    def __init__(self, app: ASGIApp, limit: int, metrics: ApiMetrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in _EXEMPT or path.endswith("/live"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.refused.labels("overload").inc()
            refused = Unavailable(
                f"This server is answering its maximum of {self.limit} requests; retry shortly",
                {"limit": self.limit},
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await error_response(refused)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
