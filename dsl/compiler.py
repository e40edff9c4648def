"""The compiler: a validated `Workflow` -> an immutable `ExecutionGraph`, or diagnostics (CH2xx-CH5xx).

One walk over the steps in document order carries what is visible at each place: the step ids that can
have completed before it and the variables in scope (`item` inside a for_each, `error` inside a catch,
`result` in a step's `output`). Every expression is compiled and type-checked against exactly that
scope, and every `steps.<id>` it reads is checked against the visible ids. Then references (tools,
models, identities, secrets, workflow files) and grants are checked.

Visibility of `steps.<id>`: a step sees the steps before it in its own sequence and in every enclosing
sequence. A composite step (switch, parallel, for_each, loop, try) exports only itself: the steps inside
it may not have run (a case not taken, a failed branch) or ran many times (an iteration), so readers
after it use its output. A `steps` group without an `if` runs all its steps or fails, so its inner steps
stay visible after it; a group with an `if` may run none of them, so it too exports only itself. A catch
also sees its try's steps; a loop's `until` sees the loop's body. `has(steps.x)` tests whether x has run
and is allowed for any step of the file.

Positions point inside strings: the loader maps a character offset of a scalar's value back to the
file, and every error carries the offset inside its expression. The compiler collects every diagnostic
and never raises.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dsl import expr, templates
from dsl import model as m
from dsl.diagnostics import Diagnostic, Severity, closest, error, warning
from dsl.expr import ast
from dsl.expr import types as t
from dsl.expr.functions import type_name as expr_type_name
from dsl.graph import (
    GRANT_SCOPE,
    GUARDRAIL_SCOPE,
    TOOL_SCOPE,
    Block,
    CompiledGrant,
    CompiledGuardrail,
    CompiledTool,
    ExecutionGraph,
    Node,
)
from dsl.loader import LoadedDocument

Path = tuple[str | int, ...]

_STEPS_TYPE = t.map_of(t.STRING, t.DYN)
_BASE_TYPES: dict[str, t.Type] = {
    "input": t.DYN,
    "vars": t.DYN,
    "run": _STEPS_TYPE,
    "steps": _STEPS_TYPE,
    "secrets": t.map_of(t.STRING, t.STRING),
}
_BUILTIN_NAMES = frozenset({*_BASE_TYPES, "result"})
_STEP_FIELDS = ("output", "status", "error")
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")

# Where each variable exists (spec §15, "visible in"), for CH304 messages. `input` and `run` exist
# everywhere.
_GUARDRAILS = "guardrail checks and messages"
_WHERE: dict[str, str] = {
    "vars": "everywhere except in the initial `vars`",
    "secrets": "only in step fields, the workflow `output`, the initial `vars` and tool definitions",
    "steps": "only in step fields and the workflow `output`",
    "result": f"only in a step's `output` mapping (the step's natural result) and in {_GUARDRAILS} "
    "(a tool call's result)",
    "item": "only inside a for_each body (`as` names it)",
    "index": "only inside a for_each body (`index_as` names it) and inside a loop body and its `until`",
    "error": "only inside a catch (`as` names it)",
    "args": f"only in tool definitions, grant conditions and {_GUARDRAILS}",
    "tool": f"only in grant conditions and {_GUARDRAILS}",
    "principal": f"only in grant conditions and {_GUARDRAILS}",
    "identity": f"only in grant conditions, {_GUARDRAILS} and the values of HTTP tool definitions",
    "action": "only in grant conditions",
    "resource": "only in grant conditions",
    "output": f"only in {_GUARDRAILS} (a step's `output` mapping reads `result`)",
    "usage": f"only in {_GUARDRAILS}",
    "history": f"only in {_GUARDRAILS}",
}


def compile_workflow(
    workflow: m.Workflow, doc: LoadedDocument
) -> tuple[ExecutionGraph | None, list[Diagnostic]]:
    """Compile a validated workflow. Returns (graph, diagnostics); the graph is None when any error."""
    compiler = _Compiler(workflow, doc)
    try:
        graph = compiler.run()
    except Exception as exc:  # noqa: BLE001 - a bug must still come out as a diagnostic, not a traceback
        compiler.diags.append(
            error(
                "CH299",
                f"internal compiler error ({type(exc).__name__}: {exc}); please report this file",
                doc.file,
                1,
                1,
            )
        )
        graph = None
    diags = sorted(set(compiler.diags))
    if any(d.severity == Severity.ERROR for d in diags):
        return None, diags
    return graph, diags


# --- scope ---------------------------------------------------------------------------------------------


class _Visible:
    """The step ids that can have completed before a place, shared rather than copied.

    A sequence keeps one dict of the ids its steps export (id -> index of the first step exporting it),
    filled as the walk goes on; the place before its step i is a view of that dict cut at i, on top of
    the view of the enclosing place. Making a view is O(1) and a lookup walks the enclosing views (as
    many as sequences nest), so a sequence of n steps costs O(n), not the O(n^2) of a set per step."""

    __slots__ = ("_ids", "_limit", "_parent")

    def __init__(self, parent: _Visible | None, ids: Mapping[str, int], limit: int) -> None:
        self._parent = parent
        self._ids = ids  # may grow after this view is made: entries at `limit` or later are not in it
        self._limit = limit

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        view: _Visible | None = self
        while view is not None:
            at = view._ids.get(name)
            if at is not None and at < view._limit:
                return True
            view = view._parent
        return False


_NOTHING = _Visible(None, {}, 0)


@dataclass(frozen=True)
class _Scope:
    """What an expression may read where it stands."""

    visible: _Visible  # step ids that can have completed before this point
    names: Mapping[str, t.Type]  # declared variables
    where: str  # the step (or place) this scope belongs to, for messages
    chain: tuple[tuple[str, str], ...] = ()  # enclosing (step id, block label), outermost first

    def with_names(self, **names: t.Type) -> _Scope:
        return _Scope(self.visible, {**self.names, **names}, self.where, self.chain)


@dataclass
class _StepInfo:
    path: Path
    step: m.StepBase
    kind: str
    chain: tuple[tuple[str, str], ...]  # enclosing (step id, block label) pairs


_KIND_OF: dict[type, str] = {cls: kind for kind, cls in m.STEP_KINDS.items()}


def _kind(step: m.StepBase) -> str:
    return _KIND_OF[type(step)]


def _blocks(step: m.StepBase, path: Path) -> list[tuple[str, Path, list[Any], m.Case | None]]:
    """(label, YAML path of the step list, steps, switch case) of each child block of a step."""
    if isinstance(step, m.SwitchStep):
        return [
            ("default" if case.default else f"case-{i}", (*path, "switch", i, "steps"), case.steps, case)
            for i, case in enumerate(step.switch)
        ]
    if isinstance(step, m.ParallelStep):
        branches = step.parallel.branches
        if isinstance(branches, dict):
            return [(name, (*path, "parallel", "branches", name), s, None) for name, s in branches.items()]
        return [(f"branch-{i}", (*path, "parallel", "branches", i), s, None) for i, s in enumerate(branches)]
    if isinstance(step, m.ForEachStep):
        return [("body", (*path, "for_each", "steps"), step.for_each.steps, None)]
    if isinstance(step, m.LoopStep):
        return [("body", (*path, "loop", "steps"), step.loop.steps, None)]
    if isinstance(step, m.TryStep):
        return [
            ("body", (*path, "try", "steps"), step.try_.steps, None),
            ("catch", (*path, "try", "catch", "steps"), step.try_.catch.steps, None),
        ]
    if isinstance(step, m.SequenceStep):
        return [("body", (*path, "steps"), step.steps, None)]
    return []


def _may_skip(step: m.StepBase) -> bool:
    """Whether the step has an `if` that can be false (a literal `true` cannot)."""
    return step.if_ is not None and step.if_.strip() != "true"


def _ast_children(node: ast.Expr) -> Iterator[ast.Expr]:
    kind = type(node)
    if kind is ast.Select:
        yield node.operand
    elif kind is ast.Call:
        if node.target is not None:
            yield node.target
        yield from node.args
    elif kind is ast.CreateList:
        yield from node.elements
    elif kind is ast.CreateMap:
        for key, value in node.entries:
            yield key
            yield value
    elif kind is ast.CreateStruct:
        for _, value in node.fields:
            yield value
    elif kind is ast.Comprehension:
        yield from (node.iter_range, node.accu_init, node.loop_condition, node.loop_step, node.result)


# The error codes the runtime raises (spec Appendix A), besides the `code` of the file's `fail` steps.
_ERROR_CODES = frozenset(
    (
        "timeout", "tool", "http", "model", "max_turns", "guardrail", "unauthorized", "denied", "expression",
        "loop_exhausted", "parallel", "input", "workflow", "policy", "failed", "cancelled", "output",
        "mcp", "authz", "unsupported",  # categories and codes beside Appendix A's that retry.on matches
    )
)  # fmt: skip
_ROOTS = frozenset(("steps", "secrets", "vars"))  # the variables whose members the compiler checks


@dataclass(frozen=True)
class _Ref:
    """A read of `steps.<id>` (or `secrets.<name>`, `vars.<name>`) in an expression."""

    root: str
    name: str
    offset: int  # inside the expression source
    test_only: bool
    field: str | None  # steps.<id>.<field>
    field_offset: int


def _references(tree: ast.Expr) -> list[_Ref]:
    """Every `steps.X`/`steps["X"]`, `secrets.X`/`secrets["X"]` and `vars.X`/`vars["X"]` read, with
    offsets."""
    refs: list[_Ref] = []
    _collect_refs(tree, None, refs)
    return sorted(refs, key=lambda r: r.offset)


def _collect_refs(tree: ast.Expr, parent: ast.Expr | None, refs: list[_Ref]) -> None:
    # pre-order with an explicit stack: expressions nest as deep as the CEL parser allows
    todo: list[tuple[ast.Expr, ast.Expr | None]] = [(tree, parent)]
    while todo:
        node, parent = todo.pop()
        target, name, offset = _named_member(node)
        if target is not None:
            fld, fld_offset = None, 0
            if type(parent) is ast.Select and not parent.test_only:
                fld, fld_offset = parent.field, parent.offset + 1
            test_only = type(node) is ast.Select and node.test_only
            refs.append(_Ref(target, name, offset, test_only, fld, fld_offset))
        todo.extend((child, node) for child in reversed(list(_ast_children(node))))


def _named_member(node: ast.Expr) -> tuple[str | None, str, int]:
    if type(node) is ast.Select and type(node.operand) is ast.Ident and node.operand.name in _ROOTS:
        return node.operand.name, node.field, node.offset + 1
    if (
        type(node) is ast.Call
        and node.function == "_[_]"
        and type(node.args[0]) is ast.Ident
        and node.args[0].name in _ROOTS
        and type(node.args[1]) is ast.Literal
        and type(node.args[1].value) is str
    ):
        return node.args[0].name, node.args[1].value, node.args[1].offset
    return None, "", 0


# --- the compiler --------------------------------------------------------------------------------------


@dataclass
class _Compiler:
    workflow: m.Workflow
    doc: LoadedDocument
    diags: list[Diagnostic] = field(default_factory=list)
    steps: dict[str, _StepInfo] = field(default_factory=dict)
    scoped: dict[str, list[str]] = field(default_factory=dict)  # local name -> where it is in scope
    _cache: dict[tuple[Any, ...], expr.Program] = field(default_factory=dict)
    _call_graph: _CallGraph | None = None  # the workflow files this one leads to, each read once

    # --- diagnostics helpers ---

    def _pos(self, path: Path, offset: int | None = None, at_key: bool = False) -> tuple[int, int]:
        try:
            if at_key:
                return self.doc.key_position(path)
            if offset is None:
                return self.doc.position(path)
            return self.doc.value_position(path, offset)
        except Exception:  # noqa: BLE001 - a position is a courtesy; never lose the diagnostic
            return (1, 1)

    def err(
        self,
        code: str,
        message: str,
        path: Path,
        offset: int | None = None,
        hint: str | None = None,
        at_key: bool = False,
    ) -> None:
        line, col = self._pos(path, offset, at_key)
        self.diags.append(error(code, message, self.doc.file, line, col, hint))

    def warn(
        self, code: str, message: str, path: Path, offset: int | None = None, hint: str | None = None
    ) -> None:
        line, col = self._pos(path, offset)
        self.diags.append(warning(code, message, self.doc.file, line, col, hint))

    # --- entry ---

    def run(self) -> ExecutionGraph:
        wf = self.workflow
        self._collect(wf.steps, ("steps",), ())
        self._retry_codes()
        top = _Scope(_NOTHING, _BASE_TYPES, "the workflow")
        root, exported = self._sequence(wf.steps, ("steps",), "", top)
        out_scope = _Scope(_Visible(None, exported, len(wf.steps)), _BASE_TYPES, "the workflow output")
        output = self._value(wf.output, ("output",), out_scope) if wf.output else None
        init_names = {k: v for k, v in _BASE_TYPES.items() if k not in ("steps", "vars")}
        vars_ = self._value(wf.vars, ("vars",), _Scope(_NOTHING, init_names, "the initial vars"))
        grants = self._grants()
        guardrails = self._guardrails(wf.guardrails, ("guardrails",))
        tools = self._tools()
        self._models()
        self._check_unique_rule_ids()
        graph = ExecutionGraph(
            file=self.doc.file,
            source=self.doc.text,
            digest=hashlib.sha256(self.doc.text.encode("utf-8", "surrogatepass")).hexdigest(),
            workflow=wf,
            root=root,
            output=output,
            vars=vars_ if wf.vars else None,
            grants=grants,
            guardrails=guardrails,
            tools=MappingProxyType(tools),
        )
        self._unpriced_cost_budgets(graph)
        return graph

    # --- pass 1: ids and local names ---

    def _collect(self, steps: Sequence[m.StepBase], path: Path, chain: tuple[tuple[str, str], ...]) -> None:
        for i, step in enumerate(steps):
            here = (*path, i)
            kind = _kind(step)
            first = self.steps.get(step.id)
            if first is not None:
                line, col = self._pos((*first.path, "id"))
                self.err(
                    "CH201",
                    f"duplicate step id '{step.id}': already used by the {first.kind} step at line {line}, "
                    f"column {col}",
                    (*here, "id"),
                    hint="step ids must be unique in the whole file; rename one of them",
                )
            else:
                self.steps[step.id] = _StepInfo(here, step, kind, chain)
            if isinstance(step, m.ForEachStep):
                for key, name in (("as", step.for_each.as_), ("index_as", step.for_each.index_as)):
                    self.scoped.setdefault(name, []).append(f"inside for_each '{step.id}'")
                    self._not_builtin(name, (*here, "for_each", key))
                self._distinct_names(step, (*here, "for_each"))
            elif isinstance(step, m.LoopStep):
                self.scoped.setdefault("index", []).append(f"inside loop '{step.id}'")
            elif isinstance(step, m.TryStep):
                self.scoped.setdefault(step.try_.catch.as_, []).append(f"inside the catch of try '{step.id}'")
                self._not_builtin(step.try_.catch.as_, (*here, "try", "catch", "as"))
            for label, block_path, inner, _ in _blocks(step, here):
                self._collect(inner, block_path, (*chain, (step.id, label)))

    def _retry_codes(self) -> None:
        """A `retry.on` code that nothing raises (a typo: `tiemout`) would silently never retry."""
        raised = _ERROR_CODES | {
            i.step.fail.code for i in self.steps.values() if isinstance(i.step, m.FailStep)
        }
        for info in self.steps.values():
            retry = info.step.retry
            for j, code in enumerate((retry.on or []) if retry is not None else []):
                if code not in raised:
                    guess = closest(code, raised)
                    hint = f"did you mean '{guess}'?" if guess else "see the error codes (spec Appendix A)"
                    if self._calls_child(info.step) and guess != "workflow":
                        # a child's `fail: {code: X}` reaches this step as `workflow` (spec §13.13)
                        child = (
                            "a child run's failure reaches this step with code `workflow`, whatever code "
                            "the child raised (its message carries the child's message; spec §13.13): "
                            "list `workflow` in `on`"
                        )
                        hint = f"{hint} {child[0].upper()}{child[1:]}" if guess else child
                    self.warn(
                        "CH214",
                        f"retry.on of step '{info.step.id}' names '{code}', an error code nothing raises",
                        (*info.path, "retry", "on", j),
                        hint=hint,
                    )

    def _calls_child(self, step: m.StepBase) -> bool:
        """Whether the step runs a child workflow: a `workflow` step, or a tool step of a workflow tool."""
        if isinstance(step, m.WorkflowStep):
            return True
        if isinstance(step, m.ToolStep):
            tool = self.workflow.tools.get(step.tool)
            return tool is not None and tool.workflow is not None
        return False

    def _distinct_names(self, step: m.ForEachStep, path: Path) -> None:
        """`as` and `index_as` must name two variables (spec §13.6): with one name for both, the index
        would silently hide the item. Reported at the second of the two in the file; when one of them
        is left to its default (`item`, `index`), at the one written."""
        spec = step.for_each
        if spec.as_ != spec.index_as:
            return
        written = [key for key in ("as", "index_as") if self.doc.has((*path, key))]
        if len(written) == 2:
            written.sort(key=lambda key: self._pos((*path, key), at_key=True))
        at = written[-1] if written else "as"
        role = {"as": "item", "index_as": "index"}
        if len(written) == 2:
            said = "as both its item (`as`) and its index (`index_as`)"
        else:
            other = "index_as" if at == "as" else "as"
            said = f"as its {role[at]} (`{at}`), the name its {role[other]} has by default (`{other}`)"
        self.err(
            "CH109",
            f"for_each '{step.id}' binds '{spec.as_}' {said}; the two names must differ",
            (*path, at),
            hint="give the item (`as`) and its 0-based position (`index_as`) different names, e.g. "
            "`as: item` and `index_as: position`",
        )

    def _not_builtin(self, name: str, path: Path) -> None:
        if name in _BUILTIN_NAMES:
            self.err(
                "CH212",
                f"'{name}' is a built-in variable; a for_each or catch cannot bind it",
                path,
                hint=f"choose another name, e.g. '{name}_item'",
            )

    # --- pass 2: steps ---

    def _sequence(
        self, steps: Sequence[m.StepBase], path: Path, prefix: str, scope: _Scope
    ) -> tuple[Block, dict[str, int]]:
        """The block of a step list, and the ids its steps export: id -> index of the first step that
        exports it (the id is visible to the steps after that one)."""
        nodes: list[Node] = []
        exported: dict[str, int] = {}
        stopped: str | None = None
        for i, step in enumerate(steps):
            here = (*path, i)
            if stopped is not None:
                self.err(
                    "CH401",
                    f"step '{step.id}' can never run: fail step '{stopped}' before it always stops this sequence",
                    (*here, "id"),
                    hint=f"remove the step, or give '{stopped}' an `if` condition",
                )
                stopped = None  # one diagnostic per sequence is enough
            inner = _Scope(_Visible(scope.visible, exported, i), scope.names, step.id, scope.chain)
            node, inside = self._step(step, here, prefix, inner)
            nodes.append(node)
            exported.setdefault(step.id, i)
            # a group's inner steps; an id's first export counts (a duplicate id is CH201). One by one: a
            # set difference of the keys would walk all of `exported` for each group
            for sid in inside:
                exported.setdefault(sid, i)
            if isinstance(step, m.FailStep) and step.if_ is None and i + 1 < len(steps):
                stopped = step.id
        return Block(label="steps", nodes=tuple(nodes)), exported

    def _step(
        self, step: m.StepBase, path: Path, prefix: str, scope: _Scope
    ) -> tuple[Node, Mapping[str, int]]:
        """The node of a step, and the ids of inner steps it exports besides its own: a composite step
        (switch, parallel, for_each, loop, try) exports none, since its inner steps may not have run or ran
        many times; so does a `steps` group with an `if`, which may run none of them (they then have no
        `steps` entry: only the group itself, `skipped`, is readable after it). A group without an `if`
        runs all its steps or fails, and exports what its body exports."""
        kind = _kind(step)
        node_path = f"{prefix}{step.id}"
        condition = self._condition(step.if_, (*path, "if"), scope) if step.if_ is not None else None
        values: dict[str, templates.CompiledValue] = {}
        conditions: dict[str, expr.Program] = {}
        prompts: dict[str, templates.Prompt] = {}
        blocks: list[Block] = []
        self._kind_fields(step, path, scope, values, prompts)
        child_prefix = f"{node_path}/"
        chain = scope.chain
        body_visible: Mapping[str, int] = {}  # what the body exports (the catch and `until` see it)
        body_length = 0
        for label, block_path, inner, case in _blocks(step, path):
            names = dict(scope.names)
            visible = scope.visible
            when = None
            if isinstance(step, m.ForEachStep):
                names[step.for_each.as_] = t.DYN
                names[step.for_each.index_as] = t.INT
            elif isinstance(step, m.LoopStep):
                names["index"] = t.INT
            elif isinstance(step, m.TryStep) and label == "catch":
                names[step.try_.catch.as_] = t.DYN
                visible = _Visible(visible, body_visible, body_length)
            if case is not None and case.when is not None:
                when = self._condition(case.when, (*block_path[:-1], "when"), scope)
            block_scope = _Scope(visible, names, step.id, (*chain, (step.id, label)))
            block, inner_exported = self._sequence(inner, block_path, f"{child_prefix}{label}/", block_scope)
            blocks.append(Block(label=label, nodes=block.nodes, when=when))
            if label == "body":
                body_visible, body_length = inner_exported, len(inner)
        if isinstance(step, m.LoopStep) and step.loop.until is not None:
            until_scope = _Scope(
                _Visible(scope.visible, body_visible, body_length),
                {**scope.names, "index": t.INT},
                step.id,
                (*chain, (step.id, "body")),
            )
            program = self._condition(step.loop.until, (*path, "loop", "until"), until_scope)
            if program is not None:
                conditions["until"] = program
        if step.output is not None:
            values["output"] = self._value(step.output, (*path, "output"), scope.with_names(result=t.DYN))
        guardrails = self._guardrails(step.guardrails, (*path, "guardrails"))
        node = Node(
            path=node_path,
            id=step.id,
            kind=kind,
            step=step,
            condition=condition,
            values=MappingProxyType(values),
            conditions=MappingProxyType(conditions),
            prompts=MappingProxyType(prompts),
            blocks=tuple(blocks),
            guardrails=guardrails,
            where=path,
        )
        exports_inside = isinstance(step, m.SequenceStep) and not _may_skip(step)
        return node, body_visible if exports_inside else {}

    def _kind_fields(
        self,
        step: m.StepBase,
        path: Path,
        scope: _Scope,
        values: dict[str, templates.CompiledValue],
        prompts: dict[str, templates.Prompt],
    ) -> None:
        if isinstance(step, m.ToolStep):
            self._tool_ref(step.tool, (*path, "tool"))
            values["args"] = self._value(step.args, (*path, "args"), scope)
            if step.identity is not None:
                if (
                    self._identity_ref(step.identity, (*path, "identity"))
                    and step.tool in self.workflow.tools
                ):
                    self._covered(step.identity, step.tool, (*path, "tool"), f"tool step '{step.id}'")
        elif isinstance(step, m.AgentStep | m.LlmStep):
            self._model_step(step, path, scope, values, prompts)
        elif isinstance(step, m.SetStep):
            values["set"] = self._value(step.set, (*path, "set"), scope)
            for name in step.set:
                if name not in self.workflow.vars:
                    guess = closest(name, self.workflow.vars)
                    self.err(
                        "CH211",
                        f"set step '{step.id}' assigns '{name}', which is not declared in `vars`",
                        (*path, "set", name),
                        hint=f"did you mean '{guess}'?" if guess else f"declare it: vars: {{{name}: null}}",
                        at_key=True,
                    )
        elif isinstance(step, m.ForEachStep):
            values["in"] = items = self._value(step.for_each.in_, (*path, "for_each", "in"), scope)
            self._check_list(step.for_each.in_, items, (*path, "for_each", "in"))
        elif isinstance(step, m.FailStep):
            values["message"] = self._value(step.fail.message, (*path, "fail", "message"), scope)
        elif isinstance(step, m.ApprovalStep):
            values["message"] = self._value(step.approval.message, (*path, "approval", "message"), scope)
            if step.timeout is not None:
                self._approval_timeout(step, path)
        elif isinstance(step, m.WorkflowStep):
            values["input"] = self._value(step.workflow.input, (*path, "workflow", "input"), scope)
            self._workflow_file(step.workflow.path, (*path, "workflow", "path"))

    def _approval_timeout(self, step: m.ApprovalStep, path: Path) -> None:
        """CH215: a step `timeout` bounds an attempt's execution time; an approval's attempt records the
        request and the run then waits, which is not execution time, so the limit never fires."""
        wait = step.approval.timeout
        example = f"approval: {{timeout: {wait or step.timeout}, on_timeout: {step.approval.on_timeout}}}"
        self.warn(
            "CH215",
            f"the `timeout` of approval step '{step.id}' never fires: waiting for a person is not "
            "execution time",
            (*path, "timeout"),
            hint=f"use `approval.timeout` and `on_timeout` instead, e.g. {example}",
        )

    def _check_list(self, raw: Any, value: templates.CompiledValue, path: Path) -> None:
        """A for_each `in` must be a list: a literal list, or an expression of type list or dyn."""
        if value.constant:
            kind = None if isinstance(raw, list) else expr_type_name(raw)
        else:
            kind = None if value.type.name in ("list", "dyn") else str(value.type)
        if kind is not None:
            self.err(
                "CH302",
                f"for_each `in` must be a list, not {kind}",
                path,
                hint='write a list, or an expression that yields one, e.g. "${{ input.items }}"',
            )

    def _model_step(
        self,
        step: m.AgentStep | m.LlmStep,
        path: Path,
        scope: _Scope,
        values: dict[str, templates.CompiledValue],
        prompts: dict[str, templates.Prompt],
    ) -> None:
        key = "agent" if isinstance(step, m.AgentStep) else "llm"
        spec = step.agent if isinstance(step, m.AgentStep) else step.llm
        base = (*path, key)
        self._model_ref(spec.model, (*base, "model"))
        values["vars"] = self._value(spec.vars, (*base, "vars"), scope)
        for name in ("instructions", "prompt"):
            text = getattr(spec, name)
            if text is not None:
                prompt = self._prompt(text, (*base, name), step.id, spec.vars)
                if prompt is not None:
                    prompts[name] = prompt
        if isinstance(step, m.AgentStep):
            agent = step.agent
            if agent.on_behalf_of is not None:
                values["on_behalf_of"] = self._value(agent.on_behalf_of, (*base, "on_behalf_of"), scope)
                if isinstance(agent.on_behalf_of, str) and templates.OPEN not in agent.on_behalf_of:
                    self._principal_ref(agent.on_behalf_of, (*base, "on_behalf_of"), "on_behalf_of")
            identity_ok = agent.identity is not None and self._identity_ref(
                agent.identity, (*base, "identity")
            )
            for i, tool in enumerate(agent.tools):
                if self._tool_ref(tool, (*base, "tools", i)) and identity_ok:
                    self._covered(agent.identity or "", tool, (*base, "tools", i), f"agent step '{step.id}'")

    # --- expressions ---

    def _compile(self, source: str, names: Mapping[str, t.Type]) -> expr.Program:
        key = (source, tuple(sorted(names.items(), key=lambda kv: kv[0])))
        program = self._cache.get(key)
        if program is None:
            program = expr.compile(source, names)
            self._cache[key] = program
        return program

    def _condition(self, source: str, path: Path, scope: _Scope) -> expr.Program | None:
        """A bare CEL condition: compiled, checked against the scope, and required to be bool."""
        if templates.OPEN in source:
            self.err(
                "CH308",
                "a condition is bare CEL, not a `${{ }}` template",
                path,
                source.find(templates.OPEN),
                hint=f"write it without the braces: {_yaml_scalar(source.replace('${{', '').replace('}}', '').strip())}",
            )
            return None
        program = self._expression(source, path, 0, scope)
        if program is not None and program.type not in (t.BOOL, t.DYN):
            self.err(
                "CH303",
                f"condition must be a bool, but '{source}' is of type {program.type}",
                path,
                0,
                hint='compare the value, e.g. `x != null`, `size(x) > 0` or `x == "yes"`',
            )
        return program

    def _expression(self, source: str, path: Path, offset: int, scope: _Scope) -> expr.Program | None:
        """Compile one CEL expression standing at `offset` of the string at `path`; report its errors."""
        try:
            program = self._compile(source, scope.names)
        except expr.ExpressionSyntaxError as e:
            self.err("CH301", f"CEL syntax error: {e.message}", path, offset + e.offset)
            return None
        except expr.ExpressionTypeError as e:
            self._type_error(e.message, path, offset + e.offset, scope)
            return None
        self._check_references(program, path, offset, scope)
        return program

    def _type_error(self, message: str, path: Path, offset: int, scope: _Scope) -> None:
        match = _UNDECLARED.match(message)
        if match and match.group(1) not in scope.names:
            name = match.group(1)
            where = self._where(name)
            if where:
                self.err("CH304", f"'{name}' is not in scope here: it exists {where}", path, offset)
            else:  # a name that exists nowhere: "reading anything else is CH304" (spec §15)
                visible = sorted(scope.names)
                guess = closest(name, scope.names)
                self.err(
                    "CH304",
                    f"'{name}' is not a variable: in scope here are {', '.join(visible)}",
                    path,
                    offset,
                    hint=f"did you mean '{guess}'?" if guess else None,
                )
            return
        self.err("CH302", f"CEL type error: {message}", path, offset)

    def _where(self, name: str) -> str | None:
        """Where `name` exists, by the spec's table of variables (§15), for a CH304 message."""
        bound = list(dict.fromkeys(self.scoped.get(name, ())))  # as/index_as/catch names of this file
        if name in ("item", "index", "error") and bound:
            return " and ".join(bound)
        where = _WHERE.get(name)
        if where is None:
            return " and ".join(bound) if bound else None
        return " and ".join([where, *bound])

    def _check_references(self, program: expr.Program, path: Path, offset: int, scope: _Scope) -> None:
        if _ROOTS.isdisjoint(program.references):
            return
        for ref in _references(program.ast):
            at = offset + ref.offset
            if ref.root == "secrets":
                if "secrets" in scope.names and ref.name not in self.workflow.secrets:
                    self._unknown_secret(ref.name, path, at)
            elif ref.root == "vars":
                if self._undeclared_var(ref, scope):
                    guess = closest(ref.name, self.workflow.vars)
                    self.warn(  # not an error: `has(vars.x) ? vars.x : d` reads it safely
                        "CH213",
                        f"vars.{ref.name} is read, but '{ref.name}' is not declared in `vars`: the read "
                        "fails at run time",
                        path,
                        at,
                        hint=f"did you mean '{guess}'?"
                        if guess
                        else f"declare it: vars: {{{ref.name}: null}}",
                    )
            elif "steps" in scope.names:
                self._step_ref(ref, path, offset, scope)

    def _undeclared_var(self, ref: _Ref, scope: _Scope) -> bool:
        # vars holds only declared names (a set of another one is CH211): reading another one fails.
        return "vars" in scope.names and not ref.test_only and ref.name not in self.workflow.vars

    def _refs_ok(self, program: expr.Program, scope: _Scope) -> bool:
        """Whether `_check_references` would report nothing (a fast path that needs no positions)."""
        if _ROOTS.isdisjoint(program.references):
            return True
        for ref in _references(program.ast):
            if ref.root == "secrets":
                if "secrets" in scope.names and ref.name not in self.workflow.secrets:
                    return False
            elif ref.root == "vars":
                if self._undeclared_var(ref, scope):
                    return False
            elif "steps" in scope.names:
                if ref.name not in self.steps:
                    return False
                if ref.test_only:
                    continue
                if ref.name not in scope.visible or (ref.field is not None and ref.field not in _STEP_FIELDS):
                    return False
        return True

    def _step_ref(self, ref: _Ref, path: Path, offset: int, scope: _Scope) -> None:
        at = offset + ref.offset
        info = self.steps.get(ref.name)
        if info is None:
            guess = closest(ref.name, self.steps)
            self.err(
                "CH202",
                f"unknown step '{ref.name}' in steps.{ref.name}",
                path,
                at,
                hint=f"did you mean '{guess}'?" if guess else f"steps in this file: {_names(self.steps)}",
            )
            return
        if ref.test_only:
            return  # has(steps.x): asks whether x ran, fine anywhere
        if ref.name not in scope.visible:
            message, hint = self._not_visible(ref.name, info, scope)
            self.err("CH203", message, path, at, hint=hint)
            return
        if ref.field is not None and ref.field not in _STEP_FIELDS:
            guess = closest(ref.field, _STEP_FIELDS)
            self.err(
                "CH302",
                f"steps.{ref.name} has no field '{ref.field}': a step has output, status and error",
                path,
                offset + ref.field_offset,
                hint=f"did you mean '{guess}'?" if guess else f"read steps.{ref.name}.output.{ref.field}",
            )

    def _not_visible(self, name: str, info: _StepInfo, scope: _Scope) -> tuple[str, str | None]:
        """Why step `name` cannot have completed before the place `scope` belongs to."""
        if name == scope.where:
            return (
                f"step '{name}' reads its own result through steps.{name}",
                "in the step's `output` mapping, use `result`",
            )
        enclosing = {sid for sid, _ in scope.chain}
        if name in enclosing:
            return f"step '{name}' has not completed yet: this expression is inside it", None
        here = dict(scope.chain)
        for container, label in info.chain:
            if container in here and here[container] != label:
                kind = self.steps[container].kind
                if kind == "parallel":
                    return (
                        f"step '{name}' is in another branch of parallel step '{container}', which runs at "
                        "the same time",
                        f"read it after '{container}' through steps.{container}.output",
                    )
                if kind == "try":
                    continue  # catch reading the body is visible; body reading catch falls through below
                return self._hidden_in(name, container, kind)
            if container not in here:
                kind = self.steps[container].kind
                if kind != "steps":
                    return self._hidden_in(name, container, kind)
                if container in scope.visible and _may_skip(self.steps[container].step):
                    return (
                        f"step '{name}' is inside group '{container}', which has an `if` and may have been "
                        f"skipped (then none of its steps ran), so steps.{name} is not available here",
                        f"read steps.{container}.output instead (null when '{container}' was skipped: "
                        f"test steps.{container}.status first)",
                    )
        return (
            f"step '{name}' runs after this point, so steps.{name} is not available here",
            "a step can read only steps that come before it",
        )

    def _hidden_in(self, name: str, container: str, kind: str) -> tuple[str, str]:
        why = {
            "switch": f"is inside a case of switch '{container}', which may not be the case taken",
            "for_each": f"runs once per item inside for_each '{container}'",
            "loop": f"runs once per iteration inside loop '{container}'",
            "try": f"is inside try '{container}' and may not have completed",
            "parallel": f"is inside a branch of parallel '{container}'",
        }.get(kind, f"is inside {kind} step '{container}'")
        return f"step '{name}' {why}, so steps.{name} is not available here", (
            f"read steps.{container}.output instead"
        )

    def _unknown_secret(self, name: str, path: Path, offset: int | None) -> None:
        guess = closest(name, self.workflow.secrets)
        if guess:
            hint = f"did you mean '{guess}'?"
        else:
            hint = f"declare it: secrets: [{', '.join([*self.workflow.secrets, name])}]"
        self.err("CH207", f"secret '{name}' is not declared in `secrets`", path, offset, hint)

    def _value(self, value: Any, path: Path, scope: _Scope) -> templates.CompiledValue:
        """A JSON-like value whose strings may hold `${{ }}`: compile it, report every error inside it."""
        failed: set[Path] = set()

        def on_error(exc: templates.TemplateError, inner: Path) -> None:
            failed.add(inner)
            where = (*path, *inner)
            if exc.kind == "syntax" and exc.message.startswith(("unterminated", "empty expression")):
                self.err("CH305", f"bad `${{{{ }}}}` interpolation: {exc.message}", where, exc.offset)
            elif exc.kind == "syntax":
                self.err("CH301", f"CEL syntax error: {exc.message}", where, exc.offset)
            else:
                self._type_error(exc.message, where, exc.offset, scope)

        compiled = templates.compile_value(value, scope.names, on_error=on_error, compiler=self._compile)
        self._jinja_in_value(value, path, scope, failed)
        if all(self._refs_ok(p, scope) for p in compiled.programs):
            return compiled  # nothing to report: skip locating each program in its string
        programs = iter(compiled.programs)
        for inner, text in _strings(value, ()):
            if inner in failed or templates.OPEN not in text:
                continue
            for piece in templates.split_template(text):
                if piece[0] is None:
                    program = next(programs, None)
                    if program is None:
                        return compiled
                    source = piece[1]
                    lead = len(source) - len(source.lstrip())
                    self._check_references(program, (*path, *inner), piece[2] + lead, scope)
        return compiled

    def _jinja_in_value(self, value: Any, path: Path, scope: _Scope, failed: set[Path]) -> None:
        """CH310: `{{ x }}` (the Jinja habit) in a value is literal text; values use `${{ x }}`. Warned
        only when the inside parses as CEL reading a variable in scope, so that literal text (a Go or
        Mustache template sent to a tool) is left alone. The inverse of CH309."""
        for inner, text in _strings(value, ()):
            if "{{" not in text or inner in failed:
                continue
            for offset, source in _bare_braces(text):
                if _reads_scope(source, scope.names):
                    shown = " ".join(source.split())
                    self.warn(
                        "CH310",
                        f"`{{{{ {shown} }}}}` in a value is not evaluated: it is passed on as literal text "
                        "(values use `${{ }}`; `{{ }}` is only for prompts)",
                        (*path, *inner),
                        offset,
                        hint=f"did you mean `${{{{ {shown} }}}}`?",
                    )

    def _prompt(
        self, text: str, path: Path, step_id: str, declared: Mapping[str, Any]
    ) -> templates.Prompt | None:
        try:
            prompt = templates.compile_prompt(text)
        except templates.TemplateError as exc:
            offset = sum(len(line) + 1 for line in text.split("\n")[: max(exc.line - 1, 0)])
            self.err(
                "CH306",
                f"Jinja2 template syntax error: {exc.message.removeprefix('prompt template: ')}",
                path,
                offset,
            )
            return None
        for name in sorted(prompt.variables - declared.keys()):
            found = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)
            guess = closest(name, declared)
            if guess:
                hint = f"did you mean '{guess}'?"
            else:
                hint = f'add it to the step\'s vars, e.g. vars: {{{name}: "${{{{ input.{name} }}}}"}}'
            self.err(
                "CH307",
                f"prompt variable '{name}' is not defined in the `vars` of step '{step_id}'",
                path,
                found.start() if found else 0,
                hint,
            )
        if templates.OPEN in text:
            self.warn(
                "CH309",
                "`${{ }}` in a prompt is not evaluated: prompts are Jinja2 over the step's vars",
                path,
                text.find(templates.OPEN),
                hint="compute the value in `vars` with ${{ }} and write {{ name }} in the prompt",
            )
        return prompt

    # --- references ---

    def _tool_ref(self, name: str, path: Path) -> bool:
        if name in self.workflow.tools:
            return True
        guess = closest(name, self.workflow.tools)
        hint = f"did you mean '{guess}'?" if guess else _declared_hint("tools", self.workflow.tools)
        self.err("CH204", f"unknown tool '{name}'", path, hint=hint)
        return False

    def _model_ref(self, name: str, path: Path) -> None:
        if name in self.workflow.models:
            return
        guess = closest(name, self.workflow.models)
        if guess:
            hint = f"did you mean '{guess}'?"
        elif not self.workflow.models:
            hint = f"declare it: models: {{{name}: {{provider: openai, model: gpt-4.1-mini}}}}"
        else:
            hint = _declared_hint("models", self.workflow.models)
        self.err("CH205", f"unknown model '{name}'", path, hint=hint)

    def _identity_ref(self, name: str, path: Path) -> bool:
        if name in self.workflow.identities:
            return True
        guess = closest(name, self.workflow.identities)
        hint = f"did you mean '{guess}'?" if guess else _declared_hint("identities", self.workflow.identities)
        self.err("CH206", f"unknown identity '{name}'", path, hint=hint)
        return False

    def _principal_ref(self, name: str, path: Path, what: str) -> None:
        if name.startswith("role:") or name in self.workflow.identities:
            return
        guess = closest(name, self.workflow.identities)
        hint = f"did you mean '{guess}'?" if guess else _declared_hint("identities", self.workflow.identities)
        self.err("CH206", f"{what} names unknown identity '{name}'", path, hint=hint)

    def _workflow_file(self, target: str, path: Path) -> None:
        """A called workflow must exist, must not lead back to this file, and must not lead into a cycle of
        other files (every run of this call would fail when the child file is compiled; spec §13.13)."""
        if self.doc.file.startswith("<"):
            return  # loaded from a string: no directory to resolve against
        here = os.path.realpath(self.doc.file)
        called = _resolve(here, target)
        if called == here:
            self.err(
                "CH402",
                f"workflow '{target}' is this file: a workflow that calls itself never ends",
                path,
                hint="move the repeated part into a `loop` step",
            )
            return
        if called is None or not os.path.isfile(called):
            self.err(
                "CH209", f"workflow file '{target}' does not exist (paths are relative to this file)", path
            )
            return
        if self._call_graph is None:
            self._call_graph = _CallGraph(here, self.doc.data)
        graph = self._call_graph

        def names(files: Sequence[str]) -> str:
            return " -> ".join(os.path.relpath(f, os.path.dirname(here)) for f in files)

        back = graph.way_back(called)
        if back:
            self.err("CH402", f"workflow calls form a cycle: {names([here, *back])}", path)
            return
        found = graph.cycle_from(called)
        if found:
            lead, cycle = found
            way = f" (reached through {names([here, *lead, cycle[0]])})" if lead else ""
            self.err(
                "CH402",
                f"workflow '{target}' leads into a cycle of workflow files: {names(cycle)}{way}",
                path,
                hint="every run of this call would fail when that file is compiled; break the cycle there",
            )

    def _models(self) -> None:
        for name, llm in self.workflow.models.items():
            if llm.api_key_secret is not None and llm.api_key_secret not in self.workflow.secrets:
                self._unknown_secret(llm.api_key_secret, ("models", name, "api_key_secret"), None)

    # --- tools, guardrails, grants ---

    def _tools(self) -> dict[str, CompiledTool]:
        out: dict[str, CompiledTool] = {}
        names = {n: t.DYN for n in TOOL_SCOPE} | {"secrets": _BASE_TYPES["secrets"], "run": _STEPS_TYPE}
        scope = _Scope(_NOTHING, names, "a tool definition")
        # An HTTP request is built per call, under the identity the call runs under (issue 6: credentials
        # for the effective identity, from `secrets`): `identity` is that name ("" for none).
        http_scope = _Scope(_NOTHING, {**names, "identity": t.STRING}, "an HTTP tool definition")
        for name, tool in self.workflow.tools.items():
            base: Path = ("tools", name)
            values: dict[str, templates.CompiledValue] = {}
            if tool.http is not None:
                for key in ("url", "headers", "query", "json_", "body"):
                    raw = getattr(tool.http, key)
                    if raw is not None and raw != {}:
                        yaml_key = key.rstrip("_")
                        values[yaml_key] = self._value(raw, (*base, "http", yaml_key), http_scope)
            if tool.mcp is not None and tool.mcp.env:
                values["env"] = self._value(tool.mcp.env, (*base, "mcp", "env"), scope)
            if tool.resource is not None:
                values["resource"] = self._value(tool.resource, (*base, "resource"), scope)
            if tool.workflow is not None:
                self._workflow_file(tool.workflow, (*base, "workflow"))
            guardrails = self._guardrails(tool.guardrails, (*base, "guardrails"))
            out[name] = CompiledTool(name, tool, MappingProxyType(values), guardrails)
        return out

    def _guardrails(self, rules: Sequence[m.Guardrail], path: Path) -> tuple[CompiledGuardrail, ...]:
        names = {n: t.DYN for n in GUARDRAIL_SCOPE} | {"run": _STEPS_TYPE}
        scope = _Scope(_NOTHING, names, "a guardrail")
        out: list[CompiledGuardrail] = []
        for i, rule in enumerate(rules):
            here = (*path, i)
            check = self._condition(rule.check, (*here, "check"), scope) if rule.check is not None else None
            message = (
                self._value(rule.message, (*here, "message"), scope) if rule.message is not None else None
            )
            for j, step_id in enumerate(rule.steps or ()):
                if step_id not in self.steps:
                    guess = closest(step_id, self.steps)
                    self.err(
                        "CH202",
                        f"guardrail '{rule.id}' applies to unknown step '{step_id}'",
                        (*here, "steps", j),
                        hint=f"did you mean '{guess}'?"
                        if guess
                        else f"steps in this file: {_names(self.steps)}",
                    )
            for j, pattern in enumerate(rule.tools or ()):
                self._tool_pattern_used(
                    "CH210", f"guardrail '{rule.id}' can never apply to tools", pattern, (*here, "tools", j)
                )
            out.append(CompiledGuardrail(rule, check, message))
        return tuple(out)

    def _matching_tools(self, pattern: str) -> list[str]:
        return [name for name in self.workflow.tools if fnmatch.fnmatchcase(name, pattern)]

    def _tool_pattern_used(self, code: str, what: str, pattern: str, path: Path) -> None:
        """Warn when a tool name or glob of a rule or grant matches no declared tool."""
        if self._matching_tools(pattern):
            return
        guess = closest(pattern, self.workflow.tools)
        self.warn(
            code,
            f"{what} '{pattern}': no declared tool matches",
            path,
            hint=f"did you mean '{guess}'?" if guess else _declared_hint("tools", self.workflow.tools),
        )

    def _grants(self) -> tuple[CompiledGrant, ...]:
        names = {n: t.DYN for n in GRANT_SCOPE} | {"run": _STEPS_TYPE}
        scope = _Scope(_NOTHING, names, "a grant")
        roles = {r for ident in self.workflow.identities.values() for r in ident.roles}
        out: list[CompiledGrant] = []
        for i, grant in enumerate(self.workflow.grants):
            here: Path = ("grants", i)
            when = self._condition(grant.when, (*here, "when"), scope) if grant.when is not None else None
            if grant.to.startswith("role:"):
                role = grant.to.removeprefix("role:")
                if role not in roles:
                    guess = closest(role, roles)
                    self.warn(
                        "CH502",
                        f"grant '{grant.id}' can never apply: no identity has role '{role}'",
                        (*here, "to"),
                        hint=f"did you mean 'role:{guess}'?"
                        if guess
                        else "add the role to an identity's `roles`",
                    )
            elif grant.to not in self.workflow.identities:
                guess = closest(grant.to, self.workflow.identities)
                self.warn(
                    "CH502",
                    f"grant '{grant.id}' can never apply: there is no identity '{grant.to}'",
                    (*here, "to"),
                    hint=f"did you mean '{guess}'?"
                    if guess
                    else _declared_hint("identities", self.workflow.identities),
                )
            for j, pattern in enumerate(grant.tools):
                self._tool_pattern_used(
                    "CH503", f"grant '{grant.id}' can never apply to", pattern, (*here, "tools", j)
                )
            out.append(CompiledGrant(grant, when))
        return tuple(out)

    def _covered(self, identity: str, tool: str, path: Path, who: str) -> None:
        """CH501 when no grant of the identity (or one of its roles) can ever allow a call of the tool.

        This is decided exactly as `interpreter.authz` decides a call, using only what is known before
        the run: the tool's action (`action`, else its `effect`) and whether it has a resource (and which,
        when `resource` is a plain string). A `when` may hold, so a grant with one can allow (and a deny
        grant with one may not match); an unconditional deny that matches wins over every allow. Nothing
        is reported that a run could allow (spec §10.2)."""
        ident = self.workflow.identities[identity]
        spec = self.workflow.tools[tool]
        action = spec.action or spec.effect
        resource = _static_resource(spec)
        parties = {identity, *(f"role:{r}" for r in ident.roles)}
        named = [
            (i, grant)
            for i, grant in enumerate(self.workflow.grants)
            if grant.to in parties and any(fnmatch.fnmatchcase(tool, p) for p in grant.tools)
        ]
        roles = f" (roles: {', '.join(ident.roles)})" if ident.roles else ""
        for i, grant in named:
            if grant.effect == "deny" and grant.when is None:
                fit, _ = _grant_fit(grant, tool, spec, action, resource)
                if fit is True:  # matches every call, and a matching deny overrides every allow
                    line, _col = self._pos(("grants", i))
                    self.err(
                        "CH501",
                        f"{who} may call tool '{tool}', but deny grant '{grant.id}' (line {line}) denies "
                        f"every call of it by identity '{identity}'{roles}: it has no `when`",
                        path,
                        hint="remove the tool from the step, narrow the deny grant's `tools`, or give it "
                        "a `when`",
                    )
                    return
        reasons: list[str] = []
        hints: list[str] = []
        for i, grant in named:
            if grant.effect != "allow":
                continue
            fit, why = _grant_fit(grant, tool, spec, action, resource)
            if fit is not False:  # matches every call, or some calls: the grant can allow
                return
            line, _col = self._pos(("grants", i))
            reasons.append(f"grant '{grant.id}' (line {line}) {why[0]}")
            hints.append(why[1])
        if not reasons:
            self.err(
                "CH501",
                f"{who} may call tool '{tool}', but no allow grant of identity '{identity}'{roles} covers it",
                path,
                hint=f"add a grant: {{id: {identity}-{tool}, to: {identity}, tools: [{tool}]}}",
            )
            return
        self.err(
            "CH501",
            f"{who} may call tool '{tool}', but no grant of identity '{identity}'{roles} can allow it: "
            + "; ".join(reasons),
            path,
            hint=hints[0],
        )

    def _check_unique_rule_ids(self) -> None:
        seen: dict[str, Path] = {}
        for i, grant in enumerate(self.workflow.grants):
            self._unique_id("grant", grant.id, ("grants", i, "id"), seen)
        seen = {}
        for rule_path, rule in self._all_guardrails():
            self._unique_id("guardrail", rule.id, (*rule_path, "id"), seen)

    def _unique_id(self, what: str, ident: str, path: Path, seen: dict[str, Path]) -> None:
        if ident in seen:
            line, col = self._pos(seen[ident])
            self.err(
                "CH208", f"duplicate {what} id '{ident}': already used at line {line}, column {col}", path
            )
        else:
            seen[ident] = path

    def _unpriced_cost_budgets(self, graph: ExecutionGraph) -> None:
        """CH216: a `max_cost` budget counts the cost of model calls from the models' `prices`; a model
        without them costs nothing, so a budget over its calls never trips. Warned once per budget and
        model, at the budget's `max_cost`."""
        rule_paths = {id(rule): path for path, rule in self._all_guardrails()}
        warned: set[tuple[int, str]] = set()
        for node in graph.nodes():
            spec = getattr(node.step, node.kind, None) if node.kind in ("agent", "llm") else None
            model = self.workflow.models.get(spec.model) if spec is not None else None
            if spec is None or model is None or model.prices is not None:
                continue
            for _, rule in graph.cost_budgets(node):
                if (id(rule), spec.model) in warned or id(rule) not in rule_paths:
                    continue
                warned.add((id(rule), spec.model))
                self.warn(
                    "CH216",
                    f"budget '{rule.id}' limits cost, but model '{spec.model}' (of step '{node.id}') "
                    "declares no prices: its calls cost 0 and never count toward max_cost",
                    (*rule_paths[id(rule)], "limits", "max_cost"),
                    hint=f"declare the model's prices, e.g. models: {{{spec.model}: {{..., prices: "
                    "{input_per_1k: 0.0004, output_per_1k: 0.0016}}}",
                )

    def _all_guardrails(self) -> Iterator[tuple[Path, m.Guardrail]]:
        for i, rule in enumerate(self.workflow.guardrails):
            yield ("guardrails", i), rule
        for name, tool in self.workflow.tools.items():
            for i, rule in enumerate(tool.guardrails):
                yield ("tools", name, "guardrails", i), rule
        # only the steps with rules are sorted: finding a position walks down from the document's root
        guarded = [info for info in self.steps.values() if info.step.guardrails]
        for info in sorted(guarded, key=lambda s: self._pos(s.path)):
            for i, rule in enumerate(info.step.guardrails):
                yield (*info.path, "guardrails", i), rule


