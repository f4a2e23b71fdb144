"""Load a procedure: parse (YAML/JSON) -> normalize (spec §6) -> validate (spec §7)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from procedures.errors import ProcedureError
from procedures.normalize import normalize
from procedures.parser import parse_document
from procedures.validator import validate

ConnectorCatalog = Mapping[str, dict]
Definition = dict[str, Any]


def load_procedure(text: str, filename: str = "<input>",
                   catalog: ConnectorCatalog | None = None) -> Definition:
    """Return the normalized version-1 definition, or raise ProcedureError listing every problem.

    With ``catalog=None`` connectors and operations are not checked.
    """
    doc = normalize(parse_document(text, filename), catalog)
    problems = validate(doc, catalog)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise ProcedureError(f"{filename}: {count}", problems)
    return doc.data


def definition_sha256(definition: Definition) -> str:
    """sha256 (hex) of the definition's canonical JSON (sorted keys, compact separators)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
