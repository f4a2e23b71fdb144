"""Tenant secrets, encrypted at rest with a SecretBox (security.secrets); values leave only decrypted
through get_secrets, which only activities call."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from sqlmodel import Session, select

from db.errors import Invalid, NotFound
from db.models import Secret, utcnow
from db.writes import commit_or_conflict


SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Box(Protocol):
    """What the store needs of security.secrets.SecretBox."""

    def encrypt(self, plaintext: str) -> str: ...
    def decrypt(self, token: str) -> str: ...
    def rotate(self, token: str) -> str: ...


def _row(session: Session, tenant_id: str, name: str) -> Secret | None:
    return session.exec(select(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name)).first()


def set_secret(session: Session, box: Box, tenant_id: str, name: str, value: str) -> Secret:
    """Create or replace a secret; only the ciphertext is stored. Names are identifiers."""
    if not re.match(SECRET_NAME_PATTERN, name):
        raise Invalid(f"secret name {name[:80]!r} must be letters, digits and '_' (not starting with a digit)")
    row = _row(session, tenant_id, name) or Secret(tenant_id=tenant_id, name=name, ciphertext="")
    row.ciphertext = box.encrypt(value)
    row.updated_at = utcnow()
    session.add(row)
    commit_or_conflict(session, f"secret {name!r} was written concurrently; retry")
    return row


def delete_secret(session: Session, tenant_id: str, name: str) -> None:
    """Delete a secret, or NotFound."""
    row = _row(session, tenant_id, name)
    if row is None:
        raise NotFound(f"secret {name!r} not found")
    session.delete(row)
    session.commit()


def list_secret_names(session: Session, tenant_id: str) -> list[Secret]:
    """The tenant's secret rows, by name (callers expose name and updated_at only)."""
    return list(session.exec(select(Secret).where(Secret.tenant_id == tenant_id).order_by(Secret.name)))


def get_secrets(session: Session, box: Box, tenant_id: str, names: Iterable[str]) -> dict[str, str]:
    """Decrypted values of the named secrets; NotFound naming any that are not set."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = session.exec(
        select(Secret).where(Secret.tenant_id == tenant_id, Secret.name.in_(sorted(wanted)))
    ).all()
    found = {row.name: box.decrypt(row.ciphertext) for row in rows}
    missing = sorted(wanted - found.keys())
    if missing:
        raise NotFound("secret(s) not set: " + ", ".join(missing))
    return found


def rotate_all(session: Session, box: Box) -> int:
    """Re-encrypt every secret of every tenant with the newest key; returns how many."""
    rows = session.exec(select(Secret)).all()
    for row in rows:
        row.ciphertext = box.rotate(row.ciphertext)
        session.add(row)
    session.commit()
    return len(rows)
