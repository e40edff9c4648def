"""Tests of the CEL type checker (dsl/expr/checker.py) and type notation (dsl/expr/types.py).

ASTs are built by hand so these tests do not depend on the parser; a few end-to-end cases at the
bottom go through the parser when it is available.
"""

from __future__ import annotations

import pytest

from dsl.expr import ast
from dsl.expr.checker import check
from dsl.expr.errors import ExpressionTypeError
from dsl.expr.types import (
    DURATION,
    DYN,
    INT,
    STRING,
    TIMESTAMP,
    Type,
    list_of,
    map_of,
    parse_type,
    type_of_type,
)
from dsl.expr.values import UInt

ACC = ast.ACCU_VAR


def lit(value: object, offset: int = 0) -> ast.Literal:
    return ast.Literal(offset, value)


def ident(name: str, offset: int = 0) -> ast.Ident:
    return ast.Ident(offset, name)


def call(function: str, *args: ast.Expr, target: ast.Expr | None = None, offset: int = 0) -> ast.Call:
    return ast.Call(offset, function, tuple(args), target)


def sel(operand: ast.Expr, field: str, test_only: bool = False, offset: int = 0) -> ast.Select:
    return ast.Select(offset, operand, field, test_only)


def lst(*elements: ast.Expr) -> ast.CreateList:
    return ast.CreateList(0, tuple(elements))


def mp(*entries: tuple[ast.Expr, ast.Expr]) -> ast.CreateMap:
    return ast.CreateMap(0, tuple(entries))


def macro(name: str, target: ast.Expr, var: str, *args: ast.Expr) -> ast.Comprehension:
    """The standard expansion of the comprehension macros (as in cel-go)."""
    acc = ident(ACC)
    if name == "all":
        return ast.Comprehension(
            0,
            var,
            target,
            ACC,
            lit(True),
            call("@not_strictly_false", acc),
            call("_&&_", acc, args[0]),
            acc,
            name,
        )
    if name == "exists":
        return ast.Comprehension(
            0,
            var,
            target,
            ACC,
            lit(False),
            call("@not_strictly_false", call("!_", acc)),
            call("_||_", acc, args[0]),
            acc,
            name,
        )
    if name == "exists_one":
        step = call("_?_:_", args[0], call("_+_", acc, lit(1)), acc)
        return ast.Comprehension(
            0, var, target, ACC, lit(0), lit(True), step, call("_==_", acc, lit(1)), name
        )
    if name == "map":
        append = call("_+_", acc, lst(args[-1]))
        step = append if len(args) == 1 else call("_?_:_", args[0], append, acc)
        return ast.Comprehension(0, var, target, ACC, lst(), lit(True), step, acc, name)
    assert name == "filter"
    step = call("_?_:_", args[0], call("_+_", acc, lst(ident(var))), acc)
    return ast.Comprehension(0, var, target, ACC, lst(), lit(True), step, acc, name)


def type_of(expr: ast.Expr, container: str | None = None, **decls: str) -> str:
    declarations = {name.replace("__", "."): parse_type(t) for name, t in decls.items()}
    return str(check(expr, declarations, container=container, source="expr").type)


def error_of(expr: ast.Expr, **decls: str) -> ExpressionTypeError:
    declarations = {name: parse_type(t) for name, t in decls.items()}
    with pytest.raises(ExpressionTypeError) as info:
        check(expr, declarations, container=None, source="some expression")
    return info.value


# -- types.py ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "null_type",
        "dyn",
        "list(int)",
        "map(string, dyn)",
        "map(string, list(map(int, bool)))",
        "type",
        "type(int)",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "A",
        "list(A)",
        "my.pkg.Vector(double)",
    ],
)
def test_type_notation_round_trips(text: str) -> None:
    assert str(parse_type(text)) == text
    assert parse_type(str(parse_type(text))) == parse_type(text)


