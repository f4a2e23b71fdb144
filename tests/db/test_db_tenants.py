"""Tenants and API keys in the store."""
from __future__ import annotations

import pytest
from sqlmodel import select

from db.errors import Conflict, Invalid, NotFound
from db.models import ApiKey
from db.tenants import create_tenant, get_tenant, slugify, tenant_for_key, update_tenant_settings


def test_create_tenant_returns_key_stored_only_as_hash(session):
    tenant, key = create_tenant(session, "Acme Corp")
    assert tenant.id == "acme-corp" and tenant.name == "Acme Corp"
    assert key.startswith("fw_") and len(key) > 40
    row = session.exec(select(ApiKey)).one()
    assert row.key_hash != key and key not in row.key_hash and row.prefix == key[:10]
    assert tenant.settings == {"allowed_hosts": [], "connector_base_urls": {}}


def test_tenant_for_key(session):
    tenant, key = create_tenant(session, "Acme")
    other, other_key = create_tenant(session, "Globex")
    assert tenant_for_key(session, key).id == tenant.id
    assert tenant_for_key(session, other_key).id == other.id
    assert tenant_for_key(session, key + "x") is None
    assert tenant_for_key(session, "not-a-key") is None
    assert tenant_for_key(session, "") is None


def test_duplicate_tenant_conflicts(session):
    create_tenant(session, "Acme")
    with pytest.raises(Conflict):
        create_tenant(session, "ACME")
    assert get_tenant(session, "acme").name == "Acme"  # session still usable after the conflict


def test_slug_rules():
    assert slugify("  Ünïcode & Co!! ") == "unicode-co"
    assert len(slugify("x" * 200)) == 64
    with pytest.raises(Invalid):
        slugify("!!!")


def test_update_settings_replaces_given_keys(session, tenant):
    update_tenant_settings(session, tenant.id, allowed_hosts=["shop.internal"])
    update_tenant_settings(session, tenant.id, connector_base_urls={"shopify": "http://127.0.0.1:9000"})
    session.expire_all()
    assert get_tenant(session, tenant.id).settings == {
        "allowed_hosts": ["shop.internal"],
        "connector_base_urls": {"shopify": "http://127.0.0.1:9000"},
    }
    with pytest.raises(NotFound):
        update_tenant_settings(session, "nobody", allowed_hosts=[])
