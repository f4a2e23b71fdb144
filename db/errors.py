"""Errors of the store (db/): the one error type of this package and its kinds."""
from __future__ import annotations


class StoreError(Exception):
    """Base error of the store."""


class NotFound(StoreError):
    """The requested row does not exist (for this tenant)."""


class Conflict(StoreError):
    """A unique key refused the write (duplicate, already used, concurrent change)."""


class Invalid(StoreError):
    """A value the store cannot accept (e.g. a tenant name without any slug characters)."""
