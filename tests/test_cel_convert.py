"""Tests of JSON <-> CEL value conversion (dsl/expr/convert.py)."""

from __future__ import annotations

import datetime
import enum
import json
from collections import OrderedDict
from typing import Any

import pytest

from dsl.expr.convert import from_cel, to_cel
from dsl.expr.functions import GLOBALS
from dsl.expr.values import CelType, Duration, Timestamp, UInt

NANOS = 1_000_000_000


class Color(str, enum.Enum):  # noqa: UP042 - the mixin form, whose str() is "Color.RED"
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_to_cel_json_values_pass_through() -> None:
    data = {"a": [1, 2.5, "x", True, None], "b": {"c": {}}}
    converted = to_cel(data)
    assert converted == data
    assert type(converted["a"][3]) is bool


def test_to_cel_tuples_become_lists() -> None:
    converted = to_cel({"t": (1, (2, 3))})
    assert converted == {"t": [1, [2, 3]]}
    assert type(converted["t"]) is list
    assert type(converted["t"][1]) is list


def test_to_cel_datetime_and_timedelta() -> None:
    aware = datetime.datetime(2009, 2, 13, 23, 31, 30, 500000, tzinfo=datetime.UTC)
    assert to_cel(aware) == Timestamp(1234567890 * NANOS + NANOS // 2)
    naive = datetime.datetime(1970, 1, 1, 1, 0, 0)
    assert to_cel(naive) == Timestamp(3600 * NANOS)
    offset = datetime.datetime(1970, 1, 1, 1, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert to_cel(offset) == Timestamp(0)
    assert to_cel(datetime.timedelta(days=1, seconds=1, microseconds=5)) == Duration(86401 * NANOS + 5000)
    assert to_cel(datetime.timedelta(seconds=-1.5)) == Duration(-NANOS - NANOS // 2)


def test_to_cel_subclasses_convert_as_their_base() -> None:
    assert to_cel(Color.RED) == "red"
    assert type(to_cel(Color.RED)) is str
    assert to_cel(Level.HIGH) == 3
    assert type(to_cel(Level.HIGH)) is int
    assert type(to_cel(OrderedDict(a=1))) is dict
    assert to_cel(bytearray(b"ab")) == b"ab"


def test_to_cel_keeps_cel_values() -> None:
    values = [UInt(3), Timestamp(5), Duration(-5), CelType("int"), b"\x00"]
    assert to_cel(values) == values


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        2**63,
        -(2**63) - 1,
        {1.5: "float key"},
        {(1, 2): "tuple key"},
        {"nested": [object()]},
        datetime.date(2020, 1, 1),
        complex(1, 2),
    ],
)
def test_to_cel_rejects_unsupported(value: Any) -> None:
    with pytest.raises(TypeError):
        to_cel(value)


def test_from_cel() -> None:
    value = {
        "u": UInt(7),
        "b": b"\x00\xff",
        "t": GLOBALS["timestamp"]("2009-02-13T23:31:30.25Z"),
        "d": GLOBALS["duration"]("1m1ms"),
        "type": CelType("google.protobuf.Duration"),
        "list": (1, [UInt(2)]),
        "n": None,
        UInt(9): "uint key",
    }
    result = from_cel(value)
    assert result == {
        "u": 7,
        "b": "AP8=",
        "t": "2009-02-13T23:31:30.25Z",
        "d": "60.001s",
        "type": "google.protobuf.Duration",
        "list": [1, [2]],
        "n": None,
        "9": "uint key",
    }
    assert type(result["u"]) is int
    json.dumps(result, allow_nan=False)  # strict JSON


def test_from_cel_gives_strict_json() -> None:
    assert from_cel({1: "a", 10: "b"}) == {"1": "a", "10": "b"}  # keys as JSON has them
    assert from_cel({True: "t", UInt(2): "u"}) == {"true": "t", "2": "u"}
    with pytest.raises(ValueError, match="same JSON text"):
        from_cel({1: "a", "1": "b"})  # no value is dropped without a word
    for double in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match="no JSON form"):
            from_cel([1.0, double])


def test_round_trip() -> None:
    data = {"name": "x", "n": 3, "ratio": 0.5, "tags": ["a"], "ok": False, "none": None}
    assert from_cel(to_cel(data)) == data


def test_from_cel_rejects_non_cel_values() -> None:
    with pytest.raises(TypeError):
        from_cel(object())
