"""CEL extension libraries and macros beyond the shared conformance files: math, encoders, lists,
sets, bindings (`cel.bind`), `cel.block`, two-variable comprehensions (`transformList`,
`transformMap`, `existsOne`), `sortBy`; plus parser and library edge cases from cel-spec's other
conformance files (reserved words, out-of-range literals, `bool()` spellings, `format` limits)."""

from __future__ import annotations

import math
from typing import Any

import pytest

import dsl.expr as cel
from dsl.expr import EvaluationError, ExpressionSyntaxError, ExpressionTypeError, UInt


def run(source: str, bindings: dict[str, Any] | None = None, **options: Any) -> Any:
    return cel.compile(source, **options).evaluate(bindings)


def checked(source: str, declarations: dict[str, str] | None = None, **options: Any) -> tuple[Any, str]:
    """Value and deduced type with the type checker on (no declarations unless given)."""
    program = cel.compile(source, declarations or {}, **options)
    return program.evaluate({}), str(program.type)


def same(actual: Any, expected: Any) -> bool:
    """Typed equality: int is not uint is not double is not bool."""
    if type(actual) is not type(expected):
        return False
    if type(actual) is list:
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if type(actual) is dict:
        return actual.keys() == expected.keys() and all(same(actual[k], expected[k]) for k in actual)
    if type(actual) is float and math.isnan(actual):
        return math.isnan(expected)
    return bool(actual == expected)


def fails(source: str, match: str, bindings: dict[str, Any] | None = None, **options: Any) -> None:
    program = cel.compile(source, **options)
    with pytest.raises(EvaluationError, match=match):
        program.evaluate(bindings)


# ---- math ------------------------------------------------------------------------------------------

MATH_CASES = [
    ("math.greatest(-5)", -5),
    ("math.greatest(1, 1.0) == 1", True),
    ("math.greatest(-7, 5)", 5),
    ("math.greatest(5u, -7)", UInt(5)),
    ("math.greatest(-9223372036854775808, 1)", 1),
    ("math.greatest(5.4, 10, 3u, -5.0, 9223372036854775807) == 9223372036854775807", True),
    ("math.greatest([5.4, 10, 3u, -5.0, 3.5]) == 10", True),
    ("math.greatest([dyn(5.4), dyn(10.5), dyn(3u), dyn(-5.0), dyn(3.5)])", 10.5),
    ("math.least(5.5, -7.5)", -7.5),
    ("math.least(18446744073709551615u, 1u)", UInt(1)),
    ("math.least([5.4, 10u, 3u, 1u, 3.5]) == 1u", True),
    ("math.ceil(-1.2)", -1.0),
    ("math.ceil(1.2)", 2.0),
    ("math.floor(-1.2)", -2.0),
    ("math.floor(1.2)", 1.0),
    ("math.round(-1.5)", -2.0),
    ("math.round(-1.4)", -1.0),
    ("math.round(1.5)", 2.0),
    ("math.round(0.49999999999999994)", 0.0),
    ("math.isNaN(math.round(0.0/0.0))", True),
    ("math.trunc(-1.7)", -1.0),
    ("math.isNaN(math.trunc(0.0/0.0))", True),
    ("math.abs(-11)", 11),
    ("math.abs(1u)", UInt(1)),
    ("math.abs(-11.5)", 11.5),
    ("math.sign(-11)", -1),
    ("math.sign(0u)", UInt(0)),
    ("math.sign(100.5)", 1.0),
    ("math.sign(0.0)", 0.0),
    ("math.isNaN(0.0/0.0)", True),
    ("math.isInf(1.0/0.0)", True),
    ("!math.isInf(0.0/0.0)", True),
    ("math.isFinite(1.0/1.5)", True),
    ("!math.isFinite(-1.0/0.0)", True),
    ("math.sqrt(16)", 4.0),
    ("math.sqrt(2.25)", 1.5),
    ("math.isNaN(math.sqrt(-1.0))", True),
    ("math.bitAnd(1, -1)", 1),
    ("math.bitAnd(1u, 3u)", UInt(1)),
    ("math.bitOr(4, -2)", -2),
    ("math.bitXor(4, -2)", -6),
    ("math.bitNot(1)", -2),
    ("math.bitNot(0u)", UInt(18446744073709551615)),
    ("math.bitShiftLeft(1, 2)", 4),
    ("math.bitShiftLeft(1, 63)", -9223372036854775808),
    ("math.bitShiftLeft(1, 200)", 0),
    ("math.bitShiftLeft(-1, 200)", 0),
    ("math.bitShiftLeft(1u, 2)", UInt(4)),
    # logical, not arithmetic: cel-go fills the vacant bits with 0 (ext/math.go, math_test.go)
    ("math.bitShiftRight(-1024, 3)", 2305843009213693824),
    ("math.bitShiftRight(-1024, 64)", 0),
    ("math.bitShiftRight(-1, 0)", -1),
    ("math.bitShiftRight(-1, 1)", 9223372036854775807),
    ("math.bitShiftRight(-9223372036854775808, 63)", 1),
    ("math.bitShiftRight(1024, 64)", 0),
    ("math.bitShiftRight(1024u, 200)", UInt(0)),
]


