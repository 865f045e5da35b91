"""The routes: the activity series, health, readiness, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Authenticator
from api.deps import AuthDep, ReaderDep, TokenDep, app_settings
from api.errors import InvalidParameter, NotFound, Unauthorized
from api.head import HEAD_SCOPE_KEY
from api.live import LiveHub, LiveResponse, live_points
from api.params import (
    ActivityParams,
    PathId,
    parse_activity_params,
    parse_live_params,
    parse_ranking_params,
)
from api.ranking import RANKING_QUERY, ranking_body
from api.series import compare_body, series_body
from api.settings import ApiSettings
from state.queries import Metric, Missing, RankingQuery
from state.reader import Reader

router = APIRouter()
P = TypeVar("P")
STATIC = Path(__file__).parent / "static"

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid parameter"},
    401: {"description": "Missing, unknown or revoked token"},
    403: {"description": "The token has no access to this client"},
    404: {"description": "Unknown client or device"},
    503: {"description": "The data store is unavailable, or this server is at its limit"},
}


EXAMPLE_CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
SERIES_EXAMPLE = {
    "metric": "user-count",
    "label": "Daily Users",
    "granularity": "daily",
    "period": {"start": "2026-01-01", "end": "2026-01-03"},
    "data": [
        {"date": "2026-01-01", "value": 3},
        {"date": "2026-01-02", "value": 4},
        {"date": "2026-01-03", "value": 0},
    ],
}
RANKING_EXAMPLE = {
    "metric": "activity-count",
    "label": "Total Activity",
    "period": {"start": "2026-01-01", "end": "2026-03-31"},
    "order": "asc",
    "limit": 2,
    "total_devices": 412,
    "devices": [
        {"device_id": "f1e2d3c4-b5a6-7890-abcd-ef1234567890", "value": 0},
        {"device_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "value": 17},
    ],
}


def _example(body: object) -> dict[str, Any]:
    """A 200 answer's documentation with an example body (the OpenAPI document shows it)."""
    return {
        "description": "Successful Response",
        "content": {"application/json": {"example": body}},
    }


def _json(body: object, status: int = 200) -> Response:
    # Serialised once with orjson: several times faster than FastAPI's default encoder.
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


ACTIVITY_PATH = "/v2/clients/{client_id}/analytics/devices/{device_id}/activity"
CLIENT_ACTIVITY_PATH = "/v2/clients/{client_id}/analytics/activity"
RANKING_PATH = "/v2/clients/{client_id}/analytics/devices"
LIVE_PATH = ACTIVITY_PATH + "/live"
ACTIVITY_QUERY = {
    "metric": "activity-count or user-count",
    "start_date": "YYYY-MM-DD, inclusive",
    "end_date": "YYYY-MM-DD, inclusive",
    "granularity": "daily (default), weekly, monthly or quarterly",
    "compare": "previous_period: add the total, the previous period and the change",
}


def _query_parameter(name: str, text: str) -> dict[str, Any]:
    return {
        "description": text,
        "in": "query",
        "name": name,
        "required": False,
        "schema": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": text,
            "title": name.replace("_", " ").title(),
        },
    }


def _ranking_parameters() -> list[dict[str, Any]]:
    path = {
        "in": "path",
        "name": "client_id",
        "required": True,
        "schema": {"title": "Client Id", "type": "string"},
    }
    return [path] + [_query_parameter(n, text) for n, text in RANKING_QUERY.items()]


def _live_parameters() -> list[dict[str, Any]]:
    return [
        p for p in _documented_parameters(device=True) if p["in"] == "path" or p["name"] == "metric"
    ]


def _documented_parameters(device: bool) -> list[dict[str, Any]]:
    """A series route's parameters for the OpenAPI document, as FastAPI would list them
    declared as ``str`` (path) and ``str | None = None`` (query)."""

    def title(name: str) -> str:
        return name.replace("_", " ").title()

    path = [
        {"in": "path", "name": n, "required": True, "schema": {"title": title(n), "type": "string"}}
        for n in (("client_id", "device_id") if device else ("client_id",))
    ]
    query = [
        {
            "description": text,
            "in": "query",
            "name": n,
            "required": False,
            "schema": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": text,
                "title": title(n),
            },
        }
        for n, text in ACTIVITY_QUERY.items()
    ]
    return path + query


def _ids(path: Mapping[str, str]) -> tuple[PathId, PathId | None]:
    """The path's client and device (None on a client route) ids, normalised once."""
    device = path.get("device_id")
    return (
        PathId.of("client_id", path["client_id"]),
        None if device is None else PathId.of("device_id", device),
    )


def _parse(
    args: Mapping[str, str], settings: ApiSettings, client: PathId, device: PathId | None
) -> ActivityParams | InvalidParameter:
    return parse_activity_params(
        client,
        device,
        args.get("metric"),
        args.get("start_date"),
        args.get("end_date"),
        args.get("granularity"),
        settings.max_range_days,
        args.get("compare"),
    )


def _valid(params: P | InvalidParameter) -> P:
    """The parameters, or their 400: checked once the token is (docs/api.md: 401, 403, 400,
    404), and before anything is read."""
    if isinstance(params, InvalidParameter):
        raise params
    return params


def _check_found(missing: Missing | None, client: PathId, device: PathId | None) -> None:
    """The 404s: an unknown client, or a device that is not the client's."""
    if missing is None:
        return
    if missing == "client" or device is None:
        raise NotFound(f"Unknown client: {client.id}", {"client_id": client.given})
    raise NotFound(f"Unknown device for this client: {device.id}", {"device_id": device.given})


