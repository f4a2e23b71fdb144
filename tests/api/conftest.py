"""Fixtures of the API tests: an app on the test database, tenants with their API keys."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import CORE_ROUTERS, create_app
from settings import Settings

ADMIN_TOKEN = "admin-test-token"


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:
    """Settings on the test database with a fresh secret key and an admin token."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        secret_keys=Fernet.generate_key().decode(),
        admin_token=ADMIN_TOKEN,
    )


def _make_app(settings: Settings) -> FastAPI:
    return create_app(settings, routers=CORE_ROUTERS)


@pytest.fixture
def app_factory() -> Callable[[Settings], FastAPI]:
    """Builds the app with the core routers only (runs/approvals are tested by their owners)."""
    return _make_app


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the app (lifespan run: engine and tables created)."""
    with TestClient(_make_app(settings)) as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers of the admin API."""
    return {"X-Admin-Token": ADMIN_TOKEN}


@pytest.fixture
def make_tenant(client: TestClient, admin: dict[str, str]) -> Callable[[str], dict[str, str]]:
    """Create a tenant through the admin API; returns auth headers for it."""

    def make(name: str) -> dict[str, str]:
        response = client.post("/v1/tenants", json={"name": name}, headers=admin)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['api_key']}"}

    return make


@pytest.fixture
def auth(make_tenant) -> dict[str, str]:
    """Auth headers of tenant Acme."""
    return make_tenant("Acme")


@pytest.fixture
def other_auth(make_tenant) -> dict[str, str]:
    """Auth headers of tenant Globex."""
    return make_tenant("Globex")
