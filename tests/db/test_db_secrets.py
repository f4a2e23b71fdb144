"""Secrets in the store: encrypted at rest, decrypted only on request, key rotation."""
from __future__ import annotations

import pytest
from sqlmodel import select

from db.errors import Invalid, NotFound
from db.models import Secret
from db.secrets import delete_secret, get_secrets, list_secret_names, rotate_all, set_secret
from security.secrets import SecretBox


def test_secret_is_stored_encrypted_and_decrypted_on_request(session, tenant, other_tenant, fernet_keys):
    box = SecretBox(fernet_keys[:1])
    set_secret(session, box, tenant.id, "shop_token", "shpat_supersecret")
    row = session.exec(select(Secret)).one()
    assert "shpat_supersecret" not in row.ciphertext and row.ciphertext.startswith("gAAAA")
    assert get_secrets(session, box, tenant.id, ["shop_token"]) == {"shop_token": "shpat_supersecret"}
    with pytest.raises(NotFound, match="shop_token"):
        get_secrets(session, box, other_tenant.id, ["shop_token"])
    assert get_secrets(session, box, tenant.id, []) == {}


def test_set_replaces_and_delete_removes(session, tenant, fernet_keys):
    box = SecretBox(fernet_keys[:1])
    set_secret(session, box, tenant.id, "b", "1")
    first = set_secret(session, box, tenant.id, "a", "1").updated_at
    second = set_secret(session, box, tenant.id, "a", "2").updated_at
    assert second >= first
    assert [s.name for s in list_secret_names(session, tenant.id)] == ["a", "b"]
    assert get_secrets(session, box, tenant.id, ["a"]) == {"a": "2"}
    delete_secret(session, tenant.id, "a")
    with pytest.raises(NotFound):
        delete_secret(session, tenant.id, "a")
    with pytest.raises(Invalid):
        set_secret(session, box, tenant.id, "bad name", "x")


def test_rotate_all_reencrypts_under_newest_key(session, tenant, other_tenant, fernet_keys):
    old_key, new_key = fernet_keys[1], fernet_keys[0]
    old_box = SecretBox([old_key])
    set_secret(session, old_box, tenant.id, "a", "alpha")
    set_secret(session, old_box, other_tenant.id, "b", "beta")
    rotating = SecretBox([new_key, old_key])
    assert rotate_all(session, rotating) == 2
    new_only = SecretBox([new_key])
    assert get_secrets(session, new_only, tenant.id, ["a"]) == {"a": "alpha"}
    assert get_secrets(session, new_only, other_tenant.id, ["b"]) == {"b": "beta"}