# --- helpers -------------------------------------------------------------------------------------------


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """Every string leaf of a JSON-like value, in the order `templates.compile_value` visits them."""
    if type(value) is str:
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


_BARE_BRACES = re.compile(r"(?<![${])\{\{(?!\{)(.*?)\}\}", re.DOTALL)


def _bare_braces(text: str) -> Iterator[tuple[int, str]]:
    """(offset, inside) of each `{{ ... }}` of a value string that no `$` opens: outside the string's
    `${{ }}` expressions, and not an escaped `$${{`."""
    try:
        pieces = templates.split_template(text) if templates.OPEN in text else []
    except templates.TemplateError:
        return  # reported as CH305 already
    spans = [(p[2] - len(templates.OPEN), p[2] + len(p[1]) + 2) for p in pieces if p[0] is None]
    for match in _BARE_BRACES.finditer(text):
        start = match.start()
        if any(a <= start < b for a, b in spans):
            continue
        yield start, match.group(1)


def _reads_scope(source: str, names: Mapping[str, Any]) -> bool:
    """Whether `source` parses as CEL and reads at least one of `names` (e.g. `input.name`)."""
    if not source.strip():
        return False
    try:
        tree = expr.parse(source)
        refs = expr.unchecked_references(tree)
    except (expr.ExpressionError, RecursionError):
        return False
    return not refs.isdisjoint(names)


