"""Signed (and encrypted) approval links, CSRF tokens and request hashes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from security import SecurityError


class LinkTampered(SecurityError):
    """Bad signature or garbled token (HTTP 403)."""


class LinkExpired(SecurityError):
    """Authentic but past its ``exp`` (HTTP 410); ``payload`` is the decoded link."""

    def __init__(self, message: str, payload: dict[str, Any]) -> None:
        super().__init__(message)
        self.payload = payload


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def request_hash(obj: Any) -> str:
    """sha256 hex digest of canonical JSON (sorted keys, compact, UTF-8)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class LinkSigner:
    """Issues URL-safe Fernet tokens carrying a payload, a random link id ``lid`` and ``exp``."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise SecurityError("link secret is empty (setting link_secret)")
        digest = hashlib.sha256(b"flywheel-link:" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._csrf_key = hashlib.sha256(b"flywheel-csrf:" + secret.encode()).digest()

    def issue(self, payload: dict[str, Any], expires_at: datetime) -> str:
        """A token for ``payload`` plus ``lid`` (random) and ``exp`` (unix seconds)."""
        data = {**payload, "lid": secrets.token_urlsafe(16), "exp": int(_utc(expires_at).timestamp())}
        raw = json.dumps(data, separators=(",", ":"), default=str).encode()
        return self._fernet.encrypt(raw).decode().rstrip("=")

    def verify(self, token: str, now: datetime) -> dict[str, Any]:
        """The payload of an authentic, unexpired token; LinkTampered / LinkExpired otherwise."""
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(self._fernet.decrypt(padded.encode()))
        except (InvalidToken, ValueError, TypeError, AttributeError):
            raise LinkTampered("link is invalid or has been tampered with") from None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or "lid" not in data:
            raise LinkTampered("link is invalid or has been tampered with")
        if _utc(now).timestamp() >= data["exp"]:
            raise LinkExpired("link has expired", data)
        return data

    def csrf_token(self, link_id: str) -> str:
        """HMAC-SHA256 of the link id, for the form behind a link."""
        return hmac.new(self._csrf_key, link_id.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, link_id: str, token: str) -> bool:
        """Constant-time comparison of ``token`` with csrf_token(link_id)."""
        return hmac.compare_digest(self.csrf_token(link_id), str(token or ""))
