"""Fixtures of the store tests."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlmodel import Session

from db.models import Tenant
from db.tenants import create_tenant


@pytest.fixture
def fernet_keys() -> list[str]:
    """Two fresh Fernet keys, newest first."""
    return [Fernet.generate_key().decode(), Fernet.generate_key().decode()]


@pytest.fixture
def tenant(session: Session) -> Tenant:
    """A tenant named Acme."""
    return create_tenant(session, "Acme")[0]


@pytest.fixture
def other_tenant(session: Session) -> Tenant:
    """A second tenant."""
    return create_tenant(session, "Globex")[0]
