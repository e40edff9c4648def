"""Compile a CEL AST into nested Python closures, one per node: `fn(act) -> value`.

`act` is the activation: a dict of variable bindings (names may be qualified, "a.b.c"). Comprehension
variables live in the same dict under keys that cannot be identifiers ("\\x00x#3"), so a program with
comprehensions evaluates on a private copy of the bindings (see `Evaluator.needs_private_act`).

Errors are Python exceptions (`EvaluationError`); the only places that absorb them are `&&`, `||`
(commutatively, as langdef "Logical Operators" requires), `?:` (only the taken branch runs) and the
all/exists macros. Constant sub-expressions are folded at compile time, and the hot operators have
fast paths for same-typed operands that fall back to the library (`functions.GLOBALS`/`MEMBERS`).

For speed, three node kinds get small generated functions (fixed templates, compiled once per
template shape and cached; values and names enter only as namespace variables): select chains
(`request.user.role` indexes the dicts directly), binary operators, and trees of binary operators
(`x + y * 2 > 10` becomes one function). Each falls back to the plain closures whenever anything is
irregular, so the closures alone define the semantics.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from types import ModuleType
from typing import Any

from dsl.expr import ast
from dsl.expr.errors import EvaluationError
from dsl.expr.values import (
    INT64_MAX,
    INT64_MIN,
    CelType,
    Duration,
    Timestamp,
    UInt,
    map_add,
    map_items,
    map_keys,
)

Fn = Callable[[dict[str, Any]], Any]

COST_KEY = "\x00cost"  # act[COST_KEY] = [remaining comprehension iterations]


@dataclass(frozen=True)
class Limits:
    """Evaluation budget: comprehension iterations per evaluation, and size of any produced value."""

    max_iterations: int = 100_000
    max_size: int = 1_000_000


DEFAULT_LIMITS = Limits()


class _NoConst:
    __repr__ = lambda self: "<not constant>"  # noqa: E731


NOT_CONST: Any = _NoConst()

_SIZED = frozenset((str, bytes, list, dict, tuple))
_FAST_EQ = frozenset((str, int, bool, float, UInt, bytes, type(None)))
_FAST_ORD = frozenset((str, int, float, UInt, bytes, bool, Timestamp, Duration))
_MAP_KEYS = frozenset((str, int, UInt, bool))
# Functions whose result can never be larger than their inputs: no size check after them.
_NON_GROWING = frozenset(
    "_==_ _!=_ _<_ _<=_ _>_ _>=_ !_ -_ _-_ _*_ _/_ _%_ _[_] @in size int uint double bool type dyn "
    "contains startsWith endsWith matches timestamp duration charAt indexOf lastIndexOf substring trim "
    "lowerAscii upperAscii reverse getFullYear getMonth getDayOfYear getDayOfMonth getDate getDayOfWeek "
    "getHours getMinutes getSeconds getMilliseconds".split()
)


def _lib() -> ModuleType:
    return importlib.import_module("dsl.expr.functions")


def _type_name(v: Any) -> str:
    return _lib().type_name(v)  # error paths only: the library's table is the one source of type names


def _err(message: str, offset: int) -> EvaluationError:
    e = EvaluationError(message)
    e.offset = offset
    e._cel_located = True  # type: ignore[attr-defined]
    return e


def locate(e: BaseException, offset: int) -> EvaluationError:
    """Turn any exception into an EvaluationError located at `offset` (innermost location wins)."""
    if isinstance(e, EvaluationError):
        if not getattr(e, "_cel_located", False):
            e.offset = offset
            e._cel_located = True  # type: ignore[attr-defined]
        return e
    if isinstance(e, RecursionError):
        return _err("expression nests too deeply", offset)
    if isinstance(e, OverflowError):
        return _err("integer overflow" if "int" in str(e) else f"numeric overflow: {e}", offset)
    if isinstance(e, ZeroDivisionError):
        return _err("division by zero", offset)
    return _err(f"{type(e).__name__}: {e}", offset)


def _no_overload(fn: str, *args: Any) -> EvaluationError:
    return EvaluationError(f"no such overload: {fn}({', '.join(_type_name(a) for a in args)})")


# Levels compiled by plain recursion (a few Python frames each) before `compile_bottom_up` takes over.
_RECURSIVE_LEVELS = 16


def _const_fn(value: Any) -> Fn:
    return lambda act: value


def _fresh_copy(value: list[Any] | dict[Any, Any]) -> list[Any] | dict[Any, Any]:
    """A copy of a constant's lists and maps, made without recursion (the other CEL values are
    immutable and are shared)."""
    root = value.copy()
    stack: list[list[Any] | dict[Any, Any]] = [root]
    while stack:
        container = stack.pop()
        pairs = enumerate(container) if type(container) is list else container.items()
        for k, v in pairs:
            if type(v) is list or type(v) is dict:
                container[k] = v = v.copy()  # type: ignore[index]
                stack.append(v)
    return root


class Evaluator:
    """Compiles one AST. Use `compile_program(expr, container=..., limits=...)`."""

    def __init__(self, container: str | None, limits: Limits) -> None:
        self.lib = _lib()
        self.globals: dict[str, Callable[..., Any]] = self.lib.GLOBALS
        self.members: dict[str, Callable[..., Any]] = self.lib.MEMBERS
        self.type_values: dict[str, CelType] = self.lib.TYPE_VALUES
        self.container = (container or "").strip(".")
        self.limits = limits
        self.needs_private_act = False
        self._slot_counter = 0
        self._scope: dict[str, str] = {}
        self._memo: dict[tuple[int, int], tuple[Fn, Any]] = {}
        self._depth = 0  # nodes being compiled recursively (see compile_bottom_up)
        # (id(node), id(scope)) -> a comprehension's variable slots and body scope; the value keeps
        # the scopes alive, so their ids (memo keys) are never reused during this compile
        self._comprehension_scopes: dict[tuple[int, int], _ComprehensionScope] = {}

    # ---- entry -----------------------------------------------------------------------------------

    def compile(self, node: ast.Expr) -> Fn:
        fn, const = self.node(node, {})
        if const is not NOT_CONST:
            if type(const) in (list, dict):
                # the caller owns the result: never hand out the folded value itself
                return lambda act: _fresh_copy(const)
            return _const_fn(const)
        return fn

    def node(self, node: ast.Expr, scope: dict[str, str]) -> tuple[Fn, Any]:
        # memoised per (node, scope): fusion revisits subtrees, and must not recompile them
        key = (id(node), id(scope))
        done = self._memo.get(key)
        if done is None:
            if self._depth >= _RECURSIVE_LEVELS:
                self.compile_bottom_up(node, scope)
                return self._memo[key]
            self._depth += 1
            try:
                done = self._memo[key] = self.compile_node(node, scope)
            finally:
                self._depth -= 1
        return done

    def compile_bottom_up(self, root: ast.Expr, scope: dict[str, str]) -> None:
        """Compile a deep subtree, every node after its children, with an explicit stack.

        Compiling recursively takes several Python frames per level. Below `_RECURSIVE_LEVELS` this
        walk takes over: each node's compile method then finds its children's closures in the memo
        (`node`) and goes one level deep, so an expression at the parser's depth limit compiles
        within Python's default recursion limit. Shallow expressions never pay for the walk.
        """
        outer_depth, self._depth = self._depth, 0
        try:
            self._walk_bottom_up(root, scope)
        finally:
            self._depth = outer_depth

    def _walk_bottom_up(self, root: ast.Expr, scope: dict[str, str]) -> None:
        memo = self._memo
        stack: list[tuple[ast.Expr, dict[str, str], bool]] = [(root, scope, False)]
        while stack:
            node, sc, children_done = stack.pop()
            if children_done:
                self.node(node, sc)
                continue
            if (id(node), id(sc)) in memo:
                continue
            stack.append((node, sc, True))
            stack.extend(
                (child, child_scope, False) for child, child_scope in reversed(self.children(node, sc))
            )

    def children(self, node: ast.Expr, scope: dict[str, str]) -> list[tuple[ast.Expr, dict[str, str]]]:
        """The (child, scope) pairs that compiling `node` compiles; must match `compile_node`."""
        t = type(node)
        if t is ast.Call:
            if node.target is None or self.namespaced_function(node, scope) is not None:
                return [(a, scope) for a in node.args]
            return [(node.target, scope), *((a, scope) for a in node.args)]
        if t is ast.Select:
            if not node.test_only:
                e: ast.Expr = node
                while type(e) is ast.Select and not e.test_only:
                    e = e.operand
                if type(e) is ast.Ident and e.name.lstrip(".") not in scope:
                    return []  # a (qualified) name, resolved as a whole
            return [(node.operand, scope)]
        if t is ast.CreateList:
            return [(e, scope) for e in node.elements]
        if t is ast.CreateMap:
            return [(x, scope) for kv in node.entries for x in kv]
        if t is ast.Comprehension:
            cs = self.comprehension_scope(node, scope)
            if cs.parts is not None:
                _kind, pred, value = cs.parts
                return [(node.iter_range, scope), *((n, cs.inner) for n in (pred, value) if n is not None)]
            body = (node.loop_condition, node.loop_step, node.result)
            return [(node.iter_range, scope), (node.accu_init, scope), *((n, cs.inner) for n in body)]
        return []

    def compile_node(self, node: ast.Expr, scope: dict[str, str]) -> tuple[Fn, Any]:
        t = type(node)
        if t is ast.Literal:
            v = node.value
            return _const_fn(v), v
        if t is ast.Ident:
            return self.ident(node, scope), NOT_CONST
        if t is ast.Select:
            return self.select(node, scope), NOT_CONST
        if t is ast.Call:
            return self.call(node, scope)
        if t is ast.CreateList:
            return self.create_list(node, scope)
        if t is ast.CreateMap:
            return self.create_map(node, scope)
        if t is ast.Comprehension:
            return self.comprehension(node, scope), NOT_CONST
        if t is ast.CreateStruct:
            return self.create_struct(node), NOT_CONST
        raise EvaluationError(f"unsupported expression node {t.__name__}")

    def fn(self, node: ast.Expr, scope: dict[str, str]) -> Fn:
        return self.node(node, scope)[0]

    # ---- names -----------------------------------------------------------------------------------

    def candidates(self, name: str) -> list[str]:
        """Names to try for `name` in the container, most qualified first (langdef Name Resolution)."""
        if name.startswith("."):
            return [name[1:]]
        out = []
        parts = self.container.split(".") if self.container else []
        for i in range(len(parts), 0, -1):
            out.append(".".join(parts[:i]) + "." + name)
        out.append(name)
        return out

    def ident(self, node: ast.Ident, scope: dict[str, str]) -> Fn:
        # a leading dot only skips the container prefixes: comprehension variables still shadow
        # (cel-spec namespace/comprehension_shadowing_namespaced_selector_disambiguation)
        name = node.name.lstrip(".")
        if name in scope:
            slot = scope[name]
            return lambda act: act[slot]
        return self.resolve(node, [], [])

    def resolve(self, root: ast.Ident, fields: list[str], offsets: list[int]) -> Fn:
        """`root.f1.f2...` where root is not a comprehension variable: longest bound prefix wins."""
        plans: list[tuple[str, tuple[str, ...], tuple[int, ...]]] = []
        for k in range(len(fields), -1, -1):
            qualified = ".".join([root.name, *fields[:k]])
            for cand in self.candidates(qualified):
                plans.append((cand, tuple(fields[k:]), tuple(offsets[k:])))
        type_values = self.type_values
        off = root.offset
        missing = root.name.lstrip(".")
        select = self.select_value
        if len(plans) == 1 and not fields:
            name = plans[0][0]
            tv = type_values.get(name)

            def lookup(act: dict[str, Any]) -> Any:
                try:
                    return act[name]
                except KeyError:
                    if tv is not None:
                        return tv
                    raise _err(f"undeclared reference to '{missing}'", off) from None

            return lookup

        def slow_chain(act: dict[str, Any]) -> Any:
            for name, rest, offs in plans:
                if name in act:
                    v = act[name]
                elif name in type_values:
                    v = type_values[name]
                else:
                    continue
                for f, o in zip(rest, offs, strict=True):
                    if type(v) is dict:
                        try:
                            v = v[f]
                            continue
                        except KeyError:
                            raise _err(f"no such key: '{f}'", o) from None
                    v = select(v, f, o)
                return v
            raise _err(f"undeclared reference to '{missing}'", off)

        return _fast_chain(plans, slow_chain)

    @staticmethod
    def select_value(v: Any, field: str, offset: int) -> Any:
        if type(v) is dict:
            try:
                return v[field]
            except KeyError:
                raise _err(f"no such key: '{field}'", offset) from None
        raise _err(f"type '{_type_name(v)}' does not support field selection", offset)

    def select(self, node: ast.Select, scope: dict[str, str]) -> Fn:
        field = node.field
        off = node.offset
        if node.test_only:
            operand = self.fn(node.operand, scope)

            def has(act: dict[str, Any]) -> bool:
                v = operand(act)
                if type(v) is dict:
                    return field in v
                raise _err(f"invalid type for has(): '{_type_name(v)}' does not support field selection", off)

            return has
        # a chain of selects on an identifier that is not a comprehension variable may be a qualified name
        fields: list[str] = []
        offsets: list[int] = []
        e: ast.Expr = node
        while type(e) is ast.Select and not e.test_only:
            fields.append(e.field)
            offsets.append(e.offset)
            e = e.operand
        fields.reverse()
        offsets.reverse()
        if type(e) is ast.Ident and e.name.lstrip(".") not in scope:
            return self.resolve(e, fields, offsets)
        slow = self.select_one(node, scope)
        if type(e) is ast.Ident:  # a comprehension variable: same direct indexing as for bindings
            return _fast_chain([(scope[e.name.lstrip(".")], tuple(fields), tuple(offsets))], slow)
        return slow

    def select_one(self, node: ast.Select, scope: dict[str, str]) -> Fn:
        field = node.field
        off = node.offset
        operand = self.fn(node.operand, scope)
        select = self.select_value

        def sel(act: dict[str, Any]) -> Any:
            v = operand(act)
            if type(v) is dict:
                try:
                    return v[field]
                except KeyError:
                    raise _err(f"no such key: '{field}'", off) from None
            return select(v, field, off)

        return sel

    # ---- calls -----------------------------------------------------------------------------------

    def call(self, node: ast.Call, scope: dict[str, str]) -> tuple[Fn, Any]:
        name = node.function
        if node.target is None:
            if name == "_&&_":
                return self.logical(node, scope, True)
            if name == "_||_":
                return self.logical(node, scope, False)
            if name == "_?_:_":
                return self.conditional(node, scope)
            if name == "@not_strictly_false":
                return self.not_strictly_false(node, scope), NOT_CONST
            fname = name.lstrip(".")
            impl = self.global_function(fname)
            fn, const = self.strict(fname, impl, node.args, node.offset, scope, receiver=False)
            if const is NOT_CONST and fname in _BINARY and any(self.fusable(a) for a in node.args):
                fn = self.fuse(node, scope, fn)
            return fn, const
        # receiver call; `ns.f(x)` may name a namespaced global function such as strings.quote
        cand = self.namespaced_function(node, scope)
        if cand is not None:
            return self.strict(cand, self.globals[cand], node.args, node.offset, scope, receiver=False)
        impl = self.members.get(name)
        return self.strict(name, impl, (node.target, *node.args), node.offset, scope, receiver=True)

    def namespaced_function(self, node: ast.Call, scope: dict[str, str]) -> str | None:
        """The global function `ns.f(x)` names (strings.quote), or None for a receiver call."""
        qualified = _qualified_name(node.target, scope)  # type: ignore[arg-type]
        if qualified is not None:
            for cand in self.candidates(f"{qualified}.{node.function}"):
                if cand in self.globals:
                    return cand
        return None

    def global_function(self, name: str) -> Callable[..., Any] | None:
        for cand in self.candidates(name):
            if cand in self.globals:
                return self.globals[cand]
        return None

    def strict(
        self,
        name: str,
        impl: Callable[..., Any] | None,
        arg_nodes: tuple[ast.Expr, ...],
        off: int,
        scope: dict[str, str],
        receiver: bool,
    ) -> tuple[Fn, Any]:
        compiled = [self.node(a, scope) for a in arg_nodes]
        fns = [c[0] for c in compiled]
        if impl is None:
            args = fns

            def unbound(act: dict[str, Any]) -> Any:
                for a in args:  # strict: argument errors win, as for any other call
                    a(act)
                raise _err(f"unbound function: '{name}'", off)

            return unbound, NOT_CONST
        consts = [c[1] for c in compiled]
        if all(c is not NOT_CONST for c in consts):
            try:
                value = impl(*consts)
                if type(value) in _SIZED and len(value) > self.limits.max_size:
                    raise EvaluationError("cost limit exceeded")
                return _const_fn(value), value
            except Exception:  # noqa: BLE001 - not foldable: the error must happen at evaluation time
                pass
        self._scope = scope
        fast = self.fast_operator(name, fns, consts, off, receiver, arg_nodes)
        if fast is not None:
            return fast, NOT_CONST
        check_size = name not in _NON_GROWING
        return self.generic_call(impl, fns, consts, off, check_size), NOT_CONST

    def generic_call(
        self, impl: Callable[..., Any], fns: list[Fn], consts: list[Any], off: int, check_size: bool
    ) -> Fn:
        n = len(fns)
        if check_size or n > 3:
            return _generated_call(impl, fns, consts, off, self.limits.max_size if check_size else None)
        if n == 0:

            def call0(act: dict[str, Any]) -> Any:
                try:
                    return impl()
                except Exception as e:
                    raise locate(e, off) from None

            return call0
        if n == 1:
            (a,) = fns

            def call1(act: dict[str, Any]) -> Any:
                try:
                    return impl(a(act))
                except Exception as e:
                    raise locate(e, off) from None

            return call1
        if n == 2 and consts[1] is not NOT_CONST:
            a = fns[0]
            cb = consts[1]

            def call2c(act: dict[str, Any]) -> Any:
                try:
                    return impl(a(act), cb)
                except Exception as e:
                    raise locate(e, off) from None

            return call2c
        if n == 2:
            a, b = fns

            def call2(act: dict[str, Any]) -> Any:
                try:
                    return impl(a(act), b(act))
                except Exception as e:
                    raise locate(e, off) from None

            return call2
        if n == 3:
            a, b, c = fns

            def call3(act: dict[str, Any]) -> Any:
                try:
                    return impl(a(act), b(act), c(act))
                except Exception as e:
                    raise locate(e, off) from None

            return call3
        raise AssertionError(n)  # unreachable: more arguments take the generated form

    # ---- fast paths --------------------------------------------------------------------------------

    def operand_source(self, node: ast.Expr, i: int) -> str:
        """Python source reading operand `i` inside a generated operator function.

        A plain variable (no container, not a type name) or a comprehension variable is read from
        `act` directly; a KeyError there sends the generated code to the operand closures, which
        resolve exactly and raise the precise error. Anything else calls its closure.
        """
        key = self.inline_key(node)
        return f"act[{'AB'[i]}]" if key is not None else "ab"[i] + "(act)"

    def inline_key(self, node: ast.Expr) -> str | None:
        """The `act` key of a variable that can be read directly, else None."""
        if type(node) is ast.Ident and not node.name.startswith("."):
            name = node.name
            if name in self._scope:
                return self._scope[name]
            if not self.container and name not in self.type_values:
                return name
        return None

    # ---- fused arithmetic and comparisons ---------------------------------------------------------

    def fusable(self, node: ast.Expr) -> bool:
        return (
            type(node) is ast.Call
            and node.target is None
            and node.function in _BINARY
            and len(node.args) == 2
            and node.function in self.globals
        )

    def fuse(self, node: ast.Call, scope: dict[str, str], slow: Fn) -> Fn:
        """One generated function for a tree of binary operators (`x + y * 2 > 10`): operands are
        read inline and intermediate results stay in local variables, saving a call per node.

        A KeyError from reading a variable inline means it needs full name resolution or is missing:
        the closure tree (`slow`) then evaluates and reports exactly. Values and names never enter
        the generated source except as repr() of identifier or slot strings.
        """
        self._scope = scope
        lines: list[str] = []
        namespace: dict[str, Any] = {
            "slow": slow,
            "locate": locate,
            "_err": _err,
            "LO": INT64_MIN,
            "HI": INT64_MAX,
            "FAST_EQ": _FAST_EQ,
            "FAST_ORD": _FAST_ORD,
            "SIZED": _SIZED,
            "MAX": self.limits.max_size,
        }
        counter = [0]
        result = self.emit(node, scope, lines, namespace, counter, budget=[12])
        body = "\n".join("        " + line for line in lines)
        source = f"def fused(act):\n    try:\n{body}\n    except KeyError:\n        return slow(act)\n    return {result}"
        _define(source, namespace)
        return namespace["fused"]

    def emit(
        self,
        node: ast.Expr,
        scope: dict[str, str],
        lines: list[str],
        ns: dict[str, Any],
        counter: list[int],
        budget: list[int],
    ) -> str:
        k = counter[0]
        counter[0] += 1
        if type(node) is ast.Literal:
            ns[f"C{k}"] = node.value
            return f"C{k}"
        key = self.inline_key(node)
        if key is not None:
            ns[f"N{k}"] = key
            lines.append(f"v{k} = act[N{k}]")
            return f"v{k}"
        if not self.fusable(node) or budget[0] <= 0:
            ns[f"F{k}"] = self.fn(node, scope)
            lines.append(f"v{k} = F{k}(act)")
            return f"v{k}"
        budget[0] -= 1
        assert isinstance(node, ast.Call)
        xa = self.emit(node.args[0], scope, lines, ns, counter, budget)
        xb = self.emit(node.args[1], scope, lines, ns, counter, budget)
        name = node.function
        op = _BINARY[name]
        ns[f"IMPL{k}"] = self.globals[name]
        ns[f"OFF{k}"] = node.offset
        r = f"r{k}"
        generic = [
            "else:",
            "    try:",
            f"        {r} = IMPL{k}({xa}, {xb})",
            "    except Exception as e:",
            f"        raise locate(e, OFF{k}) from None",
        ]
        # a literal operand fixes the only type worth a fast branch
        known = {type(c.value) for c in node.args if type(c) is ast.Literal}
        if name in ("_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"):
            fast_set = _FAST_EQ if name in ("_==_", "_!=_") else _FAST_ORD
            if len(known) == 1 and next(iter(known)) in fast_set:
                ns[f"T{k}"] = next(iter(known))
                lines += [f"if {_type_test(node, xa, xb, f'T{k}')}:", f"    {r} = {xa} {op} {xb}"]
            else:
                fast = "FAST_EQ" if fast_set is _FAST_EQ else "FAST_ORD"
                lines += [
                    f"if type({xa}) is type({xb}) and type({xa}) in {fast}:",
                    f"    {r} = {xa} {op} {xb}",
                ]
            lines += generic
            return r
        int_branch = [
            f"if {_type_test(node, xa, xb, 'int')}:",
            f"    {r} = {xa} {op} {xb}",
            f"    if not LO <= {r} <= HI:",
            f"        raise _err('integer overflow', OFF{k})",
        ]
        float_branch = [f"if {_type_test(node, xa, xb, 'float')}:", f"    {r} = {xa} {op} {xb}"]
        # a branch is emitted only when every literal operand has its type (so `1 + 2.0` has none)
        if not known or known == {int}:
            lines += int_branch
        if not known or known == {float}:
            lines += (["el" + float_branch[0]] if not known else [float_branch[0]]) + [float_branch[1]]
        if known and known != {int} and known != {float}:
            generic = ["if True:", *generic[1:]]
        lines += generic
        if name == "_+_":
            lines += [
                f"    if type({r}) in SIZED and len({r}) > MAX:",
                f"        raise _err(f'cost limit exceeded: result size {{len({r})}} > {{MAX}}', OFF{k})",
            ]
        return r

    def fast_operator(
        self,
        name: str,
        fns: list[Fn],
        consts: list[Any],
        off: int,
        receiver: bool,
        arg_nodes: tuple[ast.Expr, ...] = (),
    ) -> Fn | None:
        g = self.globals
        if receiver:
            if name in _STR_PREDICATES and len(fns) == 2 and type(consts[1]) is str and name in self.members:
                return _fast_str_predicate(self.members[name], fns[0], consts[1], off, _STR_PREDICATES[name])
            return None
        if name in _BINARY and len(fns) == 2 and name in g:
            sources = [self.operand_source(n, i) for i, n in enumerate(arg_nodes)]
            keys = [self.inline_key(n) for n in arg_nodes]
            return _fast_binary(name, g[name], fns, consts, sources, keys, off, self.limits.max_size)
        if name == "_[_]" and len(fns) == 2 and name in g:
            return _fast_index(g[name], fns, off)
        if name == "@in" and len(fns) == 2 and name in g:
            return _fast_in(g[name], fns, consts, off)
        if name == "!_" and len(fns) == 1 and name in g:
            return _fast_not(g[name], fns[0], off)
        return None

    # ---- logic ---------------------------------------------------------------------------------------

    def logical(self, node: ast.Call, scope: dict[str, str], is_and: bool) -> tuple[Fn, Any]:
        (a, ca), (b, cb) = (self.node(x, scope) for x in node.args)
        absorbing = not is_and  # false for &&, true for ||
        off = node.offset
        op = "_&&_" if is_and else "_||_"
        if ca is absorbing or cb is absorbing:
            return _const_fn(absorbing), absorbing
        if ca is (not absorbing) and cb is not NOT_CONST and type(cb) is bool:
            return _const_fn(cb), cb

        def logic(act: dict[str, Any]) -> Any:
            try:
                left = a(act)
            except EvaluationError as e:
                left = e
            except Exception as e:
                left = locate(e, off)
            if left is absorbing:
                return absorbing
            if left is not absorbing and type(left) is bool:
                right = b(act)
                if type(right) is bool:
                    return right
                raise _err(_no_overload(op, left, right).message, off)
            # left is an error or not a bool: the right side can still decide the result
            try:
                right = b(act)
            except Exception:
                right = None
            if right is absorbing:
                return absorbing
            if isinstance(left, EvaluationError):
                raise left
            raise _err(_no_overload(op, left, right).message, off)

        return logic, NOT_CONST

    def conditional(self, node: ast.Call, scope: dict[str, str]) -> tuple[Fn, Any]:
        (c, cc), (a, ca), (b, cb) = (self.node(x, scope) for x in node.args)
        off = node.offset
        if cc is True:
            return a, ca
        if cc is False:
            return b, cb

        def cond(act: dict[str, Any]) -> Any:
            v = c(act)
            if v is True:
                return a(act)
            if v is False:
                return b(act)
            raise _err(f"no such overload: _?_:_({_type_name(v)}, ...)", off)

        return cond, NOT_CONST

    def not_strictly_false(self, node: ast.Call, scope: dict[str, str]) -> Fn:
        a = self.fn(node.args[0], scope)

        def nsf(act: dict[str, Any]) -> bool:
            try:
                return a(act) is not False
            except EvaluationError:
                return True

        return nsf

    # ---- aggregates ----------------------------------------------------------------------------------

    def create_list(self, node: ast.CreateList, scope: dict[str, str]) -> tuple[Fn, Any]:
        compiled = [self.node(e, scope) for e in node.elements]
        if all(c[1] is not NOT_CONST for c in compiled):
            value = [c[1] for c in compiled]
            return (lambda act: list(value)), value
        fns = [c[0] for c in compiled]
        if len(fns) == 1:
            (f,) = fns
            return (lambda act: [f(act)]), NOT_CONST
        if len(fns) == 2:
            f, g = fns
            return (lambda act: [f(act), g(act)]), NOT_CONST

        def build(act: dict[str, Any]) -> list[Any]:
            out = []
            for f in fns:  # a loop, not a comprehension: no extra Python frame per nesting level
                out.append(f(act))
            return out

        return build, NOT_CONST

    def create_map(self, node: ast.CreateMap, scope: dict[str, str]) -> tuple[Fn, Any]:
        entries = [(self.node(k, scope), self.node(v, scope), k.offset) for k, v in node.entries]
        build = _map_builder([(k[0], v[0], o) for k, v, o in entries])
        if all(k[1] is not NOT_CONST and v[1] is not NOT_CONST for k, v, _ in entries):
            try:
                value = build({})
            except EvaluationError:
                return build, NOT_CONST
            return (lambda act: dict(value)), value
        return build, NOT_CONST

    def create_struct(self, node: ast.CreateStruct) -> Fn:
        off = node.offset
        name = node.message

        def struct(act: dict[str, Any]) -> Any:
            raise _err(f"message types are not supported: '{name}'", off)

        return struct

    # ---- comprehensions ------------------------------------------------------------------------------

    def new_slot(self, name: str) -> str:
        self._slot_counter += 1
        return f"\x00{name}#{self._slot_counter}"

    def comprehension_scope(self, node: ast.Comprehension, scope: dict[str, str]) -> _ComprehensionScope:
        """The slots and body scope of `node` in `scope`, made once: `children` needs the same scope
        object as `comprehension` (scopes are part of the memo key)."""
        key = (id(node), id(scope))
        found = self._comprehension_scopes.get(key)
        if found is not None:
            return found
        inner = dict(scope)
        slot = self.new_slot(node.iter_var)
        inner[node.iter_var] = slot
        slot2 = ""
        if node.iter_var2:
            slot2 = self.new_slot(node.iter_var2)
            inner[node.iter_var2] = slot2
        parts = _macro_parts(node)
        accu_slot = ""
        if parts is None:
            accu_slot = self.new_slot(node.accu_var)
            inner[node.accu_var] = accu_slot
        found = _ComprehensionScope(parts, inner, slot, slot2, accu_slot, scope)
        self._comprehension_scopes[key] = found
        return found

    def comprehension(self, node: ast.Comprehension, scope: dict[str, str]) -> Fn:
        self.needs_private_act = True
        rng = self.fn(node.iter_range, scope)
        cs = self.comprehension_scope(node, scope)
        inner, slot, slot2, parts = cs.inner, cs.slot, cs.slot2, cs.parts
        off = node.offset
        max_iter = self.limits.max_iterations
        items_of = _items_two if slot2 else _items_one
        if parts is not None:
            kind, pred_node, value_node = parts
            pred = self.fn(pred_node, inner) if pred_node is not None else None
            value = self.fn(value_node, inner) if value_node is not None else None
            return _MACROS[kind](rng, pred, value, slot, slot2, off, max_iter, items_of)
        accu_slot = cs.accu_slot
        init = self.fn(node.accu_init, scope)
        cond = self.fn(node.loop_condition, inner)
        step = self.fn(node.loop_step, inner)
        result = self.fn(node.result, inner)

        def comprehension(act: dict[str, Any]) -> Any:
            items, n, budget, over = _metered(items_of(rng(act), off), act, max_iter)
            act[accu_slot] = init(act)
            done = 0
            for x in items:
                done += 1
                _bind(act, slot, slot2, x)
                if cond(act) is False:
                    break
                act[accu_slot] = step(act)
            else:
                if over:
                    raise _cost(off, max_iter)
            budget[0] += n - done
            return result(act)

        return comprehension


# ---- helpers for comprehensions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ComprehensionScope:
    parts: tuple[str, ast.Expr | None, ast.Expr | None] | None  # `_macro_parts` of the node
    inner: dict[str, str]  # the scope of the loop body
    slot: str
    slot2: str
    accu_slot: str  # "" for a macro fast path (its body never reads the accumulator)
    outer: dict[str, str]  # kept alive so that its id stays unique while the memo holds it


_CODE_CACHE: dict[str, Any] = {}


def _define(source: str, namespace: dict[str, Any]) -> None:
    """Run a generated `def` in `namespace`. Sources come from fixed templates (values are passed as
    namespace variables), so there are few distinct ones: their code objects are cached, which keeps
    compiling an expression well under a millisecond."""
    code = _CODE_CACHE.get(source)
    if code is None:
        if len(_CODE_CACHE) >= 4096:  # shapes repeat; a pathological stream of new ones stays bounded
            _CODE_CACHE.clear()
        code = _CODE_CACHE[source] = builtins.compile(source, "<cel>", "exec")
    exec(code, namespace)  # noqa: S102 - trusted template code, see above


def _fast_chain(plans: list[tuple[str, tuple[str, ...], tuple[int, ...]]], slow: Fn) -> Fn:
    """Generated lookup for `a.b.c`: when no longer qualified name is bound, index the dicts directly.

    Any irregularity (a longer name bound, a missing key, a non-map value, a type name) goes to
    `slow`, which resolves exactly and raises the precise error. Names are passed as variables of
    the generated function's namespace, never spliced into its source.
    """
    *longer, (root, fields, _offsets) = plans
    namespace: dict[str, Any] = {"slow": slow, "R": root}
    lines = ["def chain(act):"]
    for i, (name, _f, _o) in enumerate(longer):
        namespace[f"N{i}"] = name
        lines.append(f"    if N{i} in act: return slow(act)")
    for j, f in enumerate(fields):
        namespace[f"F{j}"] = f
    lines += [
        "    try:",
        "        return act[R]" + "".join(f"[F{j}]" for j in range(len(fields))),
        "    except Exception:",
        "        return slow(act)",
    ]
    _define("\n".join(lines), namespace)
    return namespace["chain"]


def _qualified_name(e: ast.Expr, scope: dict[str, str]) -> str | None:
    parts: list[str] = []
    while type(e) is ast.Select and not e.test_only:
        parts.append(e.field)
        e = e.operand
    if type(e) is not ast.Ident or e.name.lstrip(".") in scope:
        return None
    parts.append(e.name.lstrip("."))
    return ".".join(reversed(parts))


def _items_one(v: Any, off: int) -> tuple[Iterable[Any], int]:
    t = type(v)
    if t is list or t is tuple:
        return v, len(v)
    if t is dict:
        return map_keys(v), len(v)
    raise _err(f"expression of type '{_type_name(v)}' cannot be the range of a comprehension", off)


def _items_two(v: Any, off: int) -> tuple[Iterable[Any], int]:
    t = type(v)
    if t is list or t is tuple:
        return enumerate(v), len(v)
    if t is dict:
        return map_items(v), len(v)
    raise _err(f"expression of type '{_type_name(v)}' cannot be the range of a comprehension", off)


def _bind(act: dict[str, Any], slot: str, slot2: str, x: Any) -> None:
    if slot2:
        act[slot], act[slot2] = x
    else:
        act[slot] = x


def _cost(off: int, max_iter: int) -> EvaluationError:
    return _err(f"cost limit exceeded: more than {max_iter} comprehension iterations", off)


def _metered(
    pair: tuple[Iterable[Any], int], act: dict[str, Any], max_iter: int
) -> tuple[Iterable[Any], int, list[int], bool]:
    """Charge the whole range to the budget up front; truncate it when the budget is short.

    Returns (items, charged, budget, over): the caller refunds `charged - done` after an early exit
    and raises the cost error when it runs through a truncated range (`over`).
    """
    items, n = pair
    budget = act.get(COST_KEY)
    if budget is None:
        budget = act[COST_KEY] = [max_iter]
    remaining = budget[0]
    if n <= remaining:
        budget[0] = remaining - n
        return items, n, budget, False
    budget[0] = 0
    return islice(items, remaining), remaining, budget, True


def _macro_parts(node: ast.Comprehension) -> tuple[str, ast.Expr | None, ast.Expr | None] | None:
    """(kind, predicate, value) when `node` has exactly the shape the parser's macro expansion makes."""
    accu = node.accu_var
    step = node.loop_step

    def is_accu(e: ast.Expr) -> bool:
        return type(e) is ast.Ident and e.name == accu

    def append_of(e: ast.Expr) -> ast.Expr | None:
        if (
            type(e) is ast.Call
            and e.function == "_+_"
            and e.target is None
            and is_accu(e.args[0])
            and type(e.args[1]) is ast.CreateList
            and len(e.args[1].elements) == 1
        ):
            return e.args[1].elements[0]
        return None

    if type(step) is not ast.Call or step.target is not None:
        return None
    m = node.macro
    if (
        m in ("all", "exists")
        and step.function == ("_&&_" if m == "all" else "_||_")
        and is_accu(step.args[0])
    ):
        return m, step.args[1], None
    if m == "exists_one" and step.function == "_?_:_":
        return m, step.args[0], None
    if m == "map" or m == "transformList":
        value = append_of(step)
        if value is not None:
            return "map", None, value
        if step.function == "_?_:_" and is_accu(step.args[2]):
            value = append_of(step.args[1])
            if value is not None:
                return "map", step.args[0], value
    if m == "filter" and step.function == "_?_:_" and is_accu(step.args[2]) and append_of(step.args[1]):
        return "filter", step.args[0], None
    if m == "transformMap":
        value = insert_of(step, node.iter_var, accu)
        if value is not None:
            return "transformMap", None, value
        if step.function == "_?_:_" and is_accu(step.args[2]):
            value = insert_of(step.args[1], node.iter_var, accu)
            if value is not None:
                return "transformMap", step.args[0], value
    return None


