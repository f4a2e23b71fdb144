"""`flywheel tenants create NAME`: the command's work (the CLI wiring prints the returned key)."""
from __future__ import annotations

from db.engine import open_database
from db.tenants import create_tenant
from settings import Settings


def create_tenant_command(name: str, settings: Settings) -> str:
    """Create tenant `name` in the configured database; returns its API key (shown once)."""
    with open_database(settings.resolved_database_url()) as session:
        _, key = create_tenant(session, name)
    return key
