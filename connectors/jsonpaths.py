"""JSONPath compile cache and response mapping (jsonpath-ng)."""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jsonpath_ng
from jsonpath_ng.jsonpath import JSONPath

_MULTI_MARKERS = ("*", "..", "?", ":", ",")


@lru_cache(maxsize=1024)
def compile_path(path: str) -> JSONPath:
    """Compile a JSONPath; raises ValueError when it does not parse."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("JSONPath must be a non-empty string")
    try:
        return jsonpath_ng.parse(path)
    except Exception as exc:  # jsonpath-ng raises bare Exception subclasses
        raise ValueError(f"JSONPath {path!r} does not compile: {exc}") from None


def select(path: str, data: Any) -> Any:
    """Value at ``path``: None when nothing matches; a list when the path can match many."""
    matches = [m.value for m in compile_path(path).find(data)]
    if any(marker in path for marker in _MULTI_MARKERS):
        return matches
    return matches[0] if matches else None


def map_paths(mapping: Mapping[str, str], data: Any) -> dict[str, Any]:
    """{name: select(path, data)} for every entry of ``mapping``."""
    return {name: select(path, data) for name, path in mapping.items()}
