"""The CLI commands' work: create a tenant, set a secret, rotate keys."""
from __future__ import annotations

import pytest

from cli.secrets_cmd import rotate_command, set_secret_command
from cli.tenants import create_tenant_command
from db.engine import open_database
from db.errors import NotFound
from db.secrets import get_secrets
from db.tenants import tenant_for_key
from security.secrets import SecretBox
from settings import Settings


def test_create_set_and_rotate(database_url, tmp_path, fernet_keys):
    old_key, new_key = fernet_keys[1], fernet_keys[0]
    settings = Settings(database_url=database_url, data_dir=tmp_path, secret_keys=old_key)
    key = create_tenant_command("Acme", settings)
    set_secret_command("acme", "token", "s3cret", settings)
    with pytest.raises(NotFound):
        set_secret_command("nobody", "token", "x", settings)
    rotated = settings.model_copy(update={"secret_keys": f"{new_key},{old_key}"})
    assert rotate_command(rotated) == 1
    with open_database(database_url) as session:
        assert tenant_for_key(session, key).id == "acme"
        assert get_secrets(session, SecretBox([new_key]), "acme", ["token"]) == {"token": "s3cret"}
