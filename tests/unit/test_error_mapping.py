"""The API maps every failure to the contract's error shape in one place (api/errors.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Authenticator
from api.deps import get_auth, get_reader
from api.settings import ApiSettings
from state.registry import TokenGrant

ACTIVITY = (
    "/v2/clients/aa7cf840-9ca9-46a3-9778-9015d6580d50/analytics/devices/"
    "f1e2d3c4-b5a6-7890-abcd-ef1234567890/activity"
)
QUERY = {"metric": "activity-count", "start_date": "2026-01-01", "end_date": "2026-01-15"}


class ExplodingReader:
    """Stands in for a bug deep inside a request."""

    async def grant(self, *_: object) -> TokenGrant:
        return TokenGrant(frozenset(), all_clients=True)

    async def series(self, *_: object) -> None:
        raise RuntimeError("secret internal detail")


@pytest.mark.parametrize("path", ["fastapi", "lean"])
def test_a_bug_is_a_500_internal_error_without_a_stack_trace(path: str) -> None:
    """Through FastAPI's route (dependencies overridden) and through api/fast_path.py alike."""
    app = create_app(ApiSettings(redis_url="redis://127.0.0.1:1/0", redis_cluster=False))
    reader = ExplodingReader()
    auth = Authenticator(reader, ttl_s=5.0)  # type: ignore[arg-type]
    if path == "fastapi":
        app.dependency_overrides[get_reader] = lambda: reader
        app.dependency_overrides[get_auth] = lambda: auth
    with TestClient(app, raise_server_exceptions=False) as client:
        if path == "lean":
            app.state.reader, app.state.auth = reader, auth
        response = client.get(ACTIVITY, params=QUERY, headers={"Authorization": "Bearer t"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "Internal server error", "details": {}}
    }
    assert "secret" not in response.text
    assert "Traceback" not in response.text
