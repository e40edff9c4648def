"""CEL's gradual type checker (langdef "Gradual Type Checking").

`check` walks the AST once, deducing each node's type from declared variables and the standard
overload signatures. `dyn` matches anything, so expressions over dynamic data check as far as their
types are known and leave the rest to runtime. The first problem found is raised as an
`ExpressionTypeError` located at the offending node.
"""

from __future__ import annotations

import difflib
from collections.abc import Generator, Mapping
from dataclasses import dataclass

from dsl.expr import ast
from dsl.expr.errors import ExpressionTypeError
from dsl.expr.types import (
    BOOL,
    BYTES,
    DOUBLE,
    DURATION,
    DYN,
    ERROR,
    FREE,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    TYPE,
    UINT,
    Type,
    finalize,
    is_dynamic,
    join,
    list_of,
    map_of,
    parse_type,
    substitute,
    type_of_type,
    unify,
)
from dsl.expr.values import UInt

# A check of an inner node: yields each child whose type it needs and is sent that type back (so the
# walk needs no Python recursion, see `_Checker.visit`); returns the node's own type.
Visit = Generator[ast.Expr, Type, Type]


@dataclass(frozen=True, slots=True)
class CheckResult:
    type: Type
    references: frozenset[str]


@dataclass(frozen=True, slots=True)
class Overload:
    params: tuple[Type, ...]  # for member overloads the receiver comes first
    result: Type
    member: bool


def _sig(text: str, member: bool = False) -> Overload:
    args, result = text.split("->")
    params = tuple(parse_type(p) for p in _split_top(args)) if args.strip() else ()
    return Overload(params, parse_type(result), member)