def insert_of(e: ast.Expr, key_var: str, accu: str) -> ast.Expr | None:
    """The value of `cel.@mapInsert(accu, key_var, value)` (transformMap's step), else None."""
    if (
        type(e) is ast.Call
        and e.function == "cel.@mapInsert"
        and e.target is None
        and len(e.args) == 3
        and all(type(a) is ast.Ident for a in e.args[:2])
        and e.args[0].name == accu  # type: ignore[attr-defined]
        and e.args[1].name == key_var  # type: ignore[attr-defined]
    ):
        return e.args[2]
    return None


def _make_quantifier(is_all: bool) -> Callable[..., Fn]:
    decisive = not is_all  # all stops at false, exists at true

    def build(
        rng: Fn, pred: Fn, _v: Fn | None, slot: str, slot2: str, off: int, max_iter: int, items_of: Any
    ) -> Fn:
        name = "all" if is_all else "exists"

        def quantifier(act: dict[str, Any]) -> bool:
            items, n, budget, over = _metered(items_of(rng(act), off), act, max_iter)
            error: EvaluationError | None = None
            done = 0
            for x in items:
                done += 1
                if slot2:
                    act[slot], act[slot2] = x
                else:
                    act[slot] = x
                try:
                    r = pred(act)
                except EvaluationError as e:
                    error = error or e
                    continue
                if r is decisive:
                    budget[0] += n - done
                    return decisive
                if r is not (not decisive):
                    error = error or _err(f"{name}() predicate must be a bool, got {_type_name(r)}", off)
            if over:
                raise _cost(off, max_iter)
            if error is not None:
                raise error
            return not decisive

        return quantifier

    return build


