"""Secrets at rest and signed links. ``SecurityError`` is the package's one error type."""


class SecurityError(Exception):
    """Base error of the security package."""


__all__ = ["SecurityError"]
