"""Unit tests of the CEL runtime library (dsl/expr/functions.py), calling the functions directly."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dsl.expr.errors import EvaluationError
from dsl.expr.functions import (
    GLOBALS,
    MEMBERS,
    TYPE_VALUES,
    equals,
    format_double,
    parse_duration,
    parse_timestamp,
    type_of,
)
from dsl.expr.values import INT64_MAX, INT64_MIN, UINT64_MAX, CelType, Duration, Timestamp, UInt

NANOS = 1_000_000_000


def g(name: str, *args: Any) -> Any:
    return GLOBALS[name](*args)


def m(name: str, target: Any, *args: Any) -> Any:
    return MEMBERS[name](target, *args)


def ts(text: str) -> Timestamp:
    return parse_timestamp(text)


def dur(text: str) -> Duration:
    return parse_duration(text)


def fails(fn: Any, *args: Any, match: str | None = None) -> None:
    with pytest.raises(EvaluationError, match=match):
        fn(*args)


# --- arithmetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        ("_+_", 40, 2, 42),
        ("_-_", -42, -12, -30),
        ("_*_", -30, -2, 60),
        ("_/_", -7, 2, -3),  # truncation toward zero
        ("_/_", 7, -2, -3),
        ("_%_", -3, 5, -3),  # sign of the dividend
        ("_%_", 43, -5, 3),
        ("_+_", UInt(42), UInt(2), UInt(44)),
        ("_/_", UInt(60), UInt(7), UInt(8)),
        ("_%_", UInt(42), UInt(5), UInt(2)),
        ("_+_", 4.25, 15.25, 19.5),
        ("_/_", 15.75, 0.0, math.inf),
        ("_/_", -1.0, 0.0, -math.inf),
        ("_/_", 1.0, -0.0, -math.inf),
        ("_+_", "he", "llo", "hello"),
        ("_+_", b"ab", b"c", b"abc"),
        ("_+_", [1], [2, 3], [1, 2, 3]),
        ("_+_", (1,), [2], [1, 2]),
    ],
)
def test_arithmetic(op: str, a: Any, b: Any, expected: Any) -> None:
    result = g(op, a, b)
    assert result == expected
    assert type(result) is type(expected)


def test_nan_division() -> None:
    assert math.isnan(g("_/_", 0.0, 0.0))


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("_+_", INT64_MAX, 1),
        ("_-_", INT64_MIN, 1),
        ("_*_", 5_000_000_000, 5_000_000_000),
        ("_/_", INT64_MIN, -1),
        ("_%_", INT64_MIN, -1),
        ("_+_", UInt(UINT64_MAX), UInt(1)),
        ("_-_", UInt(0), UInt(1)),
        ("_*_", UInt(5_000_000_000), UInt(5_000_000_000)),
    ],
)
def test_integer_overflow(op: str, a: Any, b: Any) -> None:
    fails(GLOBALS[op], a, b, match="overflow")


def test_negation() -> None:
    assert g("-_", 5) == -5
    assert math.copysign(1.0, g("-_", 0.0)) == -1.0
    fails(GLOBALS["-_"], INT64_MIN, match="overflow")
    fails(GLOBALS["-_"], UInt(5), match=r"no such overload: -_\(uint\)")
    fails(GLOBALS["-_"], False, match="no such overload")


def test_division_by_zero() -> None:
    fails(GLOBALS["_/_"], 15, 0, match="division by zero")
    fails(GLOBALS["_/_"], UInt(15), UInt(0), match="division by zero")
    fails(GLOBALS["_%_"], 34, 0, match="modulus by zero")
    fails(GLOBALS["_%_"], UInt(34), UInt(0), match="modulus by zero")


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("_+_", 1, UInt(1)),
        ("_+_", 1, 1.0),
        ("_+_", 1, "a"),
        ("_+_", True, True),
        ("_%_", 47.5, 5.5),
        ("_*_", "a", 3),
        ("_-_", "a", "b"),
        ("_-_", dur("1s"), ts("2000-01-01T00:00:00Z")),
    ],
)
def test_arithmetic_type_mismatch(op: str, a: Any, b: Any) -> None:
    fails(GLOBALS[op], a, b, match="no such overload")


def test_overload_error_names_the_types() -> None:
    fails(GLOBALS["_+_"], 1, "a", match=r"^no such overload: _\+_\(int, string\)$")


def test_not() -> None:
    assert g("!_", True) is False
    fails(GLOBALS["!_"], 0, match="no such overload")


# --- time arithmetic -----------------------------------------------------------------------------


def test_time_arithmetic() -> None:
    assert g("_+_", ts("2009-02-13T23:00:00Z"), dur("240s")) == ts("2009-02-13T23:04:00Z")
    assert g("_+_", dur("120s"), ts("2009-02-13T23:01:00Z")) == ts("2009-02-13T23:03:00Z")
    assert g("_-_", ts("2009-02-13T23:31:00Z"), ts("2009-02-13T23:29:00Z")) == dur("120s")
    assert g("_-_", ts("2009-02-13T23:10:00Z"), dur("600s")) == ts("2009-02-13T23:00:00Z")
    assert g("_+_", dur("600s"), dur("50s")) == dur("650s")


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("_+_", ts("0001-01-01T00:00:00Z"), dur("-1ns")),
        ("_+_", ts("9999-12-31T23:59:59.999999999Z"), dur("1ns")),
        ("_-_", ts("0001-01-01T00:00:00Z"), dur("1s")),
        ("_-_", ts("9999-12-31T23:59:59Z"), ts("0001-01-01T00:00:00Z")),
    ],
)
def test_time_arithmetic_range(op: str, a: Any, b: Any) -> None:
    fails(GLOBALS[op], a, b, match="range")


def test_duration_range() -> None:
    big = Duration(INT64_MAX)
    fails(GLOBALS["_+_"], big, Duration(1), match="range")
    fails(parse_duration, "320000000000s", match="range")


# --- comparison and equality ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1, True),
        (1, UInt(1), True),
        (1, 1.0, True),
        (UInt(2), 2.0, True),
        ([1.0, 2.0, 3], [UInt(1), 2, UInt(3)], True),
        ([1, 2], (1, 2), True),
        ({1: 1.0, UInt(2): UInt(3)}, {UInt(1): 1, 2: 3.0}, True),
        ({"k": "v"}, {"k": "v1"}, False),
        ({"k": 1}, {"j": 1}, False),
        (True, 1, False),
        (None, None, True),
        (None, 0, False),
        ("a", b"a", False),
        ([1], ["1"], False),
        (math.nan, math.nan, False),
        (1, math.nan, False),
        (ts("2000-01-01T00:00:00Z"), ts("2000-01-01T00:00:00Z"), True),
        (dur("1h"), dur("60m"), True),
        (dur("0s"), ts("1970-01-01T00:00:00Z"), False),
        (CelType("int"), type_of(7), True),
        ([], {}, False),
    ],
)
def test_equality(a: Any, b: Any, expected: bool) -> None:
    assert equals(a, b) is expected
    assert g("_==_", a, b) is expected
    assert g("_!=_", a, b) is (not expected)


@pytest.mark.parametrize(
    ("a", "b", "lt"),
    [
        (-1, 0, True),
        (-1, UInt(0), True),
        (1, UInt(UINT64_MAX), True),
        (1, 1.5, True),
        (UInt(2), 1.5, False),
        ("Abc", "aBC", True),
        ("a", "á", True),
        (b"a", b"b", True),
        (False, True, True),
        (ts("2000-01-01T00:00:00Z"), ts("2000-01-02T00:00:00Z"), True),
        (dur("2h"), dur("3h"), True),
        # int meets double as a double, as cel-spec's suite expects (the conversion is lossy).
        (INT64_MAX, 9223372036854775808.0, False),
    ],
)
def test_ordering(a: Any, b: Any, lt: bool) -> None:
    assert g("_<_", a, b) is lt
    assert g("_>=_", a, b) is (not lt)


def test_nan_orders_false() -> None:
    for op in ("_<_", "_<=_", "_>_", "_>=_"):
        assert g(op, 1.0, math.nan) is False
        assert g(op, math.nan, 1) is False


@pytest.mark.parametrize(("a", "b"), [([0], [1]), ({0: "a"}, {1: "b"}), (None, None), ("a", 1), (1, True)])
def test_ordering_unsupported(a: Any, b: Any) -> None:
    for op in ("_<_", "_<=_", "_>_", "_>=_"):
        fails(GLOBALS[op], a, b, match="no such overload")


# --- indexing and membership ---------------------------------------------------------------------


def test_list_index() -> None:
    assert g("_[_]", [7, 8, 9], 0) == 7
    assert g("_[_]", [7, 8, 9], UInt(2)) == 9
    assert g("_[_]", [7, 8, 9], 1.0) == 8
    assert g("_[_]", (7, 8), 1) == 8
    fails(GLOBALS["_[_]"], [7, 8, 9], 0.1, match="no such overload")
    fails(GLOBALS["_[_]"], [7, 8, 9], 3, match="index out of range: 3")
    fails(GLOBALS["_[_]"], [7, 8, 9], -1, match="index out of range")
    fails(GLOBALS["_[_]"], [7, 8, 9], "0", match="no such overload")
    fails(GLOBALS["_[_]"], [7, 8, 9], True, match="no such overload")
    fails(GLOBALS["_[_]"], "abc", 0, match="no such overload")


def test_map_index_numeric_keys() -> None:
    mixed = {UInt(1): 1.0, 2: 2.0, UInt(3): 3.0}
    assert g("_[_]", mixed, 3.0) == 3.0
    assert g("_[_]", mixed, UInt(2)) == 2.0
    assert g("_[_]", mixed, 1) == 1.0
    fails(GLOBALS["_[_]"], mixed, 3.1, match="no such key")
    fails(GLOBALS["_[_]"], {"name": 1}, "nam", match="no such key: 'nam'")
    fails(GLOBALS["_[_]"], {0: 1}, b"", match="no such key")
    fails(GLOBALS["_[_]"], {0: 1}, [0], match="no such key")


def test_map_bool_and_int_keys_stay_distinct() -> None:
    assert g("_[_]", {True: "t"}, True) == "t"
    fails(GLOBALS["_[_]"], {True: "t"}, 1, match="no such key")
    fails(GLOBALS["_[_]"], {1: "one"}, True, match="no such key")
    fails(GLOBALS["_[_]"], {0: "zero"}, False, match="no such key")
    assert g("_[_]", {1: "one"}, 1.0) == "one"
    assert g("@in", True, {True: 1}) is True
    assert g("@in", 1, {True: 1}) is False


def test_in() -> None:
    assert g("@in", 3, [5, 4, 3]) is True
    assert g("@in", 3.0, [5, 4, 3]) is True
    assert g("@in", UInt(3), [5.0, 3.0]) is True
    assert g("@in", "a", ["b", "c"]) is False
    assert g("@in", 1, [True]) is False
    assert g("@in", [1], [[1.0]]) is True
    assert g("@in", 7, []) is False
    assert g("@in", 3.0, {1: 1, UInt(3): 3}) is True
    assert g("@in", 3.1, {3: 3}) is False
    assert g("@in", [1], {1: 1}) is False
    fails(GLOBALS["@in"], 1, "123", match="no such overload")


def test_size() -> None:
    assert g("size", "πέντε") == 5
    assert g("size", b"abc") == 3
    assert g("size", [1, 2]) == 2
    assert g("size", {}) == 0
    assert m("size", "ab") == 2
    fails(GLOBALS["size"], 5, match=r"no such overload: size\(int\)")
    fails(GLOBALS["size"], "a", "b", match="no such overload")


# --- conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "arg", "expected"),
    [
        ("int", UInt(42), 42),
        ("int", -123.456, -123),
        ("int", 1.9, 1),
        ("int", "987", 987),
        ("int", "-9223372036854775808", INT64_MIN),
        ("int", ts("2004-09-16T23:59:59Z"), 1095379199),
        ("uint", 1729, UInt(1729)),
        ("uint", 25.5, UInt(25)),
        ("uint", "300", UInt(300)),
        ("double", 9223372036854775807, 9.223372036854776e18),
        ("double", UInt(123), 123.0),
        ("double", "-84.32e7", -843200000.0),
        ("double", "1e-3", 0.001),
        ("string", 123, "123"),
        ("string", UInt(9876), "9876"),
        ("string", 123.456, "123.456"),
        ("string", -4.5e-3, "-0.0045"),
        ("string", b"\xc3\xbf", "ÿ"),
        ("string", True, "true"),
        ("string", ts("2009-02-13T23:31:30Z"), "2009-02-13T23:31:30Z"),
        ("string", dur("1m1ms"), "60.001s"),
        ("string", dur("-1.5s"), "-1.5s"),
        ("bytes", "ÿ", b"\xc3\xbf"),
        ("bool", "TRUE", True),
        ("bool", "f", False),
        ("bool", False, False),
        ("dyn", [1], [1]),
        ("timestamp", 1_000_000_000, Timestamp(1_000_000_000 * NANOS)),
        ("duration", "1h2m3.5s", Duration(3723 * NANOS + NANOS // 2)),
    ],
)
def test_conversions(fn: str, arg: Any, expected: Any) -> None:
    result = g(fn, arg)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("fn", "arg"),
    [
        ("int", UInt(UINT64_MAX)),
        ("int", 9223372036854775807.0),
        ("int", -9223372036854775808.0),
        ("int", math.nan),
        ("int", math.inf),
        ("int", "1.5"),
        ("int", " 1"),
        ("int", "1_000"),
        ("int", "9223372036854775808"),
        ("uint", -1),
        ("uint", -0.5),
        ("uint", 6.022e23),
        ("uint", "-1"),
        ("double", "abc"),
        ("double", "1_0"),
        ("double", " 1"),
        ("double", "1e999"),
        ("string", b"\x00\xff"),
        ("bool", "TrUe"),
        ("timestamp", -62135596801),
        ("timestamp", 253402300800),
        ("timestamp", "0000-01-01T00:00:00Z"),
        ("timestamp", "10000-01-01T00:00:00Z"),
        ("timestamp", "2009-02-30T00:00:00Z"),
        ("timestamp", "2009-02-13 23:31:30Z"),
        ("duration", "1d"),
        ("duration", ""),
        ("duration", "1"),
        ("duration", "-320000000000s"),
    ],
)
def test_conversion_errors(fn: str, arg: Any) -> None:
    fails(GLOBALS[fn], arg)


@pytest.mark.parametrize("fn", ["int", "uint", "double", "string", "bytes", "bool", "timestamp", "duration"])
def test_conversion_overload_errors(fn: str) -> None:
    fails(GLOBALS[fn], [1], match="no such overload")
    fails(GLOBALS[fn], 1, 2, match="no such overload")


def test_double_parsing_special_values() -> None:
    assert math.isnan(g("double", "NaN"))
    assert g("double", "Infinity") == math.inf
    assert g("double", "-Infinity") == -math.inf
    assert math.copysign(1.0, g("double", "-0.0")) == -1.0


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (100.0, "100"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e300, "1.5e+300"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_format_double(value: float, text: str) -> None:
    assert format_double(value) == text


def test_timestamp_parsing() -> None:
    assert ts("1970-01-01T00:00:00Z") == Timestamp(0)
    assert ts("1970-01-01T01:00:00+01:00") == Timestamp(0)
    assert ts("1969-12-31T23:30:00-00:30") == Timestamp(0)
    assert ts("1970-01-01T00:00:00.123456789Z") == Timestamp(123456789)
    assert ts("0001-01-01T00:00:00Z").nanos == -62135596800 * NANOS
    assert g("string", ts("9999-12-31T23:59:59.999999999Z")) == "9999-12-31T23:59:59.999999999Z"
    assert g("string", ts("2023-02-03T23:31:20.5+00:00")) == "2023-02-03T23:31:20.5Z"


def test_duration_parsing() -> None:
    assert dur("0") == Duration(0)
    assert dur("-1.5h") == Duration(-90 * 60 * NANOS)
    assert dur("1h34us") == Duration(3600 * NANOS + 34_000)
    assert dur("100ms") == Duration(100_000_000)
    assert dur("1µs") == Duration(1000)
    assert dur("-999999999ns") == Duration(-999_999_999)
    assert dur(".5s") == Duration(NANOS // 2)


def test_type() -> None:
    assert g("type", 1) == CelType("int")
    assert g("type", UInt(1)) == CelType("uint")
    assert g("type", True) == CelType("bool")
    assert g("type", None) == CelType("null_type")
    assert g("type", (1,)) == CelType("list")
    assert g("type", {}) == CelType("map")
    assert g("type", CelType("int")) == CelType("type")
    assert g("type", Timestamp(0)) == TYPE_VALUES["google.protobuf.Timestamp"]
    assert g("type", Duration(0)) == TYPE_VALUES["google.protobuf.Duration"]
    assert TYPE_VALUES["timestamp"] == TYPE_VALUES["google.protobuf.Timestamp"]
    assert "dyn" not in TYPE_VALUES


# --- strings -------------------------------------------------------------------------------------


def test_string_predicates() -> None:
    assert m("contains", "Straße", "aß") is True
    assert m("contains", "", "") is True
    assert m("startsWith", "завтра", "за") is True
    assert m("endsWith", "forté", "té") is True
    fails(MEMBERS["contains"], "abc", 1, match=r"no such overload: contains\(string, int\)")
    fails(MEMBERS["startsWith"], 1, "a", match="no such overload")
    fails(MEMBERS["endsWith"], "a", match="no such overload")


def test_matches() -> None:
    assert m("matches", "hubba", "ubb") is True
    assert m("matches", "", "foo|bar") is False
    assert m("matches", "🐱😀😀", "(a|😀){2}") is True
    assert g("matches", "foobar", "^foo.*$") is True
    assert m("matches", "abc", r"\pL+") is True
    fails(MEMBERS["matches"], "abc", "(", match="invalid regular expression")
    fails(MEMBERS["matches"], "abc", "(?=a)", match="invalid regular expression")  # no lookahead in RE2
    fails(MEMBERS["matches"], "abc", 1, match="no such overload")


# --- timestamp and duration accessors ------------------------------------------------------------

_T = "2009-02-13T23:31:30Z"


@pytest.mark.parametrize(
    ("name", "tz", "expected"),
    [
        ("getDate", None, 13),
        ("getDayOfMonth", None, 12),
        ("getDayOfWeek", None, 5),
        ("getDayOfYear", None, 43),
        ("getFullYear", None, 2009),
        ("getHours", None, 23),
        ("getMinutes", None, 31),
        ("getMonth", None, 1),
        ("getSeconds", None, 30),
        ("getDate", "Australia/Sydney", 14),
        ("getDayOfMonth", "US/Central", 12),
        ("getDayOfMonth", "+11:00", 13),
        ("getDayOfWeek", "UTC", 5),
        ("getFullYear", "-09:30", 2009),
        ("getHours", "02:00", 1),
        ("getMinutes", "Asia/Kathmandu", 16),
        ("getSeconds", "-00:00", 30),
    ],
)
def test_timestamp_accessors(name: str, tz: str | None, expected: int) -> None:
    args = () if tz is None else (tz,)
    assert m(name, ts(_T), *args) == expected


def test_timestamp_accessors_edge_cases() -> None:
    assert m("getMilliseconds", ts("2009-02-13T23:31:20.123456789Z")) == 123
    assert m("getDayOfMonth", ts("2009-02-13T02:00:00Z"), "-02:30") == 11
    assert m("getDayOfMonth", ts("2009-02-13T02:00:00Z"), "America/St_Johns") == 11
    assert m("getHours", ts("1969-12-31T23:00:00Z")) == 23  # before the epoch
    fails(MEMBERS["getHours"], ts(_T), "Mars/Olympus", match="time zone")
    fails(MEMBERS["getHours"], ts(_T), "+25:00", match="time zone")
    fails(MEMBERS["getHours"], ts(_T), 1, match="no such overload")
    fails(MEMBERS["getFullYear"], dur("1h"), match="no such overload")
    fails(MEMBERS["getFullYear"], ts(_T), "UTC", "x", match="no such overload")


@pytest.mark.parametrize(
    ("name", "expected_first", "expected_last"),
    [
        # the range's first instant seen from -10:00 is 0000-12-31T14:00 (a Sunday, year 0 is leap);
        # its last seen from +14:00 is 10000-01-01T13:59:59 (a Saturday): Go's time (cel-go) says so
        ("getFullYear", 0, 10000),
        ("getMonth", 11, 0),
        ("getDate", 31, 1),
        ("getDayOfMonth", 30, 0),
        ("getDayOfYear", 365, 0),
        ("getDayOfWeek", 0, 6),
        ("getHours", 14, 13),
    ],
)
def test_timestamp_accessors_beyond_years_1_and_9999(
    name: str, expected_first: int, expected_last: int
) -> None:
    assert m(name, ts("0001-01-01T00:00:00Z"), "-10:00") == expected_first
    assert m(name, ts("9999-12-31T23:59:59.999999999Z"), "+14:00") == expected_last
    assert m(name, ts("9999-12-31T23:59:59.999999999Z"), "Pacific/Kiritimati") == expected_last


def test_duration_accessors() -> None:
    assert m("getHours", dur("10000s")) == 2
    assert m("getMinutes", dur("3730s")) == 62
    assert m("getSeconds", dur("3730s")) == 3730
    assert m("getMilliseconds", dur("123.321456789s")) == 321
    assert m("getHours", dur("-90m")) == -1
    assert m("getMilliseconds", dur("-1.5s")) == -500
    fails(MEMBERS["getHours"], dur("1h"), "UTC", match="no such overload")


# --- string extension library --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target", "args", "expected"),
    [
        ("charAt", "tacocat", (3,), "o"),
        ("charAt", "tacocat", (7,), ""),
        ("charAt", "©αT", (1,), "α"),
        ("indexOf", "tacocat", ("",), 0),
        ("indexOf", "tacocat", ("ac",), 1),
        ("indexOf", "tacocat", ("none",), -1),
        ("indexOf", "tacocat", ("", 3), 3),
        ("indexOf", "ta©o©αT", ("©", 3), 4),
        ("indexOf", "ta©o©αT", ("©α", 5), -1),
        ("lastIndexOf", "", ("@@",), -1),
        ("lastIndexOf", "tacocat", ("",), 7),
        ("lastIndexOf", "tacocat", ("a", 3), 1),
        ("lastIndexOf", "ta©o©αT", ("©α", 4), 4),
        ("lastIndexOf", "bananananana", ("nana", 7), 6),
        ("lowerAscii", "TacoCÆt Xii", (), "tacocÆt xii"),
        ("upperAscii", "tacoCαt", (), "TACOCαT"),
        ("replace", "{0} days {0} hours", ("{0}", "2"), "2 days 2 hours"),
        ("replace", "{0} days {0} hours", ("{0}", "2", 1), "2 days {0} hours"),
        ("replace", "aaa", ("a", "b", -1), "bbb"),
        ("replace", "aaa", ("a", "b", 0), "aaa"),
        ("split", "hello world", (" ",), ["hello", "world"]),
        ("split", "hello world events!", (" ", 0), []),
        ("split", "hello world events!", (" ", 1), ["hello world events!"]),
        ("split", "hello world events!", (" ", 2), ["hello", "world events!"]),
        ("split", "o©o©o©o", ("©", -1), ["o", "o", "o", "o"]),
        ("split", "abc", ("",), ["a", "b", "c"]),
        ("split", "abc", ("", 2), ["a", "bc"]),
        ("substring", "tacocat", (4,), "cat"),
        ("substring", "tacocat", (7,), ""),
        ("substring", "ta©o©αT", (2, 6), "©o©α"),
        ("trim", " \f\n\r\t\vtext  ", (), "text"),
        ("trim", "\u0085\u00a0\u1680text\u2000\u3000", (), "text"),
        ("trim", "\u180etext\u200b\ufeff", (), "\u180etext\u200b\ufeff"),
        ("trim", "\x1ctext", (), "\x1ctext"),
        ("join", ["x", "y"], (), "xy"),
        ("join", ("x", "y"), ("-",), "x-y"),
        ("join", [], ("-",), ""),
        ("reverse", "Ta©oCαt", (), "tαCo©aT"),
    ],
)
def test_string_ext(name: str, target: Any, args: tuple[Any, ...], expected: Any) -> None:
    assert m(name, target, *args) == expected


@pytest.mark.parametrize(
    ("name", "target", "args", "message"),
    [
        ("charAt", "tacocat", (30,), "index out of range: 30"),
        ("charAt", "tacocat", (-1,), "index out of range: -1"),
        ("indexOf", "tacocat", ("a", 30), "index out of range: 30"),
        ("lastIndexOf", "tacocat", ("a", -1), "index out of range: -1"),
        ("lastIndexOf", "tacocat", ("a", 30), "index out of range: 30"),
        ("substring", "tacocat", (40,), "index out of range: 40"),
        ("substring", "tacocat", (-1,), "index out of range: -1"),
        ("substring", "tacocat", (1, 50), "index out of range: 50"),
        ("substring", "tacocat", (49, 50), "index out of range: 49"),
        ("substring", "tacocat", (4, 3), "invalid substring range. start: 4, end: 3"),
        ("join", ["a", 1], (), "only strings"),
    ],
)
def test_string_ext_value_errors(name: str, target: Any, args: tuple[Any, ...], message: str) -> None:
    fails(MEMBERS[name], target, *args, match=message)


@pytest.mark.parametrize(
    ("name", "target", "args"),
    [
        ("charAt", 42, (2,)),
        ("charAt", "hello", (True,)),
        ("charAt", "hello", ()),
        ("indexOf", "hello", (True,)),
        ("indexOf", "42", ("4", "0")),
        ("indexOf", "42", ("4", 0, 1)),
        ("lastIndexOf", 42, ("4",)),
        ("replace", "42", (2, 1)),
        ("replace", "42", ("2", "1", "1")),
        ("replace", "42", ("2", "1", 1, False)),
        ("split", 42, ("2",)),
        ("split", "42", ("2", "1")),
        ("substring", "hello", (1, 2, 3)),
        ("substring", "tacocat", (True, 3)),
        ("substring", "tacocat", (0, False)),
        ("lowerAscii", 1, ()),
        ("trim", "a", ("b",)),
        ("join", "ab", ()),
        ("join", ["a"], (1,)),
        ("reverse", b"ab", ()),
        ("format", "%s", ("a",)),
    ],
)
def test_string_ext_type_errors(name: str, target: Any, args: tuple[Any, ...]) -> None:
    fails(MEMBERS[name], target, *args, match="no such overload")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("first\nsecond", '"first\\nsecond"'),
        ("bell\a", '"bell\\a"'),
        ('mid " quote', '"mid \\" quote"'),
        ("back\\slash", '"back\\\\slash"'),
        ("printable unicode😀", '"printable unicode😀"'),
        ("", '""'),
        ("\x01", '"\\u0001"'),
    ],
)
def test_quote(text: str, expected: str) -> None:
    assert g("strings.quote", text) == expected


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        ("no substitution", [], "no substitution"),
        ("%%%s%%", ["text"], "%text%"),
        ("%d %s", [1, "A"], "1 A"),
        ("%.3f", [1.2345], "1.234"),
        ("%b", [5], "101"),
        ("%b", [UInt(64)], "1000000"),
        ("%b", [True], "1"),
        ("%o", [11], "13"),
        ("%x", [30], "1e"),
        ("%X", [30], "1E"),
        ("%x", [-255], "-ff"),
        ("%x", ["Hello world!"], "48656c6c6f20776f726c6421"),
        ("%X", [b"byte string"], "6279746520737472696E67"),
        ("%.6e", [1052.032911275], "1.052033e+03"),
        ("%f", [2], "2.000000"),
        ("%e", [UInt(3)], "3.000000e+00"),
        ("%e", [math.nan], "NaN"),
        ("%f", [math.inf], "Infinity"),
        ("%d", [-math.inf], "-Infinity"),
        ("%d", [2.5], "2.5"),
        ("%.0f", [2.5], "2"),
        ("%.3f", [-123.4999], "-123.500"),
        ("%s", [None], "null"),
        ("%s", [b"xyz"], "xyz"),
        ("%s", [CelType("string")], "string"),
        ("%s", [ts("2023-02-03T23:31:20+00:00")], "2023-02-03T23:31:20Z"),
        ("%s", [dur("1h45m47s")], "6347s"),
        ("%s", [1e20], "100000000000000000000"),
        ("%s", [["abc", 3.14, None, [9, 8]]], "[abc, 3.14, null, [9, 8]]"),
        ("%s", [{"strKey": "x", 6: dur("422s"), True: 42}], "{6: 422s, strKey: x, true: 42}"),
        ("%s", [[math.nan, math.inf, -math.inf]], "[NaN, Infinity, -Infinity]"),
    ],
)
def test_format(template: str, args: list[Any], expected: str) -> None:
    assert m("format", template, args) == expected


@pytest.mark.parametrize(
    ("template", "args", "message"),
    [
        ("%a", [1], 'unrecognized formatting clause "a"'),
        ("%E", [0.5], 'unrecognized formatting clause "E"'),
        ("trailing %", [], 'unrecognized formatting clause ""'),
        ("%.f", [1.0], "missing precision"),
        ("%d %d %d", [0, 1], "index 2 out of range"),
        ("%b", ["abc"], "only integers and bools can be formatted as binary, was given string"),
        (
            "%d",
            [dur("30m2s")],
            "decimal clause can only be used on integers, was given google.protobuf.Duration",
        ),
        ("%o", ["a string"], "octal clause can only be used on integers, was given string"),
        ("%x", [0.5], "only integers, byte buffers, and strings can be formatted as hex, was given double"),
        ("%e", [None], "scientific clause can only be used on doubles, was given null_type"),
        ("%f", [None], "fixed-point clause can only be used on doubles, was given null_type"),
    ],
)
def test_format_errors(template: str, args: list[Any], message: str) -> None:
    fails(MEMBERS["format"], template, args, match=message)


def test_no_python_exception_escapes_named_functions() -> None:
    # Hostile inputs: lone surrogates, unhashable keys, wrong arity.
    fails(GLOBALS["bytes"], "\ud800")
    fails(MEMBERS["matches"], "\ud800", "a")
    fails(MEMBERS["format"], "%x", ["\ud800"])
    fails(GLOBALS["int"])
    fails(MEMBERS["getHours"])
