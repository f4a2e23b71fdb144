"""Control flow of a step list: edges, reachability, finishing, and names each step can see."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from procedures.models import DOTTED_NAME, TERMINAL_TYPES, nested_step_lists

EXIT = -1  # pseudo-node: the run finishes, or the branch / loop body is done


@dataclass(frozen=True)
class Edge:
    """A possible transition out of a step. ``target`` is a step id, or None for "falls off"."""

    target: str | None
    label: str
    kind: str  # next | case | default | on_error | on_reject | on_timeout | skip | end
    carries_defs: bool = True
    path: tuple[str | int, ...] = ()  # where the target is written, relative to the step
    implicit: bool = False  # the next step in the list (no target written)


def step_edges(steps: list[Any], index: int) -> list[Edge]:
    """Every transition out of ``steps[index]`` (implicit next-in-list resolved to an id)."""
    step = steps[index] if isinstance(steps[index], dict) else {}
    following = _following(steps, index)
    edges: list[Edge] = []
    stype = step.get("type") if isinstance(step.get("type"), str) else None
    if stype in TERMINAL_TYPES or (step.get("end") is True and stype != "switch"):  # a switch ignores `end`
        edges.append(Edge(None, stype if stype in TERMINAL_TYPES else "end", "end"))
        if "if" in step:
            edges.append(Edge(following, "skipped", "skip", False, implicit=True))
    elif stype == "switch":
        for k, case in enumerate(_list(step.get("cases"))):
            if isinstance(case, dict) and isinstance(case.get("goto"), str):
                edges.append(Edge(case["goto"], str(case.get("when", "")), "case", True,
                                  ("cases", k, "goto")))
        if isinstance(step.get("default"), str):
            edges.append(Edge(step["default"], "default", "default", True, ("default",)))
        if "if" in step:
            edges.append(_to_next(step, following, "skipped", "skip", False))
    else:
        edges.append(_to_next(step, following, "", "next", True))
        if "if" in step:
            edges.append(_to_next(step, following, "skipped", "skip", False))
    for field in ("on_reject", "on_timeout"):
        if isinstance(step.get(field), str):
            edges.append(Edge(step[field], field, field, stype == "approval", (field,)))
    for k, handler in enumerate(_list(step.get("on_error"))):
        if isinstance(handler, dict) and isinstance(handler.get("goto"), str):
            names = ", ".join(str(e) for e in _list(handler.get("errors")))
            edges.append(Edge(handler["goto"], names, "on_error", False, ("on_error", k, "goto")))
    return edges


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _following(steps: list[Any], index: int) -> str | None:
    if index + 1 >= len(steps):
        return None
    nxt = steps[index + 1]
    return nxt.get("id") if isinstance(nxt, dict) and isinstance(nxt.get("id"), str) else None


def _to_next(step: dict, following: str | None, label: str, kind: str, carries: bool) -> Edge:
    if isinstance(step.get("next"), str):
        return Edge(step["next"], label, kind, carries, ("next",))
    return Edge(following, label, kind, carries, implicit=True)


def step_ids(steps: list[Any]) -> dict[str, int]:
    """Step id -> index for the steps of one list (first occurrence wins)."""
    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if isinstance(step, dict) and isinstance(step.get("id"), str):
            ids.setdefault(step["id"], i)
    return ids


def successors(steps: list[Any]) -> dict[int, list[tuple[int, Edge]]]:
    """Index -> [(successor index or EXIT, edge)]; edges to unknown targets are dropped."""
    ids = step_ids(steps)
    graph: dict[int, list[tuple[int, Edge]]] = {}
    for i in range(len(steps)):
        graph[i] = []
        for edge in step_edges(steps, i):
            if edge.implicit:
                graph[i].append((i + 1 if i + 1 < len(steps) else EXIT, edge))
            elif edge.target is None:
                graph[i].append((EXIT, edge))
            elif edge.target in ids:
                graph[i].append((ids[edge.target], edge))
    return graph


def reachable(graph: dict[int, list[tuple[int, Edge]]]) -> set[int]:
    """Indexes reachable from the first step."""
    seen: set[int] = set()
    todo = [0] if graph else []
    while todo:
        node = todo.pop()
        if node in seen or node == EXIT:
            continue
        seen.add(node)
        todo.extend(t for t, _ in graph[node])
    return seen


def can_finish(graph: dict[int, list[tuple[int, Edge]]]) -> set[int]:
    """Indexes from which the end of the list (or a terminal step) can be reached."""
    done: set[int] = {EXIT}
    changed = True
    while changed:
        changed = False
        for node, outs in graph.items():
            if node not in done and any(t in done for t, _ in outs):
                done.add(node)
                changed = True
    return done - {EXIT}


def written_names(step: Any) -> set[str]:
    """Root names a step stores in the run scope (save_as, set keys, assign targets, branches)."""
    if not isinstance(step, dict):
        return set()
    names: set[str] = set()
    if isinstance(step.get("save_as"), str):
        names.add(_root(step["save_as"]))
    for field in ("set", "assign"):
        if isinstance(step.get(field), dict):
            names.update(_root(k) for k in step[field] if isinstance(k, str))
    if step.get("type") == "parallel":
        for (_, name), branch in nested_step_lists(step):
            names.add(str(name))
            for inner in branch:
                names.update(written_names(inner))
    return {n for n in names if DOTTED_NAME.fullmatch(n)}


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def available_names(steps: list[Any], entry: set[str]) -> dict[int, set[str]]:
    """For each reachable step: names that some path from the list's start can have set."""
    if not steps:
        return {}
    graph = successors(steps)
    avail: dict[int, set[str]] = {0: set(entry)}
    todo = [0]
    while todo:
        node = todo.pop()
        out_all = avail[node] | written_names(steps[node])
        for target, edge in graph[node]:
            if target == EXIT:
                continue
            flowing = out_all if edge.carries_defs else avail[node]
            if target not in avail:
                avail[target] = set(flowing)
                todo.append(target)
            elif not flowing <= avail[target]:
                avail[target] |= flowing
                todo.append(target)
    return avail
