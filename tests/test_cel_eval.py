"""Unit tests of the CEL evaluator (dsl/expr/evaluator.py): semantics the conformance data does not pin down."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import dsl.expr as cel
from dsl.expr import EvaluationError, Limits, Timestamp, UInt


def run(source: str, bindings: dict[str, Any] | None = None, **options: Any) -> Any:
    return cel.compile(source, **options).evaluate(bindings)


def fails(source: str, bindings: dict[str, Any] | None = None, **options: Any) -> EvaluationError:
    program = cel.compile(source, **options)
    with pytest.raises(EvaluationError) as info:
        program.evaluate(bindings)
    return info.value


# --- errors as values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x || true", True),
        ("true || x", True),
        ("x && false", False),
        ("false && x", False),
        ("1 / 0 == 1 || true", True),
        ("true || 1 / 0 == 1", True),
        ("{}.a && false", False),
        ("'s' && false", False),  # a non-bool operand is an error, absorbed like one
        ("true ? 1 : x", 1),
        ("false ? x : 2", 2),
    ],
)
def test_logical_operators_absorb_errors_commutatively(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x && true", "undeclared reference to 'x'"),
        ("true && x", "undeclared reference to 'x'"),
        ("x || false", "undeclared reference to 'x'"),
        ("1 / 0 == 1 && true", "division by zero"),
        ("'s' || false", "no such overload"),
        ("x ? 1 : 2", "undeclared reference"),
        ("1 ? 1 : 2", "no such overload"),
        ("f_unknown(1)", "unbound function"),
    ],
)
def test_errors_propagate(source: str, message: str) -> None:
    assert message in fails(source).message


def test_errors_carry_the_failing_node_position() -> None:
    error = fails("a.b +\n  {'k': 1}.missing", {"a": {"b": 1}})
    assert "no such key: 'missing'" in error.message
    assert (error.line, error.column) == (2, 11)
    assert error.source.startswith("a.b")
    assert fails("1 + 2 / 0").column == 7


# --- names ------------------------------------------------------------------------------------------------


def test_qualified_names_prefer_the_longest_binding() -> None:
    assert run("a.b.c", {"a.b.c": "full", "a.b": {"c": "map"}, "a": {"b": {"c": "root"}}}) == "full"
    assert run("a.b.c", {"a.b": {"c": "map"}, "a": {"b": {"c": "root"}}}) == "map"
    assert run("a.b.c", {"a": {"b": {"c": "root"}}}) == "root"


def test_container_resolution_and_root_scope() -> None:
    bindings = {"x.y.v": 1, "x.v": 2, "v": 3}
    assert run("v", bindings, container="x.y") == 1
    assert run("v", {"x.v": 2, "v": 3}, container="x.y") == 2
    assert run(".v", bindings, container="x.y") == 3


def test_comprehension_variables_shadow_even_with_leading_dot() -> None:
    assert run("[1].exists(x, x == 1)", {"x": 5}) is True
    # the leading dot skips container prefixes, not comprehension variables (cel-spec namespace suite)
    assert run("[1].exists(x, .x == 1)", {"x": 5}) is True
    assert run("[{'z': 0}].exists(y, .y.z == 0)", {"y.z": 42}) is True
    assert run(".y", {"y": "root", "com.example.y": "inner"}, container="com.example") == "root"
    assert run("[[1, 2]].all(x, x.all(x, x > 0))") is True
    assert run("[1, 2].map(x, [10].map(y, x + y))") == [[11], [12]]


def test_namespaced_global_functions() -> None:
    assert run("strings.quote('a')") == '"a"'


def test_type_identifiers() -> None:
    assert run("type(1) == int && type('') == string && type(type(1)) == type") is True
    assert run("type(timestamp('2020-01-01T00:00:00Z')) == google.protobuf.Timestamp") is True
    assert run("int", {"int": 5}) == 5  # a binding wins over the type name


# --- selection ----------------------------------------------------------------------------------------------


def test_select_and_has_on_maps() -> None:
    m = {"a": {"b": None}}
    assert run("m.a.b", {"m": m}) is None
    assert run("has(m.a.b) && !has(m.a.c)", {"m": m}) is True
    assert "no such key: 'c'" in fails("m.a.c", {"m": m}).message
    assert "does not support field selection" in fails("m.a.b.c", {"m": m}).message
    assert "does not support field selection" in fails("has(x.f)", {"x": 1}).message


def test_select_on_comprehension_variable_errors() -> None:
    assert "no such key" in fails("[{'a': 1}].all(i, i.b == 1)").message
    assert "does not support field selection" in fails("[1].all(i, i.b == 1)").message


# --- values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1.0", True),
        ("1u == 1", True),
        ("true == 1", False),
        ("[1, 2] == [1.0, 2u]", True),
        ("'a' < 'b'", True),
        ("2 < 1.5", False),
        ("9223372036854775807 + 0", 2**63 - 1),
        ("'x' in {'x': 1}", True),
        ("2 in [1, 2.0]", True),
        ("true in [1]", False),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("{'a': 1, 'b': 2}.map(k, k)", ["a", "b"]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 2].exists_one(x, x == 1)", True),
        ("{'a': 1, 'b': 2}.all(k, v, v > 0 && k != '')", True),
        ("[5, 6].exists(i, v, i == 1 && v == 6)", True),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_values(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected
    assert type(result) is type(expected)


def test_arithmetic_overflow_and_range_errors() -> None:
    assert "overflow" in fails("9223372036854775807 + 1").message
    assert "overflow" in fails("x * 2", {"x": 2**62}).message
    assert "overflow" in fails("-(-9223372036854775808)").message


def test_map_literal_key_errors() -> None:
    assert "repeated key" in fails("{'a': 1, 'a': 2}").message
    assert "unsupported key type" in fails("{1.5: 1}").message


def test_quantifier_error_semantics() -> None:
    assert run("[0, 1].all(x, 1 / x < 1)") is False  # the false absorbs the division error
    assert run("[0, 1].exists(x, 1 / x > 0)") is True
    assert "division by zero" in fails("[0, 1].all(x, 1 / x < 5)").message
    assert "division by zero" in fails("[0, 1].exists_one(x, 1 / x > 0)").message
    assert "division by zero" in fails("[0].map(x, 1 / x)").message
    assert "cannot be the range" in fails("1.all(x, true)").message


def test_bindings_accept_tuples_and_native_values() -> None:
    assert run("xs.all(x, x > 0) && size(xs) == 2", {"xs": (1, 2)}) is True
    ts = Timestamp(1_700_000_000 * 10**9)
    assert run("t < timestamp('2030-01-01T00:00:00Z')", {"t": ts}) is True
    assert run("u + 1u", {"u": UInt(1)}) == UInt(2)


def test_constant_results_are_not_shared_between_evaluations() -> None:
    program = cel.compile("[1, [2]]")
    first = program.evaluate()
    first.append(3)
    assert program.evaluate() == [1, [2]]


def test_bindings_are_not_modified() -> None:
    bindings = {"xs": [1, 2]}
    run("xs.map(x, x * 2)", bindings)
    assert bindings == {"xs": [1, 2]}


# --- cost limits ------------------------------------------------------------------------------------------------


def test_iteration_limit() -> None:
    limits = Limits(max_iterations=100)
    assert run("xs.all(x, x >= 0)", {"xs": list(range(100))}, limits=limits) is True
    error = fails("xs.all(x, x >= 0)", {"xs": list(range(101))}, limits=limits)
    assert error.message.startswith("cost limit exceeded")
    nested = fails("xs.all(x, xs.all(y, true))", {"xs": list(range(20))}, limits=limits)
    assert "cost limit exceeded" in nested.message


def test_iteration_limit_counts_only_iterations_done() -> None:
    limits = Limits(max_iterations=10)
    # exists stops at the first element; the unused budget is refunded
    assert run("xs.exists(x, true) && xs.exists(x, true)", {"xs": list(range(8))}, limits=limits) is True


def test_size_limit() -> None:
    limits = Limits(max_size=10)
    assert run("'abcde' + s", {"s": "fghij"}, limits=limits) == "abcdefghij"
    assert "cost limit exceeded" in fails("'abcde' + s", {"s": "fghijk"}, limits=limits).message
    assert "cost limit exceeded" in fails("l + l", {"l": list(range(6))}, limits=limits).message


def test_default_limits_stop_runaway_expressions() -> None:
    error = fails("xs.all(a, xs.all(b, xs.all(c, true)))", {"xs": list(range(100))})
    assert "cost limit exceeded" in error.message
    doubling = "s" + " + s" * 20
    big = "x" * 100_000
    assert "cost limit exceeded" in fails(doubling, {"s": big}).message


# --- robustness -------------------------------------------------------------------------------------------------


def test_stray_exceptions_become_evaluation_errors() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = object.__hash__

    error = fails("w == w", {"w": Weird()})
    assert isinstance(error, EvaluationError)


def test_deep_evaluation_within_limit() -> None:
    source = " + ".join(["1"] * 200)
    assert run(source.replace("1", "x"), {"x": 1}) == 200


def test_concurrent_evaluation_of_one_program() -> None:
    program = cel.compile("xs.map(x, x * k).all(y, y % k == 0)")
    results: list[bool] = []

    def work(k: int) -> None:
        for _ in range(200):
            results.append(program.evaluate({"xs": list(range(50)), "k": k}))

    threads = [threading.Thread(target=work, args=(k,)) for k in (2, 3, 5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 800


def test_unchecked_program_references() -> None:
    program = cel.compile("a.b == c && [1].all(i, i > d) && type(x) == int")
    assert program.references == frozenset({"a", "c", "d", "x"})


# --- generated fast paths agree with the library ----------------------------------------------------------

_VALUES = [1, -7, 2.5, UInt(3), "s", b"b", True, None, [1], 2**62]
_OPS = ["+", "-", "*", "<", "<=", ">", ">=", "==", "!="]


def _outcome(program: cel.Program, bindings: dict[str, Any]) -> tuple[str, Any]:
    try:
        value = program.evaluate(bindings)
    except EvaluationError as e:
        return "error", e.message.split(":")[0]
    return type(value).__name__, value


@pytest.mark.parametrize("op", _OPS)
def test_fused_operator_trees_match_single_operators(op: str) -> None:
    single = cel.compile(f"[x {op} y][0]")  # a list literal in between: no fusion
    fused = cel.compile(f"(x {op} y) == w")  # an operator tree: fused code
    literal_single = cel.compile(f"[x {op} 2][0]")
    literal_fused = cel.compile(f"(x {op} 2) == w")
    for x in _VALUES:
        for y in _VALUES:
            kind, value = _outcome(single, {"x": x, "y": y})
            got = _outcome(fused, {"x": x, "y": y, "w": value})
            assert got == (("error", value) if kind == "error" else ("bool", True)), (x, op, y, got)
        kind, value = _outcome(literal_single, {"x": x})
        got = _outcome(literal_fused, {"x": x, "w": value})
        assert got == (("error", value) if kind == "error" else ("bool", True)), (x, op, got)


def test_fused_arithmetic_values_and_overflow() -> None:
    assert run("x + y * 2 > 10", {"x": 5, "y": 4}) is True
    assert run("x * 2.0 + y", {"x": 1.5, "y": 0.5}) == 3.5
    assert "overflow" in fails("x * 4 + 1 > 0", {"x": 2**62}).message
    assert "no such overload" in fails("(1 + 2.0) > x", {"x": 1}).message
    assert "undeclared reference to 'y'" in fails("x + y * 2 > 10", {"x": 1}).message
    assert run("x + y * 2 > 10", {"a.x": 1, "x": 5, "y": 4}) is True


def test_namespaced_function_is_not_a_reference() -> None:
    assert cel.compile("strings.quote(s)").references == frozenset({"s"})