def test_type_aliases_and_constructors() -> None:
    assert parse_type("timestamp") == TIMESTAMP
    assert parse_type("duration") == DURATION
    assert parse_type(" map( string ,list(int) ) ") == map_of(STRING, list_of(INT))
    assert str(type_of_type(INT)) == "type(int)"
    assert parse_type("google.protobuf.Struct") == map_of(STRING, DYN)
    assert str(parse_type("google.protobuf.Int64Value")) == "wrapper(int)"


def test_types_are_hashable_values() -> None:
    assert {parse_type("list(int)"), list_of(INT)} == {Type("list", (INT,))}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("list", "takes 1"),
        ("map(string)", "takes 2"),
        ("int(string)", "takes no type parameters"),
        ("list(int", "expected ',' or ')'"),
        ("list(int))", "unexpected ')'"),
        ("strng", "did you mean 'string'"),
        ("int$", "unexpected character"),
    ],
)
def test_bad_type_text_raises_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_type(text)


# -- literals, aggregates, identifiers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "int"),
        (UInt(1), "uint"),
        (1.5, "double"),
        ("s", "string"),
        (b"b", "bytes"),
        (True, "bool"),
        (None, "null_type"),
    ],
)
def test_literal_types(value: object, expected: str) -> None:
    assert type_of(lit(value)) == expected


def test_list_and_map_literals_join_element_types() -> None:
    assert type_of(lst(lit(1), lit(2))) == "list(int)"
    assert type_of(lst(lit(1), lit("a"))) == "list(dyn)"
    assert type_of(lst()) == "list(dyn)"
    assert type_of(lst(lst(), lst(lit(1)))) == "list(list(int))"
    assert type_of(lst(lit(1), call("dyn", lit(2)))) == "list(dyn)"
    assert type_of(mp((lit("a"), lit(1)), (lit("b"), lit(2.0)))) == "map(string, dyn)"
    assert type_of(mp((lit("a"), lit(1)))) == "map(string, int)"
    assert type_of(mp()) == "map(dyn, dyn)"


def test_map_key_type_is_checked() -> None:
    err = error_of(mp((lit(1.5), lit(1))))
    assert "map keys must be int, uint, bool or string, found 'double'" in err.message


def test_create_struct_is_rejected() -> None:
    err = error_of(ast.CreateStruct(3, "pkg.Msg", ()))
    assert "message types are not supported" in err.message
    assert err.offset == 3


def test_declared_variable_and_references() -> None:
    result = check(call("_+_", ident("a"), ident("b")), {"a": INT, "b": INT}, container=None, source="a + b")
    assert str(result.type) == "int"
    assert result.references == frozenset({"a", "b"})


def test_undeclared_reference_suggests_a_close_name() -> None:
    err = error_of(sel(ident("usr", offset=4), "name"), user="map(string, string)")
    assert err.message == "undeclared reference to 'usr' (did you mean 'user'?)"
    assert err.offset == 4
    assert (err.line, err.column) == (1, 5)


def test_type_identifiers_denote_types() -> None:
    assert type_of(ident("int")) == "type(int)"
    assert type_of(ident("list")) == "type(list(dyn))"
    assert type_of(ident("map")) == "type(map(dyn, dyn))"
    assert type_of(ident("type")) == "type(type)"
    assert type_of(sel(sel(ident("google"), "protobuf"), "Duration")) == "type(google.protobuf.Duration)"
    assert type_of(call("type", lit(1))) == "type(int)"
    assert type_of(call("_==_", call("type", lit(1)), ident("string"))) == "bool"


# -- name resolution -------------------------------------------------------------------------------


def test_qualified_declaration_wins_over_field_selection() -> None:
    expr = sel(sel(ident("a"), "b"), "c")
    result = check(expr, {"a.b.c": STRING, "a.b": map_of(STRING, INT)}, container=None, source="a.b.c")
    assert (str(result.type), result.references) == ("string", frozenset({"a"}))
    result = check(expr, {"a.b": map_of(STRING, INT)}, container=None, source="a.b.c")
    assert (str(result.type), result.references) == ("int", frozenset({"a"}))


