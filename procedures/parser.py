"""Parse YAML or JSON procedure text into plain data plus the line/column of every node.

Both formats go through PyYAML's composer (SafeLoader machinery) so marks are kept. Scalars
are resolved with YAML 1.2 core-schema rules: only ``true``/``false`` are booleans (``on``,
``yes``, ``no`` stay strings), dates stay strings, and mapping keys are always strings.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from procedures.errors import ProcedureError, Problem

Path = tuple[str | int, ...]
Location = tuple[int, int]
MAX_NODES = 100_000

_TAG = "tag:yaml.org,2002:"


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema implicit resolution (no yes/no/on/off booleans, no timestamps)."""


_CoreResolver.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _TAG + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreResolver.add_implicit_resolver(
    _TAG + "float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, _CoreResolver):
    """Composer-only loader using the core-schema resolver."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _CoreResolver.__init__(self)


@dataclass
class Document:
    """Parsed procedure: plain data, and 1-based (line, column) of every value and key."""

    data: dict[str, Any]
    locations: dict[Path, Location] = field(default_factory=dict)
    filename: str = "<input>"
    format: Literal["yaml", "json"] = "yaml"
    key_locations: dict[Path, Location] = field(default_factory=dict)

    def where(self, path: Path, *, key: bool = False) -> Location:
        """Location of the node at ``path`` (its key when ``key``), else of its nearest ancestor."""
        if key and tuple(path) in self.key_locations:
            return self.key_locations[tuple(path)]
        probe = tuple(path)
        while probe:
            if probe in self.locations:
                return self.locations[probe]
            probe = probe[:-1]
        return self.locations.get((), (1, 1))


def detect_format(text: str, filename: str) -> Literal["yaml", "json"]:
    """``json`` for ``*.json`` files or text starting with ``{``; ``yaml`` otherwise."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "yaml"


def parse_document(text: str, filename: str = "<input>") -> Document:
    """Parse ``text`` (YAML or JSON) into a :class:`Document`; raise ProcedureError if invalid."""
    fmt = detect_format(text, filename)
    if fmt == "json":
        _check_json_syntax(text, filename)
        text = text.replace("\t", " ")  # valid JSON has no raw tabs inside strings
    try:
        node = _Loader(text).get_single_node()
    except RecursionError:
        raise _error(filename, 1, 1, f"document nested too deeply (at most {MAX_DEPTH} levels)", "syntax")
    except ReaderError as exc:  # a character YAML does not allow anywhere (NUL, other controls)
        line, col = _position(text, exc.position)
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise _error(filename, line, col, f"invalid {fmt.upper()}: the character {char!r} (#x{ord(char):04x}) "
                     f"is not allowed; remove it, or write it as the escape \"\\u{ord(char):04x}\" "
                     "inside a double-quoted string", "syntax")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "unreadable"
        raise _error(filename, line, col, f"invalid {fmt.upper()}: {reason}", "syntax")
    except yaml.YAMLError as exc:
        raise _error(filename, 1, 1, f"invalid {fmt.upper()}: {' '.join(str(exc).split())}", "syntax")
    if node is None or not isinstance(node, yaml.MappingNode):
        line, col = _mark(node) if node is not None else (1, 1)
        raise _error(
            filename, line, col, "a procedure document must be a mapping (`procedure: ...`, `steps: [...]`)",
            "document",
        )
    doc = Document(data={}, filename=filename, format=fmt)
    doc.data = _Builder(doc).build(node, ())
    return doc


def _check_json_syntax(text: str, filename: str) -> None:
    try:
        json.loads(text)
    except RecursionError:
        raise _error(filename, 1, 1, f"document nested too deeply (at most {MAX_DEPTH} levels)", "syntax")
    except json.JSONDecodeError as exc:
        raise _error(filename, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", "syntax")
    except ValueError:  # a number of more than 4,300 digits; the composer locates it below
        pass


def _position(text: str, offset: int) -> Location:
    """1-based (line, column) of character ``offset`` of ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _error(filename: str, line: int, col: int, message: str, rule: str) -> ProcedureError:
    problem = Problem(filename, line, col, None, message, rule)
    return ProcedureError(problem.format(), [problem])


def _mark(node: yaml.Node) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


MAX_DEPTH = 64


class _Builder:
    """Turns a composed node tree into plain data, recording locations."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._fail(node, f"document too large (more than {MAX_NODES} nodes)", "syntax")
        if id(node) in self.active:
            raise self._fail(node, "recursive YAML alias", "syntax")
        if len(path) > MAX_DEPTH:
            raise self._fail(node, f"document nested too deeply (at most {MAX_DEPTH} levels)", "syntax")
        self.doc.locations[path] = _mark(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail(key_node, "mapping keys must be plain text", "syntax")
            key = str(key_node.value)
            if key in result:
                line, col = self.doc.key_locations[(*path, key)]
                raise self._fail(
                    key_node, f"duplicate key {key!r} (first written at line {line}, column {col}); "
                    "remove one of them", "duplicate-key",
                )
            self.doc.key_locations[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.Node) -> Any:
        tag, value = node.tag, node.value
        if tag == _TAG + "str":
            return value
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return value.lower() == "true"
        try:
            if tag == _TAG + "int":
                return int(value, 0) if value.lower().startswith(("0x", "0o")) else int(value)
            if tag == _TAG + "float":
                lowered = value.lower().lstrip("+")
                if lowered.endswith(".inf"):
                    return -math.inf if lowered.startswith("-") else math.inf
                return math.nan if lowered == ".nan" else float(value)
        except ValueError:
            shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
            what = tag[len(_TAG):]
            raise self._fail(node, f"{shown} is not a valid {what}"
                             f"{' (at most 4,300 digits); quote it to keep it as text' if what == 'int' else ''}",
                             "syntax")
        raise self._fail(node, f"unsupported YAML tag {tag!r}; write plain values", "syntax")

    def _fail(self, node: yaml.Node, message: str, rule: str) -> ProcedureError:
        line, col = _mark(node)
        return _error(self.doc.filename, line, col, message, rule)
