"""The ExecutionGraph: what the compiler produces and the interpreter runs (notes/graph-contract.md).

Everything here is immutable: frozen dataclasses, tuples and read-only mappings. The graph points at the
validated pydantic models (also frozen) for kind-specific settings and carries every expression of the
file compiled, so the interpreter never parses or type-checks anything.

Node paths are stable across runs and edits elsewhere in the file: the step ids from the root, joined
through the labels of the blocks between them ("route/case-0/refund"). Loop and for_each iterations
append "[i]" to the looping node's path at run time ("priced[3]/body/price").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsl import model
    from dsl.expr import Program
    from dsl.templates import CompiledValue, Prompt

EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY


# Variables the compiler declares for each kind of place; the interpreter must bind the same names.
# Everywhere in steps and the run's output/vars: `input`, `vars`, `run`, `steps`, `secrets`.
STEP_SCOPE = ("input", "vars", "run", "steps", "secrets")
# Workflow, step and tool guardrails (`check` and `message`).
GUARDRAIL_SCOPE = (
    "tool", "args", "result", "output", "identity", "principal", "usage", "history", "input", "vars", "run",
)  # fmt: skip
# Grant `when` conditions.
GRANT_SCOPE = ("args", "principal", "identity", "tool", "action", "resource", "input", "vars", "run")
# Tool definitions (HTTP url/headers/query/json/body, MCP env, resource); HTTP values also see
# `identity`, the name of the identity making the call (so each identity sends its own credential).
TOOL_SCOPE = ("args", "secrets", "input", "vars", "run")


@dataclass(frozen=True, slots=True)
class Block:
    """A sequence of nodes run in order."""

    label: str  # "case-0", "default", "branch-0" or the branch's name, "body", "catch", "steps"
    nodes: tuple[Node, ...]
    when: Program | None = None  # switch case condition (None for default and non-switch blocks)


@dataclass(frozen=True, slots=True)
class Node:
    """One step of the workflow with everything of it compiled."""

    path: str
    id: str
    kind: str  # agent llm tool switch parallel for_each loop set try fail approval workflow steps
    step: model.StepBase
    condition: Program | None = None  # the compiled `if`
    # compiled ${{ }} fields: "args", "output", "in", "set", "message", "input", "on_behalf_of", "vars"
    values: Mapping[str, CompiledValue] = field(default_factory=_empty)
    conditions: Mapping[str, Program] = field(default_factory=_empty)  # other bare CEL fields: "until" (loop)
    prompts: Mapping[str, Prompt] = field(default_factory=_empty)  # "instructions", "prompt" (agent/llm)
    blocks: tuple[Block, ...] = ()
    guardrails: tuple[CompiledGuardrail, ...] = ()  # the step's own rules (apply to its children too)
    where: tuple[str | int, ...] = ()  # the step in the file: ("steps", 2, "parallel", "branches", "b", 0)


@dataclass(frozen=True, slots=True)
class CompiledGrant:
    grant: model.Grant
    when: Program | None


@dataclass(frozen=True, slots=True)
class CompiledGuardrail:
    guardrail: model.Guardrail
    check: Program | None
    message: CompiledValue | None = None


@dataclass(frozen=True, slots=True)
class CompiledTool:
    """A declared tool: the model plus its compiled values ("url", "headers", "query", "json", "body",
    "env", "resource") and its own guardrails."""

    name: str
    tool: model.Tool
    values: Mapping[str, CompiledValue] = field(default_factory=_empty)
    guardrails: tuple[CompiledGuardrail, ...] = ()


@dataclass(frozen=True)
class ExecutionGraph:
    file: str
    source: str
    digest: str  # sha256 hex of the source text (UTF-8)
    workflow: model.Workflow
    root: Block  # label "steps"
    output: CompiledValue | None
    vars: CompiledValue | None
    grants: tuple[CompiledGrant, ...] = ()
    guardrails: tuple[CompiledGuardrail, ...] = ()  # workflow-level rules
    tools: Mapping[str, CompiledTool] = field(default_factory=_empty)
    _index: Mapping[str, Node] = field(default_factory=_empty, init=False, repr=False, compare=False)
    _document: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {node.path: node for node in _walk(self.root)}
        object.__setattr__(self, "_index", MappingProxyType(index))

    def nodes(self) -> Iterator[Node]:
        """Every node, depth first, in document order."""
        return iter(self._index.values())

    def node(self, path: str) -> Node:
        """The node at a static path; KeyError if there is none."""
        return self._index[path]

    def cost_budgets(self, node: Node) -> Iterator[tuple[Node | None, model.Guardrail]]:
        """The `max_cost` budgets that count the model calls of `node` (an agent or llm step), with the
        step that declares each (None: the workflow): the workflow's and those of the steps around it,
        itself included, unless their `steps` name none of those; never one with `tools`, which counts
        only the calls of those tools."""
        parts = node.path.split("/")
        around = [
            self._index[p] for i in range(len(parts), 0, -1) if (p := "/".join(parts[:i])) in self._index
        ]
        ids = {n.id for n in around}
        levels: list[tuple[Node | None, tuple[CompiledGuardrail, ...]]] = [(None, self.guardrails)]
        levels += [(n, n.guardrails) for n in around]
        for declared_by, rules in levels:
            for compiled in rules:
                rule = compiled.guardrail
                if rule.limits is None or rule.limits.max_cost is None or rule.tools is not None:
                    continue
                if rule.steps is None or ids.intersection(rule.steps):
                    yield declared_by, rule

    def locate(self, where: tuple[str | int, ...], source: str | None, offset: int = 0) -> str | None:
        """ "file:line:col" of character `offset` of the expression `source` written in the value at
        `where` (a step: in its own fields, not in its nested steps), for errors found at run time;
        None when it is not there. Without `source` (an error of the value, not of one expression in
        it): where the value's key is. The file is read again from `source` only when this is asked."""
        if not self._document:
            from dsl.loader import load_text

            self._document.append(load_text(self.source, self.file)[0])
        doc = self._document[0]
        if doc is None:
            return None
        if source is None:
            line, column = doc.key_position(where)
            return f"{self.file}:{line}:{column}"
        value: Any = doc.data
        for key in where:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                return None
        found = _find_text(value, source, where)
        if found is None:
            return None
        line, column = doc.value_position(found[0], found[1] + offset)
        return f"{self.file}:{line}:{column}"

    def edges(self) -> list[tuple[str, str, str]]:
        """(from path, to path, label) for rendering: control flows from a node into each of its blocks
        (labelled with the case condition or block label), along each block, out of a composite node
        through the ends of its blocks, and back from a loop body's end to the loop."""
        out: list[tuple[str, str, str]] = []
        _block_edges(self.root, out)
        return out