def test_container_prefixes_are_tried_innermost_first() -> None:
    decls = {"x": "string", "ns__x": "int"}
    assert type_of(ident("x"), container="ns.inner", **decls) == "int"
    assert type_of(ident(".x"), container="ns.inner", **decls) == "string"
    assert type_of(ident("x"), container="other", **decls) == "string"


def test_comprehension_variable_shadows_declarations() -> None:
    expr = macro("all", lst(lit(1)), "x", call("_==_", ident("x"), lit(1)))
    result = check(expr, {"x": STRING}, container=None, source="")
    assert str(result.type) == "bool"
    assert result.references == frozenset()
    rooted = macro("all", lst(lit(1)), "x", call("_==_", ident(".x"), lit(1)))
    assert check(rooted, {"x": STRING}, container=None, source="").references == frozenset()


def test_references_are_root_names_of_resolved_declarations() -> None:
    result = check(sel(ident("y"), "z"), {"ns.y": map_of(STRING, INT)}, container="ns", source="")
    assert result.references == frozenset({"ns"})


# -- field selection and has() ---------------------------------------------------------------------


def test_field_selection() -> None:
    assert type_of(sel(ident("m"), "f"), m="map(string, list(int))") == "list(int)"
    assert type_of(sel(ident("d"), "f"), d="dyn") == "dyn"
    assert type_of(sel(sel(ident("d"), "f"), "g"), d="dyn") == "dyn"
    err = error_of(sel(ident("n"), "f", offset=2), n="int")
    assert "type 'int' does not support field selection" in err.message
    assert err.offset == 2


def test_has_requires_map_or_dyn() -> None:
    assert type_of(sel(ident("m"), "f", test_only=True), m="map(string, int)") == "bool"
    assert type_of(sel(ident("d"), "f", test_only=True), d="dyn") == "bool"
    assert (
        "has() needs a field selection on a map"
        in error_of(sel(ident("l"), "f", True), l="list(int)").message
    )


# -- operators -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (call("_+_", lit(1), lit(2)), "int"),
        (call("_+_", lit(UInt(1)), lit(UInt(2))), "uint"),
        (call("_+_", lit("a"), lit("b")), "string"),
        (call("_+_", lst(lit(1)), lst()), "list(int)"),
        (call("_+_", lst(lit(1)), call("dyn", lst(lit("a")))), "list(int)"),
        (call("_+_", lst(lit(1)), lst(call("dyn", lit("a")))), "list(dyn)"),
        (call("_-_", call("timestamp", lit("t")), call("timestamp", lit("t"))), "google.protobuf.Duration"),
        (call("_+_", call("timestamp", lit("t")), call("duration", lit("1s"))), "google.protobuf.Timestamp"),
        (call("_%_", lit(5), lit(2)), "int"),
        (call("-_", lit(2.5)), "double"),
        (call("_<_", lit(1), lit(2.0)), "bool"),
        (call("_>=_", lit(UInt(1)), lit(-1)), "bool"),
        (call("_==_", lst(lit(1)), lst()), "bool"),
        (call("_==_", call("dyn", lit(1)), lit(1.0)), "bool"),
        (call("_[_]", lst(lit("a")), lit(0)), "string"),
        (call("_[_]", mp((lit("a"), lit(1.5))), lit("a")), "double"),
        (call("_[_]", ident("d"), lit(0)), "dyn"),
        (call("@in", lit(1), lst(lit(1))), "bool"),
        (call("@in", lit("k"), mp((lit("k"), lit(1)))), "bool"),
        (call("_&&_", lit(True), ident("d")), "bool"),
        (call("_?_:_", lit(True), lit(1), lit(2)), "int"),
        (call("_?_:_", lit(True), lst(), lst(lit("a"))), "list(string)"),
        (call("_?_:_", lit(True), lit(1), call("dyn", lit("a"))), "dyn"),
        (call("_?_:_", lit(False), lit(None), call("timestamp", lit("t"))), "google.protobuf.Timestamp"),
    ],
)
def test_operator_types(expr: ast.Expr, expected: str) -> None:
    assert type_of(expr, d="dyn") == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (call("_+_", lit(1), lit("a")), "found no matching overload for '_+_' applied to '(int, string)'"),
        (call("_==_", lit(1), lit(1.0)), "found no matching overload for '_==_' applied to '(int, double)'"),
        (
            call("_%_", lit(1.0), lit(2.0)),
            "found no matching overload for '_%_' applied to '(double, double)'",
        ),
        (call("-_", lit(UInt(1))), "found no matching overload for '-_' applied to '(uint)'"),
        (
            call("_[_]", lst(lit(1)), lit("a")),
            "found no matching overload for '_[_]' applied to '(list(int), string)'",
        ),
        (
            call("@in", lit(1), lst(lit("a"))),
            "found no matching overload for '@in' applied to '(int, list(string))'",
        ),
        (call("_?_:_", lit(1), lit(2), lit(3)), "condition must be bool, found 'int'"),
        (call("_&&_", lit(True), lit(1)), "operands of '&&' must be bool, found 'int'"),
        (call("_||_", lit("s"), lit(True)), "operands of '||' must be bool, found 'string'"),
        (call("_+_", lst(lit(1)), lst(lit("a"))), "applied to '(list(int), list(string))'"),
        (call("!_", lit(1)), "found no matching overload for '!_' applied to '(int)'"),
        (
            call("_?_:_", lit(True), lit(1), lit("a")),
            "branches of '?:' have incompatible types 'int' and 'string'",
        ),
    ],
)
def test_operator_errors(expr: ast.Expr, message: str) -> None:
    assert message in error_of(expr).message


