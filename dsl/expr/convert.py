"""Conversion between JSON-like Python data and CEL runtime values (see values.py).

`to_cel` prepares bindings: Python data in, CEL values out (tuples become lists, datetimes
timestamps, timedeltas durations). `from_cel` turns a result into strict JSON data: uint -> int,
bytes -> base64 text, timestamp -> RFC 3339 text, duration -> "1.5s", type -> its name, map keys ->
strings (`1` -> "1", `true` -> "true"); a double that is not finite has no JSON form (ValueError).
"""

from __future__ import annotations

import base64
import datetime
import math
from typing import Any

from .functions import (
    NANOS,
    TIMESTAMP_MAX_NANOS,
    TIMESTAMP_MIN_NANOS,
    format_duration,
    format_timestamp,
)
from .values import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    BoolKey,
    CelType,
    Duration,
    Timestamp,
    UInt,
    map_add,
)

_NoneType = type(None)
_PASSTHROUGH = frozenset((bool, float, str, bytes, _NoneType, UInt, Timestamp, Duration, CelType))
_KEY_TYPES = frozenset((str, int, bool, UInt))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def to_cel(value: Any) -> Any:
    """A JSON-like Python value as a CEL value; TypeError for anything CEL cannot represent."""
    tv = type(value)
    if tv in _PASSTHROUGH:
        if tv is UInt and not 0 <= value <= UINT64_MAX:
            raise TypeError(f"uint value out of range: {int(value)}")
        return value
    if tv is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise TypeError(f"integer out of the int64 range: {value}")
    if tv is list or tv is tuple:
        return [to_cel(item) for item in value]
    if tv is dict:
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = _to_cel_key(k)
            if type(key) is str:
                out[key] = to_cel(v)
            elif not map_add(out, key, to_cel(v)):  # {True: a, BoolKey(True): b}: one CEL key
                raise TypeError(f"map has the key {k!r} twice")
        return out
    if isinstance(value, datetime.datetime):
        return _timestamp_from_datetime(value)
    if isinstance(value, datetime.timedelta):
        return Duration((value.days * 86400 + value.seconds) * NANOS + value.microseconds * 1000)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, int | float | str | list | tuple | dict):
        # Subclasses (IntEnum, str enums, OrderedDict, namedtuple ...) convert as their base type.
        return to_cel(_base_value(value))
    raise TypeError(f"cannot convert a value of Python type {tv.__name__} to CEL")


def _base_value(value: Any) -> Any:
    if isinstance(value, str):
        return str.__str__(value)  # str() of a (str, Enum) member would be "Class.MEMBER"
    for base in (int, float, dict, list, tuple):
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"cannot convert a value of Python type {type(value).__name__} to CEL")


def _to_cel_key(key: Any) -> Any:
    if type(key) is BoolKey:  # from a map a CEL expression built (see values.py)
        return key
    converted = to_cel(key)
    if type(converted) not in _KEY_TYPES:
        raise TypeError(f"map keys must be strings, integers or booleans, not {type(key).__name__}")
    return converted


def _timestamp_from_datetime(value: datetime.datetime) -> Timestamp:
    # A naive datetime is taken to be UTC.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
    delta = aware - _EPOCH
    nanos = (delta.days * 86400 + delta.seconds) * NANOS + delta.microseconds * 1000
    if not TIMESTAMP_MIN_NANOS <= nanos <= TIMESTAMP_MAX_NANOS:
        raise TypeError(f"datetime out of the timestamp range: {value.isoformat()}")
    return Timestamp(nanos)


def from_cel(value: Any) -> Any:
    """A CEL value as plain JSON data: what the event log can hold and hash (strict JSON, no NaN)."""
    tv = type(value)
    if tv is str or tv is int or tv is bool or tv is _NoneType:
        return value
    if tv is float:
        if not math.isfinite(value):
            raise ValueError(f"the double {value} has no JSON form (not a finite number)")
        return value
    if tv is UInt:
        return int(value)
    if tv is list or tv is tuple:
        return [from_cel(item) for item in value]
    if tv is dict:
        out = {_json_key(k): from_cel(v) for k, v in value.items()}
        if len(out) < len(value):  # {1: a, "1": b}: two CEL keys, one JSON key
            raise ValueError('a map has keys that are the same JSON text (such as 1 and "1")')
        return out
    if tv is bytes:
        return base64.b64encode(value).decode("ascii")
    if tv is Timestamp:
        return format_timestamp(value)
    if tv is Duration:
        return format_duration(value)
    if tv is CelType:
        return value.name
    raise TypeError(f"not a CEL value: Python type {tv.__name__}")


def _json_key(key: Any) -> str:
    """JSON object keys are strings: a CEL map's int, uint or bool key is written as JSON writes it."""
    if type(key) is str:
        return key
    if type(key) is bool or type(key) is BoolKey:
        return "true" if key is True or key is BoolKey(True) else "false"
    return str(int(key))


__all__ = ["from_cel", "to_cel"]
