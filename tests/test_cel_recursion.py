"""Expressions at the parser's nesting limit compile and evaluate under Python's default recursion limit,
and importing or using the CEL engine leaves that process-wide limit alone.

Each check runs in a fresh child process, whose recursion limit is the interpreter's default (1000):
the test process itself may have been changed by other libraries (pytest plugins, hypothesis).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.charter_cli import REPO, child_env

# Run in the child: every shape at exactly MAX_DEPTH levels compiles (checked and unchecked) and evaluates;
# one level more is refused as a syntax error; the recursion limit never moves.
CHILD = r"""
import json, sys

DEFAULT = sys.getrecursionlimit()
import dsl.expr as cel
from dsl.expr import EvaluationError, ExpressionSyntaxError, ExpressionTypeError
from dsl.expr.parser import MAX_DEPTH

assert sys.getrecursionlimit() == DEFAULT, "import dsl.expr changed the recursion limit"


def nested_dict(levels):
    v = 1
    for _ in range(levels):
        v = {"a": v}
    return v


def nested_list(levels):
    v = 1
    for _ in range(levels):
        v = [v]
    return v


def chain(op, d):  # the longest chain of a left-associative binary operator: d - 1 operators
    return "x" + f" {op} x" * (d - 1)


def wrap(open_, leaf, close, d):  # d - 1 nested wrappers around a leaf: depth d
    return open_ * (d - 1) + leaf + close * (d - 1)


def macros(d):  # each all() adds 2 levels (comprehension, loop step) above its predicate
    k = (d - 1) // 2
    return "l.all(a, " * k + "a > 0" * (d % 2 == 0) + "true" * (d % 2 == 1) + ")" * k


INT = {"x": "int"}
BOOL = {"x": "bool", "b": "bool"}
# name -> (source at depth d, bindings, declarations, expected value at depth MAX_DEPTH)
N = MAX_DEPTH
SHAPES = {
    "not": (lambda d: "!" * (d - 1) + "x", {"x": True}, BOOL, (N - 1) % 2 == 0),
    "negate": (lambda d: "-" * (d - 1) + "x", {"x": 1}, INT, (-1) ** (N - 1)),
    "not_parenthesised": (lambda d: wrap("!(", "x", ")", d), {"x": True}, BOOL, (N - 1) % 2 == 0),
    "member": (lambda d: "m" + ".a" * (d - 1), {"m": nested_dict(N - 1)}, {"m": "dyn"}, 1),
    "has": (lambda d: "has(m" + ".a" * (d - 1) + ")", {"m": nested_dict(N - 1)}, {"m": "dyn"}, True),
    "member_of_call": (lambda d: "dyn(m)" + ".a" * (d - 2), {"m": nested_dict(N - 2)}, {"m": "dyn"}, 1),
    "index": (lambda d: "l" + "[0]" * (d - 1), {"l": nested_list(N - 1)}, {"l": "dyn"}, 1),
    "method": (lambda d: "s" + ".trim()" * (d - 1), {"s": " a "}, {"s": "string"}, "a"),
    "call": (lambda d: wrap("string(", "x", ")", d), {"x": 7}, INT, "7"),
    "method_with_args": (lambda d: wrap("s.replace(s, ", "s", ")", d), {"s": "a"}, {"s": "string"}, "a"),
    "list": (lambda d: wrap("[", "x", "]", d), {"x": 1}, INT, nested_list(N - 1)),
    "list_pairs": (lambda d: wrap("[x, ", "x", "]", d), {"x": 1}, INT, None),
    "constant_list": (lambda d: wrap("[", "1", "]", d), {}, {}, nested_list(N - 1)),
    "map": (lambda d: wrap("{'a': ", "x", "}", d), {"x": 1}, INT, nested_dict(N - 1)),
    "ternary": (lambda d: "x ? b : " * (d - 1) + "b", {"x": False, "b": True}, BOOL, True),
    "ternary_condition": (lambda d: wrap("(", "x", " ? x : b)", d), {"x": False, "b": True}, BOOL, True),
    "plus": (lambda d: chain("+", d), {"x": 1}, INT, N),
    "minus": (lambda d: chain("-", d), {"x": 1}, INT, 2 - N),
    "times": (lambda d: chain("*", d), {"x": 1}, INT, 1),
    "string_concat": (lambda d: chain("+", d), {"x": "a"}, {"x": "string"}, "a" * N),
    "and": (lambda d: chain("&&", d), {"x": True}, BOOL, True),
    "or": (lambda d: chain("||", d), {"x": False}, BOOL, False),
    "equals": (lambda d: chain("==", d), {"x": True}, BOOL, True),
    "not_equals": (lambda d: chain("!=", d), {"x": True}, BOOL, (N - 1) % 2 == 0),
    "deep_lists_equal": (
        lambda d: wrap("[", "x", "]", d - 1) + " == " + wrap("[", "x", "]", d - 1), {"x": 1}, INT, True,
    ),
    "macros": (macros, {"l": [1]}, {"l": "list(int)"}, True),
    "binds": (lambda d: "cel.bind(a, x, " * (d - 1) + "a" + ")" * (d - 1), {"x": 3}, INT, 3),
    "member_of_loop_variable": (
        lambda d: "l.all(v, v" + ".a" * (d - 4) + " == 1)", {"l": [nested_dict(N - 4)]}, {"l": "list(dyn)"}, True,
    ),
}