def test_error_offset_points_at_offending_node() -> None:
    expr = call("_&&_", lit(True, offset=0), lit(1, offset=8), offset=5)
    assert error_of(expr).offset == 8
    assert error_of(call("_+_", lit(1), lit("a"), offset=2)).offset == 2


# -- functions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (call("size", lit("abc")), "int"),
        (call("size", target=lst(lit(1))), "int"),
        (call("size", mp()), "int"),
        (call("contains", lit("b"), target=lit("abc")), "bool"),
        (call("matches", lit("a"), lit(".*")), "bool"),
        (call("matches", lit(".*"), target=lit("a")), "bool"),
        (call("int", lit("1")), "int"),
        (call("int", call("timestamp", lit("t"))), "int"),
        (call("uint", lit(1.5)), "uint"),
        (call("double", lit(UInt(1))), "double"),
        (call("string", call("duration", lit("1s"))), "string"),
        (call("bytes", lit("s")), "bytes"),
        (call("bool", lit("true")), "bool"),
        (call("dyn", lst(lit(1))), "dyn"),
        (call("type", lst(lit(1))), "type(list(int))"),
        (call("getHours", target=call("duration", lit("1h"))), "int"),
        (call("getDayOfWeek", lit("UTC"), target=call("timestamp", lit("t"))), "int"),
        (call("charAt", lit(1), target=lit("abc")), "string"),
        (call("indexOf", lit("b"), lit(1), target=lit("abc")), "int"),
        (call("lastIndexOf", lit("b"), target=lit("abc")), "int"),
        (call("lowerAscii", target=lit("A")), "string"),
        (call("upperAscii", target=lit("a")), "string"),
        (call("replace", lit("a"), lit("b"), lit(1), target=lit("aa")), "string"),
        (call("split", lit(","), target=lit("a,b")), "list(string)"),
        (call("substring", lit(1), lit(2), target=lit("abc")), "string"),
        (call("trim", target=lit(" a ")), "string"),
        (call("join", lit(","), target=lst(lit("a"))), "string"),
        (call("join", target=lst()), "string"),
        (call("quote", lit("a"), target=ident("strings")), "string"),
        (call("format", lst(lit(1), lit("a")), target=lit("%d %s")), "string"),
        (call("reverse", target=lit("abc")), "string"),
    ],
)
def test_function_types(expr: ast.Expr, expected: str) -> None:
    assert type_of(expr) == expected