def _split_top(text: str) -> list[str]:
    """Split at commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


_NUMERIC = ("int", "uint", "double")
_ORDERED = ("bool", "int", "uint", "double", "string", "bytes", "timestamp", "duration")
_TIME_PARTS = ("getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear")
_TIME_AND_DURATION_PARTS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")


def _standard_functions() -> dict[str, list[Overload]]:
    g: dict[str, list[str]] = {}
    m: dict[str, list[str]] = {}
    arith = [f"{t}, {t} -> {t}" for t in _NUMERIC]
    g["_+_"] = arith + [
        "string, string -> string",
        "bytes, bytes -> bytes",
        "list(A), list(A) -> list(A)",
        "timestamp, duration -> timestamp",
        "duration, timestamp -> timestamp",
        "duration, duration -> duration",
    ]
    g["_-_"] = arith + [
        "timestamp, timestamp -> duration",
        "timestamp, duration -> timestamp",
        "duration, duration -> duration",
    ]
    g["_*_"] = list(arith)
    g["_/_"] = list(arith)
    g["_%_"] = ["int, int -> int", "uint, uint -> uint"]
    g["-_"] = ["int -> int", "double -> double"]
    g["!_"] = ["bool -> bool"]
    g["_==_"] = ["A, A -> bool"]
    g["_!=_"] = ["A, A -> bool"]
    # Ordering is defined per type, and across the numeric types (they share a number line).
    ordering = [f"{t}, {t} -> bool" for t in _ORDERED]
    ordering += [f"{a}, {b} -> bool" for a in _NUMERIC for b in _NUMERIC if a != b]
    for op in ("_<_", "_<=_", "_>_", "_>=_"):
        g[op] = list(ordering)
    g["_[_]"] = ["list(A), int -> A", "map(K, V), K -> V"]
    g["@in"] = ["A, list(A) -> bool", "A, map(A, B) -> bool"]
    sizes = ["string -> int", "bytes -> int", "list(A) -> int", "map(K, V) -> int"]
    g["size"] = list(sizes)
    m["size"] = list(sizes)
    # Conversions.
    g["int"] = ["int -> int", "uint -> int", "double -> int", "string -> int", "timestamp -> int"]
    g["uint"] = ["uint -> uint", "int -> uint", "double -> uint", "string -> uint"]
    g["double"] = ["double -> double", "int -> double", "uint -> double", "string -> double"]
    g["string"] = [f"{t} -> string" for t in ("string", "bool", "int", "uint", "double", "bytes")]
    g["string"] += ["timestamp -> string", "duration -> string"]
    g["bytes"] = ["bytes -> bytes", "string -> bytes"]
    g["bool"] = ["bool -> bool", "string -> bool"]
    g["timestamp"] = ["timestamp -> timestamp", "string -> timestamp", "int -> timestamp"]
    g["duration"] = ["duration -> duration", "string -> duration"]
    g["dyn"] = ["A -> dyn"]
    g["type"] = ["A -> type(A)"]
    # Strings.
    for name in ("contains", "startsWith", "endsWith", "matches"):
        m[name] = ["string, string -> bool"]
    g["matches"] = ["string, string -> bool"]
    for name in _TIME_PARTS:
        m[name] = ["timestamp -> int", "timestamp, string -> int"]
    for name in _TIME_AND_DURATION_PARTS:
        m[name] = ["timestamp -> int", "timestamp, string -> int", "duration -> int"]
    # The strings extension (cel-go ext.Strings).
    m["charAt"] = ["string, int -> string"]
    m["indexOf"] = ["string, string -> int", "string, string, int -> int"]
    m["lastIndexOf"] = ["string, string -> int", "string, string, int -> int"]
    m["lowerAscii"] = ["string -> string"]
    m["upperAscii"] = ["string -> string"]
    m["replace"] = ["string, string, string -> string", "string, string, string, int -> string"]
    m["split"] = ["string, string -> list(string)", "string, string, int -> list(string)"]
    m["substring"] = ["string, int -> string", "string, int, int -> string"]
    m["trim"] = ["string -> string"]
    m["join"] = ["list(string) -> string", "list(string), string -> string"]
    m["format"] = ["string, list(dyn) -> string"]
    m["reverse"] = ["string -> string"]
    g["strings.quote"] = ["string -> string"]
    # Internal helper some macro expansions use as loop condition (cel-go's expansion of all/exists).
    g["@not_strictly_false"] = ["bool -> bool"]
    # Internal helper of the two-variable transformMap() macro (cel-go's expansion).
    g["cel.@mapInsert"] = ["map(K, V), K, V -> map(K, V)"]
    _extension_functions(g, m)

    table: dict[str, list[Overload]] = {}
    for name, sigs in g.items():
        table.setdefault(name, []).extend(_sig(s) for s in sigs)
    for name, sigs in m.items():
        table.setdefault(name, []).extend(_sig(s, member=True) for s in sigs)
    return table


def _extension_functions(g: dict[str, list[str]], m: dict[str, list[str]]) -> None:
    """Signatures of the extension libraries in extensions.py (cel-go ext: math, encoders, lists,
    sets). math.greatest/math.least are variadic: see `_Checker.visit_extremum`."""
    for name in ("math.ceil", "math.floor", "math.round", "math.trunc"):
        g[name] = ["double -> double"]
    for name in ("math.isInf", "math.isNaN", "math.isFinite"):
        g[name] = ["double -> bool"]
    g["math.abs"] = ["int -> int", "uint -> uint", "double -> double"]
    g["math.sign"] = ["int -> int", "uint -> uint", "double -> double"]
    g["math.sqrt"] = ["int -> double", "uint -> double", "double -> double"]
    for name in ("math.bitAnd", "math.bitOr", "math.bitXor"):
        g[name] = ["int, int -> int", "uint, uint -> uint"]
    g["math.bitNot"] = ["int -> int", "uint -> uint"]
    for name in ("math.bitShiftLeft", "math.bitShiftRight"):
        g[name] = ["int, int -> int", "uint, int -> uint"]
    g["base64.encode"] = ["bytes -> string"]
    g["base64.decode"] = ["string -> bytes"]
    g["lists.range"] = ["int -> list(int)"]
    for name in ("sets.contains", "sets.equivalent", "sets.intersects"):
        g[name] = ["list(A), list(A) -> bool"]
    g["@sortByAssociatedKeys"] = ["list(A), list(B) -> list(A)"]
    m["distinct"] = ["list(A) -> list(A)"]
    m["flatten"] = ["list(list(A)) -> list(A)", "list(dyn), int -> list(dyn)"]
    m["reverse"] = m.get("reverse", []) + ["list(A) -> list(A)"]
    m["slice"] = ["list(A), int, int -> list(A)"]
    m["sort"] = ["list(A) -> list(A)"]


# Variadic numeric functions: one list of numbers, or one or more numbers.
_EXTREMA = frozenset(("math.greatest", "math.least"))

FUNCTIONS: dict[str, list[Overload]] = _standard_functions()
for _name in _EXTREMA:
    FUNCTIONS[_name] = [_sig("dyn -> dyn")]  # placeholder: arity and types are checked by the checker
# Overloads by (name, member-style), the lookup done for every call.
_BY_STYLE: dict[tuple[str, bool], tuple[Overload, ...]] = {
    (name, member): tuple(o for o in overloads if o.member == member)
    for name, overloads in FUNCTIONS.items()
    for member in (False, True)
    if any(o.member == member for o in overloads)
}


def _matches(params: tuple[Type, ...], args: list[Type], bindings: dict[str, Type]) -> bool:
    for formal, actual in zip(params, args):  # noqa: B905 - lengths are checked by the caller
        if not unify(formal, actual, bindings):
            return False
    return True


# Identifiers that denote types (their value is a type, so their type is type(T)).
TYPE_IDENTS: dict[str, Type] = {
    "int": type_of_type(INT),
    "uint": type_of_type(UINT),
    "double": type_of_type(DOUBLE),
    "bool": type_of_type(BOOL),
    "string": type_of_type(STRING),
    "bytes": type_of_type(BYTES),
    "null_type": type_of_type(NULL),
    "dyn": type_of_type(DYN),
    "type": type_of_type(TYPE),
    "list": type_of_type(list_of(DYN)),
    "map": type_of_type(map_of(DYN, DYN)),
    "google.protobuf.Timestamp": type_of_type(TIMESTAMP),
    "google.protobuf.Duration": type_of_type(DURATION),
    # The runtime also binds these short names to the timestamp and duration types.
    "timestamp": type_of_type(TIMESTAMP),
    "duration": type_of_type(DURATION),
}

_OPERATOR_SYMBOLS = {
    "_&&_": "&&",
    "_||_": "||",
    "!_": "!",
}


def check(
    expr: ast.Expr,
    declarations: Mapping[str, Type | str],
    *,
    container: str | None = None,
    source: str = "",
) -> CheckResult:
    """Type-check `expr` against declared variables; raise ExpressionTypeError on the first error."""
    checker = _Checker(_declared_types(declarations, source), container or "", source)
    result = checker.visit(expr)
    return CheckResult(finalize(result), frozenset(checker.references))


def _declared_types(declarations: Mapping[str, Type | str], source: str) -> dict[str, Type]:
    """Declarations with type strings parsed (callers may pass CEL type notation)."""
    result: dict[str, Type] = {}
    for name, declared in declarations.items():
        if isinstance(declared, str):
            try:
                declared = parse_type(declared)
            except ValueError as err:
                raise ExpressionTypeError(f"declaration of '{name}': {err}", source, 0) from None
        result[name] = declared
    return result


class _Checker:
    def __init__(self, declarations: Mapping[str, Type], container: str, source: str) -> None:
        self.declarations = declarations
        self.container = container.strip(".")
        self.source = source
        self.scopes: list[dict[str, Type]] = []
        self.references: set[str] = set()
        self.predicates: dict[int, str] = {}  # id(predicate node) -> macro name, for clearer messages

    def fail(self, message: str, node: ast.Expr) -> ExpressionTypeError:
        return ExpressionTypeError(message, self.source, node.offset)

    def visit(self, root: ast.Expr) -> Type:
        """The type of `root`, walking the tree with an explicit stack of suspended visits.

        The inner-node visits are generators that yield a child to get its type, so an expression
        at the parser's depth limit checks within Python's default recursion limit; the order of
        the walk (and so which error is found first) is that of a plain recursive descent.
        """
        stack: list[Visit] = []
        wanted: ast.Expr | None = root
        value: Type | None = None
        while True:
            if wanted is not None:
                t = type(wanted)
                if t is ast.Literal:
                    value = self.visit_Literal(wanted)  # type: ignore[arg-type]
                elif t is ast.Ident:
                    value = self.visit_Ident(wanted)  # type: ignore[arg-type]
                else:
                    stack.append(self.start(wanted))
                    value = None
                wanted = None
            if not stack:
                return value  # type: ignore[return-value]
            try:
                wanted = stack[-1].send(value)  # type: ignore[arg-type]
            except StopIteration as done:
                stack.pop()
                value = done.value

    def start(self, node: ast.Expr) -> Visit:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"unsupported expression node {type(node).__name__}", node)
        return method(node)  # type: ignore[no-any-return]

    # -- leaves ----------------------------------------------------------------------------

    def visit_Literal(self, node: ast.Literal) -> Type:
        value = node.value
        if value is None:
            return NULL
        if type(value) is bool:
            return BOOL
        if type(value) is UInt:
            return UINT
        if type(value) is int:
            return INT
        if type(value) is float:
            return DOUBLE
        if type(value) is str:
            return STRING
        if type(value) is bytes:
            return BYTES
        raise self.fail(f"unsupported literal {value!r}", node)

    def visit_Ident(self, node: ast.Ident) -> Type:
        found = self.resolve(node.name)
        if found is None:
            raise self.fail(self.undeclared_message(node.name), node)
        return found[1]

    # -- name resolution (langdef "Name Resolution") ----------------------------------------

    def candidates(self, name: str) -> list[str]:
        """Names to try for `name` in the container, innermost scope first."""
        if name.startswith("."):
            return [name[1:]]
        names = []
        parts = self.container.split(".") if self.container else []
        for i in range(len(parts), 0, -1):
            names.append(".".join(parts[:i]) + "." + name)
        names.append(name)
        return names

    def resolve(self, name: str) -> tuple[str, Type] | None:
        """(resolved name, type) of an identifier or qualified name, recording references."""
        # A leading dot skips the container prefixes only; comprehension variables still shadow.
        local = name[1:] if name.startswith(".") else name
        if "." not in local:
            for scope in reversed(self.scopes):
                if local in scope:
                    return local, scope[local]
        for candidate in self.candidates(name):
            if candidate in self.declarations:
                # The contract (cel-contract.md): references are root names, so a qualified
                # declaration counts by its first segment, as in unchecked programs.
                self.references.add(candidate.split(".", 1)[0])
                return candidate, self.declarations[candidate]
            if candidate in TYPE_IDENTS:
                return candidate, TYPE_IDENTS[candidate]
        return None

    def undeclared_message(self, name: str) -> str:
        local = (n for scope in self.scopes for n in scope if not n.startswith("@"))  # not the accumulator
        known = [*self.declarations, *local]
        hint = difflib.get_close_matches(name.lstrip("."), known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"undeclared reference to '{name}'{suggestion}"

    @staticmethod
    def qualified_name(node: ast.Expr) -> str | None:
        """`a.b.c` for a chain of plain selections on an identifier, else None."""
        fields: list[str] = []
        while isinstance(node, ast.Select) and not node.test_only:
            fields.append(node.field)
            node = node.operand
        if not isinstance(node, ast.Ident):
            return None
        return ".".join([node.name, *reversed(fields)])

    # -- selection --------------------------------------------------------------------------

    def visit_Select(self, node: ast.Select) -> Visit:
        if not node.test_only:
            qualified = self.qualified_name(node)
            if qualified is not None and not self.is_local(qualified):
                found = self.resolve(qualified)
                if found is not None:
                    return found[1]
        operand = yield node.operand
        if node.test_only:
            if operand.name == "map" or is_dynamic(operand) or operand.is_param:
                return BOOL
            raise self.fail(f"has() needs a field selection on a map, found type '{finalize(operand)}'", node)
        return self.select_field(operand, node)

    def is_local(self, qualified: str) -> bool:
        root = qualified.lstrip(".").split(".", 1)[0]
        return any(root in scope for scope in self.scopes)

    def select_field(self, operand: Type, node: ast.Select) -> Type:
        if operand.name == "map":
            return operand.params[1]
        if is_dynamic(operand) or operand.is_param:
            return DYN
        raise self.fail(
            f"type '{finalize(operand)}' does not support field selection (field '{node.field}')", node
        )

    # -- aggregates -------------------------------------------------------------------------

    def visit_CreateList(self, node: ast.CreateList) -> Visit:
        types: list[Type] = []
        for e in node.elements:
            types.append((yield e))
        return list_of(self.common_type(types))

    def visit_CreateMap(self, node: ast.CreateMap) -> Visit:
        keys: list[Type] = []
        values: list[Type] = []
        for key_node, value_node in node.entries:
            key = yield key_node
            if not (key in (INT, UINT, BOOL, STRING) or is_dynamic(key) or key.is_param):
                raise self.fail(
                    f"map keys must be int, uint, bool or string, found '{finalize(key)}'", key_node
                )
            keys.append(key)
            values.append((yield value_node))
        return map_of(self.common_type(keys), self.common_type(values))

    @staticmethod
    def common_type(types: object) -> Type:
        """The joined element type; dyn when the elements disagree (heterogeneous literal)."""
        result = FREE
        for t in types:  # type: ignore[attr-defined]
            joined = join(result, t)
            result = DYN if joined is None else joined
        return result

    def visit_CreateStruct(self, node: ast.CreateStruct) -> Visit:
        raise self.fail(f"message types are not supported (found '{node.message}{{...}}')", node)
        yield node  # unreachable: makes this a generator like the other inner-node visits

    # -- calls ------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> Visit:
        fn = node.function
        if fn in ("_&&_", "_||_"):
            for arg in node.args:
                yield from self.require_bool(arg, f"operands of '{_OPERATOR_SYMBOLS[fn]}' must be bool")
            return BOOL
        if fn == "_?_:_" and len(node.args) == 3:
            return (yield from self.visit_conditional(node))
        if node.target is not None:
            qualified = self.qualified_name(node.target)
            if qualified is not None and not self.is_local(qualified):
                global_name = self.global_function(qualified + "." + fn)
                if global_name in _EXTREMA:
                    return (yield from self.visit_extremum(global_name, node, node.args))
                if global_name is not None:
                    return (yield from self.resolve_overload(global_name, node, node.args, member=False))
            receiver = node.target
            return (yield from self.resolve_overload(fn, node, (receiver, *node.args), member=True))
        name = self.global_function(fn) or fn
        if name in _EXTREMA:
            return (yield from self.visit_extremum(name, node, node.args))
        return (yield from self.resolve_overload(name, node, node.args, member=False))

    def visit_extremum(self, name: str, node: ast.Call, args: tuple[ast.Expr, ...]) -> Visit:
        """math.greatest/least: numbers, or one list of numbers; mixed numeric types give dyn."""
        types: list[Type] = []
        for a in args:
            types.append((yield a))
        if len(types) == 1 and types[0].name == "list":
            types = [types[0].params[0]]
        numeric = (INT, UINT, DOUBLE)
        if not types or not all(t in numeric or is_dynamic(t) or t.is_param for t in types):
            shown = ", ".join(str(finalize(t)) for t in types)
            raise self.fail(f"found no matching overload for '{name}' applied to '({shown})'", node)
        first = types[0]
        return first if first in numeric and all(t == first for t in types) else DYN

    def global_function(self, name: str) -> str | None:
        """The standard global function a (possibly qualified) call name refers to."""
        for candidate in self.candidates(name):
            if any(not o.member for o in FUNCTIONS.get(candidate, ())):
                return candidate
        return None

    def require_bool(self, node: ast.Expr, what: str) -> Generator[ast.Expr, Type, None]:
        t = yield node
        if t != BOOL and not is_dynamic(t) and not t.is_param:
            macro = self.predicates.get(id(node))
            if macro is not None:
                what = f"predicate of {macro}() must be bool"
            raise self.fail(f"{what}, found '{finalize(t)}'", node)

    def visit_conditional(self, node: ast.Call) -> Visit:
        condition, then, otherwise = node.args
        yield from self.require_bool(condition, "condition must be bool")
        then_type = yield then
        else_type = yield otherwise
        joined = join(then_type, else_type)
        if joined is None:
            raise self.fail(
                f"branches of '?:' have incompatible types '{finalize(then_type)}' and "
                f"'{finalize(else_type)}' (wrap one in dyn() to allow both)",
                node,
            )
        return joined

    def resolve_overload(self, name: str, node: ast.Call, args: tuple[ast.Expr, ...], member: bool) -> Visit:
        arg_types: list[Type] = []
        for arg in args:
            arg_types.append((yield arg))
        overloads = _BY_STYLE.get((name, member), ())
        if not overloads:
            other_style = [o for o in FUNCTIONS.get(name, ()) if o.member != member]
            if other_style and member:
                raise self.fail(f"'{name}' is not a member function; call it as {name}(...)", node)
            if other_style:
                raise self.fail(f"'{name}' is a member function; call it as value.{name}(...)", node)
            style = "member function" if member else "function"
            known = sorted({n for n, os in FUNCTIONS.items() if any(o.member == member for o in os)})
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise self.fail(f"undeclared reference to {style} '{name}'{suggestion}", node)
        results: list[Type] = []
        count = len(arg_types)
        for overload in overloads:
            if len(overload.params) == count:
                bindings: dict[str, Type] = {}
                if _matches(overload.params, arg_types, bindings):
                    results.append(substitute(overload.result, bindings))
        if not results:
            shown = ", ".join(str(finalize(t)) for t in arg_types)
            if member:
                receiver, _, rest = shown.partition(", ")
                raise self.fail(
                    f"found no matching overload for '{name}' applied to '{receiver}.({rest})'", node
                )
            raise self.fail(f"found no matching overload for '{name}' applied to '({shown})'", node)
        result = results[0]
        for other in results[1:]:
            result = join(result, other) or DYN
        return result

    # -- comprehensions (every macro expands to one) ---------------------------------------

    def visit_Comprehension(self, node: ast.Comprehension) -> Visit:
        range_type = yield node.iter_range
        iter_types = self.iteration_types(range_type, node)
        accu_type = yield node.accu_init
        predicate = self.macro_predicate(node)
        if predicate is not None:
            self.predicates[id(predicate)] = node.macro
        scope_vars = {node.iter_var: iter_types[0]}
        if node.iter_var2:
            scope_vars[node.iter_var2] = iter_types[1]
        # One pass over the step: the accumulator may sharpen (`[]` grows into list(int) in map());
        # the result sees the joined type. Re-checking the step would cost 2^depth for nested macros.
        self.scopes.append({node.accu_var: accu_type})
        self.scopes.append(scope_vars)
        try:
            what = f"predicate of {node.macro}()" if node.macro else "loop condition"
            yield from self.require_bool(node.loop_condition, f"{what} must be bool")
            step_type = yield node.loop_step
        finally:
            self.scopes.pop()
            self.scopes.pop()
        joined = join(accu_type, step_type)
        if joined is None:
            raise self.step_error(node, accu_type, step_type)
        accu_type = joined
        self.scopes.append({node.accu_var: accu_type})
        try:
            return (yield node.result)
        finally:
            self.scopes.pop()

    @staticmethod
    def macro_predicate(node: ast.Comprehension) -> ast.Expr | None:
        """The user's predicate inside a macro's loop step, to name it in error messages."""
        step = node.loop_step
        if (
            not node.macro
            or not isinstance(step, ast.Call)
            or node.macro == "map"
            and step.function != "_?_:_"
        ):
            return None
        if step.function == "_?_:_" and len(step.args) == 3:
            return step.args[0]
        if step.function in ("_&&_", "_||_"):
            others = [a for a in step.args if not (isinstance(a, ast.Ident) and a.name == node.accu_var)]
            return others[0] if len(others) == 1 else None
        return None

    def step_error(self, node: ast.Comprehension, accu_type: Type, step_type: Type) -> ExpressionTypeError:
        if node.macro in ("all", "exists", "exists_one", "filter") or accu_type == BOOL:
            return self.fail(
                f"predicate of {node.macro or 'comprehension'}() must be bool, found '{finalize(step_type)}'",
                node.loop_step,
            )
        return self.fail(
            f"comprehension step has type '{finalize(step_type)}', expected '{finalize(accu_type)}'",
            node.loop_step,
        )

    def iteration_types(self, range_type: Type, node: ast.Comprehension) -> tuple[Type, Type]:
        """Types of the (first, second) iteration variables over `range_type`."""
        if range_type.name == "list":
            elem = range_type.params[0]
            return (INT, elem) if node.iter_var2 else (elem, DYN)
        if range_type.name == "map":
            return range_type.params[0], range_type.params[1]
        if is_dynamic(range_type) or range_type.is_param:
            return DYN, DYN
        what = f"{node.macro}()" if node.macro else "a comprehension"
        raise self.fail(
            f"{what} needs a list or map to iterate over, found '{finalize(range_type)}'", node.iter_range
        )


__all__ = ["CheckResult", "FUNCTIONS", "check", "ERROR"]