def _build_exists_one(
    rng: Fn, pred: Fn, _v: Fn | None, slot: str, slot2: str, off: int, max_iter: int, items_of: Any
) -> Fn:
    def exists_one(act: dict[str, Any]) -> bool:
        items, _n, _budget, over = _metered(items_of(rng(act), off), act, max_iter)
        count = 0
        for x in items:
            if slot2:
                act[slot], act[slot2] = x
            else:
                act[slot] = x
            r = pred(act)
            if r is True:
                count += 1
            elif r is not False:
                raise _err(f"exists_one() predicate must be a bool, got {_type_name(r)}", off)
        if over:
            raise _cost(off, max_iter)
        return count == 1

    return exists_one


def _build_map(
    rng: Fn, pred: Fn | None, value: Fn, slot: str, slot2: str, off: int, max_iter: int, items_of: Any
) -> Fn:
    def map_(act: dict[str, Any]) -> list[Any]:
        items, _n, _budget, over = _metered(items_of(rng(act), off), act, max_iter)
        out = []
        for x in items:
            if slot2:
                act[slot], act[slot2] = x
            else:
                act[slot] = x
            if pred is not None:
                keep = pred(act)
                if keep is False:
                    continue
                if keep is not True:
                    raise _err(f"map() filter must be a bool, got {_type_name(keep)}", off)
            out.append(value(act))
        if over:
            raise _cost(off, max_iter)
        return out

    return map_