@pytest.mark.parametrize(("source", "expected"), MATH_CASES)
def test_math_extension(source: str, expected: Any) -> None:
    assert same(run(source), expected)
    assert same(checked(source)[0], expected)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("math.ceil(dyn(1))", "no such overload"),
        ("math.round(dyn(1))", "no such overload"),
        ("math.sign(dyn(true))", "no such overload"),
        ("math.isNaN(dyn(true))", "no such overload"),
        ("math.bitAnd(2u, dyn(''))", "no such overload"),
        ("math.bitOr(dyn(1.2), 1)", "no such overload"),
        ("math.bitXor(dyn([]), dyn([1]))", "no such overload"),
        ("math.bitShiftLeft(dyn(4.3), 1)", "no such overload"),
        ("math.bitShiftLeft(1u, -1)", "negative offset"),
        ("math.bitShiftRight(1u, -1)", "negative offset"),
        ("math.abs(-9223372036854775808)", "overflow"),
        ("math.greatest(dyn([]))", "must not be empty"),
        ("math.greatest(1, dyn('a'))", "no such overload"),
    ],
)
def test_math_extension_errors(source: str, match: str) -> None:
    fails(source, match)


@pytest.mark.parametrize(
    ("source", "type_name"),
    [
        ("math.greatest(1, 2)", "int"),
        ("math.greatest(1, 2.0)", "dyn"),
        ("math.least([1u, 2u])", "uint"),
        ("math.ceil(1.5)", "double"),
        ("math.isNaN(1.5)", "bool"),
        ("math.bitShiftLeft(1u, 2)", "uint"),
        ("math.sqrt(4)", "double"),
        ("math.abs(-1)", "int"),
    ],
)
def test_math_extension_types(source: str, type_name: str) -> None:
    assert checked(source)[1] == type_name


@pytest.mark.parametrize(
    "source", ["math.greatest('a')", "math.greatest()", "math.ceil(1)", "math.bitAnd(1, 1u)"]
)
def test_math_extension_type_errors(source: str) -> None:
    with pytest.raises(ExpressionTypeError):
        cel.compile(source, {})


