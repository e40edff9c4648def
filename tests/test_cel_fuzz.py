"""Bad input: any string given to `compile` (then `evaluate`) ends in a value or one of the three
expression errors, never another exception, a hang or a crash.

Each example is bounded in size; a watchdog alarm turns a hang into a test failure instead of stalling
the suite (it is a liveness guard, not a timing assertion).
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl.expr as cel

EXPRESSION_ERRORS = (cel.ExpressionSyntaxError, cel.ExpressionTypeError, cel.EvaluationError)
# What the engine's last-resort handlers make of an exception nobody expected ("TypeError: ...").
LEAKED = re.compile(r"^(cannot compile expression: )?(\w+(Error|Exception|Warning)|numeric overflow)\b")
WATCHDOG_SECONDS = 20
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

DECLARATIONS = {"x": "dyn", "a": "map(string, dyn)", "xs": "list(int)", "s": "string"}
BINDINGS: dict[str, Any] = {"x": 1, "a": {"a": {"a": 1}, "b": [1, 2]}, "xs": [1, 2, 3], "s": "text"}

BUILTIN_SEEDS = [
    "1 + 2 * 3 - 4 / 5 % 6",
    "x > 1 && a.b.exists(i, i == 2) || !(s in ['a', 'b'])",
    "xs.all(v, v > 0) ? xs.map(v, v * 2) : xs.filter(v, v % 2 == 0)",
    "{'k': [1u, 2.5, b'\\x00', null, true]}['k'][1]",
    "has(a.b) && size(s) == 4 && s.startsWith('te') && s.matches('^t.*t$')",
    "timestamp('2024-01-01T00:00:00Z') + duration('1h30m') > timestamp('2024-01-01T01:00:00Z')",
    "r'raw\\n' + '''triple\nquoted''' + \"\\u00e9\\U0001F600\"",
    "int('12') + uint(3).int() + double('1e3') + 0x1F + -9223372036854775808",
    "type(x) == int && dyn(x) == 1.0 && string(x) == '1'",
    "xs.exists_one(v, v == 2) && [[1], [2]].map(l, l[0]).size() == 2",
    "'a,b,c'.split(',').join('-').upperAscii().replace('-', '+').indexOf('+')",
]

TOKENS = [
    "x",
    "a",
    "xs",
    "s",
    "1",
    "0u",
    "1.5",
    "-",
    "+",
    "*",
    "/",
    "%",
    "!",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "?",
    ":",
    "in",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "'str'",
    "b'by'",
    "true",
    "null",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "size",
    "int",
    "string",
    "type",
    "dyn",
    "\n",
    "matches",
    "timestamp",
    "duration",
    "'''",
    '"',
    "\\",
    "r'",
    "0x",
    "1e",
    "9223372036854775808",
    ".a",
]


def _conformance_seeds() -> list[str]:
    directory = Path(
        os.environ.get(
            "CEL_CONFORMANCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "cel-conformance"
        )
    )
    seeds: list[str] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        document = json.loads(path.read_text(encoding="utf-8"))
        seeds += [
            t["expr"]
            for sec in document.get("section", [])
            for t in sec.get("test", [])
            if len(t["expr"]) < 300
        ]
    return seeds


SEEDS = BUILTIN_SEEDS + _conformance_seeds()


class Hang(BaseException):
    """Raised by the watchdog; a BaseException so the engine's own `except Exception` cannot hide it."""


@contextmanager
def watchdog(seconds: int = WATCHDOG_SECONDS) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(
    source: str, declarations: Mapping[str, str] | None = None, bindings: Mapping[str, Any] | None = None
) -> str:
    """Compile and evaluate; the name of the result kind. Any other exception propagates (a failure)."""
    try:
        with watchdog():
            try:
                program = cel.compile(source, declarations)
                program.evaluate(bindings or {})
            except EXPRESSION_ERRORS as error:
                assert isinstance(error.message, str)
                # the catch-all in compile/evaluate wraps any stray Python exception: that is a bug
                assert not LEAKED.match(error.message), f"{error.message} for {source[:500]!r}"
                return type(error).__name__
    except Hang as hang:
        # An ordinary failure, so hypothesis shrinks the input and reports it.
        raise AssertionError(f"{hang} for {source[:500]!r} (declarations={declarations})") from None
    return "value"


