"""The public API of dsl.expr: what the conformance data does not cover (errors, limits, conversion)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import dsl.expr as cel
from dsl.expr import types
from dsl.expr.errors import ExpressionError


def run(source: str, bindings: dict[str, Any] | None = None, **options: Any) -> Any:
    return cel.compile(source, **options).evaluate(bindings or {})


# --- compile / evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected", "kind"),
    [
        ("1 + 2 * 3", 7, int),
        ("1u + 2u", 3, cel.UInt),
        ("7.0 / 2.0", 3.5, float),
        ("'ab' + 'c'", "abc", str),
        ("b'ab' + b'c'", b"abc", bytes),
        ("1 < 2 && 'a' in ['a']", True, bool),
        ("null", None, type(None)),
        ("[1, 2][1]", 2, int),
        ("{'a': {'b': 1}}.a.b", 1, int),
        ("true ? 'yes' : 1 / 0", "yes", str),
    ],
)
def test_evaluates_to_typed_values(source: str, expected: Any, kind: type) -> None:
    result = run(source)
    assert result == expected
    assert type(result) is kind


def test_program_keeps_source_and_ast_and_evaluates_repeatedly() -> None:
    program = cel.compile("x * 2", {"x": "int"})
    assert program.source == "x * 2"
    assert program.ast is not None
    assert [program.evaluate({"x": n}) for n in (1, 2, 3)] == [2, 4, 6]


def test_evaluate_without_bindings() -> None:
    assert cel.compile("1 == 1").evaluate() is True
    assert cel.compile("1 == 1").evaluate(None) is True


def test_bindings_with_qualified_names_and_container() -> None:
    assert run("a.b.c", {"a.b.c": "yes"}) == "yes"
    assert run("b.c", {"a.b.c": 7}, container="a") == 7
    assert run("a.b.c", {"a.b": {"c": "map"}}) == "map"


def test_macros_can_be_disabled() -> None:
    assert run("[1, 2].exists(x, x == 2)") is True
    with pytest.raises(ExpressionError):
        run("[1, 2].exists(x, x == 2)", macros=False)


# --- Program.type and Program.references ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "declarations", "expected"),
    [
        ("1 + 2", {}, "int"),
        ("x + 1u", {"x": "uint"}, "uint"),
        ("x.all(i, i > 0)", {"x": "list(int)"}, "bool"),
        ("x.map(i, string(i))", {"x": "list(int)"}, "list(string)"),
        ("m.a", {"m": "map(string, dyn)"}, "dyn"),
        ("m['k']", {"m": "map(string, int)"}, "int"),
        ("t + duration('1s')", {"t": "timestamp"}, "google.protobuf.Timestamp"),
        ("type(1)", {}, "type(int)"),
        ("[1, 'a']", {}, "list(dyn)"),
    ],
)
def test_deduced_type(source: str, declarations: dict[str, str], expected: str) -> None:
    assert str(cel.compile(source, declarations).type) == expected


def test_declarations_accept_type_objects() -> None:
    program = cel.compile("x[0] + y", {"x": types.list_of(types.INT), "y": types.INT})
    assert program.type == types.INT
    assert program.evaluate({"x": [2], "y": 3}) == 5


def test_unchecked_program_type_is_dyn() -> None:
    assert str(cel.compile("x + 1").type) == "dyn"


@pytest.mark.parametrize(
    ("source", "declarations", "expected"),
    [
        (
            "input.x > 1 && steps.a.output == 'ok'",
            {"input": "dyn", "steps": "map(string, dyn)"},
            {"input", "steps"},
        ),
        ("xs.all(x, x > limit)", {"xs": "list(int)", "limit": "int"}, {"xs", "limit"}),
        ("[1, 2].map(x, x * 2)", {}, set()),
        ("a.b.c", {"a.b.c": "string"}, {"a"}),
        ("1 + 2", {}, set()),
    ],
)
def test_references_are_root_variables(source: str, declarations: dict[str, str], expected: set[str]) -> None:
    assert cel.compile(source, declarations).references == frozenset(expected)


def test_references_of_unchecked_program() -> None:
    assert cel.compile("x + y.z").references == frozenset({"x", "y"})
    assert cel.compile("[1].exists(i, i == n)").references == frozenset({"n"})


# --- errors with line and column -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("1 + * 2", 1, 5),
        ("a && (b ||", 1, 11),
        ("x == 1\n  && )", 2, 6),
        ("[1, 2,, 3]", 1, 7),
        ("{'a' 1}", 1, 6),
    ],
)
def test_syntax_error_points_at_bad_token(source: str, line: int, column: int) -> None:
    with pytest.raises(cel.ExpressionSyntaxError) as caught:
        cel.compile(source)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.message
    assert f"{line}:{column}" in str(caught.value)


@pytest.mark.parametrize("source", ["", "   ", "1 +", "'unterminated", "b'\\xZZ'", "1 ? 2", "a.", "#"])
def test_syntax_errors(source: str) -> None:
    with pytest.raises(cel.ExpressionSyntaxError):
        cel.compile(source)


def test_unknown_identifier_is_type_error_with_column_and_hint() -> None:
    with pytest.raises(cel.ExpressionTypeError) as caught:
        cel.compile("1 + inptu.x", {"input": "dyn"})
    assert (caught.value.line, caught.value.column) == (1, 5)
    assert "inptu" in caught.value.message
    assert "input" in caught.value.message


def test_wrong_argument_types_name_the_types() -> None:
    with pytest.raises(cel.ExpressionTypeError) as caught:
        cel.compile("x + 1", {"x": "string"})
    assert "string" in caught.value.message and "int" in caught.value.message


@pytest.mark.parametrize(
    ("source", "declarations"),
    [
        ("x ? 1 : 2", {"x": "int"}),
        ("x && true", {"x": "string"}),
        ("[1, 2].all(i, i)", {}),
        ("[1, 2].filter(i, 'yes')", {}),
        ("undeclared", {}),
        ("size(1)", {}),
    ],
)
def test_type_errors(source: str, declarations: dict[str, str]) -> None:
    with pytest.raises(cel.ExpressionTypeError):
        cel.compile(source, declarations)


@pytest.mark.parametrize(
    "source",
    [
        "1 / 0",
        "1 % 0",
        "{'a': 1}['b']",
        "[1][5]",
        "9223372036854775807 + 1",
        "0u - 1u",
        "int('nope')",
        "'abc'.matches('(')",
        "1 + 'a'",
        "unbound_variable",
    ],
)
def test_evaluation_errors(source: str) -> None:
    with pytest.raises(cel.EvaluationError):
        run(source)


def test_evaluation_error_carries_location() -> None:
    with pytest.raises(cel.EvaluationError) as caught:
        run("1 +\n  (2 / 0)")
    assert caught.value.line == 2
    assert caught.value.source == "1 +\n  (2 / 0)"


def test_errors_are_absorbed_by_logical_operators() -> None:
    assert run("1 / 0 == 1 || true") is True
    assert run("true || 1 / 0 == 1") is True
    assert run("1 / 0 == 1 && false") is False
    assert run("false && 1 / 0 == 1") is False
    with pytest.raises(cel.EvaluationError):
        run("1 / 0 == 1 && true")


def test_error_classes_share_a_base() -> None:
    for cls in (cel.ExpressionSyntaxError, cel.ExpressionTypeError, cel.EvaluationError):
        assert issubclass(cls, ExpressionError)


# --- cost limit ----------------------------------------------------------------------------------------


def test_iteration_limit_stops_big_comprehension() -> None:
    with pytest.raises(cel.EvaluationError):
        run("xs.all(x, x >= 0)", {"xs": list(range(200_000))})


def test_iteration_limit_stops_nested_comprehensions() -> None:
    xs = list(range(1_000))
    with pytest.raises(cel.EvaluationError):
        run("xs.all(a, xs.all(b, xs.all(c, true)))", {"xs": xs})
    with pytest.raises(cel.EvaluationError):
        run("xs.map(a, xs.map(b, xs.map(c, c)))", {"xs": xs})


def test_iteration_limit_is_configurable() -> None:
    xs = list(range(20))
    assert run("xs.all(x, x >= 0)", {"xs": xs}, limits=cel.Limits(max_iterations=100)) is True
    with pytest.raises(cel.EvaluationError):
        run("xs.all(x, x >= 0)", {"xs": xs}, limits=cel.Limits(max_iterations=10))


def test_size_limit_stops_string_doubling() -> None:
    s = "a" * 600_000
    with pytest.raises(cel.EvaluationError):
        run("s + s", {"s": s})
    with pytest.raises(cel.EvaluationError):
        run("xs.map(x, s + s + s + s)", {"s": "ab" * 1500, "xs": [1, 2]}, limits=cel.Limits(max_size=10_000))
    with pytest.raises(cel.EvaluationError):
        run("'abcdef' + 'ghijkl'", limits=cel.Limits(max_size=10))


def test_size_limit_stops_list_growth() -> None:
    with pytest.raises(cel.EvaluationError):
        run("[1, 2, 3] + [4, 5, 6]", limits=cel.Limits(max_size=5))
    assert run("[1, 2] + [3]", limits=cel.Limits(max_size=5)) == [1, 2, 3]


def test_default_limits() -> None:
    limits = cel.Limits()
    assert limits.max_iterations == 100_000
    assert limits.max_size == 1_000_000


# --- conversion between JSON-like Python values and CEL values -------------------------------------------


def test_to_cel_converts_python_values() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    converted = cel.to_cel({"a": (1, 2), "t": moment, "d": timedelta(seconds=1.5), "n": None, "s": "x"})
    assert converted["a"] == [1, 2] and type(converted["a"]) is list
    assert converted["t"] == cel.Timestamp(int(moment.timestamp()) * 1_000_000_000)
    assert converted["d"] == cel.Duration(1_500_000_000)
    assert converted["n"] is None and converted["s"] == "x"


def test_to_cel_rejects_unsupported_values() -> None:
    with pytest.raises(TypeError):
        cel.to_cel({"x": object()})


def test_from_cel_gives_json_values() -> None:
    value = {
        "u": cel.UInt(3),
        "b": b"hi",
        "t": cel.Timestamp(0),
        "d": cel.Duration(1_500_000_000),
        "k": cel.CelType("int"),
        "l": [cel.UInt(1), 2.5, True, None],
    }
    out = cel.from_cel(value)
    assert out == {
        "u": 3,
        "b": "aGk=",
        "t": "1970-01-01T00:00:00Z",
        "d": "1.5s",
        "k": "int",
        "l": [1, 2.5, True, None],
    }
    assert type(out["u"]) is int


def test_converted_bindings_evaluate() -> None:
    bindings = cel.to_cel({"now": datetime(2030, 6, 1, tzinfo=UTC), "grace": timedelta(hours=1)})
    assert run("now + grace > timestamp('2030-06-01T00:30:00Z')", bindings) is True
    assert cel.from_cel(run("now + grace", bindings)) == "2030-06-01T01:00:00Z"


def test_results_round_trip_through_from_cel() -> None:
    result = run("{'n': 1u, 'items': [1, 2].map(x, x * 2), 'ok': true}")
    assert cel.from_cel(result) == {"n": 1, "items": [2, 4], "ok": True}


def test_size_limit_applies_to_format_precision() -> None:
    with pytest.raises(cel.EvaluationError):
        run("'%.100000000f'.format([1.0])", limits=cel.Limits(max_size=1_000))


# --- language corners the shared conformance files do not exercise ----------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("b'\\u00FF' == b'\\303\\277'", True),  # langdef: \u is valid in bytes (UTF-8 of the code point)
        ("b'\\x00\\xFF' != b'\\u00FF'", True),
        ("{'as': 1}.as + {'if': 2}.if + {'while': 3}.while", 6),  # reserved words are fine as selectors
        ("a.let() || true", True),  # ... and as receiver function names
        ("[\r1\r,\f2\t][\r0\r]", 1),  # \r and \f are whitespace
        ("[// comment\n1]// trailing", [1]),
    ],
)
def test_language_corners(source: str, expected: Any) -> None:
    assert run(source) == expected
