"""The activity route reads its parameters from the request itself (not through FastAPI's
parameter machinery): the answers, the check order and the OpenAPI document stay those of
docs/api.md. The reader is a stub; no Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import QueryParams

from api import fast_path
from api.app import create_app
from api.auth import Authenticator
from api.deps import get_auth, get_reader
from api.settings import ApiSettings
from state.dates import buckets, previous_range
from state.logs import current_fields
from state.queries import Comparison, Missing, Period, Series, SeriesAnswer, SeriesQuery
from state.registry import TokenGrant, hash_token, token_id

CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
PATH = f"/v2/clients/{CLIENT}/analytics/devices/{DEVICE}/activity"
TEMPLATE = "/v2/clients/{client_id}/analytics/devices/{device_id}/activity"
AUTH = {"Authorization": "Bearer da_token"}


class StubReader:
    """Grants the token CLIENT, whose device DEVICE is; answers 1, 2, 3, ... per bucket, and as
    a range's total the sum of its buckets (activity-count) or 10 per day (user-count, which is
    not the sum of the buckets)."""

    def __init__(self) -> None:
        self.grants: list[str] = []
        self.calls: list[SeriesQuery] = []
        self.missing: Missing | None = None

    async def grant(self, token_hash: str) -> TokenGrant | None:
        self.grants.append(token_hash)
        if token_hash != hash_token("da_token"):
            return None
        return TokenGrant(frozenset({CLIENT}), all_clients=False)

    async def series(self, query: SeriesQuery) -> SeriesAnswer:
        self.calls.append(query)
        return SeriesAnswer(self.missing, _counting(query, query.first, query.last))

    async def compare(self, query: SeriesQuery) -> Comparison:
        self.calls.append(query)
        before = previous_range(query.first, query.last)
        periods = [
            Period(first, last, series, _total(query, first, last, series))
            for first, last in [(query.first, query.last)] + ([] if before is None else [before])
            for series in [_counting(query, first, last)]
        ]
        return Comparison(self.missing, periods[0], periods[1] if len(periods) > 1 else None)


def _total(query: SeriesQuery, first: date, last: date, series: Series) -> int:
    if query.metric == "activity-count":
        return sum(series.values)
    return 10 * ((last - first).days + 1)


def _counting(query: SeriesQuery, first: date, last: date) -> Series:
    found = buckets(first, last, query.granularity)
    return Series(tuple(b.first.isoformat() for b in found), list(range(1, len(found) + 1)))


@pytest.fixture
def reader() -> StubReader:
    return StubReader()


@pytest.fixture(params=["fastapi", "lean"])
def client(request: pytest.FixtureRequest, reader: StubReader) -> Iterator[TestClient]:
    """Each test runs twice: through FastAPI's route (its dependencies overridden with the
    stubs), and through the lean path of api/fast_path.py (the stubs in the app's state, where
    the lifespan puts the real ones), which must answer the same."""
    app = create_app(
        ApiSettings(redis_url="redis://127.0.0.1:1/0", redis_cluster=False, max_range_days=90)
    )
    auth = Authenticator(reader, ttl_s=5.0)  # type: ignore[arg-type]
    if request.param == "fastapi":
        app.dependency_overrides[get_reader] = lambda: reader
        app.dependency_overrides[get_auth] = lambda: auth
    with TestClient(app) as test_client:
        if request.param == "lean":
            app.state.reader, app.state.auth = reader, auth
        yield test_client


def get(client: TestClient, headers: dict[str, str] | None = AUTH, **query: str) -> Any:
    return client.get(PATH, params=query, headers=headers)


def test_the_series_of_a_valid_request_with_granularity_left_out_is_daily(
    client: TestClient, reader: StubReader
) -> None:
    response = get(client, metric="user-count", start_date="2026-01-30", end_date="2026-02-02")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "metric": "user-count",
        "label": "Daily Users",
        "granularity": "daily",
        "period": {"start": "2026-01-30", "end": "2026-02-02"},
        "data": [
            {"date": "2026-01-30", "value": 1},
            {"date": "2026-01-31", "value": 2},
            {"date": "2026-02-01", "value": 3},
            {"date": "2026-02-02", "value": 4},
        ],
    }
    assert reader.grants == [hash_token("da_token")]
    assert [(q.client, q.device) for q in reader.calls] == [(CLIENT, DEVICE)]


def test_path_ids_in_upper_case_are_read_in_lower_case(
    client: TestClient, reader: StubReader
) -> None:
    response = client.get(
        TEMPLATE.format(client_id=CLIENT.upper(), device_id=DEVICE.upper()),
        params={"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-31"},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.json()["data"][0] == {"date": "2026-01-01", "value": 1}
    assert (reader.calls[0].client, reader.calls[0].device) == (CLIENT, DEVICE)


def test_no_bearer_token_is_401_before_redis_is_asked(
    client: TestClient, reader: StubReader
) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        response = get(client, headers=headers, metric="activity-count")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
    assert reader.grants == []
    assert reader.calls == []


def test_an_unknown_token_is_401_with_the_token_lookup_alone(
    client: TestClient, reader: StubReader
) -> None:
    response = get(
        client,
        headers={"Authorization": "Bearer da_made_up"},
        metric="activity-count",
        start_date="2026-01-01",
        end_date="2026-03-31",
    )
    assert response.status_code == 401
    assert reader.grants == [hash_token("da_made_up")]
    assert reader.calls == []


def test_a_token_of_another_client_is_403_with_the_token_lookup_alone(
    client: TestClient, reader: StubReader
) -> None:
    other = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    response = client.get(
        TEMPLATE.format(client_id=other, device_id=DEVICE),
        params={"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-02"},
        headers=AUTH,
    )
    assert response.status_code == 403
    assert reader.grants == [hash_token("da_token")]
    assert reader.calls == []


def test_a_grant_is_remembered_between_requests(client: TestClient, reader: StubReader) -> None:
    for _ in range(3):
        response = get(
            client, metric="activity-count", start_date="2026-01-01", end_date="2026-01-02"
        )
        assert response.status_code == 200
    assert reader.grants == [hash_token("da_token")]
    assert len(reader.calls) == 3


def test_a_bad_parameter_is_400_once_the_token_is_judged(
    client: TestClient, reader: StubReader
) -> None:
    response = get(client, metric="invalid-metric", start_date="2026-01-01", end_date="2026-01-02")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_parameter",
        "message": "Unknown metric: invalid-metric. Valid values: activity-count, user-count",
        "details": {"metric": "invalid-metric"},
    }
    assert reader.grants == [hash_token("da_token")]  # the token was judged first
    assert reader.calls == []  # and nothing read for a request that cannot be answered


def test_the_document_lists_the_routes_parameters_and_no_422(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][TEMPLATE]["get"]
    listed = [(p["in"], p["name"], p["required"]) for p in operation["parameters"]]
    assert listed == [
        ("path", "client_id", True),
        ("path", "device_id", True),
        ("query", "metric", False),
        ("query", "start_date", False),
        ("query", "end_date", False),
        ("query", "granularity", False),
        ("query", "compare", False),
    ]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "422" not in operation["responses"]  # docs/api.md: never a 422


def test_requests_are_counted_by_route_and_status(client: TestClient) -> None:
    get(client, metric="activity-count", start_date="2026-01-01", end_date="2026-01-02")
    get(client, metric="activity-count", start_date="2026-01-01", end_date="2026-01-02")
    get(client, headers={}, metric="activity-count")
    text = client.get("/metrics").text
    assert f'devact_api_requests_total{{route="{TEMPLATE}",status="200"}} 2.0' in text
    assert f'devact_api_requests_total{{route="{TEMPLATE}",status="401"}} 1.0' in text
    assert f'devact_api_request_seconds_count{{route="{TEMPLATE}"}} 3.0' in text


def compared(client: TestClient, metric: str, start_date: str, end_date: str) -> Any:
    """The body of a successful compare=previous_period request."""
    response = get(
        client,
        metric=metric,
        start_date=start_date,
        end_date=end_date,
        compare="previous_period",
    )
    assert response.status_code == 200
    return response.json()


def test_compare_adds_the_total_the_previous_period_and_the_change(
    client: TestClient, reader: StubReader
) -> None:
    """The stub answers 1, 2, 3, ... per bucket for every series: this range's 1 + 2 + 3 = 6,
    the previous three days' 6 too, so the change is 0."""
    body = compared(client, "activity-count", "2026-03-01", "2026-03-03")
    assert body["total"] == 6
    assert body["previous"] == {
        "period": {"start": "2026-02-26", "end": "2026-02-28"},
        "total": 6,
        "data": [
            {"date": "2026-02-26", "value": 1},
            {"date": "2026-02-27", "value": 2},
            {"date": "2026-02-28", "value": 3},
        ],
    }
    assert body["change"] == 0


