"""Static types of CEL's gradual type checker, written and read in CEL's type notation.

A `Type` is a name plus type parameters: `int`, `list(int)`, `map(string, dyn)`, `type(int)`,
`google.protobuf.Timestamp`, or an abstract type such as `my.Vector(double)`. Type parameters of
overload signatures (`A`, `K`, `V`) are `Type`s with `is_param` set. Two internal markers exist:
`error` (the type of an ill-typed subexpression) and `FREE`, the still-unknown element type of an
empty list or map literal, which yields to whatever type it is later joined with.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, eq=False)
class Type:
    name: str
    params: tuple[Type, ...] = ()
    is_param: bool = False

    # Hand-written equality: the checker compares types constantly and most comparisons are
    # against the shared constants, so the identity test usually decides. Types nest as deep as
    # expressions may (list(list(...)) from nested list literals), so these walk without recursion.
    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not Type:
            return NotImplemented
        pairs: list[tuple[Type, Type]] = [(self, other)]
        while pairs:
            a, b = pairs.pop()
            if a is b:
                continue
            if a.name != b.name or a.is_param != b.is_param or len(a.params) != len(b.params):
                return False
            pairs.extend(zip(a.params, b.params, strict=True))
        return True

    def __hash__(self) -> int:
        # the parameters' names only: equal types still hash alike, and no recursion is needed
        return hash((self.name, self.is_param, tuple(p.name for p in self.params)))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        out: list[str] = []
        todo: list[Type | str] = [self]  # popped from the end: pushed in reverse order
        while todo:
            item = todo.pop()
            if type(item) is str:
                out.append(item)
            elif not item.params:  # type: ignore[union-attr]
                out.append(item.name)  # type: ignore[union-attr]
            else:
                todo.append(")")
                params = item.params  # type: ignore[union-attr]
                for i in range(len(params) - 1, -1, -1):
                    todo.append(params[i])
                    if i:
                        todo.append(", ")
                todo.append(f"{item.name}(")  # type: ignore[union-attr]
        return "".join(out)

    def __repr__(self) -> str:
        return f"Type({str(self)!r})"


INT = Type("int")
UINT = Type("uint")
DOUBLE = Type("double")
BOOL = Type("bool")
STRING = Type("string")
BYTES = Type("bytes")
NULL = Type("null_type")
TIMESTAMP = Type("google.protobuf.Timestamp")
DURATION = Type("google.protobuf.Duration")
DYN = Type("dyn")
ERROR = Type("error")
TYPE = Type("type")  # the type of a type value whose denoted type is not known statically
FREE = Type("_free")  # element type of `[]` / `{}` until something more specific is joined in


def list_of(elem: Type) -> Type:
    return Type("list", (elem,))


def map_of(key: Type, value: Type) -> Type:
    return Type("map", (key, value))


def type_of_type(t: Type) -> Type:
    return Type("type", (t,))


def wrapper_of(t: Type) -> Type:
    """A protobuf wrapper type (e.g. google.protobuf.Int64Value): `t` or null."""
    return Type("wrapper", (t,))


def param(name: str) -> Type:
    return Type(name, is_param=True)


_DYNAMIC_NAMES = frozenset({"dyn", "error", "_free"})


def is_dynamic(t: Type) -> bool:
    """Types that match anything during checking (gradual typing): dyn, error and FREE."""
    return t.name in _DYNAMIC_NAMES and not t.is_param


# Names that denote a fixed type; `timestamp`/`duration` are aliases accepted in declarations.
_SIMPLE: dict[str, Type] = {
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "bool": BOOL,
    "string": STRING,
    "bytes": BYTES,
    "null_type": NULL,
    "null": NULL,
    "dyn": DYN,
    "any": DYN,
    "error": ERROR,
    "timestamp": TIMESTAMP,
    "duration": DURATION,
    "google.protobuf.Timestamp": TIMESTAMP,
    "google.protobuf.Duration": DURATION,
    "google.protobuf.Any": DYN,
    "google.protobuf.Value": DYN,
    "google.protobuf.Struct": map_of(STRING, DYN),
    "google.protobuf.ListValue": list_of(DYN),
    "google.protobuf.BoolValue": wrapper_of(BOOL),
    "google.protobuf.BytesValue": wrapper_of(BYTES),
    "google.protobuf.DoubleValue": wrapper_of(DOUBLE),
    "google.protobuf.FloatValue": wrapper_of(DOUBLE),
    "google.protobuf.Int32Value": wrapper_of(INT),
    "google.protobuf.Int64Value": wrapper_of(INT),
    "google.protobuf.StringValue": wrapper_of(STRING),
    "google.protobuf.UInt32Value": wrapper_of(UINT),
    "google.protobuf.UInt64Value": wrapper_of(UINT),
}
# Parameterised built-in constructors and their arities.
_ARITY: dict[str, tuple[int, ...]] = {"list": (1,), "map": (2,), "type": (0, 1), "wrapper": (1,)}

# Type names of other languages (JSON Schema, Python, Java) that people reach for.
_OTHER_LANGUAGES: dict[str, str] = {
    "boolean": "bool",
    "integer": "int",
    "long": "int",
    "number": "double",
    "float": "double",
    "str": "string",
    "object": "map(string, dyn)",
    "dict": "map(string, dyn)",
    "array": "list(dyn)",
    "none": "null_type",
}
_TOKEN = re.compile(
    r"\s*(?:(?P<name>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<punct>[(),]))"
)
_PARAM_NAME = re.compile(r"[A-Z]")


def parse_type(text: str) -> Type:
    """Parse CEL type notation (`int`, `list(string)`, `map(string, dyn)`, `type(int)`, `A`, ...)."""
    tokens = _tokenize(text)
    t, pos = _parse(tokens, 0, text)
    if pos != len(tokens):
        raise ValueError(f"invalid type {text!r}: unexpected {tokens[pos]!r}")
    return t


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"invalid type {text!r}: unexpected character {text[pos:].strip()[:1]!r}")
        tokens.append(m.group("name") or m.group("punct"))
        pos = m.end()
    if not tokens:
        raise ValueError("invalid type: empty text")
    return tokens


def _parse(tokens: list[str], pos: int, text: str) -> tuple[Type, int]:
    if pos >= len(tokens) or tokens[pos] in "(),":
        found = tokens[pos] if pos < len(tokens) else "end of text"
        raise ValueError(f"invalid type {text!r}: expected a type name, found {found!r}")
    name = tokens[pos].lstrip(".")
    pos += 1
    args: list[Type] = []
    if pos < len(tokens) and tokens[pos] == "(":
        pos += 1
        while True:
            arg, pos = _parse(tokens, pos, text)
            args.append(arg)
            if pos < len(tokens) and tokens[pos] == ",":
                pos += 1
                continue
            if pos < len(tokens) and tokens[pos] == ")":
                pos += 1
                break
            raise ValueError(f"invalid type {text!r}: expected ',' or ')'")
    return _build(name, tuple(args), text), pos


def _build(name: str, args: tuple[Type, ...], text: str) -> Type:
    if name in _ARITY:
        if len(args) not in _ARITY[name]:
            want = " or ".join(str(n) for n in _ARITY[name])
            raise ValueError(f"invalid type {text!r}: '{name}' takes {want} type parameter(s)")
        return Type(name, args)
    if name in _SIMPLE:
        if args:
            raise ValueError(f"invalid type {text!r}: '{name}' takes no type parameters")
        return _SIMPLE[name]
    if _PARAM_NAME.fullmatch(name) and not args:
        return param(name)
    if name in _OTHER_LANGUAGES and not args:
        raise ValueError(f"unknown type '{name}' (CEL calls it '{_OTHER_LANGUAGES[name]}')")
    # Any other name is an abstract (application-defined) type, unless it looks like a misspelt
    # built-in type: `strng` is far more likely a typo than a type of its own.
    hint = difflib.get_close_matches(name, [*_SIMPLE, *_ARITY], n=1, cutoff=0.75)
    if hint and "." not in name and not args:
        raise ValueError(f"unknown type '{name}' (did you mean '{hint[0]}'?)")
    return Type(name, args)


# ---------------------------------------------------------------------------------------------
# Relations between types used by the checker.


def join(a: Type, b: Type) -> Type | None:
    """The most general type covering `a` and `b` when they are compatible, else None.

    `FREE` yields to the other side, `dyn` absorbs the other side, type values join to `type`,
    and `null` joins with the types that admit null (wrappers, timestamps, durations, abstract types).
    """
    if a == b:
        return a
    if a == FREE:
        return b
    if b == FREE:
        return a
    if a == ERROR or b == ERROR:
        return ERROR
    if a == DYN or b == DYN:
        return DYN
    if a.is_param or b.is_param:
        return None
    if a.name == "type" and b.name == "type":
        return TYPE
    if a == NULL and _nullable(b):
        return b
    if b == NULL and _nullable(a):
        return a
    if a.name == "wrapper" and a.params[0] == b:
        return a
    if b.name == "wrapper" and b.params[0] == a:
        return b
    if a.name != b.name or len(a.params) != len(b.params):
        return None
    params: list[Type] = []
    for pa, pb in zip(a.params, b.params, strict=True):
        joined = join(pa, pb)
        if joined is None:
            return None
        params.append(joined)
    return Type(a.name, tuple(params))


def _nullable(t: Type) -> bool:
    return t.name == "wrapper" or t in (TIMESTAMP, DURATION) or t.name not in _BUILTIN_NAMES


_BUILTIN_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "null_type", "list", "map", "type"}
)


def unify(formal: Type, actual: Type, bindings: dict[str, Type]) -> bool:
    """Whether an argument of type `actual` fits parameter `formal`, binding type parameters."""
    if formal.is_param:
        bound = bindings.get(formal.name)
        if bound is None:
            bindings[formal.name] = actual
            return True
        joined = join(bound, actual)
        if joined is None:
            return False
        bindings[formal.name] = joined
        return True
    if formal is DYN or is_dynamic(actual) or actual.is_param:
        return True
    if actual.name == "wrapper":
        return actual.params[0] == formal or unify(formal, actual.params[0], bindings)
    if formal.name == "type" and actual.name == "type" and (not formal.params or not actual.params):
        return True
    if formal.name != actual.name or len(formal.params) != len(actual.params):
        return False
    # loops, not generator expressions, in these recursive functions: one Python frame per level of
    # a type nested as deep as the parser allows (list(list(...)) from nested list literals)
    for f, a in zip(formal.params, actual.params, strict=True):
        if not unify(f, a, bindings):
            return False
    return True


def substitute(t: Type, bindings: dict[str, Type]) -> Type:
    """`t` with bound type parameters replaced; unbound ones become `dyn`."""
    if t.is_param:
        return bindings.get(t.name, DYN)
    if not t.params:
        return t
    params = []
    for p in t.params:
        params.append(substitute(p, bindings))
    return Type(t.name, tuple(params))


def finalize(t: Type) -> Type:
    """Replace the internal FREE marker by `dyn` for reporting."""
    if t == FREE:
        return DYN
    if not t.params:
        return t
    params = []
    for p in t.params:
        params.append(finalize(p))
    return Type(t.name, tuple(params))
