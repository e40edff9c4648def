"""Unit tests of the CEL parser (dsl/expr/parser.py, cel.lark): literals, precedence, macros, errors."""

from __future__ import annotations

import pytest

from dsl.expr import ast
from dsl.expr.errors import ExpressionSyntaxError
from dsl.expr.parser import MAX_DEPTH, parse
from dsl.expr.values import UInt


def lit(source: str) -> object:
    node = parse(source)
    assert isinstance(node, ast.Literal), node
    return node.value


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("0x1F", 31),
        ("0XfF", 255),
        ("7u", UInt(7)),
        ("0x10U", UInt(16)),
        ("18446744073709551615u", UInt(2**64 - 1)),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-1.5", -1.5),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_number_and_constant_literals(source: str, value: object) -> None:
    got = lit(source)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('"abc"', "abc"),
        ("'abc'", "abc"),
        ('"""a\n"b"\n"""', 'a\n"b"\n'),
        ("'''x''x'''", "x''x"),
        ('"\\a\\b\\f\\n\\r\\t\\v\\\\\\?\\"\\\'\\`"', "\a\b\f\n\r\t\v\\?\"'`"),
        ('"\\303\\277"', "\u00c3\u00bf"),
        ('"\\xFF"', "\u00ff"),
        ('"\\u00e9\\U0001F600"', "\u00e9\U0001f600"),
        ('r"\\d+\\n"', "\\d+\\n"),
        ("R'''\\'''", "\\"),
        ('b"abc"', b"abc"),
        ('b"\\377\\x00"', b"\xff\x00"),
        ('b"\u00ff"', b"\xc3\xbf"),
        ('br"\\x"', b"\\x"),
        ('b"\\u00ff"', b"\xc3\xbf"),
    ],
)
def test_string_and_bytes_literals(source: str, value: object) -> None:
    got = lit(source)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("9223372036854775808", "out of range"),
        ("-9223372036854775809", "out of range"),
        ("18446744073709551616u", "out of range"),
        ("1e309", "double literal out of range"),
        ("1" * 10_000, "integer literal out of range"),  # not Python's 4300-digit conversion limit
        ("-" + "9" * 5000, "integer literal out of range"),
        ("0x" + "f" * 17, "integer literal out of range"),
        ("0x" + "f" * 5000 + "u", "unsigned integer literal out of range"),
        ("-1.8e308", "double literal out of range"),
        ('"\\s"', "invalid escape"),
        ('"\\uD83D"', "invalid unicode"),
        ('"\\U00110000"', "invalid unicode"),
        ('b"\\U000000ff"', "not allowed in bytes"),
        ('"abc', "unterminated string"),
        ("'a\nb'", "unterminated string"),
    ],
)
def test_bad_literals(source: str, message: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match=message):
        parse(source)


def test_leading_zeros_do_not_count_against_the_range() -> None:
    assert lit("0000000000000000000000009223372036854775807") == 9223372036854775807
    assert lit("0x00000000000000000000FFFFFFFFFFFFFFFFu") == UInt(18446744073709551615)


def test_negated_int64_min_in_parens_is_an_evaluation_matter() -> None:
    node = parse("-(-9223372036854775808)")
    assert isinstance(node, ast.Call) and node.function == "-_"


def call(node: ast.Expr) -> ast.Call:
    assert isinstance(node, ast.Call), node
    return node


def test_precedence_multiplication_over_addition() -> None:
    node = call(parse("1 + 2 * 3"))
    assert node.function == "_+_"
    assert call(node.args[1]).function == "_*_"


def test_precedence_and_over_or_and_relations_over_and() -> None:
    node = call(parse("a || b && c < d"))
    assert node.function == "_||_"
    right = call(node.args[1])
    assert right.function == "_&&_"
    assert call(right.args[1]).function == "_<_"


def test_in_is_a_relation() -> None:
    node = call(parse("x + 1 in [2] == true"))
    assert node.function == "_==_"
    inner = call(node.args[0])
    assert inner.function == "@in"
    assert call(inner.args[0]).function == "_+_"


def test_ternary_is_right_associative() -> None:
    node = call(parse("a ? b : c ? d : e"))
    assert node.function == "_?_:_"
    assert call(node.args[2]).function == "_?_:_"


def test_left_associative_subtraction() -> None:
    node = call(parse("a - b - c"))
    assert call(node.args[0]).function == "_-_"


def test_unary_binds_tighter_than_binary_and_looser_than_member() -> None:
    node = call(parse("-a.b * 2"))
    assert node.function == "_*_"
    neg = call(node.args[0])
    assert neg.function == "-_"
    assert isinstance(neg.args[0], ast.Select)
    nots = call(parse("!!x"))
    assert nots.function == "!_" and call(nots.args[0]).function == "!_"


def test_member_index_and_calls() -> None:
    node = call(parse("a.b[0].size()"))
    assert node.function == "size" and node.target is not None
    idx = call(node.target)
    assert idx.function == "_[_]"
    global_call = call(parse("f(1, 2)"))
    assert global_call.function == "f" and global_call.target is None and len(global_call.args) == 2


def test_leading_dot_names() -> None:
    node = parse(".a.b")
    assert isinstance(node, ast.Select) and node.operand == ast.Ident(0, ".a")


