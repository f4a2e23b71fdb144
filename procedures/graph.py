"""Mermaid flowchart of a version-1 definition (``flywheel graph``).

Node names are ``s_<step id>`` (``s_<parent>__<branch>__s_<id>`` when nested), never the bare
id: valid step ids such as ``end``, ``graph``, ``subgraph``, ``click``, ``style`` or ``class``
are Mermaid keywords and would break the chart. The step id is shown in the node's label.
"""
from __future__ import annotations

from typing import Any

from procedures.flow import step_edges, step_ids
from procedures.models import nested_step_lists

END_NODE = "End"  # capitalised: a node named `end` would close a subgraph
STEP_PREFIX = "s_"


def _label(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", " ")


def _node_text(step: dict) -> str:
    return _label(f"{step.get('id')}<br/>{step.get('type')}")


def _node(prefix: str, step_id: object) -> str:
    return f"{prefix}{STEP_PREFIX}{step_id}"


class _Chart:
    def __init__(self) -> None:
        self.lines = ["flowchart TD"]

    def steps(self, steps: list[Any], prefix: str, exit_node: str, indent: str) -> None:
        """Emit nodes and edges of one step list; falling off the end goes to ``exit_node``."""
        ids = step_ids(steps)
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            node = _node(prefix, step.get("id", i))
            nested = nested_step_lists(step)
            if nested:
                self.subgraph(node, step, nested, indent)
            else:
                self.lines.append(f'{indent}{node}["{_node_text(step)}"]')
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            node = _node(prefix, step.get("id", i))
            for edge in step_edges(steps, i):
                if edge.kind == "end":
                    target = END_NODE
                elif edge.target is None:
                    target = exit_node
                elif edge.target in ids:
                    target = _node(prefix, edge.target)
                else:
                    continue
                arrow = f' -->|"{_label(edge.label)}"| ' if edge.label else " --> "
                self.lines.append(f"{indent}{node}{arrow}{target}")

    def subgraph(self, node: str, step: dict, nested: list, indent: str) -> None:
        self.lines.append(f'{indent}subgraph {node}["{_node_text(step)}"]')
        for rel, inner in nested:
            inner_prefix = f"{node}__{'_'.join(str(p) for p in rel)}__"
            self.lines.append(f"{indent}  direction TB")
            self.steps(inner, inner_prefix, f"{inner_prefix}done", indent + "  ")
            done = _label("/".join(str(p) for p in rel))
            self.lines.append(f'{indent}  {inner_prefix}done(("{done} done"))')
        self.lines.append(f"{indent}end")


def to_mermaid(definition: dict[str, Any]) -> str:
    """A ``flowchart TD`` with one node per step and an ``End`` node for every way to finish."""
    chart = _Chart()
    steps = definition.get("steps") if isinstance(definition.get("steps"), list) else []
    chart.steps(steps, "", END_NODE, "  ")
    chart.lines.append(f'  {END_NODE}(("end"))')
    return "\n".join(chart.lines) + "\n"