def test_function_errors() -> None:
    assert "applied to 'string.(int)'" in error_of(call("contains", lit(1), target=lit("a"))).message
    assert "applied to 'int.()'" in error_of(call("getHours", target=lit(1))).message
    assert (
        "applied to 'duration"
        not in error_of(call("getFullYear", target=call("duration", lit("1s")))).message
    )
    message = error_of(call("sizee", lit("a"))).message
    assert message == "undeclared reference to function 'sizee' (did you mean 'size'?)"


def test_dyn_arguments_select_all_candidate_overloads() -> None:
    assert type_of(call("_+_", ident("d"), lit(1)), d="dyn") == "int"
    assert type_of(call("_+_", ident("d"), ident("d")), d="dyn") == "dyn"
    assert type_of(call("size", target=ident("d")), d="dyn") == "int"
    assert type_of(call("_[_]", ident("m"), lit("k")), m="map(string, list(string))") == "list(string)"


# -- comprehension macros --------------------------------------------------------------------------


def test_macro_result_types() -> None:
    nums = lst(lit(1), lit(2))
    x = ident("x")
    assert type_of(macro("all", nums, "x", call("_>_", x, lit(0)))) == "bool"
    assert type_of(macro("exists", nums, "x", call("_>_", x, lit(0)))) == "bool"
    assert type_of(macro("exists_one", nums, "x", call("_>_", x, lit(0)))) == "bool"
    assert type_of(macro("map", nums, "x", call("double", x))) == "list(double)"
    assert type_of(macro("map", nums, "x", call("_>_", x, lit(1)), call("string", x))) == "list(string)"
    assert type_of(macro("filter", nums, "x", call("_>_", x, lit(1)))) == "list(int)"


def test_macro_iteration_variable_types() -> None:
    m = mp((lit("a"), lit(1.5)))
    assert type_of(macro("map", m, "k", call("size", ident("k")))) == "list(int)"
    assert type_of(macro("filter", m, "k", call("_==_", ident("k"), lit("a")))) == "list(string)"
    assert type_of(macro("map", ident("d"), "e", ident("e")), d="dyn") == "list(dyn)"
    nested = macro("map", lst(lst(lit("a"))), "l", macro("filter", ident("l"), "s", lit(True)))
    assert type_of(nested) == "list(list(string))"


def test_macro_errors() -> None:
    err = error_of(macro("all", lst(lit(1)), "x", ident("x")))
    assert err.message == "predicate of all() must be bool, found 'int'"
    err = error_of(macro("filter", lst(lit("a")), "x", ident("x")))
    assert err.message == "predicate of filter() must be bool, found 'string'"
    err = error_of(macro("exists", lit(3), "x", lit(True)))
    assert err.message == "exists() needs a list or map to iterate over, found 'int'"
    err = error_of(macro("map", lst(lit(1)), "x", call("_+_", ident("x"), lit("s"))))
    assert "'_+_' applied to '(int, string)'" in err.message


def test_two_variable_comprehension() -> None:
    acc = ident(ACC)
    step = call("_&&_", acc, call("_==_", ident("i"), call("size", ident("v"))))
    expr = ast.Comprehension(0, "i", lst(lit("a")), ACC, lit(True), lit(True), step, acc, "all", "v")
    assert type_of(expr) == "bool"
    step = call("_&&_", acc, call("_>_", ident("v"), lit(1.0)))
    expr = ast.Comprehension(
        0, "k", mp((lit("a"), lit(2.0))), ACC, lit(True), lit(True), step, acc, "all", "v"
    )
    assert type_of(expr) == "bool"


# -- end to end through the parser -------------------------------------------------------------------


