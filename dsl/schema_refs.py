"""References (`$ref`, `$dynamicRef`) inside a JSON Schema (draft 2020-12) that do not resolve.

jsonschema resolves a reference only when validation reaches it: a schema with `{"$ref": "#/$defs/nope"}`
passes `check_schema` and fails at run time. `broken_refs` resolves every reference up front, the way the
validator will (same resolver, same base URIs, same subschema keywords), so the front end reports it as
CH111 and the interpreter can refuse such a schema before using it.

A workflow's schemas are self-contained: a reference resolves within its own schema (a JSON pointer
`#/...`, an `$anchor`, or an embedded `$id`), or names one of the JSON Schema meta-schemas jsonschema
ships with. Nothing is ever fetched: a reference to another document (`http://...`, `other.json`) is
broken, at validation and at run time alike (`REGISTRY`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The keywords whose values are subschemas, as `referencing.jsonschema.DRAFT202012` lists them: only these
# are walked (a `$ref` under `const`, `enum`, `default`, `examples` or an unknown keyword is data).
_IN_VALUE = frozenset(
    {
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_IN_SUBARRAY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_IN_SUBVALUES = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"})
_REF_KEYWORDS = ("$ref", "$dynamicRef")
_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", type(None): "null"}

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class BrokenRef:
    """One reference that does not resolve."""

    path: Path  # to the reference's value within the schema, e.g. ("properties", "a", "$ref")
    ref: str  # as written
    reason: str  # a sentence, e.g. "$ref '#/$defs/x' does not resolve: the schema has nothing at '/$defs/x'"


def registry() -> Any:
    """The registry validators resolve against: empty, and its `retrieve` refuses every URI (jsonschema
    adds the meta-schemas it ships with). Pass it as `registry=` to a jsonschema validator."""
    from referencing import Registry

    return Registry()


def broken_refs(schema: Any) -> list[BrokenRef]:
    """Every reference in `schema` (a JSON Schema that passed `check_schema`) that does not resolve to a
    schema, in document order. [] when all resolve."""
    if not isinstance(schema, dict):
        return []
    from jsonschema_specifications import REGISTRY as SPECIFICATIONS
    from referencing.jsonschema import DRAFT202012

    root = SPECIFICATIONS.combine(registry()).resolver_with_root(DRAFT202012.create_resource(schema))
    found: list[BrokenRef] = []
    seen: set[int] = set()  # nodes walked (a schema reached again through a reference is not walked twice)
    # (node, its path, the resolver of its parent -- None for the root, whose resolver is `root` --, and
    # whether it was reached through a reference: then `path` is that reference's, where a fault inside
    # is reported)
    stack: list[tuple[Any, Path, Any, bool]] = [(schema, (), None, False)]
    targets: list[tuple[Any, Path, Any, bool]] = []  # walked after the schema itself, if not walked then
    while stack or targets:
        if not stack:
            stack, targets = targets[::-1], []
        node, path, parent, via = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue  # true/false, a malformed value check_schema let through, or walked already
        seen.add(id(node))
        # as jsonschema's descend: a subschema's `$id` changes the base its references resolve against
        resolver = root if parent is None else parent.in_subresource(DRAFT202012.create_resource(node))
        children: list[tuple[Any, Path, Any, bool]] = []
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str):
                at = path if via else (*path, keyword)
                reason, resolved = _resolve(resolver, keyword, ref)
                if reason is not None:
                    found.append(BrokenRef(at, ref, reason))
                elif isinstance(resolved.contents, dict):  # e.g. under an unknown keyword: walk it too
                    targets.append((resolved.contents, at, resolved.resolver, True))
        for key, value in node.items():
            if key in _IN_VALUE:
                children.append((value, path if via else (*path, key), resolver, via))
            elif key in _IN_SUBARRAY and isinstance(value, list):
                children.extend(
                    (v, path if via else (*path, key, i), resolver, via) for i, v in enumerate(value)
                )
            elif key in _IN_SUBVALUES and isinstance(value, dict):
                children.extend(
                    (v, path if via else (*path, key, n), resolver, via) for n, v in value.items()
                )
        stack.extend(reversed(children))
    return found


def _resolve(resolver: Any, keyword: str, ref: str) -> tuple[str | None, Any]:
    """(why `ref` does not resolve to a schema, None) or (None, what it resolves to)."""
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

    what = f"{keyword} '{ref}'"
    try:
        resolved = resolver.lookup(ref)
    except PointerToNowhere as exc:
        return f"{what} does not resolve: the schema has nothing at '{exc.ref}'", None
    except NoSuchAnchor as exc:
        return f"{what} does not resolve: the schema has no $anchor '{exc.anchor}'", None
    except Unresolvable:
        return (
            f"{what} refers to another document, which is never fetched: a schema must be "
            "self-contained (refer to its own parts, e.g. '#/$defs/name')"
        ), None
    except Exception as exc:  # noqa: BLE001 - a malformed URI: the validator would fail on it too
        return f"{what} cannot be resolved: {exc}", None
    if isinstance(resolved.contents, dict | bool):
        return None, resolved
    return f"{what} does not point at a schema but at {_KINDS.get(type(resolved.contents), 'a value')}", None
