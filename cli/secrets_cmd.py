"""`flywheel secrets set|rotate`: the commands' work."""
from __future__ import annotations

from db.engine import open_database
from db.secrets import rotate_all, set_secret
from db.tenants import get_tenant
from security.secrets import SecretBox
from settings import Settings


def set_secret_command(tenant: str, name: str, value: str, settings: Settings) -> None:
    """Store (encrypted) secret `name` of tenant `tenant`; NotFound if the tenant does not exist."""
    box = SecretBox.from_setting(settings.secret_keys)
    with open_database(settings.resolved_database_url()) as session:
        get_tenant(session, tenant)
        set_secret(session, box, tenant, name, value)


def rotate_command(settings: Settings) -> int:
    """Re-encrypt every secret with the newest key of settings.secret_keys; returns how many."""
    box = SecretBox.from_setting(settings.secret_keys)
    with open_database(settings.resolved_database_url()) as session:
        return rotate_all(session, box)
