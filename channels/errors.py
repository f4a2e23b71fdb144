"""The one error type of channels: a request that is forged, tampered or malformed."""
from __future__ import annotations


class ChannelError(Exception):
    """Base error of the channels package."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(ChannelError):
    """Signature or verification token wrong: 403, nothing changes."""

    status = 403


class NotConfigured(ChannelError):
    """The tenant has not configured this channel: 404."""

    status = 404
