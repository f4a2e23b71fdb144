"""Built-in connectors (connectors/builtin/*.yaml) and per-tenant catalogs.

The built-in files are read like a tenant's custom spec (`load_connector`: the procedure
language's YAML 1.2 reader, problems located by line and column), so both follow one set of rules.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from connectors.spec import load_connector, normalize_connector

BUILTIN_DIR = Path(__file__).parent / "builtin"


@lru_cache(maxsize=1)
def _load_builtins() -> dict[str, dict]:
    specs = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        spec = load_connector(path.read_text(encoding="utf-8"), str(path))
        specs[spec["connector"]] = spec
    return specs


def builtin_connectors() -> dict[str, dict]:
    """Connector id -> normalized spec of every built-in connector (loaded once; a copy)."""
    return copy.deepcopy(_load_builtins())


def catalog_for(custom: list[dict]) -> dict[str, dict]:
    """Built-ins plus a tenant's custom connectors (normalized; a custom id overrides a built-in)."""
    catalog = builtin_connectors()
    for data in custom:
        spec = normalize_connector(data)
        catalog[spec["connector"]] = spec
    return catalog
