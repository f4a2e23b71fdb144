"""Text both databases can store. PostgreSQL's `text` and `jsonb` refuse the NUL character, and
`jsonb` a lone UTF-16 surrogate (valid JSON `"\\ud800"`, not a character); SQLite takes both.
Values are checked before a write so the answer is the same clear 422 on either database,
instead of a driver error (a 500) on PostgreSQL only."""
from __future__ import annotations

import re
from typing import Any

from db.errors import Invalid

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
_MAX_DEPTH = 200


def unstorable(value: Any, where: str, depth: int = 0) -> str | None:
    """Where in `value` (keys included) a string holds NUL or a lone surrogate, else None."""
    if depth > _MAX_DEPTH:
        return None  # nothing that deep reaches here: request bodies are bounded before
    if isinstance(value, str):
        return where if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _UNSTORABLE.search(key):
                return f"{where} (a key)"
            found = unstorable(item, f"{where}.{key}", depth + 1)
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = unstorable(item, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def storable_text(text: str) -> str:
    """`text` without the characters no database column keeps (for text that must be recorded
    whatever a remote system put into it, e.g. a message built from a connector's answer)."""
    return _UNSTORABLE.sub("", text)


def check_storable(value: Any, where: str) -> None:
    """Invalid (422) naming the place when `value` holds text no database column can keep."""
    found = unstorable(value, where)
    if found:
        raise Invalid(f"{found[:200]}: text cannot contain NUL characters or lone surrogates")