async def series_answer(
    path: Mapping[str, str],
    args: Mapping[str, str],
    token: str,
    auth: Authenticator,
    reader: Reader,
    settings: ApiSettings,
) -> Response:
    """A series route's answer, of a device or of a whole client (docs/api.md), from the path's
    parameters, the query's (the last of each name) and the bearer token. Shared by the routes
    below and the lean path that answers them (api/fast_path.py)."""
    client, device = _ids(path)
    await auth.authorize(token, client)
    params = _valid(_parse(args, settings, client, device))
    if params.compare:
        comparison = await reader.compare(params.query)
        _check_found(comparison.missing, client, device)
        return _json(compare_body(params.query, comparison))
    answer = await reader.series(params.query)
    _check_found(answer.missing, client, device)
    return _json(series_body(params.query, answer.series))


@router.get(
    ACTIVITY_PATH,
    summary="A device's activity time series",
    responses={**ERROR_RESPONSES, 200: _example(SERIES_EXAMPLE)},
    openapi_extra={"parameters": _documented_parameters(device=True)},
)
async def device_activity(
    request: Request, token: TokenDep, auth: AuthDep, reader: ReaderDep
) -> Response:
    # The path and query parameters are read here, not declared to FastAPI: they are plain
    # strings that parse_activity_params checks, and FastAPI's per-parameter machinery cost more
    # than the rest of the route (about 90 microseconds a request). openapi_extra documents them.
    # The declared dependencies document the route (its security scheme); a GET is answered by
    # api/fast_path.py before FastAPI's routing, with the same series_answer.
    return await series_answer(
        request.path_params, request.query_params, token, auth, reader, app_settings(request)
    )


@router.get(
    CLIENT_ACTIVITY_PATH,
    summary="A client's activity time series, all its devices together",
    responses={**ERROR_RESPONSES, 200: _example(SERIES_EXAMPLE)},
    openapi_extra={"parameters": _documented_parameters(device=False)},
)
async def client_activity(
    request: Request, token: TokenDep, auth: AuthDep, reader: ReaderDep
) -> Response:
    return await series_answer(
        request.path_params, request.query_params, token, auth, reader, app_settings(request)
    )


@router.get(
    RANKING_PATH,
    summary="A client's devices ranked by a metric over a range, zeros included",
    responses={**ERROR_RESPONSES, 200: _example(RANKING_EXAMPLE)},
    openapi_extra={"parameters": _ranking_parameters()},
)
async def device_ranking(
    request: Request, token: TokenDep, auth: AuthDep, reader: ReaderDep
) -> Response:
    client, _ = _ids(request.path_params)
    await auth.authorize(token, client)
    args = request.query_params
    query: RankingQuery = _valid(
        parse_ranking_params(
            client,
            args.get("metric"),
            args.get("start_date"),
            args.get("end_date"),
            args.get("order"),
            args.get("limit"),
            app_settings(request).max_range_days,
        )
    )
    ranking = await reader.ranking(query)
    _check_found(ranking.missing, client, None)
    return _json(ranking_body(query, ranking))


@router.get(
    LIVE_PATH,
    summary="Today's point of a device as Server-Sent Events, pushed when it changes",
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "Server-Sent Events: today's point, then each change",
            "content": {
                "text/event-stream": {"example": 'data: {"date": "2026-12-02", "value": 41}\n\n'}
            },
        },
    },
    openapi_extra={"parameters": _live_parameters()},
)
async def device_live(
    request: Request, token: TokenDep, auth: AuthDep, reader: ReaderDep
) -> Response:
    client, device = _ids(request.path_params)
    assert device is not None  # the route's path has one
    await auth.authorize(token, client)
    metric: Metric = _valid(parse_live_params(client, device, request.query_params.get("metric")))
    _check_found(await reader.missing(client.id, device.id), client, device)
    if request.scope.get(HEAD_SCOPE_KEY):
        return Response(media_type="text/event-stream")
    hub: LiveHub = request.app.state.live
    release = hub.admit(token)  # 429 beyond the process's or the token's cap
    try:
        zone = await reader.client_timezone(client.id) or app_settings(request).default_timezone
    except BaseException:
        release()
        raise
    points = live_points(hub, reader, auth, token, client.id, device.id, metric, ZoneInfo(zone))
    return LiveResponse(points, release)


@router.get(
    "/v2/clients",
    summary="The clients this token may read (for a dashboard's client picker)",
    responses={
        200: _example(
            {
                "clients": [
                    {"client_id": EXAMPLE_CLIENT, "name": "demo", "timezone": "Europe/Berlin"}
                ]
            }
        ),
        401: ERROR_RESPONSES[401],
        503: ERROR_RESPONSES[503],
    },
)
async def clients(token: TokenDep, auth: AuthDep, reader: ReaderDep) -> Response:
    grant = await auth.grant(token)
    if grant is None:
        raise Unauthorized("Unknown, revoked or expired token")
    visible = await reader.clients_of(grant)
    return _json(
        {
            "clients": [
                {"client_id": c.client_id, "name": c.name, "timezone": c.timezone} for c in visible
            ]
        }
    )


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The device page: a dashboard served by the product itself (api/static/)."""
    return FileResponse(STATIC / "index.html")


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz", summary="Redis is reachable", responses={503: ERROR_RESPONSES[503]})
async def readyz(reader: ReaderDep) -> Response:
    await reader.ping()  # StoreUnavailable becomes the contract's 503
    return _json({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


def series_routes() -> list[APIRoute]:
    """The device and client series routes, as declared above (api/fast_path.py answers them)."""
    wanted = (device_activity, client_activity)
    return [r for r in router.routes if isinstance(r, APIRoute) and r.endpoint in wanted]
