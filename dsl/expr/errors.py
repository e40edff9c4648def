"""Exceptions of the expression engine. Every failure of `compile` or `evaluate` is one of these."""

from __future__ import annotations


def line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a 0-based character offset in `source`."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


class ExpressionError(Exception):
    """Base class: a problem with an expression, located in its source."""

    def __init__(self, message: str, source: str = "", offset: int = 0) -> None:
        self.message = message
        self.source = source
        self.offset = offset
        self.line, self.column = line_col(source, offset)
        super().__init__(f"{message} (at {self.line}:{self.column})" if source else message)


class ExpressionSyntaxError(ExpressionError):
    """The source does not parse (or nests too deeply)."""


class ExpressionTypeError(ExpressionError):
    """The checker rejected the expression: unknown identifier, no matching overload, wrong type."""


class EvaluationError(ExpressionError):
    """Evaluation failed: division by zero, no such key, overflow, cost limit exceeded, ..."""
