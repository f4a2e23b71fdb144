"""Local key material for the embedded defaults: generated once, kept in the data directory.

Production sets FLYWHEEL_SECRET_KEYS and FLYWHEEL_LINK_SECRET; a laptop run needs neither, so
the first start writes `keys.json` (mode 0600) under the data dir and later starts reuse it.
"""
from __future__ import annotations

import json
import os
import secrets as pysecrets

from cryptography.fernet import Fernet

from settings import Settings


def ensure_keys(settings: Settings) -> Settings:
    """Settings with secret_keys and link_secret filled from the data dir when not configured."""
    if settings.secret_keys and settings.link_secret:
        return settings
    path = settings.data_dir / "keys.json"
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        stored = {"secret_keys": Fernet.generate_key().decode(),
                  "link_secret": pysecrets.token_urlsafe(32)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
    return settings.model_copy(update={
        "secret_keys": settings.secret_keys or stored["secret_keys"],
        "link_secret": settings.link_secret or stored["link_secret"],
    })
