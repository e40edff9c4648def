"""Charter's expression language: CEL (the Common Expression Language), compiled to Python closures.

    program = compile('request.user.role == "admin"', {"request": "map(string, dyn)"})
    program.type            # bool
    program.references      # frozenset({"request"})
    program.evaluate({"request": {...}})

`compile` raises ExpressionSyntaxError or ExpressionTypeError; `Program.evaluate` raises
EvaluationError. Nothing else escapes either of them.

Besides the standard library: cel-go's extension libraries strings, math, encoders (base64), lists,
sets, bindings (`cel.bind`), `cel.block`, and the two-variable comprehensions (`all`/`exists`/
`existsOne` with two variables, `transformList`, `transformMap`). Optional types are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from dsl.expr import ast
from dsl.expr.errors import EvaluationError, ExpressionError, ExpressionSyntaxError, ExpressionTypeError
from dsl.expr.evaluator import COST_KEY, DEFAULT_LIMITS, Limits, compile_program, locate
from dsl.expr.parser import parse
from dsl.expr.values import CelType, Duration, Timestamp, UInt

__all__ = [
    "CelType",
    "Duration",
    "EvaluationError",
    "ExpressionError",
    "ExpressionSyntaxError",
    "ExpressionTypeError",
    "Limits",
    "Program",
    "Timestamp",
    "UInt",
    "compile",
    "from_cel",
    "parse",
    "to_cel",
]


def to_cel(value: Any) -> Any:
    """JSON-like Python value -> CEL value (see convert.py)."""
    from dsl.expr import convert

    return convert.to_cel(value)


def from_cel(value: Any) -> Any:
    """CEL value -> JSON-able Python value (see convert.py)."""
    from dsl.expr import convert

    return convert.from_cel(value)


class Program:
    """A compiled expression: evaluate it any number of times (thread-safe)."""

    __slots__ = ("source", "ast", "type", "references", "limits", "_fn", "_private")

    def __init__(
        self,
        source: str,
        tree: ast.Expr,
        type_: Any,
        references: frozenset[str],
        limits: Limits,
        fn: Any,
        private: bool,
    ) -> None:
        self.source = source
        self.ast = tree
        self.type = type_
        self.references = references
        self.limits = limits
        self._fn = fn
        self._private = private

    def evaluate(self, bindings: Mapping[str, Any] | None = None) -> Any:
        """Evaluate with these variable bindings (names may be qualified: "a.b.c")."""
        if type(bindings) is dict and not self._private:
            act = bindings  # never written to: only comprehensions write, and they get a private copy
        else:
            act = dict(bindings or ())
            if self._private:
                act[COST_KEY] = [self.limits.max_iterations]
        try:
            return self._fn(act)
        except EvaluationError as e:
            raise EvaluationError(e.message, self.source, getattr(e, "offset", 0)) from None
        except Exception as e:  # noqa: BLE001 - the contract: nothing but EvaluationError escapes
            located = locate(e, 0)
            raise EvaluationError(located.message, self.source, located.offset) from None

    def __repr__(self) -> str:
        return f"Program({self.source!r})"


@lru_cache(maxsize=4096)
def _parse_cached(source: str, macros: bool) -> ast.Expr:
    # ASTs are immutable, so one tree may serve every compile of the same source
    return parse(source, macros=macros)


def compile(  # noqa: A001 - the public name the contract fixes
    source: str,
    declarations: Mapping[str, Any] | None = None,
    *,
    macros: bool = True,
    container: str | None = None,
    limits: Limits | None = None,
) -> Program:
    """Parse, optionally type-check (when `declarations` is given), and compile an expression."""
    if not isinstance(source, str):
        raise ExpressionSyntaxError(f"expression must be a string, not {type(source).__name__}")
    limits = limits or DEFAULT_LIMITS
    try:
        tree = _parse_cached(source, macros)
        if declarations is not None:
            type_, refs = _check(tree, declarations, container, source)
        else:
            type_, refs = _dyn(), unchecked_references(tree, container)
        fn, private = compile_program(tree, container=container, limits=limits)
    except RecursionError:
        raise ExpressionSyntaxError("expression nests too deeply", source, 0) from None
    except ExpressionError:
        raise
    except Exception as e:  # noqa: BLE001 - the contract: compile raises only expression errors
        raise ExpressionSyntaxError(
            f"cannot compile expression: {type(e).__name__}: {e}", source, 0
        ) from None
    return Program(source, tree, type_, refs, limits, fn, private)


def _dyn() -> Any:
    try:
        from dsl.expr import types
    except ImportError:  # checker not installed yet: the type is unknown
        return None
    return types.DYN


def _check(
    tree: ast.Expr, declarations: Mapping[str, Any], container: str | None, source: str
) -> tuple[Any, Any]:
    from dsl.expr import checker, types

    decls: dict[str, Any] = {}
    for name, decl in declarations.items():
        if isinstance(decl, str):
            try:
                decls[name] = types.parse_type(decl)
            except ValueError as e:
                raise ExpressionTypeError(
                    f"invalid type {decl!r} declared for '{name}': {e}", source, 0
                ) from None
        else:
            decls[name] = decl
    result = checker.check(tree, decls, container=container, source=source)
    return result.type, frozenset(result.references)


def unchecked_references(tree: ast.Expr, container: str | None = None) -> frozenset[str]:
    """Root variable names an unchecked expression reads: first name segments, minus comprehension
    variables and type names (`int`, `google.protobuf.Timestamp`)."""
    from dsl.expr.evaluator import _lib

    try:
        type_names = set(_lib().TYPE_VALUES)
        functions_: Mapping[str, Any] = _lib().GLOBALS
    except Exception:  # noqa: BLE001 - library missing: no names are types or functions
        type_names = set()
        functions_ = {}
    refs: set[str] = set()
    stack: list[tuple[ast.Expr, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, scope = stack.pop()
        t = type(node)
        if t is ast.Ident or t is ast.Select:
            chain: list[str] = []
            e: ast.Expr = node
            while type(e) is ast.Select and not e.test_only:
                chain.append(e.field)
                e = e.operand
            if type(e) is ast.Ident:
                name = e.name.lstrip(".")
                qualified = ".".join([name, *reversed(chain)])
                local = name in scope and not e.name.startswith(".")
                if not local and qualified not in type_names and name not in type_names:
                    refs.add(name.split(".")[0])
                continue
            stack.append((e if type(node) is ast.Select and not node.test_only else node.operand, scope))
            continue
        if t is ast.Comprehension:
            inner = scope | {node.iter_var, node.accu_var} | ({node.iter_var2} if node.iter_var2 else set())
            stack.append((node.iter_range, scope))
            stack.append((node.accu_init, scope))
            for child in (node.loop_condition, node.loop_step, node.result):
                stack.append((child, inner))
            continue
        if t is ast.Call:
            if node.target is not None and not _is_namespace(node, scope, functions_):
                stack.append((node.target, scope))
            stack.extend((a, scope) for a in node.args)
        elif t is ast.CreateList:
            stack.extend((a, scope) for a in node.elements)
        elif t is ast.CreateMap:
            stack.extend((x, scope) for kv in node.entries for x in kv)
        elif t is ast.CreateStruct:
            stack.extend((v, scope) for _, v in node.fields)
    return frozenset(refs)


def _is_namespace(call: ast.Call, scope: frozenset[str], functions_: Mapping[str, Any]) -> bool:
    """True for `strings.quote(x)`: the target names a function namespace, not a variable."""
    parts = [call.function]
    e = call.target
    while type(e) is ast.Select and not e.test_only:
        parts.append(e.field)
        e = e.operand
    if type(e) is not ast.Ident or e.name in scope:
        return False
    parts.append(e.name.lstrip("."))
    return ".".join(reversed(parts)) in functions_