def _build_filter(
    rng: Fn, pred: Fn, _v: Fn | None, slot: str, slot2: str, off: int, max_iter: int, items_of: Any
) -> Fn:
    def filter_(act: dict[str, Any]) -> list[Any]:
        items, _n, _budget, over = _metered(items_of(rng(act), off), act, max_iter)
        out = []
        for x in items:
            act[slot] = x
            keep = pred(act)
            if keep is True:
                out.append(x)
            elif keep is not False:
                raise _err(f"filter() predicate must be a bool, got {_type_name(keep)}", off)
        if over:
            raise _cost(off, max_iter)
        return out

    return filter_


def _build_transform_map(
    rng: Fn, pred: Fn | None, value: Fn, slot: str, slot2: str, off: int, max_iter: int, items_of: Any
) -> Fn:
    """`m.transformMap(k, v, [filter,] value)`: a map from each key (list index) to its new value."""

    def transform_map(act: dict[str, Any]) -> dict[Any, Any]:
        items, _n, _budget, over = _metered(items_of(rng(act), off), act, max_iter)
        out: dict[Any, Any] = {}
        for key, v in items:
            act[slot] = key
            act[slot2] = v
            if pred is not None:
                keep = pred(act)
                if keep is False:
                    continue
                if keep is not True:
                    raise _err(f"transformMap() filter must be a bool, got {_type_name(keep)}", off)
            if type(key) is str:
                out[key] = value(act)
            else:  # a key from a map range may be true beside 1 (distinct keys: never refused)
                map_add(out, key, value(act))
        if over:
            raise _cost(off, max_iter)
        return out

    return transform_map