# ---- encoders, lists, sets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("base64.encode(b'hello')", "aGVsbG8="),
        ("base64.decode('aGVsbG8=')", b"hello"),
        ("base64.decode('aGVsbG8')", b"hello"),
        ("base64.decode(base64.encode(b'Hello World!'))", b"Hello World!"),
        ("lists.range(4)", [0, 1, 2, 3]),
        ("lists.range(0)", []),
        ("[1, 2, 1.0, 2u, 'a', 'a', [1], [1.0], true, 1].distinct()", [1, 2, "a", [1], True]),
        ("[1, [2, [3, [4]]]].flatten()", [1, 2, [3, [4]]]),
        ("[1, [2, [3, [4]]]].flatten(2)", [1, 2, 3, [4]]),
        ("[[1], [2, 3]].flatten()", [1, 2, 3]),
        ("[1, 2, 3].reverse()", [3, 2, 1]),
        ("'abc'.reverse()", "cba"),
        ("[1, 2, 3, 4].slice(1, 3)", [2, 3]),
        ("[1, 2].slice(2, 2)", []),
        ("[3, 1, 2].sort()", [1, 2, 3]),
        ("['b', 'a', 'c'].sort()", ["a", "b", "c"]),
        ("['bb', 'a', 'ccc'].sortBy(s, size(s))", ["a", "bb", "ccc"]),
        ("[{'n': 2}, {'n': 1}].sortBy(e, e.n)", [{"n": 1}, {"n": 2}]),
        ("sets.contains([1, 2, 3], [3, 1.0])", True),
        ("sets.contains([1, 2], [4])", False),
        ("sets.contains([[1]], [[1u]])", True),
        ("sets.contains([], [])", True),
        ("sets.equivalent([1, 2, 2], [2u, 1.0])", True),
        ("sets.equivalent([1, 2], [1])", False),
        ("sets.intersects([1, 2], [3, 2.0])", True),
        ("sets.intersects([1], [])", False),
    ],
)
def test_encoder_list_and_set_extensions(source: str, expected: Any) -> None:
    assert same(run(source), expected)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("base64.decode('a?')", "illegal base64"),
        ("[1, 2].slice(-1, 1)", "negative indexes"),
        ("[1, 2].slice(2, 1)", "start index"),
        ("[1, 2].slice(0, 3)", "list is length 2"),
        ("[1, 'a'].sort()", "same type"),
        ("[[1], [2]].sort()", "not comparable"),
        ("[1].flatten(-1)", "non-negative"),
        ("lists.range(100000000)", "cost limit"),
    ],
)
def test_list_extension_errors(source: str, match: str) -> None:
    fails(source, match)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # one NaN value reaching distinct() or a set twice is still never equal to itself
        ("cel.bind(n, double('nan'), [n, n].distinct().size())", 2),
        ("cel.bind(n, double('nan'), [n, 1.0, n, 1].distinct().size())", 3),
        ("cel.bind(n, double('nan'), sets.contains([n], [n]))", False),
        ("cel.bind(n, double('nan'), sets.intersects([n], [n]))", False),
        ("cel.bind(n, double('nan'), sets.equivalent([n], [n]))", False),
        ("cel.bind(n, double('nan'), sets.contains([n, 1], [1]))", True),
    ],
)
def test_nan_is_never_a_duplicate_or_a_member(source: str, expected: Any) -> None:
    assert run(source) == expected


def test_lists_range_respects_size_limit() -> None:
    with pytest.raises(EvaluationError, match="cost limit"):
        cel.compile("lists.range(n)", limits=cel.Limits(max_size=10)).evaluate({"n": 11})


@pytest.mark.parametrize(
    ("source", "type_name"),
    [
        ("base64.encode(b'x')", "string"),
        ("base64.decode('eA==')", "bytes"),
        ("lists.range(3).distinct().reverse().sort().slice(0, 1)", "list(int)"),
        ("[[1], [2]].flatten()", "list(int)"),
        ("[1, [2]].flatten(1)", "list(dyn)"),
        ("['a'].sortBy(s, size(s))", "list(string)"),
        ("sets.contains([1], [2])", "bool"),
    ],
)
def test_extension_types(source: str, type_name: str) -> None:
    assert checked(source)[1] == type_name


# ---- macros: two-variable comprehensions, bind, block --------------------------------------------------

