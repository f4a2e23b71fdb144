"""api/errors.py: each package's error type becomes its HTTP status with a JSON body."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from connectors.errors import ConnectorError
from db.errors import Conflict, Invalid, NotFound, StoreError
from procedures.errors import Problem, ProcedureError
from security import SecurityError
from security.links import LinkExpired, LinkTampered

CASES = [
    (NotFound("x not found"), 404, "not_found"),
    (Conflict("taken"), 409, "conflict"),
    (Invalid("bad"), 422, "invalid"),
    (StoreError("disk on fire"), 500, "store_error"),
    (ConnectorError("validation", "bad spec"), 422, "invalid_connector"),
    (SecurityError("nope"), 403, "forbidden"),
    (LinkTampered("bad signature"), 403, "link_invalid"),
    (LinkExpired("expired", {"link_id": "l1"}), 410, "link_expired"),
    (ProcedureError("f: 1 problem", [Problem("f", 2, 3, "s1", "boom", "rule-x")]), 422, "invalid_procedure"),
]


@pytest.mark.parametrize("exc,status,code", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_error_mapping(settings, app_factory, exc, status, code):
    app = app_factory(settings)

    @app.get("/raise")
    def raise_it() -> None:
        raise exc

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/raise")
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code
    if status == 500:
        assert "disk" not in response.text
    if code == "invalid_procedure":
        assert body["problems"] == [{
            "file": "f", "line": 2, "column": 3, "step_id": "s1", "message": "boom",
            "rule": "rule-x", "text": "f:2:3: s1: boom",
        }]