def check_both_modes(source: str) -> None:
    outcome(source)
    outcome(source, DECLARATIONS, BINDINGS)


# --- strategies ----------------------------------------------------------------------------------------


@st.composite
def mutated_seed(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(TOKENS) | st.characters(max_codepoint=0x10FFFF) | st.text(max_size=3))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if operation == "insert":
            text = text[:position] + piece + text[position:]
        elif operation == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 8)) :]
        elif operation == "replace":
            text = text[:position] + piece + text[position + len(piece) :]
        else:
            text = text[:position] + text[position:][:10] * draw(st.integers(2, 50)) + text[position:]
    return text


token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).flatmap(
    lambda parts: st.sampled_from([" ".join(parts), "".join(parts)])
)

WRAPPERS = [
    ("(", ")"),
    ("[", "]"),
    ("!", ""),
    ("-", ""),
    ("{1: ", "}"),
    ("size(", ")"),
    ("xs.map(v, ", ")"),
    ("[1].all(v, ", ")"),
]


@st.composite
def nested(draw: st.DrawFn) -> str:
    opening, closing = draw(st.sampled_from(WRAPPERS))
    depth = draw(st.integers(1, 3000))
    core = draw(st.sampled_from(["1", "true", "x", "''", "[]"]))
    return opening * depth + core + closing * draw(st.sampled_from([depth, max(depth - 1, 0), depth + 1]))


# --- properties ----------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=120))
def test_random_text(source: str) -> None:
    check_both_modes(source)


@FUZZ
@given(token_soup)
def test_token_soup(source: str) -> None:
    check_both_modes(source)


@settings(FUZZ, max_examples=250)
@given(mutated_seed())
def test_mutated_valid_expressions(source: str) -> None:
    check_both_modes(source)


@settings(FUZZ, max_examples=40)
@given(nested())
def test_deep_nesting(source: str) -> None:
    check_both_modes(source)


@pytest.mark.parametrize(
    "source",
    [
        "(" * 5000 + "1" + ")" * 5000,
        "(" * 100_000,
        ")" * 100_000,
        "!" * 10_000 + "true",
        "-" * 10_000 + "1",
        "[" * 5000 + "]" * 5000,
        "{" * 5000,
        "x" + ".a" * 10_000,
        "a" + ".a" * 10_000,
        "{'a': 1}" + ".a" * 10_000,
        "1" + " + 1" * 20_000,
        "true" + " && true" * 20_000,
        "1 == 1 ? " * 5000 + "1" + " : 2" * 5000,
        "[" + ", ".join(["1"] * 100_000) + "]",
        "{" + ", ".join(f"{i}: {i}" for i in range(20_000)) + "}",
        "x" + ".f()" * 5000,
        "size(" * 5000 + "''" + ")" * 5000,
        "'" + "a" * 100_000 + "'",
        "'" + "\\" * 9999 + "'",
        "'unterminated",
        '"""' * 3,
        "b'\\xff\\x00' + b'\\377'",
        "'\\ud800'",
        "\x00",
        "1" * 10_000,
        "0x" + "f" * 1000,
        "1e99999",
        "1." + "0" * 5000,
        "xs.map(v, xs.map(w, xs.map(y, [v, w, y])))",
        "[[[[[[[[[[1]]]]]]]]]].map(l, l.map(m, m.map(n, n)))",
        "a.all(k, a.all(j, a[k] == a[j]))",
    ],
    ids=lambda s: (s[:30] + f"...[{len(s)}]") if len(s) > 30 else s,
)
def test_pathological_inputs(source: str) -> None:
    check_both_modes(source)