MACRO_CASES = [
    ("[1, 2, 3].exists(i, v, i == 1 && v == 2)", True),
    ("[1, 2, 3].all(i, v, i > -1 && v > 0)", True),
    ("{'key1': 1, 'key2': 2}.exists(k, v, k == 'key2' && v == 2)", True),
    ("[7].existsOne(i, v, i == 0 && v == 7)", True),
    ("[5, 7, 8].existsOne(i, v, v % 5 == i)", True),
    ("[0, 1, 2, 3, 4].existsOne(i, v, v % 2 == i)", False),
    ("[1, 2, 3].existsOne(x, x > 2)", True),
    ("{6: 'six', 7: 'seven'}.existsOne(k, v, k % 5 == 2 && v == 'seven')", True),
    ("[].transformList(i, v, i / v)", []),
    ("[3].transformList(i, v, v * v + i)", [9]),
    ("[2, 4, 6].transformList(i, v, v / 2 + i)", [1, 3, 5]),
    ("[2, 4, 6].transformList(i, v, i != 1 && v != 4, v / 2 + i)", [1, 5]),
    ("{'a': 1}.transformList(k, v, k + string(v))", ["a1"]),
    ("{}.transformMap(k, v, k + v)", {}),
    ("{'foo': 'bar', 'baz': 'bux'}.transformMap(k, v, k + v)", {"foo": "foobar", "baz": "bazbux"}),
    ("{'foo': 'bar', 'baz': 'bux'}.transformMap(k, v, k != 'baz', k + v)", {"foo": "foobar"}),
    ("[5, 6].transformMap(i, v, v * 2)", {0: 10, 1: 12}),
    ("cel.bind(t, true, t)", True),
    ("cel.bind(msg, 'hello', msg + msg + msg)", "hellohellohello"),
    ("cel.bind(t1, true, cel.bind(t2, true, t1 && t2))", True),
    ("cel.bind(valid, [1, 2, 3], [3, 4, 5].exists(e, e in valid))", True),
    ("cel.bind(x, 2, [1, 2].map(y, x * y))", [2, 4]),
    ("cel.block([1, cel.index(0) + 1, cel.index(1) + 1, cel.index(2) + 1], cel.index(3))", 4),
    ("cel.block([{'a': 2}, cel.index(0)['a'], cel.index(1) * cel.index(1)], cel.index(1) + cel.index(2))", 6),
    ("cel.block([{'a': true}, has(cel.index(0).a)], cel.index(1) && cel.index(1))", True),
    ("cel.@block([[1], cel.iterVar(0, 0) > 0], @index0.exists(cel.iterVar(0, 0), @index1))", True),
    (
        "cel.@block([[1, 2, 3], cel.iterVar(1, 0) + 1], "
        "@index0.map(cel.iterVar(0, 0), @index0.map(cel.iterVar(1, 0), @index1)))",
        [[2, 3, 4], [2, 3, 4], [2, 3, 4]],
    ),
]


@pytest.mark.parametrize(("source", "expected"), MACRO_CASES)
def test_extension_macros(source: str, expected: Any) -> None:
    assert same(run(source), expected)
    assert same(checked(source)[0], expected)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("[1, 2, 3].exists(i, v, v / i == 17)", "division by zero"),
        ("[3, 2, 1, 0].existsOne(i, v, v / i > 1)", "division by zero"),
        ("[2, 1, 0].transformList(i, v, v / i)", "division by zero"),
        ("[2, 1, 0].transformList(i, v, v / i > 0, v)", "division by zero"),
        ("{'foo': 2, 'baz': 0}.transformMap(k, v, 4 / v)", "division by zero"),
        ("[1, 2].transformList(i, v, v)", None),
    ],
)
def test_extension_macro_errors(source: str, match: str | None) -> None:
    if match is None:
        assert run(source) == [1, 2]
        return
    fails(source, match)


def test_transform_map_respects_iteration_budget() -> None:
    program = cel.compile("lists.range(50).transformMap(i, v, v)", limits=cel.Limits(max_iterations=10))
    with pytest.raises(EvaluationError, match="cost limit"):
        program.evaluate({})


def test_macro_types() -> None:
    assert checked("[1, 2].transformList(i, v, v * 2)")[1] == "list(int)"
    assert checked("{'a': 1}.transformMap(k, v, v > 0)")[1] == "map(string, bool)"
    assert checked("cel.bind(x, 'a', x + 'b')")[1] == "string"
    assert checked("[1].existsOne(i, v, v > 0)")[1] == "bool"
    with pytest.raises(ExpressionTypeError):
        cel.compile("cel.bind(x, 'a', x + 1)", {})