def checked(source: str, container: str | None = None, **decls: str) -> tuple[str, frozenset[str]]:
    parser = pytest.importorskip("dsl.expr.parser")
    declarations = {name.replace("__", "."): parse_type(t) for name, t in decls.items()}
    result = check(parser.parse(source), declarations, container=container, source=source)
    return str(result.type), result.references


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2].map(x, x * 2)", "list(int)"),
        ("[1, 2].map(x, x > 1, double(x))", "list(double)"),
        ("{'a': 1}.filter(k, k != 'b')", "list(string)"),
        ("[[], [[]], [[[]]], [[[[]]]]]", "list(list(list(list(list(dyn)))))"),
        ("[[[[[]]]], [], [[[]]]]", "list(list(list(list(list(dyn)))))"),
        ("([].map(x, x))[0].foo", "dyn"),
        ("[].map(x, [].map(y, x in y && y in x))", "list(list(bool))"),
        ("('foo' + 'bar').startsWith('foo')", "bool"),
        ("{'abc': 123}['abc']", "int"),
        ("[1.0, 2.0, 3] == [1u, 2, 3u]", "bool"),
        ("['1', '2', null] == ['1', '2', '3']", "bool"),
        ("dyn(timestamp(0)) == null", "bool"),
        ("'key' in {1u: 'str', 2: b'bytes'}", "bool"),
        ("[1, 2, 3].exists(i, v, i > -1 && v > 0)", "bool"),
        ("{'key': 1, 1: 21}.exists(k, v, k != 2 && v != 22)", "bool"),
        ("type(type(1)) == type(string)", "bool"),
        ("timestamp('2023-01-01T00:00:00Z').getHours('America/New_York') < 3", "bool"),
        ("duration('1h') + duration('1m') >= duration('1h')", "bool"),
        ("'%s is %d'.format(['x', 1]).size()", "int"),
        ("a[a[a[0]]]", "int"),
    ],
)
def test_end_to_end_types(source: str, expected: str) -> None:
    assert checked(source, a="list(int)")[0] == expected


def test_end_to_end_namespaces() -> None:
    assert checked("x.y", x__y="bool") == ("bool", frozenset({"x"}))
    assert checked("y", container="x", x__y="bool", y="string") == ("bool", frozenset({"x"}))
    assert checked(".y", container="com.example", com__example__y="bool", y="string")[0] == "string"
    assert checked("[0].exists(y, y == 0)", container="com.example", com__example__y="int")[1] == frozenset()
    assert checked("[{'z': 0}].exists(y, y.z == 0)", y__z="int") == ("bool", frozenset())
    both = {"com__example__y__z": "int", "y__z": "int"}
    source = "[{'z': 0}].exists(y, .y.z == 0)"
    # a leading dot skips the container only: the comprehension variable still shadows (cel-spec
    # namespace/comprehension_shadowing_namespaced_selector_disambiguation)
    assert checked(source, container="com.example", **both) == ("bool", frozenset())


def test_end_to_end_error_columns() -> None:
    parser = pytest.importorskip("dsl.expr.parser")
    source = "user.age > 18 && usr.name == 'x'"
    with pytest.raises(ExpressionTypeError) as info:
        check(parser.parse(source), {"user": parse_type("map(string, dyn)")}, container=None, source=source)
    assert info.value.message == "undeclared reference to 'usr' (did you mean 'user'?)"
    assert (info.value.line, info.value.column) == (1, 18)
    source = "[1, 2].all(x, x + 1)"
    with pytest.raises(ExpressionTypeError) as info:
        check(parser.parse(source), {}, container=None, source=source)
    assert info.value.message == "predicate of all() must be bool, found 'int'"
    assert info.value.column == source.index("+") + 1  # operators are located at their symbol


def test_unknown_type_names() -> None:
    assert str(parse_type("optional_type(int)")) == "optional_type(int)"
    assert str(parse_type("vector")) == "vector"  # an application-defined abstract type
    with pytest.raises(ValueError, match="CEL calls it 'bool'"):
        parse_type("boolean")
    with pytest.raises(ValueError, match="CEL calls it 'int'"):
        parse_type("list(integer)")