def _names(names: Mapping[str, Any] | Sequence[str], limit: int = 8) -> str:
    shown = list(names)[:limit]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more if shown else "none"


def _declared_hint(section: str, names: Mapping[str, Any]) -> str:
    if not names:
        return f"this file declares no {section}; add it under `{section}:`"
    return f"declared {section}: {_names(names)}"


def _resolve(caller: str, target: str) -> str | None:
    """The real path of the workflow file `target` names, relative to the file `caller`; None when it
    cannot name a file (a NUL byte)."""
    try:
        return os.path.realpath(os.path.join(os.path.dirname(caller), target))
    except (ValueError, OSError):
        return None


class _CallGraph:
    """The workflow files one file (`origin`) leads to through `workflow` steps and workflow tools, each
    read once, however many calls name it and however the files call each other. A file that does not
    exist or does not load calls nothing here: compiling it (or the call that names it) reports that."""

    def __init__(self, origin: str, data: Any) -> None:
        self.origin = origin
        self._calls: dict[str, list[str]] = {origin: self._targets(origin, data)}
        self._toward_origin: dict[str, str] | None = None  # file -> next file on a shortest way back
        self._acyclic: set[str] = set()  # files known to lead into no cycle
        self._cycles: dict[str, tuple[list[str], list[str]] | None] = {}

    @staticmethod
    def _targets(file: str, data: Any) -> list[str]:
        called = (_resolve(file, target) for target in _workflow_targets(data))
        return [f for f in dict.fromkeys(called) if f is not None and os.path.isfile(f)]

    def calls(self, file: str) -> list[str]:
        """The existing files `file` calls, each once, in the order the file names them."""
        if file not in self._calls:
            from dsl.loader import load_file

            doc, _ = load_file(file)
            self._calls[file] = self._targets(file, doc.data) if doc is not None else []
        return self._calls[file]

    def way_back(self, start: str) -> list[str] | None:
        """A shortest chain of calls from `start` back to the origin (`[start, ..., origin]`), or None.
        `start` is a file the origin calls."""
        if self._toward_origin is None:
            # Every file the origin leads to, and who calls whom among them; then a breadth-first walk
            # backwards from the origin finds each file's shortest way back.
            callers: dict[str, list[str]] = {}
            order, seen = [self.origin], {self.origin}
            for file in order:  # grows while it is walked: each file once
                for called in self.calls(file):
                    callers.setdefault(called, []).append(file)
                    if called not in seen:
                        seen.add(called)
                        order.append(called)
            toward: dict[str, str] = {}
            frontier = [self.origin]
            for file in frontier:
                for caller in callers.get(file, ()):
                    if caller not in toward and caller != self.origin:
                        toward[caller] = file
                        frontier.append(caller)
            self._toward_origin = toward
        if start not in self._toward_origin:
            return None
        trail = [start]
        while trail[-1] != self.origin:
            trail.append(self._toward_origin[trail[-1]])
        return trail

    def cycle_from(self, start: str) -> tuple[list[str], list[str]] | None:
        """A cycle of files that `start` leads into, as `(lead, cycle)`: `lead` the files from `start` up
        to the cycle's first file (empty when `start` is in the cycle), `cycle` from that file round to it
        again. A depth-first walk; files found to lead into no cycle are never walked again."""
        if start in self._cycles:
            return self._cycles[start]
        found = None
        if start not in self._acyclic:
            stack = [(start, iter(self.calls(start)))]
            depth = {start: 0}  # the files on the stack, with their place in it
            while stack and found is None:
                file, pending = stack[-1]
                for called in pending:
                    if called in depth:
                        trail = [f for f, _ in stack]
                        found = (trail[: depth[called]], [*trail[depth[called] :], called])
                        break
                    if called not in self._acyclic:
                        depth[called] = len(stack)
                        stack.append((called, iter(self.calls(called))))
                        break
                else:
                    stack.pop()
                    del depth[file]
                    self._acyclic.add(file)  # all it leads to is walked, and no cycle was met
        self._cycles[start] = found
        return found