def test_an_unknown_compare_is_400(client: TestClient) -> None:
    response = get(
        client, metric="activity-count", start_date="2026-03-01", end_date="2026-03-03", compare="x"
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"compare": "x"}


def test_every_route_of_the_api_documents_an_example_answer(client: TestClient) -> None:
    """docs/api.md: the OpenAPI document lists every route with an example body."""
    paths = client.get("/openapi.json").json()["paths"]
    routes = [p for p in paths if p.startswith("/v2/")]
    assert len(routes) == 5
    for path in routes:
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert any("example" in media for media in content.values()), path


def test_compare_answers_the_totals_of_state_and_a_previous_period_clipped_at_year_1(
    client: TestClient,
) -> None:
    """0001-01-03 .. 01-07 is 5 days; the days before it are 01-01 and 01-02 alone."""
    body = compared(client, "user-count", "0001-01-03", "0001-01-07")
    assert (body["total"], body["change"]) == (50, (50 - 20) / 20)
    assert body["previous"] == {
        "period": {"start": "0001-01-01", "end": "0001-01-02"},
        "total": 20,
        "data": [{"date": "0001-01-01", "value": 1}, {"date": "0001-01-02", "value": 2}],
    }


def test_compare_from_the_first_day_of_the_calendar_has_no_previous_period(
    client: TestClient,
) -> None:
    body = compared(client, "activity-count", "0001-01-01", "0001-01-02")
    assert (body["total"], body["change"]) == (3, None)
    assert body["previous"] == {"period": None, "total": 0, "data": []}


