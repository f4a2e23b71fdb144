"""Custom connectors in the store."""
from __future__ import annotations

import pytest

from db.connectors import get_connector, list_connectors, put_connector, tenant_specs
from db.errors import NotFound


def test_put_creates_then_replaces(session, tenant, other_tenant):
    row, created = put_connector(session, tenant.id, "crm", {"connector": "crm", "v": 1})
    assert created
    row, created = put_connector(session, tenant.id, "crm", {"connector": "crm", "v": 2})
    assert not created
    session.expire_all()
    assert get_connector(session, tenant.id, "crm").spec == {"connector": "crm", "v": 2}
    assert [r.connector_id for r in list_connectors(session, tenant.id)] == ["crm"]
    assert tenant_specs(session, tenant.id) == {"crm": {"connector": "crm", "v": 2}}
    assert tenant_specs(session, other_tenant.id) == {}
    with pytest.raises(NotFound):
        get_connector(session, other_tenant.id, "crm")
