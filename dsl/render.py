"""Render an ExecutionGraph for people (Mermaid, Graphviz DOT) and for programs (JSON).

Mermaid and DOT draw a `start` and an `end` terminal, one node per step (switch steps as decisions),
the blocks of parallel, for_each, loop, try and `steps` groups as subgraphs, and the edges of
`ExecutionGraph.edges()`: along each sequence, into each block (labelled with the case condition or the
block label), out of each block's end, and back from a loop body's end ("next").
"""

from __future__ import annotations

import json
from collections.abc import Callable

from dsl.graph import Block, ExecutionGraph, Node, exits

FORMATS = ("mermaid", "dot", "json")
_START, _END = "start", "end"


def render(graph: ExecutionGraph, fmt: str) -> str:
    """The graph as Mermaid ("mermaid"), Graphviz ("dot") or JSON ("json") text."""
    renderers: dict[str, Callable[[ExecutionGraph], str]] = {
        "mermaid": _mermaid,
        "dot": _dot,
        "json": _json,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderers[fmt](graph)


def _all_edges(graph: ExecutionGraph) -> list[tuple[str, str, str]]:
    """The graph's edges plus the start and end terminals."""
    edges = list(graph.edges())
    nodes = graph.root.nodes
    if nodes:
        edges.insert(0, (_START, nodes[0].path, ""))
        last = nodes[-1]
        if last.kind != "fail":
            edges.extend((end, _END, "") for end in exits(last))
    else:
        edges.append((_START, _END, ""))
    return edges


def _label(node: Node) -> str:
    return f"{node.id} ({node.kind})"


def _block_title(node: Node, block: Block) -> str:
    if node.kind == "for_each":
        return f"for each {node.step.for_each.as_}"  # type: ignore[attr-defined]
    if node.kind == "loop":
        return "repeat"
    return block.label


# --- Mermaid -------------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes keep quotes and comparison operators from breaking the label syntax.
    for char, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("\n", " ")):
        text = text.replace(char, code)
    return text


def _mermaid(graph: ExecutionGraph) -> str:
    ids = {node.path: f"n{i}" for i, node in enumerate(graph.nodes())}
    ids[_START], ids[_END] = "start", "finish"
    lines = ["flowchart TD", "  start((start))", "  finish((end))"]
    _mermaid_block(graph.root, ids, lines, "  ")
    for src, dst, label in _all_edges(graph):
        arrow = f' -->|"{_mermaid_text(label)}"| ' if label else " --> "
        lines.append(f"  {ids[src]}{arrow}{ids[dst]}")
    return "\n".join(lines) + "\n"


_MERMAID_SHAPES = {
    "switch": ('{"', '"}'),
    "approval": ('{{"', '"}}'),
    "workflow": ('[["', '"]]'),
    "fail": ('(["', '"])'),
}


def _mermaid_block(block: Block, ids: dict[str, str], lines: list[str], indent: str) -> None:
    for node in block.nodes:
        opening, closing = _MERMAID_SHAPES.get(node.kind, ('["', '"]'))
        lines.append(f"{indent}{ids[node.path]}{opening}{_mermaid_text(_label(node))}{closing}")
        for child in node.blocks:
            if node.kind == "switch":  # a decision: its cases are drawn as labelled edges, not boxes
                _mermaid_block(child, ids, lines, indent)
                continue
            title = _mermaid_text(f"{node.id}: {_block_title(node, child)}")
            lines.append(f'{indent}subgraph {ids[node.path]}_{_safe(child.label)}["{title}"]')
            _mermaid_block(child, ids, lines, indent + "  ")
            lines.append(f"{indent}end")


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


# --- DOT -----------------------------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"switch": "diamond", "approval": "hexagon", "workflow": "box3d", "fail": "octagon"}


def _dot(graph: ExecutionGraph) -> str:
    lines = [
        f"digraph {_dot_text(graph.workflow.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  {_dot_text(_START)} [shape=circle, label="start"];',
        f'  {_dot_text(_END)} [shape=doublecircle, label="end"];',
    ]
    counter = [0]
    _dot_block(graph.root, lines, "  ", counter)
    for src, dst, label in _all_edges(graph):
        attrs = f" [label={_dot_text(label)}]" if label else ""
        lines.append(f"  {_dot_text(src)} -> {_dot_text(dst)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_block(block: Block, lines: list[str], indent: str, counter: list[int]) -> None:
    for node in block.nodes:
        shape = _DOT_SHAPES.get(node.kind)
        attrs = f"label={_dot_text(node.id + chr(10) + node.kind)}" + (f", shape={shape}" if shape else "")
        lines.append(f"{indent}{_dot_text(node.path)} [{attrs}];")
        for child in node.blocks:
            if node.kind == "switch":
                _dot_block(child, lines, indent, counter)
                continue
            counter[0] += 1
            lines.append(f"{indent}subgraph cluster_{counter[0]} {{")
            lines.append(f"{indent}  label={_dot_text(f'{node.id}: {_block_title(node, child)}')};")
            lines.append(f"{indent}  style=dashed;")
            _dot_block(child, lines, indent + "  ", counter)
            lines.append(f"{indent}}}")


# --- JSON ----------------------------------------------------------------------------------------------


def _json(graph: ExecutionGraph) -> str:
    nodes: list[dict[str, object]] = []
    _json_block(graph.root, None, nodes)
    document = {
        "name": graph.workflow.name,
        "file": graph.file,
        "digest": graph.digest,
        "nodes": nodes,
        "edges": [{"from": a, "to": b, "label": label} for a, b, label in graph.edges()],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _json_block(block: Block, parent: str | None, out: list[dict[str, object]]) -> None:
    for node in block.nodes:
        entry: dict[str, object] = {"path": node.path, "id": node.id, "kind": node.kind}
        if parent is not None:
            entry["parent"] = parent
            entry["block"] = block.label
        if node.condition is not None:
            entry["if"] = node.condition.source
        if node.blocks:
            entry["blocks"] = [
                {"label": b.label, **({"when": b.when.source} if b.when is not None else {})}
                for b in node.blocks
            ]
        out.append(entry)
        for child in node.blocks:
            _json_block(child, node.path, out)
