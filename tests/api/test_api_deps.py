"""api/deps.py: the Temporal client dependency."""
from __future__ import annotations

from fastapi import Depends
from fastapi.testclient import TestClient

from api.deps import get_temporal


def _app_with_probe(app_factory, settings):
    app = app_factory(settings)

    @app.get("/probe")
    async def probe(client=Depends(get_temporal)) -> dict:
        return {"client": str(client)}

    return app


def test_get_temporal_uses_client_set_on_app(settings, app_factory):
    app = _app_with_probe(app_factory, settings)
    app.state.temporal = "preset-client"
    with TestClient(app) as c:
        assert c.get("/probe").json() == {"client": "preset-client"}


def test_get_temporal_unreachable_is_503(settings, app_factory):
    app = _app_with_probe(app_factory, settings.model_copy(update={"temporal_address": "127.0.0.1:1"}))
    with TestClient(app) as c:
        response = c.get("/probe")
    assert response.status_code == 503 and response.json()["error"] == "unavailable"
