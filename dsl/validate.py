"""Shape validation: a loaded document -> `Workflow`, with every pydantic error as a CH1xx diagnostic.

pydantic reports where an error is (`loc`) and what kind it is (`type`); this module turns each into a
sentence about the user's file ("unknown field 'promt' in agent step 'classify' (did you mean 'prompt'?)")
placed at the offending node. Step kinds are decided by the key present (see `dsl.model._step_tag`), so a
broken agent step yields errors about the agent step only, not about twelve other kinds it is not.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Protocol, Union

from pydantic import BaseModel, ValidationError

from dsl import model as m
from dsl.diagnostics import Diagnostic, closest, error

Path = tuple[str | int, ...]

_CUSTOM_CODES = {
    "duration": "CH106",
    "json_schema": "CH111",
    "regex": "CH112",
    "one_of": "CH110",
    "charter_rule": "CH109",
    "cel_type": "CH103",
}
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_RANGE = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_PATTERNS = {
    m.IDENT_PATTERN: "use ASCII letters, digits and '_', not starting with a digit",
    m.NAME_PATTERN: "use ASCII letters, digits, '_', '.' and '-', starting with a letter or '_'",
    m.TOOL_NAME_PATTERN: "use ASCII letters, digits, '_' and '-' (at most 64), starting with a letter or '_'",
    m.GLOB_PATTERN: "write a tool name or a glob such as 'lookup_*'",
    m.PRINCIPAL_PATTERN: "write an identity name or 'role:NAME'",
    m.PYTHON_TARGET_PATTERN: "write 'module:function', e.g. 'examples.tools:lookup_invoice'",
}
_KEY_NOUNS = {
    "tools": "tool",
    "models": "model",
    "identities": "identity",
    "vars": "variable",
    "set": "variable",
}
_TOP_NOUNS = {"tools": "tool", "models": "model", "identities": "identity"}


class Document(Protocol):
    """What validate needs of `dsl.loader.LoadedDocument`."""

    file: str
    data: Any

    def position(self, path: Sequence[str | int]) -> tuple[int, int]: ...

    def key_position(self, path: Sequence[str | int]) -> tuple[int, int]: ...


def validate(doc: Document) -> tuple[m.Workflow | None, list[Diagnostic]]:
    """The workflow of a loaded document, or None and every shape error (sorted by position)."""
    try:
        return m.Workflow.model_validate(doc.data), []
    except ValidationError as exc:
        diags = {_diagnose(doc, err) for err in exc.errors(include_url=False)}
        return None, sorted(diags)


# --- one error -> one diagnostic ------------------------------------------------------------------------


def _diagnose(doc: Document, err: Any) -> Diagnostic:
    loc = _clean_loc(err["loc"])
    kind: str = err["type"]
    data = doc.data
    hint: str | None = None
    at_key = False
    if loc and loc[-1] == "[key]":  # a mapping key that is not a valid name
        loc = loc[:-1]
        code, message = "CH107", _bad_key(loc, err)
        at_key = True
    elif kind == "extra_forbidden":
        code, message, hint = "CH101", *_unknown_field(loc, data)
        at_key = True
    elif kind == "missing":
        code, message = "CH102", f"missing required field '{loc[-1]}' in {_describe(loc[:-1], data)}"
        loc = loc[:-1]
    elif kind == "union_tag_not_found":
        code, message, hint = "CH105", *_step_kind(loc, err["input"])
    elif kind in _CUSTOM_CODES:
        code = _CUSTOM_CODES[kind]
        subject = _describe(loc, data) if kind in ("one_of", "charter_rule") else _field_ref(loc, data)
        message = f"{subject} {err['msg']}"
        ctx = err.get("ctx") or {}
        inner = ctx.get("path") if kind == "json_schema" else ctx.get("at")
        if inner:
            # a schema error at the offending part of the schema (a `$ref`, a bad `type`); a model's
            # cross-field rule (`dsl.model._rule`) at the key or value it is about, not the object start
            line, column = _position(doc, (*loc, *inner), bool(ctx.get("at_key")), fallback=loc)
            return error(code, message, doc.file, line, column, hint)
    elif kind in _EXPECTED:
        code = "CH103"
        message = (
            f"{_field_ref(loc, data)} must be {_EXPECTED[kind]}, not {_show_value(err['input'], typed=True)}"
        )
    elif kind in ("literal_error", "enum"):
        code, message, hint = "CH104", *_bad_choice(loc, err, data)
    elif kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        advice = _PATTERNS.get(pattern, f"it must match {pattern}")
        code, message = (
            "CH107",
            f"{_field_ref(loc, data)} is not valid ({_show_value(err['input'])}): {advice}",
        )
    elif kind in ("too_short", "string_too_short"):
        if loc and loc[-1] in m.UNION_TAGS:  # a union member of its own ("#list"): the field is meant
            loc = loc[:-1]
        code, message = "CH108", f"{_field_ref(loc, data)} must not be empty"
    elif kind in ("too_long", "string_too_long"):
        limit = err.get("ctx", {}).get("max_length")
        code, message = "CH108", f"{_field_ref(loc, data)} is too long (at most {limit})"
    elif kind in _RANGE:
        limit = next(iter(err.get("ctx", {}).values()), "?")
        code = "CH108"
        message = f"{_field_ref(loc, data)} must be {_RANGE[kind]} {limit}, not {_show_value(err['input'])}"
    else:
        code, message = "CH100", f"{_field_ref(loc, data)}: {err['msg']}"
    line, column = _position(doc, loc, at_key)
    return error(code, message, doc.file, line, column, hint)


def _position(doc: Document, loc: Path, at_key: bool, fallback: Path | None = None) -> tuple[int, int]:
    """Where `loc` is in the file (its key with `at_key`); else where `fallback` is (the enclosing
    object a rule names a part of), else 1:1."""
    try:
        return doc.key_position(loc) if at_key and loc else doc.position(loc)
    except Exception:  # a position is a courtesy; never let it hide the diagnostic
        return _position(doc, fallback, False) if fallback is not None else (1, 1)


def _clean_loc(loc: Sequence[str | int]) -> Path:
    """pydantic puts union tags ("#agent", "#list") into loc; the YAML has no such level. A tag as the
    last element would be a key the user wrote, so it stays."""
    last = len(loc) - 1
    return tuple(p for i, p in enumerate(loc) if not (i < last and isinstance(p, str) and p in m.UNION_TAGS))


def _unknown_field(loc: Path, data: Any) -> tuple[str, str, str | None]:
    key, parent = str(loc[-1]), loc[:-1]
    allowed = _fields_at(parent, data)
    message = f"unknown field '{key}' in {_describe(parent, data)}"
    guess = closest(key, allowed) if allowed else None
    if guess:
        return message + f" (did you mean '{guess}'?)", None
    node = _get(data, parent)
    if _is_step(parent, node):
        kinds = m.step_kinds_present(node)
        if len(kinds) == 1:
            inner = _fields_at((*parent, kinds[0]), data) or []
            if key in inner:
                return message, f"'{key}' belongs inside '{kinds[0]}:'"
    hint = f"allowed fields: {', '.join(allowed)}" if allowed else None
    return message, hint


def _step_kind(loc: Path, value: Any) -> tuple[str, str, str | None]:
    kinds = ", ".join(m.STEP_KINDS)
    if not isinstance(value, dict):
        return f"a step must be a mapping with an 'id' and one of {kinds}; got {_show_value(value)}", None
    name = _step_name(loc, value)
    present = m.step_kinds_present(value)
    found = ", ".join(present) if present else "none"
    hint = None
    if not present:
        guesses = [g for g in (closest(str(k), m.STEP_KINDS) for k in value) if g]
        hint = f"did you mean '{guesses[0]}'?" if guesses else None
    return f"{name} must have exactly one of {kinds} (found {found})", hint


def _bad_choice(loc: Path, err: Any, data: Any) -> tuple[str, str, str | None]:
    expected = err.get("ctx", {}).get("expected", "")
    value = err["input"]
    if loc == ("charter",):
        return f'unsupported Charter version {_show_value(value)}; this version reads "1.0"', None
    message = f"{_field_ref(loc, data)} must be {expected}, not {_show_value(value)}"
    options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
    guess = closest(value, options) if isinstance(value, str) else None
    return message, (f"did you mean '{guess}'?" if guess else None)


def _bad_key(loc: Path, err: Any) -> str:
    key = err["input"]
    noun = _KEY_NOUNS.get(str(loc[-2]) if len(loc) >= 2 else "", "name")
    if len(loc) >= 2 and loc[-2] == "branches":
        noun = "branch"
    pattern = err.get("ctx", {}).get("pattern", "")
    advice = _PATTERNS.get(pattern, f"it must match {pattern}")
    return f"{_show_value(key)} is not a valid {noun} name: {advice}"


# --- describing places ------------------------------------------------------------------------------------


def _get(data: Any, path: Path) -> Any:
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _is_step(path: Path, node: Any) -> bool:
    """A node in a step list: workflow/case/loop/... `steps`, or a parallel branch."""
    if not path or not isinstance(path[-1], int):
        return False
    in_steps = len(path) >= 2 and path[-2] == "steps"
    in_branch = len(path) >= 3 and path[-3] == "branches"
    return (in_steps or in_branch) and (isinstance(node, dict) or node is None)


def _step_name(path: Path, node: Any) -> str:
    kinds = m.step_kinds_present(node)
    label = f"{kinds[0]} step" if len(kinds) == 1 else "step"
    sid = node.get("id") if isinstance(node, dict) else None
    if isinstance(sid, str):
        return f"{label} '{sid}'"
    return f"{label} #{int(path[-1]) + 1} of '{path[-2]}'"


def _describe(path: Path, data: Any) -> str:
    """A noun phrase for the object at `path`: "agent step 'classify'", "tool 'refund'", ..."""
    if not path:
        return "the workflow"
    node = _get(data, path)
    last, parent = path[-1], path[:-1]
    parent_node = _get(data, parent)
    if _is_step(path, node):
        return _plain_step(path, node)
    if isinstance(last, str) and last in m.STEP_KINDS and _is_step(parent, parent_node):
        return _step_name(parent, parent_node)
    if len(path) == 2 and path[0] in _TOP_NOUNS:
        return f"{_TOP_NOUNS[str(path[0])]} '{last}'"
    if isinstance(last, int) and parent and parent[-1] in ("grants", "guardrails"):
        ident = node.get("id") if isinstance(node, dict) else None
        noun = "grant" if parent[-1] == "grants" else "guardrail"
        return f"{noun} '{ident}'" if isinstance(ident, str) else f"{noun} #{last + 1}"
    if isinstance(last, int) and parent and parent[-1] == "switch":
        return f"case #{last + 1} of {_describe(parent[:-1], data)}"
    if isinstance(last, int):
        return f"item #{last + 1} of {_field_ref(parent, data)}"
    return f"'{last}' in {_describe(parent, data)}"


def _plain_step(path: Path, node: Any) -> str:
    # Step-level fields ("id", "if", "retry"...) belong to the step, not to its kind's section.
    sid = node.get("id") if isinstance(node, dict) else None
    return f"step '{sid}'" if isinstance(sid, str) else f"step #{int(path[-1]) + 1} of '{path[-2]}'"


def _field_ref(path: Path, data: Any) -> str:
    if not path:
        return "the workflow"
    return (
        _describe(path, data)
        if isinstance(path[-1], int)
        else f"'{path[-1]}' in {_describe(path[:-1], data)}"
    )


def _show_value(value: Any, typed: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string '{shown}'" if typed else f"'{shown}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# --- which fields a model allows at a path (for "did you mean") ------------------------------------------


def _fields_at(path: Path, data: Any) -> list[str] | None:
    tp: Any = m.Workflow
    node = data
    for part in path:
        tp = _concrete(tp, node)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            entry = m.model_fields_by_key(tp).get(str(part))
            if entry is None:
                return None
            tp = entry[1]
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
        node = _get(node, (part,))
    tp = _concrete(tp, node)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(m.model_fields_by_key(tp))
    return None


def _concrete(tp: Any, node: Any) -> Any:
    """Strip Annotated and pick the union arm that `node` is validated against."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, UnionType):
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            kinds = m.step_kinds_present(node)
            step_arm = next((a for a in arms if _is_step_class(a, kinds)), None)
            if step_arm is not None:
                tp = step_arm
            else:
                tp = next((a for a in arms if _accepts(a, node)), arms[0])
        else:
            return tp


def _is_step_class(arm: Any, kinds: list[str]) -> bool:
    while typing.get_origin(arm) is Annotated:
        arm = typing.get_args(arm)[0]
    return len(kinds) == 1 and arm is m.STEP_KINDS[kinds[0]]


def _accepts(arm: Any, node: Any) -> bool:
    while typing.get_origin(arm) is Annotated:
        arm = typing.get_args(arm)[0]
    base = typing.get_origin(arm) or arm
    if isinstance(base, type) and issubclass(base, BaseModel):
        return isinstance(node, dict)
    return isinstance(node, base) if isinstance(base, type) else True