@pytest.mark.parametrize(
    "source",
    [
        "cel.bind(a.b, 1, 2)",
        "cel.bind(x, 1)",
        "[1].transformList(i, i, i)",
        "cel.block([1])",
        "cel.index(x)",
        "cel.block("
        + "[[1], "
        + ", ".join(f"[cel.index({i}), cel.index({i})]" for i in range(30))
        + "], cel.index(30))",
    ],
)
def test_malformed_extension_macros(source: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        cel.compile(source)


def test_block_reference_outside_a_block_is_undeclared() -> None:
    fails("cel.index(0)", "undeclared reference")
    fails("@index0", "undeclared reference")


@pytest.mark.parametrize(
    "source", ["[1, 2].map(x, @result)", "@foo", "x.@y", "x.@y()", "@f(1)", "cel.@bind(x, 1, x)"]
)
def test_at_names_are_only_block_references(source: str) -> None:
    # '@' names are generated by tools (cel.@block, @index0); the macro accumulator stays unreachable
    with pytest.raises(ExpressionSyntaxError):
        cel.compile(source)


# ---- parser edge cases (cel-spec parse suite) ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "in",
        "in.x",
        "x + in",
        "in(1)",
        "-(9223372036854775808)",
        "-(-(9223372036854775808))",
        "9223372036854775808",
    ]
    + [
        f"{word}"
        for word in ("as", "break", "const", "for", "if", "import", "let", "package", "var", "while")
    ],
)
def test_reserved_words_and_out_of_range_literals(source: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        cel.compile(source)


@pytest.mark.parametrize("word", ["as", "break", "const", "for", "if", "let", "namespace", "return", "while"])
def test_reserved_words_are_fine_as_selectors_and_receiver_functions(word: str) -> None:
    assert run(f"{{'{word}': 1}}.{word}") == 1
    assert run(f"a.{word}() || true") is True


def test_negative_int64_minimum_folds_only_directly() -> None:
    assert run("-9223372036854775808") == -9223372036854775808
    assert run("- 9223372036854775808") == -9223372036854775808
    fails("-(-9223372036854775808)", "overflow")


# ---- library details ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("t", True), ("T", True), ("true", True), ("TRUE", True), ("True", True)]
    + [("0", False), ("f", False), ("F", False), ("false", False), ("FALSE", False), ("False", False)],
)
def test_bool_accepts_go_parse_bool_spellings(text: str, expected: bool) -> None:
    assert run(f"bool('{text}')") is expected


@pytest.mark.parametrize("text", ["tRuE", "yes", "", " true"])
def test_bool_rejects_other_spellings(text: str) -> None:
    fails(f"bool('{text}')", "cannot convert")


def test_format_precision_is_limited_before_formatting() -> None:
    fails("'%.999999999f'.format([1.0])", "cost limit")
    fails("'%.99999999999999999999999999e'.format([1.0])", "cost limit")
    assert run("size('%.1000f'.format([1.0]))") == 1002


# ---- name resolution (cel-spec namespace suite) ---------------------------------------------------------------


def test_leading_dot_skips_the_container_but_not_comprehension_variables() -> None:
    both = {"com.example.y.z": "int", "y.z": "int"}
    bindings = {"com.example.y.z": 42, "y.z": 42}
    source = "[{'z': 0}].exists(y, .y.z == 0)"
    assert run(source, bindings, container="com.example") is True
    program = cel.compile(source, both, container="com.example")
    assert program.evaluate(bindings) is True
    assert program.references == frozenset()
    assert run(".y", {"com.example.y": True, "y": "string"}, container="com.example") == "string"
    assert run("[1].exists(y, [0].exists(y, y == 0))", {"y": 42}, container="com.example") is True


def test_replace_is_limited_before_building_a_huge_string() -> None:
    program = cel.compile("s.replace('', t)")
    with pytest.raises(EvaluationError, match="cost limit"):
        program.evaluate({"s": "x" * 10**6, "t": "y" * 10**6})
    assert run("'aXbX'.replace('X', '--', 1)") == "a--bX"
    assert run("'ab'.replace('', '-')") == "-a-b-"
