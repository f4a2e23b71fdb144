"""Tenant secrets encrypted at rest with MultiFernet (newest key first; old keys still decrypt)."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from security import SecurityError


class SecretError(SecurityError):
    """A key that is not a Fernet key, or a value that cannot be decrypted."""


class SecretBox:
    """Encrypts with the first key; decrypts with any; ``rotate`` re-encrypts under the first."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretError("no encryption keys configured (setting secret_keys)")
        try:
            self._fernet = MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
        except (ValueError, TypeError):
            raise SecretError("an encryption key is not a valid Fernet key (32 url-safe base64 bytes)") from None

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """From a comma-separated key list, newest first (the ``secret_keys`` setting)."""
        return cls([k.strip() for k in (value or "").split(",") if k.strip()])

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key."""
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str) -> str:
        """Encrypt text under the newest key."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt a token made with any configured key."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError, TypeError, AttributeError):
            raise SecretError("cannot decrypt secret: unknown key or corrupted value") from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, UnicodeError, TypeError, AttributeError):
            raise SecretError("cannot rotate secret: unknown key or corrupted value") from None
