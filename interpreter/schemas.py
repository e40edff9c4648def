"""JSON Schema (draft 2020-12) validation for the interpreter: run input, tool and MCP arguments, model
answers, guardrail `schema` rules. One compile cache and one message style for all of them, e.g.

    tool 'add': invalid arguments at `items[0].qty`: 'x' is not of type 'integer'

jsonschema is imported on first use only: the CLI's start time does not pay for it.

References resolve within the schema only (`dsl.schema_refs`): nothing is ever fetched. The front end
rejects a workflow schema whose `$ref` does not resolve (CH111); a schema it never saw (an MCP tool's)
that hits one when validating yields a `SchemaProblem` with keyword "$ref" saying so, never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_REASON = 300  # a message quotes the offending value: a whole answer is no help to anyone
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHARED: dict[str, Any] = {}  # canonical schema text -> validator, for callers without a cache of their own
_SHARED_SIZE = 256


@dataclass(frozen=True)
class SchemaProblem:
    """One way a value fails its schema."""

    path: tuple[str | int, ...]  # where in the value: keys and indices from its root
    message: str  # jsonschema's message; it may quote the value
    keyword: str  # the failing keyword, e.g. "type"; "$ref" for a reference that does not resolve
    schema_path: tuple[str | int, ...]  # where in the schema, e.g. ("properties", "a", "type")
    expected: Any  # the keyword's value in the schema (never a part of the value)
    broken_schema: bool = False  # the schema cannot be applied (a `$ref` that does not resolve)
    # `additionalProperties: false`: the keys the value has that the schema does not know, and the
    # properties it does know (to name the one a misspelt key meant)
    unknown: tuple[str, ...] = ()
    known: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """The path as an author writes it in an expression: `a.b[0]`, `["odd key"].c`, "" at the root."""
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            elif _IDENTIFIER.match(part):
                out += f".{part}" if out else part
            else:
                out += f"[{json.dumps(part)}]"
        return out

    def reason(self, quote_values: bool = True, key: str = "property") -> str:
        """What is wrong. Without `quote_values` (guardrail reasons, which never quote the payload) the
        failing schema rule is named instead of jsonschema's message. `key` is what a key of the value
        is called in the message about a key the schema does not know (e.g. "argument")."""
        if self.unknown and quote_values:
            return _shorten(_unknown_keys(self.unknown, self.known, key), MAX_REASON)
        if quote_values or self.broken_schema:  # a broken schema's message quotes no value
            return _shorten(self.message, MAX_REASON)
        rule = "/".join(str(p) for p in self.schema_path)
        return f"violates schema rule {rule} = {_shorten(_compact(self.expected), 80)}"


def compiled(
    schema: Any,
    cache: MutableMapping[str, Any] | None = None,
    key: str | None = None,
    *,
    check: bool = False,
) -> Any:
    """A validator for `schema`, compiled once. With `cache` and `key` (e.g. a run's `schema_cache` and a
    tool's name) a lookup costs one dict access; otherwise validators are shared by schema content.
    `check` first checks the schema itself, every time (raises jsonschema's SchemaError, also for a
    `$ref` that does not resolve): a validator shared with a caller that did not check proves nothing."""
    if check:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        from dsl.schema_refs import broken_refs

        Draft202012Validator.check_schema(schema)
        broken = broken_refs(schema)
        if broken:
            raise SchemaError(broken[0].reason, path=broken[0].path)
    if cache is not None and key is not None:
        validator = cache.get(key)
        if validator is None:
            validator = cache[key] = _compile(schema)
        return validator
    text = _canonical(schema)
    if text is None:  # keys that cannot be sorted, values that are not JSON: no content to share it by
        return _compile(schema)
    validator = _SHARED.get(text)
    if validator is None:
        validator = _compile(json.loads(text))  # a copy: a caller changing its dict later changes nothing
        if len(_SHARED) >= _SHARED_SIZE:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[text] = validator
    return validator


def errors(schema: Any, value: Any) -> list[SchemaProblem]:
    """How `value` fails `schema` (a schema or a validator from `compiled`), most relevant first: the
    error jsonschema's `best_match` picks (inside anyOf/oneOf: the branch that nearly matched), then the
    others in the order of `iter_errors` (the schema's). [] when valid. A `$ref` that does not resolve
    (found only when validation reaches it) is the one problem, with `broken_schema` set."""
    validator = schema if hasattr(schema, "iter_errors") else compiled(schema)
    from referencing.exceptions import Unresolvable

    try:
        found = list(validator.iter_errors(value))
    except Unresolvable as exc:  # jsonschema's _WrappedReferencingError is one too
        return [_unresolvable(exc)]
    if not found:
        return []
    # imported here: a valid value (one per tool call) does not pay for it
    from jsonschema.exceptions import best_match, relevance

    top = max(found, key=relevance)  # the error best_match starts from (max keeps the first of equals)
    rest = [e for e in found if e is not top]
    return [_problem(e) for e in [best_match([top]), *rest]]


def describe(
    problems: Sequence[SchemaProblem],
    what: str,
    *,
    quote_values: bool = True,
    limit: int = 3,
    root_key: str = "property",
) -> str:
    """One message for `problems` (non-empty): `what` says what failed, then where and why, e.g.
    "tool 'x': invalid arguments at `a.b`: 'y' is not of type 'integer'; at `c`: ...". `root_key` is
    what a key of the value itself is called (a tool's "argument"), e.g. "tool 'x': invalid arguments:
    unknown argument 'dealy' (did you mean 'delay'?)"."""
    parts = []
    for n, problem in enumerate(problems[:limit]):
        where = f"at `{problem.where}`: " if problem.where else ""
        if n == 0:
            where = f"{what} {where}" if where else f"{what}: "
        parts.append(where + problem.reason(quote_values, root_key if not problem.path else "property"))
    more = len(problems) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _compile(schema: Any) -> Any:
    from jsonschema import Draft202012Validator

    from dsl.schema_refs import registry

    return Draft202012Validator(schema, registry=registry())  # no remote `$ref` is ever fetched


def _unresolvable(exc: Exception) -> SchemaProblem:
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

    cause = exc.__cause__ if isinstance(exc.__cause__, Unresolvable) else exc  # jsonschema wraps it
    ref = getattr(cause, "ref", None)
    if isinstance(cause, PointerToNowhere):
        detail = f"nothing at '{ref}'"
    elif isinstance(cause, NoSuchAnchor):
        detail = f"no $anchor '{cause.anchor}'"
    elif ref:
        detail = f"'{ref}' is another document, which is never fetched"
    else:
        detail = str(cause)
    return SchemaProblem(
        path=(),
        message=_shorten(f"the schema is broken: a $ref does not resolve ({detail})", MAX_REASON),
        keyword="$ref",
        schema_path=(),
        expected=ref,
        broken_schema=True,
    )


def _problem(error: Any) -> SchemaProblem:
    unknown: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    if error.validator == "additionalProperties" and error.validator_value is False:
        unknown, known = _extras(error.instance, error.schema)
    return SchemaProblem(
        path=tuple(error.absolute_path),
        message=error.message,
        keyword=str(error.validator),
        schema_path=tuple(error.absolute_schema_path),
        expected=error.validator_value,
        unknown=unknown,
        known=known,
    )


def _extras(instance: Any, schema: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The keys of `instance` that `schema` (whose `additionalProperties` is false) does not allow, as
    jsonschema finds them (neither in `properties` nor matching a `patternProperties`), and the names in
    its `properties`."""
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return (), ()
    properties = schema.get("properties")
    known = tuple(k for k in properties if isinstance(k, str)) if isinstance(properties, dict) else ()
    patterns = schema.get("patternProperties")
    patterns = [p for p in patterns if isinstance(p, str)] if isinstance(patterns, dict) else []
    unknown = []
    for name in instance:
        if not isinstance(name, str) or name in known:
            continue
        try:
            if any(re.search(pattern, name) for pattern in patterns):
                continue
        except re.error:
            continue  # a pattern Python cannot read: jsonschema would have failed on it too
        unknown.append(name)
    return tuple(unknown), known


def _unknown_keys(unknown: Sequence[str], known: Sequence[str], key: str) -> str:
    """e.g. "unknown argument 'dealy' (did you mean 'delay'?)", or, when no known name is close,
    "unknown argument 'x'; expected: records, delay"."""
    import difflib

    named = []
    suggested = False
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or [
            k for k in known if k.lower() == name.lower()
        ]
        shown = _shorten(repr(name), 60)
        if close:
            suggested = True
            shown += f" (did you mean {close[0]!r}?)"
        named.append(shown)
    plural = key[:-1] + "ies" if key.endswith("y") else key + "s"
    text = f"unknown {plural if len(unknown) > 1 else key} {', '.join(named)}"
    if not suggested:
        listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        text += f"; expected: {listed}" if known else f"; no {key} is expected"
    return text


def _canonical(schema: Any) -> str | None:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
