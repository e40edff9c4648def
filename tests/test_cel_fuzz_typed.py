"""Random well-typed expressions: what type-checks evaluates to a value of the checked type or to an
EvaluationError that is neither "no such overload" (the checker chose an overload the runtime lacks)
nor a Python exception the engine merely wrapped; and the fast paths taken for variables agree
with the library taken for literals (the same expression with each variable replaced by its value).

Expressions are drawn from a seed (printed on failure) by a small generator that knows the types of
the standard and extension functions; edge values (int64 limits, NaN, -0.0, non-ASCII text, empty
strings) are favoured.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl.expr as cel
from dsl.expr import Duration, Timestamp, UInt

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# name -> (declared type, value, literal source)
VARIABLES: dict[str, tuple[str, Any, str]] = {
    "i": ("int", -7, "-7"),
    "j": ("int", 9223372036854775807, "9223372036854775807"),
    "k": ("int", -9223372036854775808, "-9223372036854775808"),
    "u": ("uint", UInt(18446744073709551615), "18446744073709551615u"),
    "v": ("uint", UInt(3), "3u"),
    "d": ("double", -0.0, "-0.0"),
    "e": ("double", 1e308, "1e308"),
    "s": ("string", "héllo 😀", "'héllo 😀'"),
    "t": ("string", "", "''"),
    "b": ("bytes", b"\xff\x00", "b'\\xff\\x00'"),
    "ts": ("timestamp", Timestamp(253402300799 * 10**9), "timestamp('9999-12-31T23:59:59Z')"),
    "du": ("duration", Duration(-(2**63)), "duration('-9223372036.854775808s')"),
    "xs": ("list(int)", [3, -1, 3], "[3, -1, 3]"),
    "ss": ("list(string)", ["b", "", "a"], "['b', '', 'a']"),
    "m": ("map(string, int)", {"a": 1, "": -2}, "{'a': 1, '': -2}"),
}
DECLARATIONS = {name: decl for name, (decl, _, _) in VARIABLES.items()}
BINDINGS = {name: value for name, (_, value, _) in VARIABLES.items()}

LITERALS: dict[str, list[str]] = {
    "int": ["0", "1", "-1", "2", "63", "64", "9223372036854775807", "-9223372036854775808"],
    "uint": ["0u", "1u", "2u", "18446744073709551615u"],
    "double": ["0.0", "-0.0", "1.5", "-2.5", "1e308", "double('nan')", "double('inf')", "0.1"],
    "bool": ["true", "false"],
    "string": ["''", "'a'", "'é😀'", "'A,b,,c'", "'  x '", "'%s-%d'", "'\\u00df'", "'aé'"],
    "bytes": ["b''", "b'a'", "b'\\xff'"],
    "timestamp": [
        "timestamp('2024-02-29T12:00:00Z')",
        "timestamp('0001-01-01T00:00:00Z')",
        "timestamp('9999-12-31T23:59:59.999999999Z')",
    ],
    "duration": ["duration('1h30m')", "duration('-1.5s')", "duration('0s')", "duration('2562047h')"],
    "list(int)": ["[]", "[1, 2]", "[-1, 0, 9223372036854775807]"],
    "list(string)": ["[]", "['a']", "['x', 'é', '']"],
    "map(string, int)": ["{}", "{'a': 1}", "{'x': -1, 'y': 2}"],
}

# type -> productions; `{T}` holes are filled with expressions of type T
PRODUCTIONS: dict[str, list[str]] = {
    "int": [
        "{int} + {int}",
        "{int} - {int}",
        "{int} * {int}",
        "{int} / {int}",
        "{int} % {int}",
        "-{int}",
        "int({uint})",
        "int({double})",
        "int({string})",
        "int({timestamp})",
        "size({string})",
        "size({bytes})",
        "{list(int)}.size()",
        "size({map(string, int)})",
        "{list(int)}[{int}]",
        "{map(string, int)}[{string}]",
        "{string}.indexOf({string})",
        "{string}.indexOf({string}, {int})",
        "{string}.lastIndexOf({string}, {int})",
        "math.abs({int})",
        "math.sign({int})",
        "math.bitAnd({int}, {int})",
        "math.bitNot({int})",
        "math.bitShiftLeft({int}, {int})",
        "math.bitShiftRight({int}, {int})",
        "{bool} ? {int} : {int}",
        "{timestamp}.getHours()",
        "{timestamp}.getFullYear({tz})",
        "{timestamp}.getDayOfYear({tz})",
        "{timestamp}.getDayOfWeek()",
        "{duration}.getMinutes()",
        "{duration}.getMilliseconds()",
        "cel.bind(q, {int}, q * q)",
        "{list(int)}.map(x, x + {int}).size()",
    ],
    "uint": [
        "{uint} + {uint}",
        "{uint} - {uint}",
        "{uint} * {uint}",
        "{uint} / {uint}",
        "{uint} % {uint}",
        "uint({int})",
        "uint({double})",
        "uint({string})",
        "math.bitNot({uint})",
        "math.bitShiftRight({uint}, {int})",
        "math.bitOr({uint}, {uint})",
        "{bool} ? {uint} : {uint}",
    ],
    "double": [
        "{double} + {double}",
        "{double} - {double}",
        "{double} * {double}",
        "{double} / {double}",
        "-{double}",
        "double({int})",
        "double({uint})",
        "double({string})",
        "math.sqrt({double})",
        "math.round({double})",
        "math.ceil({double})",
        "math.trunc({double})",
        "math.abs({double})",
        "math.sign({double})",
        "{bool} ? {double} : {double}",
    ],
    "bool": [
        "{int} == {int}",
        "{int} < {double}",
        "{uint} >= {int}",
        "{double} != {double}",
        "{string} < {string}",
        "{bytes} <= {bytes}",
        "{timestamp} > {timestamp}",
        "{duration} == {duration}",
        "{list(int)} == {list(int)}",
        "{map(string, int)} == {map(string, int)}",
        "{bool} && {bool}",
        "{bool} || {bool}",
        "!{bool}",
        "{int} in {list(int)}",
        "{string} in {map(string, int)}",
        "{string} in {list(string)}",
        "{string}.startsWith({string})",
        "{string}.contains({string})",
        "{string}.matches({regex})",
        "has({map(string, int)}.a)",
        "{list(int)}.all(x, x > {int})",
        "{list(int)}.exists(x, {int} / x > 0)",
        "{list(int)}.exists_one(x, x == {int})",
        "{map(string, int)}.all(key, key.size() < {int})",
        "math.isNaN({double})",
        "bool({string})",
        "sets.contains({list(int)}, {list(int)})",
        "sets.intersects({list(string)}, {list(string)})",
        "{bool} ? {bool} : {bool}",
    ],
    "string": [
        "{string} + {string}",
        "string({int})",
        "string({uint})",
        "string({double})",
        "string({bytes})",
        "string({timestamp})",
        "string({duration})",
        "string({bool})",
        "{string}.substring({int})",
        "{string}.substring({int}, {int})",
        "{string}.charAt({int})",
        "{string}.replace({string}, {string})",
        "{string}.replace({string}, {string}, {int})",
        "{string}.lowerAscii()",
        "{string}.upperAscii()",
        "{string}.trim()",
        "{string}.reverse()",
        "{list(string)}.join({string})",
        "{string}.format([{int}, {double}])",
        "'%s %s %s'.format([{list(int)}, {map(string, int)}, {bytes}])",
        "'%.3f %e %x %o %b'.format([{double}, {double}, {int}, {uint}, {int}])",
        "strings.quote({string})",
        "base64.encode({bytes})",
        "{list(string)}[{int}]",
        "{bool} ? {string} : {string}",
    ],
    "bytes": ["{bytes} + {bytes}", "bytes({string})", "base64.decode({string})"],
    "timestamp": [
        "{timestamp} + {duration}",
        "{duration} + {timestamp}",
        "{timestamp} - {duration}",
        "timestamp({int})",
        "timestamp({string})",
    ],
    "duration": [
        "{duration} + {duration}",
        "{duration} - {duration}",
        "{timestamp} - {timestamp}",
        "duration({string})",
    ],
    "list(int)": [
        "{list(int)} + {list(int)}",
        "[{int}, {int}]",
        "lists.range({int})",
        "{list(int)}.map(x, x * {int})",
        "{list(int)}.filter(x, x % 2 == 0)",
        "{list(int)}.sort()",
        "{list(int)}.distinct()",
        "{list(int)}.reverse()",
        "{list(int)}.slice({int}, {int})",
        "[{list(int)}, {list(int)}].flatten()",
        "{list(int)}.sortBy(x, -x)",
        "{string}.split({string}).map(p, size(p))",
        "{map(string, int)}.map(key, {map(string, int)}[key])",
    ],
    "list(string)": [
        "{string}.split({string})",
        "{string}.split({string}, {int})",
        "{list(string)} + {list(string)}",
        "{map(string, int)}.map(key, key)",
        "{list(string)}.sort()",
        "[{string}]",
    ],
    "map(string, int)": [
        "{{{string}: {int}}}",
        "{map(string, int)}.transformMap(key, val, val + {int})",
        "{map(string, int)}.transformMap(key, val, key.size() > {int}, val)",
    ],
}
REGEXES = ["'^h'", "'(?i)É'", "'\\\\d+'", "'.'", "'^$'", "'\\\\p{L}+'", "'('"]
TIME_ZONES = ["'UTC'", "'-10:00'", "'+14:00'", "'Pacific/Kiritimati'", "'America/New_York'"]

_HOLE = re.compile(
    r"\{(int|uint|double|bool|string|bytes|timestamp|duration|list\(int\)|list\(string\)|"
    r"map\(string, int\)|regex|tz)\}"
)


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def expr(self, type_: str, depth: int) -> tuple[str, str]:
        """(source with variables, the same source with each variable replaced by its value)."""
        if type_ == "regex":
            text = self.rng.choice(REGEXES)
            return text, text
        if type_ == "tz":
            text = self.rng.choice(TIME_ZONES)
            return text, text
        roll = self.rng.random()
        if depth <= 0 or roll < 0.3:
            names = [n for n, (decl, _, _) in VARIABLES.items() if decl == type_]
            if names and self.rng.random() < 0.5:
                name = self.rng.choice(names)
                return name, f"({VARIABLES[name][2]})"
            text = self.rng.choice(LITERALS[type_])
            return text, text
        template = self.rng.choice(PRODUCTIONS[type_])
        with_vars: list[str] = []
        with_values: list[str] = []
        position = 0
        for hole in _HOLE.finditer(template):
            a, b = self.expr(hole.group(1), depth - 1)
            with_vars += [template[position : hole.start()], f"({a})"]
            with_values += [template[position : hole.start()], f"({b})"]
            position = hole.end()
        with_vars.append(template[position:])
        with_values.append(template[position:])
        return "".join(with_vars).replace("{{", "{").replace("}}", "}"), "".join(with_values).replace(
            "{{", "{"
        ).replace("}}", "}")


_RUNTIME_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "uint": (UInt,),
    "double": (float,),
    "bool": (bool,),
    "string": (str,),
    "bytes": (bytes,),
    "google.protobuf.Timestamp": (Timestamp,),
    "google.protobuf.Duration": (Duration,),
}
# what `locate` makes of a Python exception it did not expect: "TypeError: ...", "numeric overflow: ..."
_LEAKED = re.compile(r"^(\w+(Error|Exception|Warning)|numeric overflow)\b")


def _result(program: cel.Program, bindings: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", program.evaluate(bindings)
    except cel.EvaluationError as e:
        return "error", e.message


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_typed(seed: int) -> None:
    gen = Generator(seed)
    type_ = gen.rng.choice(list(PRODUCTIONS))
    source, literal_source = gen.expr(type_, gen.rng.randint(1, 4))
    where = f"seed {seed}: {source}"
    program = cel.compile(source, DECLARATIONS)  # the generator makes well-typed expressions only
    kind, result = _result(program, BINDINGS)
    if kind == "error":
        assert "no such overload" not in result, f"{where}: checked, yet {result}"
        assert not _LEAKED.match(result), f"{where}: a Python exception leaked: {result}"
    else:
        expected = _RUNTIME_TYPES.get(str(program.type))
        if expected is not None:
            assert type(result) in expected, f"{where}: checked as {program.type}, got {result!r}"
        elif str(program.type).startswith("list"):
            assert type(result) is list, f"{where}: checked as {program.type}, got {result!r}"
        elif str(program.type).startswith("map"):
            assert type(result) is dict, f"{where}: checked as {program.type}, got {result!r}"
    literal = _result(cel.compile(literal_source), {})
    if kind == "value":
        assert literal[0] == "value" and _same(result, literal[1]), (
            f"{where}: {result!r} vs literals {literal}"
        )
    else:
        assert literal[0] == "error", f"{where}: error {result!r} vs literals {literal}"


@FUZZ
@given(st.integers(0, 2**32))
def test_well_typed_expressions(seed: int) -> None:
    check_typed(seed)