def _find_text(
    value: Any, text: str, path: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], int] | None:
    """The first string under `value` (document order) that holds the expression `text` -- as the whole
    string (a condition) or inside `${{ }}`, never as mere text --, and where in it; lists of steps
    (mappings with an `id`) are other nodes' and are not searched."""
    if isinstance(value, str):
        if value.strip() == text.strip():  # a condition: the whole string
            return path, value.find(text.strip()) - (len(text) - len(text.lstrip()))
        for opened in re.finditer(r"\$\{\{", value):  # a value: inside `${{ }}`, as its source begins
            rest = value[opened.end() :]
            if rest.startswith(text):
                return path, opened.end()
            if rest.lstrip().startswith(text):
                return path, opened.end() + len(rest) - len(rest.lstrip())
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        if value and all(isinstance(item, dict) and "id" in item for item in value):
            return None
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _find_text(item, text, (*path, key))
        if found is not None:
            return found
    return None


def _walk(block: Block) -> Iterator[Node]:
    for node in block.nodes:
        yield node
        for child in node.blocks:
            yield from _walk(child)


def block_label(node: Node, block: Block) -> str:
    """How an edge into `block` is labelled: the case condition, "default", or the block label."""
    if block.when is not None:
        return block.when.source
    return block.label


def exits(node: Node) -> list[str]:
    """Paths control leaves `node` from when it finishes (for drawing edges to its successor)."""
    if node.kind in ("for_each", "loop") or not node.blocks:
        return [node.path]
    ends: list[str] = []
    for block in node.blocks:
        ends.extend(exits(block.nodes[-1]) if block.nodes else [node.path])
    if node.kind == "switch" and not any(b.label == "default" for b in node.blocks):
        ends.append(node.path)  # no case matched
    return list(dict.fromkeys(ends))


def _block_edges(block: Block, out: list[tuple[str, str, str]]) -> None:
    for i, node in enumerate(block.nodes):
        for child in node.blocks:
            if child.nodes:
                out.append((node.path, child.nodes[0].path, block_label(node, child)))
                _block_edges(child, out)
                if node.kind in ("for_each", "loop"):
                    out.extend((end, node.path, "next") for end in exits(child.nodes[-1]))
        if i + 1 < len(block.nodes):
            following = block.nodes[i + 1].path
            out.extend((end, following, "") for end in exits(node))
