"""CEL map keys are not Python dict keys: `true` and `1` are two keys (Python has True == 1), while
1, 1u and 1.0 name one key. See dsl/expr/values.py (BoolKey, map_find, map_add)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

import dsl.expr as cel
from dsl.expr import EvaluationError, UInt
from dsl.expr.functions import GLOBALS
from dsl.expr.values import FALSE_KEY, MISSING, TRUE_KEY, BoolKey, map_add, map_find, map_items, map_keys


def run(source: str, bindings: dict[str, Any] | None = None) -> Any:
    return cel.compile(source).evaluate(bindings)


def checked(source: str, declarations: dict[str, str] | None = None) -> Any:
    return cel.compile(source, declarations or {}).evaluate({})


MIXED = "{1: 'a', true: 'b'}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (f"size({MIXED})", 2),
        (f"{MIXED}[true]", "b"),
        (f"{MIXED}[1]", "a"),
        (f"{MIXED}[1u]", "a"),
        (f"{MIXED}[1.0]", "a"),
        ("{true: 'b', 1: 'a'}[true]", "b"),  # the bool first: it moves aside when 1 arrives
        ("{true: 'b', 1: 'a'}[1]", "a"),
        (f"true in {MIXED}", True),
        (f"false in {MIXED}", False),
        (f"0 in {MIXED}", False),
        ("{0: 'a', false: 'b', 1: 'c', true: 'd'}[false]", "b"),
        ("{0: 'a', false: 'b', 1: 'c', true: 'd'}[0]", "a"),
        ("{false: 1, 0: 2}[0] * 10 + {false: 1, 0: 2}[false]", 21),
        (f"{MIXED} == {{true: 'b', 1u: 'a'}}", True),
        (f"{MIXED} == {{true: 'a', 1: 'b'}}", False),
        (f"{MIXED} == {{true: 'b', 2: 'a'}}", False),
        (f"{MIXED}.all(k, k == 1 || k == true)", True),
        (f"{MIXED}.exists_one(k, k == true)", True),
        (f"{MIXED}.map(k, type(k))", [cel.CelType("int"), cel.CelType("bool")]),
        (f"{MIXED}.filter(k, type(k) == bool)", [True]),
        (f"{MIXED}.all(k, v, {MIXED}[k] == v)", True),
        (f"{MIXED}.transformMap(k, v, v + '!')[true]", "b!"),
        (f"{MIXED}.transformMap(k, v, v + '!')[1]", "a!"),
        (f"{MIXED}.transformMap(k, v, k != 1, v)", {True: "b"}),
        (f"[{MIXED}].map(m, m[true] + m[1])", ["ba"]),
        (f"'%s'.format([{MIXED}])", "{1: a, true: b}"),
        # the general comprehension (not a macro fast path) iterates unwrapped keys too
        (f"{MIXED}.transformList(k, v, k)", [1, True]),
    ],
)
def test_bool_and_int_keys_are_distinct(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected
    if type(expected) is list:  # True == 1 in Python: the element types must match too
        assert [type(x) for x in result] == [type(x) for x in expected]


def test_mixed_map_type_checks_and_evaluates() -> None:
    assert checked(f"{MIXED}[true] + {MIXED}[1]") == "ba"


@pytest.mark.parametrize(
    "source",
    [
        "{1: 'a', 1u: 'b'}",
        "{true: 'a', true: 'b'}",
        "{1: 'a', true: 'b', true: 'c'}",
        "{true: 'a', 1: 'b', 1u: 'c'}",
    ],
)
def test_repeated_keys_still_fail(source: str) -> None:
    with pytest.raises(EvaluationError, match="repeated key"):
        run(source)


def test_repeated_bool_key_is_named_as_cel_writes_it() -> None:
    with pytest.raises(EvaluationError, match="repeated key: true"):
        run("{true: 1, true: 2}")


def test_map_insert_refuses_an_existing_key_only() -> None:
    insert = GLOBALS["cel.@mapInsert"]  # transformMap's step; not callable from source text
    mixed = run(MIXED)
    assert insert(mixed, 2, "c")[2] == "c"
    assert insert({1: "a"}, True, "b") == {1: "a", TRUE_KEY: "b"}
    for key in (True, UInt(1), 1):
        with pytest.raises(EvaluationError, match="already exists"):
            insert(mixed, key, "c")


def test_plain_maps_keep_plain_keys() -> None:
    # only a bool beside an equal int or uint is wrapped: Python callers see plain dicts otherwise
    assert run("{true: 1, 2: 3, 'x': 4}") == {True: 1, 2: 3, "x": 4}
    assert [type(k) for k in run("{true: 1, 2: 3}")] == [bool, int]


def test_bindings_with_bool_keys() -> None:
    assert run("m[true]", {"m": {True: "t"}}) == "t"
    with pytest.raises(EvaluationError, match="no such key"):
        run("m[1]", {"m": {True: "t"}})
    with pytest.raises(EvaluationError, match="no such key"):
        run("m[true]", {"m": {1: "one"}})
    assert run("m.map(k, type(k) == bool)", {"m": {True: "t", UInt(2): "u"}}) == [True, False]


def test_conversion_round_trip() -> None:
    value = run(MIXED)
    assert cel.from_cel(value) == {"1": "a", "true": "b"}
    again = cel.to_cel(value)
    assert run("m[true] + m[1]", {"m": again}) == "ba"
    with pytest.raises(TypeError, match="twice"):
        cel.to_cel({True: 1, TRUE_KEY: 2})


def test_bool_key_singletons() -> None:
    assert BoolKey(True) is TRUE_KEY and BoolKey(False) is FALSE_KEY
    assert copy.deepcopy(TRUE_KEY) is TRUE_KEY
    assert pickle.loads(pickle.dumps({1: 0, TRUE_KEY: 1})) == {1: 0, TRUE_KEY: 1}
    assert TRUE_KEY != True and TRUE_KEY != 1  # noqa: E712 - the point: equal to neither


def test_map_primitives() -> None:
    m: dict[Any, Any] = {}
    assert map_add(m, True, "t") and map_add(m, UInt(1), "u") and not map_add(m, 1, "i")
    assert not map_add(m, True, "again") and not map_add(m, TRUE_KEY, "again")
    assert map_find(m, True) == "t" and map_find(m, 1) == "u" and map_find(m, 1.0) == "u"
    assert map_find(m, 1.5) is MISSING and map_find(m, False) is MISSING and map_find(m, [1]) is MISSING
    assert list(map_keys(m)) == [True, UInt(1)]
    assert list(map_items(m)) == [(True, "t"), (UInt(1), "u")]