@pytest.mark.parametrize("compare", [None, "previous_period"])
@pytest.mark.parametrize(
    ("missing", "message", "details"),
    [
        ("client", f"Unknown client: {CLIENT}", {"client_id": CLIENT.upper()}),
        ("device", f"Unknown device for this client: {DEVICE}", {"device_id": DEVICE.upper()}),
    ],
)
def test_what_state_finds_missing_is_a_404_naming_the_id_as_given(
    client: TestClient,
    reader: StubReader,
    missing: Missing,
    message: str,
    details: dict[str, str],
    compare: str | None,
) -> None:
    reader.missing = missing
    query = {"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-02"}
    response = client.get(
        TEMPLATE.format(client_id=CLIENT.upper(), device_id=DEVICE.upper()),
        params=query | ({} if compare is None else {"compare": compare}),
        headers=AUTH,
    )
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": message, "details": details}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic da_token", "da_token", "Token da_token"],
)
def test_a_missing_or_other_scheme_token_is_the_same_401(
    client: TestClient, reader: StubReader, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = get(client, headers=headers, metric="activity-count")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "Missing bearer token: send Authorization: Bearer <token>",
            "details": {},
        }
    }
    assert reader.grants == []


@pytest.mark.parametrize(
    "authorization", ["bearer da_token", "BEARER  da_token ", "Bearer da_token"]
)
def test_the_scheme_is_read_in_any_case_and_the_token_stripped(
    client: TestClient, authorization: str
) -> None:
    response = get(
        client,
        headers={"Authorization": authorization},
        metric="activity-count",
        start_date="2026-01-01",
        end_date="2026-01-02",
    )
    assert response.status_code == 200


