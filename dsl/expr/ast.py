"""The CEL abstract syntax tree: the contract between parser, checker and evaluator.

Operators are `Call` nodes with CEL's canonical function names (as in cel-go and cel-spec):

    _+_ _-_ _*_ _/_ _%_ -_ !_ _==_ _!=_ _<_ _<=_ _>_ _>=_ _&&_ _||_ _?_:_ _[_] @in

Macros are expanded by the parser into `Comprehension` nodes (`macro` keeps the macro's name so
the evaluator may take a fast path); `has(a.b)` becomes `Select(a, "b", test_only=True)`.
Every node carries `offset`, the 0-based character offset in the source where it starts; use
`errors.line_col(source, offset)` to turn it into 1-based line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Expr:
    offset: int


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    value: Any  # int, values.UInt, float, str, bytes, bool or None


@dataclass(frozen=True, slots=True)
class Ident(Expr):
    name: str  # a leading "." (root-scoped name) is kept: ".x"


@dataclass(frozen=True, slots=True)
class Select(Expr):
    operand: Expr
    field: str
    test_only: bool = False  # True for has(operand.field)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    function: str
    args: tuple[Expr, ...]
    target: Expr | None = None  # receiver of a method call: target.function(args)


@dataclass(frozen=True, slots=True)
class CreateList(Expr):
    elements: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class CreateMap(Expr):
    entries: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True, slots=True)
class CreateStruct(Expr):
    """`pkg.Message{field: value}`; Charter has no message types, so the checker rejects it."""

    message: str
    fields: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class Comprehension(Expr):
    """CEL's single comprehension form that every macro expands to (see langdef "Macros")."""

    iter_var: str
    iter_range: Expr
    accu_var: str
    accu_init: Expr
    loop_condition: Expr
    loop_step: Expr
    result: Expr
    macro: str = ""  # "all", "exists", "exists_one", "map", "filter" or "" when written by hand
    iter_var2: str = ""  # second variable of two-variable comprehensions, "" when unused


ACCU_VAR = "@result"  # the accumulator name macros use; not a valid identifier in source