def _workflow_targets(data: Any) -> Iterator[str]:
    """Paths of workflow tools and `workflow` steps in raw (unvalidated) data: the tools', then the
    steps' in the order the file has them. Only steps are read (a value such as `set: {workflow: {path:
    x}}` calls nothing)."""
    if not isinstance(data, dict):
        return
    for tool in (data.get("tools") or {}).values() if isinstance(data.get("tools"), dict) else ():
        if isinstance(tool, dict) and isinstance(tool.get("workflow"), str):
            yield tool["workflow"]
    stack: list[Any] = [data.get("steps")]
    while stack:
        node = stack.pop()
        if isinstance(node, list):  # a list of steps
            stack.extend(reversed(node))
        elif isinstance(node, dict):  # a step
            call = node.get("workflow")
            if isinstance(call, dict) and isinstance(call.get("path"), str):
                yield call["path"]
            stack.extend(reversed(_raw_blocks(node)))


def _raw_blocks(step: dict[str, Any]) -> list[Any]:
    """The step lists inside a raw step, where `_blocks` finds them in a validated one."""

    def at(node: Any, *keys: str) -> Any:
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    blocks = [step.get("steps"), at(step, "for_each", "steps"), at(step, "loop", "steps")]
    blocks += [at(step, "try", "steps"), at(step, "try", "catch", "steps")]
    switch = step.get("switch")
    blocks += [at(case, "steps") for case in switch] if isinstance(switch, list) else []
    branches = at(step, "parallel", "branches")
    if isinstance(branches, dict):
        blocks += branches.values()
    elif isinstance(branches, list):
        blocks += branches
    return [b for b in blocks if isinstance(b, list)]