def test_the_last_of_a_repeated_parameter_counts(client: TestClient) -> None:
    query = "metric=nonsense&metric=user-count&start_date=2026-01-01&end_date=2026-01-02"
    response = client.get(f"{PATH}?{query}", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["metric"] == "user-count"


class FieldsHandler(logging.Handler):
    """Each record's message beside the context fields in effect when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, dict[str, object]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), dict(current_fields())))


def test_the_access_log_names_the_route_the_client_the_token_and_the_request(
    client: TestClient,
) -> None:
    access = logging.getLogger("devact.access")
    handler, level = FieldsHandler(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        get(client, metric="activity-count", start_date="2026-01-01", end_date="2026-01-02")
        get(client, headers={"Authorization": "Bearer da_token", "X-Request-ID": "r-1"})
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    [(ok, fields), (bad, bad_fields)] = handler.lines
    assert (ok, bad) == (f"GET {TEMPLATE} 200", f"GET {TEMPLATE} 400")
    assert fields["client_id"] == bad_fields["client_id"] == CLIENT
    assert fields["token_id"] == token_id(hash_token("da_token"))
    assert (fields["status"], fields["route"]) == (200, TEMPLATE)
    assert bad_fields["request_id"] == "r-1"


def test_a_get_of_a_series_is_answered_by_the_lean_path_and_other_methods_are_not(
    reader: StubReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean path (api/fast_path.py) answers a GET of either series route, unless a test
    overrides the app's dependencies; a HEAD is a GET inside (api/head.py), a POST is FastAPI's
    405."""
    answered: list[str] = []
    original = fast_path.series_answer

    async def spy(path: Any, *rest: Any) -> Any:
        answered.append(path["client_id"])
        return await original(path, *rest)

    monkeypatch.setattr(fast_path, "series_answer", spy)
    app = create_app(ApiSettings(redis_url="redis://127.0.0.1:1/0", redis_cluster=False))
    query = {"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-02"}
    with TestClient(app) as client:
        app.state.reader, app.state.auth = reader, Authenticator(reader, ttl_s=5.0)  # type: ignore[arg-type]
        assert client.get(PATH, params=query, headers=AUTH).status_code == 200
        assert (
            client.get(
                f"/v2/clients/{CLIENT}/analytics/activity", params=query, headers=AUTH
            ).status_code
            == 200
        )
        head = client.head(PATH, params=query, headers=AUTH)
        assert (head.status_code, head.content) == (200, b"")
        assert len(answered) == 3
        post = client.post(PATH, params=query, headers=AUTH)
        assert post.status_code == 405
        assert post.json()["error"]["code"] == "method_not_allowed"
        assert len(answered) == 3
        app.dependency_overrides[get_reader] = lambda: reader
        assert client.get(PATH, params=query, headers=AUTH).status_code == 200
        assert len(answered) == 3


@pytest.mark.parametrize(
    "query",
    [
        "",
        "a=1",
        "a=1&b=2&a=3",
        "a&b=&=c&&d==e",
        "metric=activity-count&start_date=2026-01-01&end_date=2026-03-31&granularity=daily",
        "a=%41%2B+b&c+d=%zz&e=%E2%82%AC",
        "a=1;b=2&c",
        "&&&",
        "x=\u00e9&y=\u00ff",
    ],
)
def test_the_lean_paths_query_is_starlettes(query: str) -> None:
    raw = query.encode("utf-8").decode("latin-1")
    assert fast_path.query_args(raw) == dict(QueryParams(query.encode("utf-8")))