_MACROS: dict[str, Callable[..., Fn]] = {
    "all": _make_quantifier(True),
    "exists": _make_quantifier(False),
    "exists_one": _build_exists_one,
    "map": _build_map,
    "filter": _build_filter,
    "transformMap": _build_transform_map,
}


# ---- operator fast paths ---------------------------------------------------------------------------


def _map_builder(entries: list[tuple[Fn, Fn, int]]) -> Fn:
    keys_ok = _MAP_KEYS

    def build(act: dict[str, Any]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for kf, vf, off in entries:
            k = kf(act)
            v = vf(act)
            if type(k) is str:  # the common case, inlined
                if k in out:
                    raise _err(f"Failed with repeated key: {_lib()._key_repr(k)}", off)
                out[k] = v
            elif type(k) not in keys_ok:
                raise _err(f"unsupported key type: {_type_name(k)}", off)
            elif not map_add(out, k, v):  # true and 1 are two keys, 1 and 1u one
                raise _err(f"Failed with repeated key: {_lib()._key_repr(k)}", off)
        return out

    return build


_STR_PREDICATES: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}


def _fast_str_predicate(
    impl: Callable[..., Any], a: Fn, c: str, off: int, method: Callable[[str, str], bool]
) -> Fn:
    def str_predicate(act: dict[str, Any]) -> Any:
        x = a(act)
        if type(x) is str:
            return method(x, c)
        try:
            return impl(x, c)
        except Exception as e:
            raise locate(e, off) from None

    return str_predicate


