"""Differences between two procedure versions: a unified text diff and a step-level summary."""
from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

NESTED = ("steps", "branches")


def _steps(steps: Any) -> Iterator[dict]:
    """Every step of a definition, nested ones (for_each `steps`, parallel `branches`) included."""
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        yield step
        yield from _steps(step.get("steps"))
        branches = step.get("branches")
        for branch in branches.values() if isinstance(branches, dict) else []:
            yield from _steps(branch)


def _own(step: dict) -> dict:
    return {k: v for k, v in step.items() if k not in NESTED}


def step_changes(old: dict, new: dict) -> dict[str, list[str]]:
    """Step ids added, removed and changed (own fields, not nested steps) from `old` to `new`."""
    before = {s.get("id"): _own(s) for s in _steps(old.get("steps"))}
    after = {s.get("id"): _own(s) for s in _steps(new.get("steps"))}
    return {
        "added": [i for i in after if i not in before],
        "removed": [i for i in before if i not in after],
        "changed": [i for i in after if i in before and before[i] != after[i]],
    }


def field_changes(old: dict, new: dict) -> list[str]:
    """Top-level fields other than `steps` whose value differs."""
    keys = sorted((set(old) | set(new)) - {"steps"})
    return [k for k in keys if old.get(k) != new.get(k)]


def unified_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> str:
    """Unified diff of two source texts."""
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), old_name, new_name
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