def _yaml_scalar(text: str) -> str:
    """`text` as a YAML value that stays that text: quoted when YAML would read it otherwise (`!x` is a
    tag, `*x` an alias, `a: b` a mapping, `a #b` a comment)."""
    if text[:1] in "!&*{}[]|>'\"%@`#,?:-" or ": " in text or " #" in text:
        return "'" + text.replace("'", "''") + "'"
    return text


class _Unknown:
    """A tool's resource that only a call decides (it has `${{ }}` in it)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN_RESOURCE = _Unknown()


def _static_resource(tool: m.Tool) -> str | None | _Unknown:
    """The resource every call of `tool` has, when it is known before the run.

    As `interpreter.enforcement.RunGuard._resource` binds it: None when the tool declares no `resource`
    or one that never evaluates to a string (a number, a mapping, a list: a call then has no resource);
    the text itself when it is a string without `${{ }}`; otherwise UNKNOWN_RESOURCE (an expression may
    also fail or yield a non-string at run time, but it may yield any string, so nothing is decided)."""
    value = tool.resource
    if value is None:
        return None
    if isinstance(value, str):
        return UNKNOWN_RESOURCE if templates.OPEN in value else value
    return None


def _grant_fit(
    grant: m.Grant, tool: str, spec: m.Tool, action: str, resource: str | None | _Unknown
) -> tuple[bool | None, tuple[str, str]]:
    """Whether a grant that names `tool` (by `to` and `tools`) matches its calls, `when` aside, as
    `interpreter.authz._scope_matches` decides: True for every call, False for none (with why, and a
    hint), None when it depends on the call (its resource)."""
    if grant.actions is not None and action not in grant.actions:
        what = f"is a {action}" if spec.action is None else f"has action '{action}'"
        return False, (
            f"allows only actions [{', '.join(grant.actions)}]; tool '{tool}' {what}",
            f"add '{action}' to the `actions` of grant '{grant.id}', or add a grant for tool '{tool}'",
        )
    if grant.resources is None:
        return True, ("", "")
    globs = ", ".join(grant.resources)
    if resource is None:
        what = "declares no `resource`" if spec.resource is None else "has a `resource` that is not a string"
        return False, (
            f"allows only resources [{globs}]; tool '{tool}' {what}, and a call without a resource "
            "never matches a grant with `resources`",
            f"declare the resource of tool '{tool}' (e.g. resource: \"order/${{{{ args.id }}}}\"), or "
            f"drop `resources` from grant '{grant.id}'",
        )
    if isinstance(resource, _Unknown):
        return None, ("", "")
    if any(fnmatch.fnmatchcase(resource, p) for p in grant.resources):
        return True, ("", "")
    return False, (
        f"allows only resources [{globs}]; the resource of tool '{tool}' is always '{resource}'",
        f"add a pattern matching '{resource}' to the `resources` of grant '{grant.id}'",
    )