_BINARY = {
    "_==_": "==",
    "_!=_": "!=",
    "_<_": "<",
    "_<=_": "<=",
    "_>_": ">",
    "_>=_": ">=",
    "_+_": "+",
    "_-_": "-",
    "_*_": "*",
}


def _fast_binary(
    name: str,
    impl: Callable[..., Any],
    fns: list[Fn],
    consts: list[Any],
    sources: list[str],
    keys: list[str | None],
    off: int,
    max_size: int,
) -> Fn:
    """One generated function per operator node: operands read inline where possible, same-typed
    primitive operands handled with Python's own operator, everything else sent to the library.

    Operand names only ever appear as repr() string literals of identifiers/slot keys; all values
    are namespace variables.
    """
    op = _BINARY[name]
    cb = consts[1]
    b_src = "CB" if cb is not NOT_CONST else sources[1]
    lines = ["def binary(act):"]
    if sources[0] != "a(act)" or b_src not in ("CB", "b(act)"):
        lines += [
            "    try:",
            f"        x = {sources[0]}",
            f"        y = {b_src}",
            "    except KeyError:",
            "        x = a(act)",
            "        y = b(act)",
        ]
    else:
        lines += [f"    x = {sources[0]}", f"    y = {b_src}"]
    lines.append("    tx = type(x)")
    if name in ("_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"):
        fast = "FAST_EQ" if name in ("_==_", "_!=_") else "FAST_ORD"
        if cb is not NOT_CONST and type(cb) in (_FAST_EQ if fast == "FAST_EQ" else _FAST_ORD):
            lines += ["    if tx is TB:", f"        return x {op} y"]
        else:
            lines += [f"    if tx is type(y) and tx in {fast}:", f"        return x {op} y"]
        tail = [
            "    try:",
            "        return impl(x, y)",
            "    except Exception as e:",
            "        raise locate(e, off) from None",
        ]
    else:
        lines += [
            "    if tx is type(y):",
            "        if tx is int:",
            f"            r = x {op} y",
            "            if LO <= r <= HI:",
            "                return r",
            "            raise _err('integer overflow', off)",
            "        if tx is float:",
            f"            return x {op} y",
        ]
        tail = [
            "    try:",
            "        r = impl(x, y)",
            "    except Exception as e:",
            "        raise locate(e, off) from None",
        ]
        if name == "_+_":
            tail += [
                "    if type(r) in SIZED and len(r) > MAX:",
                "        raise _err(f'cost limit exceeded: result size {len(r)} > {MAX}', off)",
            ]
        tail.append("    return r")
    namespace: dict[str, Any] = {
        "a": fns[0],
        "b": fns[1],
        "A": keys[0],
        "B": keys[1],
        "CB": cb,
        "TB": type(cb),
        "impl": impl,
        "locate": locate,
        "off": off,
        "_err": _err,
        "LO": INT64_MIN,
        "HI": INT64_MAX,
        "FAST_EQ": _FAST_EQ,
        "FAST_ORD": _FAST_ORD,
        "SIZED": _SIZED,
        "MAX": max_size,
    }
    _define("\n".join(lines + tail), namespace)
    return namespace["binary"]