def test_aggregates_with_trailing_commas() -> None:
    lst = parse("[1, 2,]")
    assert isinstance(lst, ast.CreateList) and len(lst.elements) == 2
    mp = parse("{'a': 1, 'b': 2,}")
    assert isinstance(mp, ast.CreateMap) and len(mp.entries) == 2
    st = parse("pkg.Msg{f: 1,}")
    assert isinstance(st, ast.CreateStruct) and st.message == "pkg.Msg" and st.fields[0][0] == "f"


def test_quoted_field_names_and_comments() -> None:
    node = parse("m.`content-type` // trailing comment\n")
    assert isinstance(node, ast.Select) and node.field == "content-type"


def test_reserved_words() -> None:
    with pytest.raises(ExpressionSyntaxError, match="reserved identifier 'if'"):
        parse("if")
    with pytest.raises(ExpressionSyntaxError, match="reserved"):
        parse("while(1)")
    with pytest.raises(ExpressionSyntaxError, match="keyword 'null'"):
        parse("a.null")
    receiver = call(parse("a.package()"))  # receiver-style calls may use reserved words
    assert receiver.function == "package"


def test_has_macro() -> None:
    node = parse("has(a.b)")
    assert node == ast.Select(5, ast.Ident(4, "a"), "b", test_only=True)
    with pytest.raises(ExpressionSyntaxError, match="has\\(\\) macro"):
        parse("has(a)")


@pytest.mark.parametrize("macro", ["all", "exists", "exists_one", "filter"])
def test_two_argument_macros_expand(macro: str) -> None:
    node = parse(f"xs.{macro}(x, x > 0)")
    assert isinstance(node, ast.Comprehension)
    assert node.macro == macro and node.iter_var == "x" and node.accu_var == ast.ACCU_VAR
    assert node.iter_range == ast.Ident(0, "xs")


def test_map_macro_shapes() -> None:
    two = parse("xs.map(x, x * 2)")
    assert isinstance(two, ast.Comprehension) and two.macro == "map"
    assert call(two.loop_step).function == "_+_"
    three = parse("xs.map(x, x > 1, x * 2)")
    assert isinstance(three, ast.Comprehension) and call(three.loop_step).function == "_?_:_"


def test_all_macro_matches_langdef_expansion() -> None:
    node = parse("xs.all(x, p)")
    assert isinstance(node, ast.Comprehension)
    accu = ast.Ident(node.offset, ast.ACCU_VAR)
    assert node.accu_init == ast.Literal(node.offset, True)
    assert node.loop_condition == ast.Call(node.offset, "@not_strictly_false", (accu,))
    assert node.loop_step == ast.Call(node.offset, "_&&_", (accu, ast.Ident(10, "p")))
    assert node.result == accu


def test_two_variable_quantifier() -> None:
    node = parse("m.all(k, v, v > k)")
    assert isinstance(node, ast.Comprehension) and node.iter_var == "k" and node.iter_var2 == "v"


def test_macros_disabled_are_plain_calls() -> None:
    node = call(parse("xs.all(x, x > 0)", macros=False))
    assert node.function == "all" and node.target == ast.Ident(0, "xs")
    has = call(parse("has(a.b)", macros=False))
    assert has.function == "has"


def test_macro_with_other_arity_is_a_call() -> None:
    node = call(parse("xs.all(x)"))
    assert node.function == "all"


def test_macro_variable_must_be_simple_name() -> None:
    with pytest.raises(ExpressionSyntaxError, match="simple name") as info:
        parse("xs.all(x.y, true)")
    assert info.value.column == 9  # the selection's dot


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("f(1, )", "unexpected ')', expected an expression", 6),
        ("1 +", "unexpected end of input, expected an expression", 4),
        ("(1", "unexpected end of input, expected ')'", 3),
        ("a b", "unexpected name 'b'", 3),
        ("1 # 2", "unexpected character '#'", 3),
        ("-!x", "unexpected '!'", 2),
        ("[1 2]", "unexpected number 2, expected an operator, ',' or ']'", 4),
        ("1 2", "expected an operator or end of input", 3),
        ("a.", "expected a field name", 3),
    ],
)
def test_syntax_error_messages_and_columns(source: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse(source)
    assert message in info.value.message
    assert info.value.column == column
    assert info.value.source == source


def test_error_line_and_column_on_later_line() -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse("a &&\n  b +")
    assert (info.value.line, info.value.column) == (2, 6)


def test_deep_nesting_is_a_syntax_error_not_recursion() -> None:
    with pytest.raises(ExpressionSyntaxError, match="nests too deeply"):
        parse("[" * 5000 + "]" * 5000)
    with pytest.raises(ExpressionSyntaxError, match="nests too deeply"):
        parse("1" + " + 1" * 20000)
    with pytest.raises(ExpressionSyntaxError, match="nests too deeply"):
        parse("f(" * 1000 + ")" * 1000)
    assert parse("(" * 1000 + "1" + ")" * 1000) == ast.Literal(1000, 1)  # parentheses add no depth


def test_supported_depth_limit_allows_langdef_minimums() -> None:
    parse("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    parse(" || ".join(["true"] * 32))
    parse("int(uint(" * 6 + "7" + "))" * 6)


def test_invalid_utf8_source() -> None:
    with pytest.raises(ExpressionSyntaxError, match="UTF-8"):
        parse('"a\udcff"')


def test_offsets_point_at_operators_and_names() -> None:
    node = call(parse("ab == cd"))
    assert node.offset == 3
    assert node.args[1] == ast.Ident(6, "cd")