checked = {}
for name, (make, bindings, declarations, expected) in SHAPES.items():
    source = make(N)
    try:
        cel.compile(make(N + 1))
        raise AssertionError(f"{name}: one level more than MAX_DEPTH was accepted")
    except ExpressionSyntaxError as e:
        assert "nests too deeply" in e.message, (name, e.message)
    for decls in (declarations, None):
        try:
            program = cel.compile(source, decls)
            value = program.evaluate(bindings)
        except Exception as e:
            raise AssertionError(f"{name} (checked: {decls is not None}): {e}") from None
        if expected is not None:
            assert value == expected, (name, str(value)[:80])
    checked[name] = True

# errors from the bottom of a deep expression come out as located errors, not RecursionError
try:
    cel.compile(wrap("string(", "x / 0", ")", N - 1), INT).evaluate({"x": 1})
    raise AssertionError("no error")
except EvaluationError as e:
    assert "division by zero" in e.message, e.message
try:
    cel.compile(wrap("[", "x", "]", N - 2) + " + 1", INT)
    raise AssertionError("no error")
except ExpressionTypeError as e:
    assert "no matching overload" in e.message, e.message

assert sys.getrecursionlimit() == DEFAULT, "compiling or evaluating changed the recursion limit"
print(json.dumps({"limit": DEFAULT, "shapes": sorted(checked)}))
"""


def test_nesting_limit_under_the_default_recursion_limit() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["limit"] == 1000  # the interpreter's default: nothing raised it
    assert len(result["shapes"]) >= 20


WORKFLOW = """\
charter: "1.0"
name: deep-expressions
input:
  type: object
  properties:
    x: {type: integer}
vars:
  total: 0
  same: []
steps:
  - id: first
    set: {total: "${{ %s }}"}
  - id: second
    set: {same: "${{ %s }}"}
output:
  total: "${{ vars.total }}"
  same: "${{ vars.same }}"
"""


def test_workflow_with_expressions_at_the_nesting_limit(tmp_path: Path) -> None:
    """The workflow compiler and the interpreter run such expressions in a plain `charter run`."""
    from dsl.expr.parser import MAX_DEPTH

    total = "input.x" + " + input.x" * (MAX_DEPTH - 2)  # `input.x` is a two-level select chain
    # `vars.total` read at the bottom of a deep list literal
    same = "[" * (MAX_DEPTH - 2) + "vars.total" + "]" * (MAX_DEPTH - 2)
    path = tmp_path / "deep.yaml"
    path.write_text(WORKFLOW % (total, same), encoding="utf-8")
    script = textwrap.dedent(
        """
        import runpy, sys
        before = sys.getrecursionlimit()
        sys.argv = ["charter", *sys.argv[1:]]
        try:
            runpy.run_module("cli", run_name="__main__")
        finally:
            assert sys.getrecursionlimit() == before, "the run changed the recursion limit"
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "run", str(path), "--input", '{"x": 2}', "--json"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = json.loads(proc.stdout)["output"]
    assert output["total"] == 2 * (MAX_DEPTH - 1)
    same = output["same"]
    for _ in range(MAX_DEPTH - 2):
        (same,) = same
    assert same == output["total"]