def _generated_call(
    impl: Callable[..., Any], fns: list[Fn], consts: list[Any], off: int, max_size: int | None
) -> Fn:
    """A call with the size check (when `max_size` is given) and any number of arguments in one
    function: one Python frame per nesting level, as for the hand-written calls."""
    args = [f"F{i}(act)" for i in range(len(fns))]
    if len(fns) == 2 and consts[1] is not NOT_CONST:
        args[1] = "CB"  # the common `f(x, 'literal')`
    lines = [
        "def call(act):",
        "    try:",
        f"        r = impl({', '.join(args)})",
        "    except Exception as e:",
        "        raise locate(e, off) from None",
    ]
    if max_size is not None:
        lines += [
            "    if type(r) in SIZED and len(r) > MAX:",
            "        raise _err(f'cost limit exceeded: result size {len(r)} > {MAX}', off)",
        ]
    lines.append("    return r")
    namespace: dict[str, Any] = {f"F{i}": f for i, f in enumerate(fns)}
    namespace.update(impl=impl, CB=consts[1] if len(consts) == 2 else None, locate=locate, off=off, _err=_err)
    namespace.update(SIZED=_SIZED, MAX=max_size)
    _define("\n".join(lines), namespace)
    return namespace["call"]  # type: ignore[no-any-return]


def _fast_index(impl: Callable[..., Any], fns: list[Fn], off: int) -> Fn:
    a, b = fns

    def index(act: dict[str, Any]) -> Any:
        x = a(act)
        k = b(act)
        if type(x) is dict and type(k) is str:
            try:
                return x[k]
            except KeyError:
                raise _err(f"no such key: '{k}'", off) from None
        if type(x) is list and type(k) is int and 0 <= k < len(x):
            return x[k]
        try:
            return impl(x, k)
        except Exception as e:
            raise locate(e, off) from None

    return index


def _fast_in(impl: Callable[..., Any], fns: list[Fn], consts: list[Any], off: int) -> Fn:
    a, b = fns
    cb = consts[1]
    if type(cb) is list and cb and all(type(v) is str for v in cb):
        members = frozenset(cb)

        def in_strings(act: dict[str, Any]) -> Any:
            x = a(act)
            if type(x) is str:
                return x in members
            try:
                return impl(x, cb)
            except Exception as e:
                raise locate(e, off) from None

        return in_strings

    def in_(act: dict[str, Any]) -> Any:
        x = a(act)
        c = b(act)
        if type(x) is str:
            tc = type(c)
            if tc is dict or tc is list:
                return x in c
        try:
            return impl(x, c)
        except Exception as e:
            raise locate(e, off) from None

    return in_


def _fast_not(impl: Callable[..., Any], a: Fn, off: int) -> Fn:
    def not_(act: dict[str, Any]) -> Any:
        x = a(act)
        if x is True:
            return False
        if x is False:
            return True
        try:
            return impl(x)
        except Exception as e:
            raise locate(e, off) from None

    return not_


def _type_test(node: ast.Call, xa: str, xb: str, type_src: str) -> str:
    """`type(x) is T and type(y) is T`, leaving out literal operands (their type is known, and the
    caller only asks for T when every literal operand has type T)."""
    tests = [
        f"type({x}) is {type_src}"
        for x, n in zip((xa, xb), node.args, strict=True)
        if type(n) is not ast.Literal
    ]
    return " and ".join(tests) or "True"


def compile_program(
    expr: ast.Expr, *, container: str | None = None, limits: Limits | None = None
) -> tuple[Fn, bool]:
    """Compile `expr`; returns (fn, needs_private_act). RecursionError is the caller's to report."""
    ev = Evaluator(container, limits or DEFAULT_LIMITS)
    fn = ev.compile(expr)
    return fn, ev.needs_private_act
