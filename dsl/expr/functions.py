"""CEL's runtime standard library: strict operators, conversions, string and time functions, and the
string extension library (cel-go `ext/strings`).

The evaluator calls `GLOBALS[name](*args)` and `MEMBERS[name](target, *args)` with evaluated CEL
values (see values.py for their Python representation). Every failure is an `EvaluationError`; no
other Python exception leaves this module.

Dispatch is on `type(v) is X`, never isinstance: bool is an int and UInt is an int in Python.
Operators are looked up for every evaluation step, so they test the common case first.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import math
import zoneinfo
from collections.abc import Callable
from typing import Any

import re2

from .errors import EvaluationError
from .values import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    UINT64_MAX,
    CelType,
    Duration,
    Timestamp,
    UInt,
    map_find,
    map_items,
)

NANOS = 1_000_000_000
# Timestamps: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z (langdef "Overflow").
TIMESTAMP_MIN_NANOS = -62135596800 * NANOS
TIMESTAMP_MAX_NANOS = 253402300799 * NANOS + NANOS - 1
_TS_MIN_SECONDS = -62135596800
_TS_MAX_SECONDS = 253402300799
_EPOCH_ORDINAL = 719163  # datetime.date(1970, 1, 1).toordinal()

_NoneType = type(None)
_NUMERIC = frozenset((int, UInt, float))
_LISTS = frozenset((list, tuple))
_ORDERED = frozenset((int, UInt, float, str, bytes, bool, Timestamp, Duration))
_SCALARS = frozenset((int, UInt, float, str, bytes, bool, _NoneType, Timestamp, Duration, CelType))

# ---------------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------------

_TYPE_NAMES: dict[type, str] = {
    int: "int",
    UInt: "uint",
    float: "double",
    bool: "bool",
    str: "string",
    bytes: "bytes",
    _NoneType: "null_type",
    list: "list",
    tuple: "list",
    dict: "map",
    Timestamp: "google.protobuf.Timestamp",
    Duration: "google.protobuf.Duration",
    CelType: "type",
}
_TYPE_OBJECTS: dict[type, CelType] = {t: CelType(n) for t, n in _TYPE_NAMES.items()}

TYPE_VALUES: dict[str, CelType] = {
    name: CelType(name)
    for name in ("int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type")
}
TYPE_VALUES["timestamp"] = TYPE_VALUES["google.protobuf.Timestamp"] = CelType("google.protobuf.Timestamp")
TYPE_VALUES["duration"] = TYPE_VALUES["google.protobuf.Duration"] = CelType("google.protobuf.Duration")


def type_name(value: Any) -> str:
    """The CEL name of a value's type ("int", "map", "google.protobuf.Duration", ...)."""
    name = _TYPE_NAMES.get(type(value))
    return name if name is not None else type(value).__name__


def type_of(value: Any) -> CelType:
    """`type(value)` as a CEL value."""
    found = _TYPE_OBJECTS.get(type(value))
    if found is None:
        raise EvaluationError(f"unsupported value of Python type {type(value).__name__}")
    return found


def _no_overload(name: str, *args: Any) -> EvaluationError:
    return EvaluationError(f"no such overload: {name}({', '.join(type_name(a) for a in args)})")


def _overflow() -> EvaluationError:
    return EvaluationError("integer overflow")


def _int_result(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise _overflow()


def _uint_result(value: int) -> UInt:
    if 0 <= value <= UINT64_MAX:
        return UInt(value)
    raise _overflow()


def _timestamp_result(nanos: int) -> Timestamp:
    if TIMESTAMP_MIN_NANOS <= nanos <= TIMESTAMP_MAX_NANOS:
        return Timestamp(nanos)
    raise EvaluationError("timestamp out of range")


def _duration_result(nanos: int) -> Duration:
    # langdef "Overflow": durations are limited to a single int64 count of nanoseconds (~ +-290 years).
    if INT64_MIN <= nanos <= INT64_MAX:
        return Duration(nanos)
    raise EvaluationError("duration out of range")


# ---------------------------------------------------------------------------------------------------
# Equality and ordering
# ---------------------------------------------------------------------------------------------------


def equals(a: Any, b: Any) -> bool:
    """CEL runtime equality: heterogeneous numeric equality, deep lists and maps, else same type and value.

    An int or uint meets a double as a double, as cel-spec does (its conformance suite expects
    `dyn(9223372036854775807) == 9223372036854775808.0`-style comparisons to be lossy); int and uint
    compare exactly.
    """
    ta = type(a)
    tb = type(b)
    if ta is tb and ta is not list and ta is not tuple and ta is not dict:
        return a == b
    if ta in _NUMERIC and tb in _NUMERIC:
        return float(a) == float(b) if ta is float or tb is float else a == b
    return _deep_equals(a, b)


def _deep_equals(a: Any, b: Any) -> bool:
    """`equals` for lists and maps, with an explicit stack: values may nest deeper than Python's
    recursion limit allows frames (deep JSON input, or literals at the parser's depth limit)."""
    pairs: list[tuple[Any, Any]] = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        tx = type(x)
        ty = type(y)
        if tx in _LISTS and ty in _LISTS:
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif tx is dict and ty is dict:
            if len(x) != len(y):
                return False
            for key, value in x.items():
                other = _map_find(y, key)
                if other is _MISSING:
                    return False
                pairs.append((value, other))
        elif tx is ty:
            if x != y:
                return False
        elif not (tx in _NUMERIC and ty in _NUMERIC and equals(x, y)):
            return False
    return True


def _ne(a: Any, b: Any) -> bool:
    return not equals(a, b)


def _lt(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta in _ORDERED:
            return a < b
    elif ta in _NUMERIC and tb in _NUMERIC:
        return float(a) < float(b) if ta is float or tb is float else a < b
    raise _no_overload("_<_", a, b)


def _le(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta in _ORDERED:
            return a <= b
    elif ta in _NUMERIC and tb in _NUMERIC:
        return float(a) <= float(b) if ta is float or tb is float else a <= b
    raise _no_overload("_<=_", a, b)


def _gt(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta in _ORDERED:
            return a > b
    elif ta in _NUMERIC and tb in _NUMERIC:
        return float(a) > float(b) if ta is float or tb is float else a > b
    raise _no_overload("_>_", a, b)


def _ge(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta in _ORDERED:
            return a >= b
    elif ta in _NUMERIC and tb in _NUMERIC:
        return float(a) >= float(b) if ta is float or tb is float else a >= b
    raise _no_overload("_>=_", a, b)


# ---------------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------------


def _add(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is int:
            r = a + b
            if INT64_MIN <= r <= INT64_MAX:
                return r
            raise _overflow()
        if ta is float or ta is str or ta is bytes or ta is list:
            return a + b
        if ta is UInt:
            return _uint_result(a + b)
        if ta is Duration:
            return _duration_result(a.nanos + b.nanos)
        if ta is tuple:
            return [*a, *b]
    elif ta in _LISTS and tb in _LISTS:
        return [*a, *b]
    elif ta is Timestamp and tb is Duration:
        return _timestamp_result(a.nanos + b.nanos)
    elif ta is Duration and tb is Timestamp:
        return _timestamp_result(a.nanos + b.nanos)
    raise _no_overload("_+_", a, b)


def _sub(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is int:
            r = a - b
            if INT64_MIN <= r <= INT64_MAX:
                return r
            raise _overflow()
        if ta is float:
            return a - b
        if ta is UInt:
            return _uint_result(a - b)
        if ta is Duration:
            return _duration_result(a.nanos - b.nanos)
        if ta is Timestamp:
            return _duration_result(a.nanos - b.nanos)
    elif ta is Timestamp and tb is Duration:
        return _timestamp_result(a.nanos - b.nanos)
    raise _no_overload("_-_", a, b)


def _mul(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            return _int_result(a * b)
        if ta is float:
            return a * b
        if ta is UInt:
            return _uint_result(a * b)
    raise _no_overload("_*_", a, b)


def _div(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            if b == 0:
                raise EvaluationError("division by zero")
            q = abs(a) // abs(b)  # CEL truncates toward zero; Python's // floors
            return _int_result(q if (a < 0) == (b < 0) else -q)
        if ta is float:
            return _float_div(a, b)
        if ta is UInt:
            if b == 0:
                raise EvaluationError("division by zero")
            return UInt(a // b)
    raise _no_overload("_/_", a, b)


def _float_div(a: float, b: float) -> float:
    if b != 0.0:
        return a / b
    # IEEE 754: x/0 is +-inf (sign of x times sign of the zero), 0/0 and nan/0 are nan.
    if a == 0.0 or a != a:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _mod(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            if b == 0:
                raise EvaluationError("modulus by zero")
            if a == INT64_MIN and b == -1:
                raise _overflow()
            r = abs(a) % abs(b)  # the result takes the sign of the dividend, as in C and Go
            return -r if a < 0 else r
        if ta is UInt:
            if b == 0:
                raise EvaluationError("modulus by zero")
            return UInt(a % b)
    raise _no_overload("_%_", a, b)


def _neg(a: Any) -> Any:
    ta = type(a)
    if ta is int:
        if a == INT64_MIN:
            raise _overflow()
        return -a
    if ta is float:
        return -a
    raise _no_overload("-_", a)


def _not(a: Any) -> bool:
    if type(a) is bool:
        return not a
    raise _no_overload("!_", a)


# ---------------------------------------------------------------------------------------------------
# Indexing, membership, size
# ---------------------------------------------------------------------------------------------------

_MISSING: Any = MISSING
_map_find = map_find  # map keys follow CEL, not Python (see values.py)


def _key_repr(key: Any) -> str:
    if type(key) is str:
        return repr(key)
    return _format_value(key) if type(key) in _SCALARS else type_name(key)


def _index(container: Any, index: Any) -> Any:
    tc = type(container)
    if tc is list or tc is tuple:
        ti = type(index)
        if ti is not int:
            if ti is UInt:
                index = int(index)
            elif ti is float and index.is_integer():
                index = int(index)
            else:
                raise _no_overload("_[_]", container, index)
        if 0 <= index < len(container):
            return container[index]
        raise EvaluationError(f"index out of range: {index}")
    if tc is dict:
        if type(index) is str:  # the common case, inlined
            value = container.get(index, _MISSING)
        else:
            value = _map_find(container, index)
        if value is _MISSING:
            raise EvaluationError(f"no such key: {_key_repr(index)}")
        return value
    raise _no_overload("_[_]", container, index)


def _in(element: Any, container: Any) -> bool:
    tc = type(container)
    if tc is list or tc is tuple:
        if type(element) is str:  # fast path: a string only equals a string
            for item in container:
                if type(item) is str and item == element:
                    return True
            return False
        for item in container:
            if equals(element, item):
                return True
        return False
    if tc is dict:
        return _map_find(container, element) is not _MISSING
    raise _no_overload("@in", element, container)


def _size(value: Any, *extra: Any) -> int:
    tv = type(value)
    if not extra and (tv is str or tv is list or tv is dict or tv is bytes or tv is tuple):
        return len(value)
    raise _no_overload("size", value, *extra)


# ---------------------------------------------------------------------------------------------------
# Number and string formatting shared by string() and format()
# ---------------------------------------------------------------------------------------------------


def _shortest_digits(x: float) -> tuple[str, int]:
    """Shortest round-tripping decimal digits of finite, non-zero |x| and the decimal point position."""
    d = decimal.Decimal(repr(abs(x))).normalize()
    _, digits, exponent = d.as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) + int(exponent)


def _fixed_from_digits(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def format_double(x: float) -> str:
    """`string(double)`: shortest representation, exponent form outside [1e-4, 1e6) (Go's %g)."""
    if x != x:
        return "NaN"
    if x == math.inf:
        return "+Inf"
    if x == -math.inf:
        return "-Inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0.0:
        return sign + "0"
    digits, point = _shortest_digits(x)
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + _fixed_from_digits(digits, point)


def _plain_double(x: float) -> str:
    """Shortest digits without an exponent; NaN and infinities by name (format's %s and %d)."""
    if x != x:
        return "NaN"
    if x == math.inf:
        return "Infinity"
    if x == -math.inf:
        return "-Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0.0:
        return sign + "0"
    return sign + _fixed_from_digits(*_shortest_digits(x))


def format_timestamp(ts: Timestamp) -> str:
    """RFC 3339 in UTC with as many fractional digits as needed: 2009-02-13T23:31:30.5Z."""
    seconds, nanos = divmod(ts.nanos, NANOS)
    days, rem = divmod(seconds, 86400)
    try:
        date = datetime.date.fromordinal(days + _EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise EvaluationError("timestamp out of range") from None
    hours, rem = divmod(rem, 3600)
    text = f"{date.year:04d}-{date.month:02d}-{date.day:02d}T{hours:02d}:{rem // 60:02d}:{rem % 60:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def format_duration(d: Duration) -> str:
    """Seconds with as many fractional digits as needed and an "s" suffix: "60.001s", "-1.5s"."""
    sign = "-" if d.nanos < 0 else ""
    seconds, nanos = divmod(abs(d.nanos), NANOS)
    if nanos:
        return f"{sign}{seconds}." + f"{nanos:09d}".rstrip("0") + "s"
    return f"{sign}{seconds}s"


# ---------------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------------


def _is_decimal_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _to_int(value: Any, *extra: Any) -> int:
    tv = type(value)
    if not extra:
        if tv is int:
            return value
        if tv is UInt:
            if value <= INT64_MAX:
                return int(value)
            raise EvaluationError("integer overflow: int(uint) out of range")
        if tv is float:
            # Doubles convert only when strictly inside (INT64_MIN, INT64_MAX) (langdef "Overflow").
            if -9223372036854775808.0 < value < 9223372036854775808.0:
                return int(value)
            raise EvaluationError("range error: int(double) out of range")
        if tv is str:
            return _parse_int(value)
        if tv is Timestamp:
            return value.nanos // NANOS
    raise _no_overload("int", value, *extra)


def _parse_int(text: str) -> int:
    body = text[1:] if text[:1] in ("-", "+") else text
    if not _is_decimal_digits(body):
        raise EvaluationError(f"cannot convert string to int: {text!r}")
    result = int(text)
    if INT64_MIN <= result <= INT64_MAX:
        return result
    raise EvaluationError(f"range error: int({text!r}) out of range")


def _to_uint(value: Any, *extra: Any) -> UInt:
    tv = type(value)
    if not extra:
        if tv is UInt:
            return value
        if tv is int:
            if 0 <= value <= UINT64_MAX:
                return UInt(value)
            raise EvaluationError("range error: uint(int) out of range")
        if tv is float:
            if 0.0 <= value < 18446744073709551616.0:
                return UInt(int(value))
            raise EvaluationError("range error: uint(double) out of range")
        if tv is str:
            body = value[1:] if value[:1] == "+" else value
            if not _is_decimal_digits(body):
                raise EvaluationError(f"cannot convert string to uint: {value!r}")
            result = int(body)
            if result <= UINT64_MAX:
                return UInt(result)
            raise EvaluationError(f"range error: uint({value!r}) out of range")
    raise _no_overload("uint", value, *extra)


_FLOAT_WORDS = frozenset(("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"))


def _parse_double(text: str) -> float:
    lowered = text.lower()
    if lowered in _FLOAT_WORDS:
        return float(lowered)
    # Python's float() also accepts whitespace, underscores and "infinity" spellings; CEL does not.
    if not text.isascii() or not text or "_" in text or text != text.strip() or "n" in lowered:
        raise EvaluationError(f"cannot convert string to double: {text!r}")
    try:
        result = float(text)
    except ValueError:
        raise EvaluationError(f"cannot convert string to double: {text!r}") from None
    if math.isinf(result):
        raise EvaluationError(f"range error: double({text!r}) out of range")
    return result


def _to_double(value: Any, *extra: Any) -> float:
    tv = type(value)
    if not extra:
        if tv is float:
            return value
        if tv is int or tv is UInt:
            return float(value)
        if tv is str:
            return _parse_double(value)
    raise _no_overload("double", value, *extra)


def _to_string(value: Any, *extra: Any) -> str:
    tv = type(value)
    if not extra:
        if tv is str:
            return value
        if tv is int or tv is UInt:
            return int.__repr__(value)
        if tv is float:
            return format_double(value)
        if tv is bool:
            return "true" if value else "false"
        if tv is bytes:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise EvaluationError("invalid UTF-8 in bytes, cannot convert to string") from None
        if tv is Timestamp:
            return format_timestamp(value)
        if tv is Duration:
            return format_duration(value)
    raise _no_overload("string", value, *extra)


def _to_bytes(value: Any, *extra: Any) -> bytes:
    tv = type(value)
    if not extra:
        if tv is bytes:
            return value
        if tv is str:
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError:
                raise EvaluationError("string is not valid Unicode, cannot convert to bytes") from None
    raise _no_overload("bytes", value, *extra)


# Go's strconv.ParseBool, which cel-go's bool(string) uses.
_TRUE_WORDS = frozenset(("1", "t", "T", "true", "TRUE", "True"))
_FALSE_WORDS = frozenset(("0", "f", "F", "false", "FALSE", "False"))


def _to_bool(value: Any, *extra: Any) -> bool:
    tv = type(value)
    if not extra:
        if tv is bool:
            return value
        if tv is str:
            if value in _TRUE_WORDS:
                return True
            if value in _FALSE_WORDS:
                return False
            raise EvaluationError(f"type conversion error: cannot convert {value!r} to bool")
    raise _no_overload("bool", value, *extra)


def _dyn(value: Any, *extra: Any) -> Any:
    if extra:
        raise _no_overload("dyn", value, *extra)
    return value


def _type(value: Any, *extra: Any) -> CelType:
    if extra:
        raise _no_overload("type", value, *extra)
    return type_of(value)


def _to_timestamp(value: Any, *extra: Any) -> Timestamp:
    tv = type(value)
    if not extra:
        if tv is Timestamp:
            return value
        if tv is str:
            return parse_timestamp(value)
        if tv is int:
            if _TS_MIN_SECONDS <= value <= _TS_MAX_SECONDS:
                return Timestamp(value * NANOS)
            raise EvaluationError("timestamp out of range")
    raise _no_overload("timestamp", value, *extra)


def _to_duration(value: Any, *extra: Any) -> Duration:
    tv = type(value)
    if not extra:
        if tv is Duration:
            return value
        if tv is str:
            return parse_duration(value)
    raise _no_overload("duration", value, *extra)


# ---------------------------------------------------------------------------------------------------
# Timestamp and duration parsing
# ---------------------------------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

_RFC3339 = re2.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    _RE2_OPTIONS,
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 included); ValueError if invalid."""
    if year == 0:
        # Year 0 is a leap year like year 400; shift by one 400-year cycle (146097 days).
        return datetime.date(400, month, day).toordinal() - 146097 - _EPOCH_ORDINAL
    return datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL


def parse_timestamp(text: str) -> Timestamp:
    """RFC 3339 ("2009-02-13T23:31:30.5+01:00") to a Timestamp, range-checked."""
    match = _RFC3339.fullmatch(text) if text.isascii() else None
    if match is None:
        raise EvaluationError(f"cannot parse timestamp: {text!r} is not RFC 3339")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if hour > 23 or minute > 59 or second > 59:
        raise EvaluationError(f"cannot parse timestamp: {text!r} has an invalid time of day")
    try:
        days = _days_from_civil(year, month, day)
    except ValueError:
        raise EvaluationError(f"cannot parse timestamp: {text!r} has an invalid date") from None
    fraction = match.group(7) or ""
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if match.group(8) is None:
        off_hours, off_minutes = int(match.group(10)), int(match.group(11))
        if off_hours > 23 or off_minutes > 59:
            raise EvaluationError(f"cannot parse timestamp: {text!r} has an invalid UTC offset")
        offset = off_hours * 3600 + off_minutes * 60
        seconds -= offset if match.group(9) == "+" else -offset
    return _timestamp_result(seconds * NANOS + nanos)


_DURATION_UNITS = {
    "h": 3600 * NANOS,
    "m": 60 * NANOS,
    "s": NANOS,
    "ms": 1_000_000,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small mu
    "ns": 1,
}


def parse_duration(text: str) -> Duration:
    """Go-style duration text ("1h2m3.5s", "-1.5h", "0", "100ms") to a Duration, range-checked."""
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return Duration(0)
    if not rest:
        raise _bad_duration(text)
    total = 0
    while rest:
        i = 0
        while i < len(rest) and "0" <= rest[i] <= "9":
            i += 1
        whole, rest = rest[:i], rest[i:]
        fraction = ""
        if rest[:1] == ".":
            j = 1
            while j < len(rest) and "0" <= rest[j] <= "9":
                j += 1
            fraction, rest = rest[1:j], rest[j:]
        if not whole and not fraction:
            raise _bad_duration(text)
        j = 0
        while j < len(rest) and not ("0" <= rest[j] <= "9") and rest[j] != ".":
            j += 1
        unit = _DURATION_UNITS.get(rest[:j])
        if unit is None:
            raise _bad_duration(text)
        rest = rest[j:]
        total += int(whole or "0") * unit
        if fraction:
            total += int(fraction) * unit // 10 ** len(fraction)
    return _duration_result(-total if negative else total)


def _bad_duration(text: str) -> EvaluationError:
    return EvaluationError(f"cannot parse duration: {text!r}")


# ---------------------------------------------------------------------------------------------------
# Timestamp and duration accessors
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> datetime.tzinfo:
    if ":" in name:
        sign = -1 if name.startswith("-") else 1
        body = name[1:] if name[:1] in ("+", "-") else name
        hours, _, minutes = body.partition(":")
        if not (_is_decimal_digits(hours) and _is_decimal_digits(minutes)) or len(minutes) != 2:
            raise ValueError(name)
        if int(hours) > 23 or int(minutes) > 59:
            raise ValueError(name)
        delta = datetime.timedelta(hours=int(hours), minutes=int(minutes))
        return datetime.timezone(sign * delta)
    if name == "UTC":
        return datetime.UTC
    return zoneinfo.ZoneInfo(name)


def _local_seconds(ts: Timestamp, tz: Any, name: str) -> int:
    """Seconds since the epoch of the wall-clock time in time zone `tz` (None: UTC)."""
    seconds = ts.nanos // NANOS
    if tz is _MISSING:
        return seconds
    if type(tz) is not str:
        raise _no_overload(name, ts, tz)
    try:
        zone = _zone(tz)
        # The offset of an instant in the last or first day of the timestamp range is looked up a
        # day inside it: its wall-clock time may be in year 0 or 10000, beyond Python's datetime,
        # and no zone changes its offset in those days.
        probe = min(max(seconds, _TS_MIN_SECONDS + 86400), _TS_MAX_SECONDS - 86400)
        moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=probe)
        offset = moment.astimezone(zone).utcoffset()
    except (ValueError, KeyError, OverflowError, OSError, zoneinfo.ZoneInfoNotFoundError):
        raise EvaluationError(f"invalid time zone or timestamp out of range: {tz!r}") from None
    return seconds + (int(offset.total_seconds()) if offset is not None else 0)


_DAYS_PER_400_YEARS = 146097  # the Gregorian calendar, weekdays included, repeats every 400 years
_MAX_ORDINAL = datetime.date.max.toordinal()


def _local_date(ts: Timestamp, tz: Any, name: str) -> tuple[datetime.date, int]:
    """The wall-clock date of `ts` in `tz`, and its year.

    Seen from a time zone, the first and last hours of the timestamp range fall in year 0 or 10000
    (Go's time, hence cel-go, reports them); datetime stops at years 1 and 9999, so such a date is
    taken 400 years away, which has the same month, day, day of year and weekday.
    """
    ordinal = _local_seconds(ts, tz, name) // 86400 + _EPOCH_ORDINAL
    cycles = -1 if ordinal < 1 else 1 if ordinal > _MAX_ORDINAL else 0
    try:
        date = datetime.date.fromordinal(ordinal - cycles * _DAYS_PER_400_YEARS)
    except (ValueError, OverflowError):
        raise EvaluationError("timestamp out of range") from None
    return date, date.year + 400 * cycles


def _timestamp_only(name: str, value: Any, tz: Any, extra: tuple[Any, ...]) -> None:
    if type(value) is not Timestamp or extra:
        raise _no_overload(name, value, *(() if tz is _MISSING else (tz,)), *extra)


def _get_full_year(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getFullYear", value, tz, extra)
    return _local_date(value, tz, "getFullYear")[1]


def _get_month(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getMonth", value, tz, extra)
    return _local_date(value, tz, "getMonth")[0].month - 1


def _get_day_of_year(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getDayOfYear", value, tz, extra)
    return _local_date(value, tz, "getDayOfYear")[0].timetuple().tm_yday - 1


def _get_day_of_month(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getDayOfMonth", value, tz, extra)
    return _local_date(value, tz, "getDayOfMonth")[0].day - 1


def _get_date(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getDate", value, tz, extra)
    return _local_date(value, tz, "getDate")[0].day


def _get_day_of_week(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    _timestamp_only("getDayOfWeek", value, tz, extra)
    return (_local_date(value, tz, "getDayOfWeek")[0].weekday() + 1) % 7  # Sunday is 0


def _truncated_div(nanos: int, unit: int) -> int:
    q = abs(nanos) // unit
    return -q if nanos < 0 else q


def _time_part(name: str, unit: int, modulus: int) -> Callable[..., int]:
    """getHours/getMinutes/getSeconds: a timestamp's clock field, or a duration's total in that unit."""

    def accessor(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
        if type(value) is Duration and tz is _MISSING and not extra:
            return _truncated_div(value.nanos, unit)
        _timestamp_only(name, value, tz, extra)
        return _local_seconds(value, tz, name) * NANOS // unit % modulus

    accessor.__name__ = name
    return accessor


def _get_milliseconds(value: Any, tz: Any = _MISSING, *extra: Any) -> int:
    if type(value) is Duration and tz is _MISSING and not extra:
        # Only the milliseconds part of a duration (unlike the other duration accessors).
        ms = _truncated_div(value.nanos, 1_000_000)
        return ms - _truncated_div(ms, 1000) * 1000
    _timestamp_only("getMilliseconds", value, tz, extra)
    if tz is not _MISSING:
        _local_seconds(value, tz, "getMilliseconds")  # validates the time zone
    return value.nanos % NANOS // 1_000_000


# ---------------------------------------------------------------------------------------------------
# Strings: standard functions
# ---------------------------------------------------------------------------------------------------


def _string_pair(name: str, s: Any, arg: Any, extra: tuple[Any, ...]) -> None:
    if type(s) is not str or type(arg) is not str or extra:
        raise _no_overload(name, s, arg, *extra)


def _contains(s: Any, sub: Any, *extra: Any) -> bool:
    _string_pair("contains", s, sub, extra)
    return sub in s


def _starts_with(s: Any, prefix: Any, *extra: Any) -> bool:
    _string_pair("startsWith", s, prefix, extra)
    return s.startswith(prefix)


def _ends_with(s: Any, suffix: Any, *extra: Any) -> bool:
    _string_pair("endsWith", s, suffix, extra)
    return s.endswith(suffix)


_REGEX_CACHE: dict[str, Any] = {}
_REGEX_CACHE_LIMIT = 512


def _compile_regex(pattern: str) -> Any:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = re2.compile(pattern, _RE2_OPTIONS)
        except (re2.error, UnicodeError, TypeError, ValueError) as exc:
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise EvaluationError(f"invalid regular expression {pattern!r}: {detail}") from None
        if len(_REGEX_CACHE) >= _REGEX_CACHE_LIMIT:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = compiled
    return compiled


def _matches(s: Any, pattern: Any, *extra: Any) -> bool:
    """RE2 search: true if the pattern matches any substring (langdef "Regular Expressions")."""
    _string_pair("matches", s, pattern, extra)
    try:
        return _compile_regex(pattern).search(s) is not None
    except UnicodeError:
        raise EvaluationError("matches: string is not valid Unicode") from None


# ---------------------------------------------------------------------------------------------------
# Strings: the string extension library (cel-go ext/strings)
# ---------------------------------------------------------------------------------------------------


def _string_then_int(s: Any, args: tuple[Any, ...]) -> bool:
    """True for a string receiver with arguments (string) or (string, int)."""
    n = len(args)
    return type(s) is str and 1 <= n <= 2 and type(args[0]) is str and (n == 1 or type(args[1]) is int)


def _char_at(s: Any, *args: Any) -> str:
    if type(s) is not str or len(args) != 1 or type(args[0]) is not int:
        raise _no_overload("charAt", s, *args)
    i = args[0]
    if 0 <= i < len(s):
        return s[i]
    if i == len(s):
        return ""
    raise EvaluationError(f"index out of range: {i}")


def _index_of(s: Any, *args: Any) -> int:
    n = len(args)
    if not _string_then_int(s, args):
        raise _no_overload("indexOf", s, *args)
    start = args[1] if n == 2 else 0
    if not 0 <= start <= len(s):
        raise EvaluationError(f"index out of range: {start}")
    return s.find(args[0], start)


def _last_index_of(s: Any, *args: Any) -> int:
    n = len(args)
    if not _string_then_int(s, args):
        raise _no_overload("lastIndexOf", s, *args)
    sub = args[0]
    if n == 1:
        return s.rfind(sub)
    pos = args[1]
    if not 0 <= pos <= len(s):
        raise EvaluationError(f"index out of range: {pos}")
    return s.rfind(sub, 0, pos + len(sub))


_LOWER_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER_ASCII = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _lower_ascii(s: Any, *extra: Any) -> str:
    if type(s) is not str or extra:
        raise _no_overload("lowerAscii", s, *extra)
    return s.translate(_LOWER_ASCII)


def _upper_ascii(s: Any, *extra: Any) -> str:
    if type(s) is not str or extra:
        raise _no_overload("upperAscii", s, *extra)
    return s.translate(_UPPER_ASCII)


MAX_STRING_RESULT = 1 << 24  # characters; the evaluator's configured size limit applies after this


def _replace(s: Any, *args: Any) -> str:
    n = len(args)
    if (
        type(s) is not str
        or not 2 <= n <= 3
        or type(args[0]) is not str
        or type(args[1]) is not str
        or (n == 3 and type(args[2]) is not int)
    ):
        raise _no_overload("replace", s, *args)
    old, new = args[0], args[1]
    count = args[2] if n == 3 else -1
    if len(new) > len(old):
        # checked before replacing: the only string function whose result can be the product of
        # its inputs' sizes ('x' * 10**6).replace('', 'y' * 10**6) would need terabytes
        hits = s.count(old) if count < 0 else min(count, s.count(old))
        size = len(s) + hits * (len(new) - len(old))
        if size > MAX_STRING_RESULT:
            raise EvaluationError(f"cost limit exceeded: replace() result of {size} characters")
    return s.replace(old, new, count if count >= 0 else -1)


def _split(s: Any, *args: Any) -> list[str]:
    n = len(args)
    if not _string_then_int(s, args):
        raise _no_overload("split", s, *args)
    sep = args[0]
    limit = args[1] if n == 2 else -1
    if limit == 0:
        return []
    if sep:
        return s.split(sep, limit - 1 if limit > 0 else -1)
    # An empty separator splits into code points, the last part taking the rest when limited.
    if 0 < limit < len(s):
        return [*s[: limit - 1], s[limit - 1 :]]
    return list(s)


def _substring(s: Any, *args: Any) -> str:
    n = len(args)
    if type(s) is not str or not 1 <= n <= 2 or any(type(a) is not int for a in args):
        raise _no_overload("substring", s, *args)
    start = args[0]
    end = args[1] if n == 2 else len(s)
    if not 0 <= start <= len(s):
        raise EvaluationError(f"index out of range: {start}")
    if not 0 <= end <= len(s):
        raise EvaluationError(f"index out of range: {end}")
    if end < start:
        raise EvaluationError(f"invalid substring range. start: {start}, end: {end}")
    return s[start:end]


# Unicode White_Space as Go's unicode.IsSpace defines it (Python's str.strip also strips \x1c-\x1f).
_WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _trim(s: Any, *extra: Any) -> str:
    if type(s) is not str or extra:
        raise _no_overload("trim", s, *extra)
    return s.strip(_WHITESPACE)


def _join(items: Any, *args: Any) -> str:
    if type(items) not in _LISTS or len(args) > 1 or (args and type(args[0]) is not str):
        raise _no_overload("join", items, *args)
    for item in items:
        if type(item) is not str:
            raise EvaluationError(f"join: list must contain only strings, found {type_name(item)}")
    return (args[0] if args else "").join(items)


def _reverse(s: Any, *extra: Any) -> str:
    if type(s) is not str or extra:
        raise _no_overload("reverse", s, *extra)
    return s[::-1]


_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}
_QUOTE_TABLE = str.maketrans(_QUOTE_ESCAPES)


def _quote(s: Any, *extra: Any) -> str:
    """strings.quote: a double-quoted CEL string literal with the C-style escapes."""
    if type(s) is not str or extra:
        raise _no_overload("strings.quote", s, *extra)
    text = s.translate(_QUOTE_TABLE)
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c == " " else _escape_code_point(c) for c in text)
    return f'"{text}"'


def _escape_code_point(c: str) -> str:
    code = ord(c)
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate is not a code point CEL can carry
        return "\\ufffd"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# --- format ---------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """The %s rendering of a value (cel-go formatting v2)."""
    tv = type(value)
    if tv is str:
        return value
    if tv is int or tv is UInt:
        return int.__repr__(value)
    if tv is float:
        return _plain_double(value)
    if tv is bool:
        return "true" if value else "false"
    if tv is bytes:
        return value.decode("utf-8", "replace")
    if tv is _NoneType:
        return "null"
    if tv is list or tv is tuple:
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if tv is dict:
        entries = sorted((_format_value(k), _format_value(v)) for k, v in map_items(value))
        return "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}"
    if tv is Timestamp:
        return format_timestamp(value)
    if tv is Duration:
        return format_duration(value)
    if tv is CelType:
        return value.name
    raise _format_error(
        "string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, types, "
        "durations, and timestamps",
        value,
    )


def _format_error(message: str, value: Any) -> EvaluationError:
    return EvaluationError(f"error during formatting: {message}, was given {type_name(value)}")


def _special_double(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x == math.inf:
        return "Infinity"
    if x == -math.inf:
        return "-Infinity"
    return None


def _format_decimal(value: Any, precision: int | None) -> str:
    tv = type(value)
    if tv is int or tv is UInt:
        return int.__repr__(value)
    if tv is float:
        return _plain_double(value)
    raise _format_error("decimal clause can only be used on integers", value)


def _format_float(value: Any, precision: int | None, kind: str) -> str:
    tv = type(value)
    if tv is int or tv is UInt:
        value = float(value)
    elif tv is not float:
        clause = "fixed-point" if kind == "f" else "scientific"
        raise _format_error(f"{clause} clause can only be used on doubles", value)
    special = _special_double(value)
    if special is not None:
        return special
    return f"{value:.{6 if precision is None else precision}{kind}}"


def _format_binary(value: Any, precision: int | None) -> str:
    tv = type(value)
    if tv is bool:
        return "1" if value else "0"
    if tv is int or tv is UInt:
        return format(int(value), "b")
    raise _format_error("only integers and bools can be formatted as binary", value)


def _format_octal(value: Any, precision: int | None) -> str:
    if type(value) is int or type(value) is UInt:
        return format(int(value), "o")
    raise _format_error("octal clause can only be used on integers", value)


def _format_hex(value: Any, upper: bool) -> str:
    tv = type(value)
    if tv is int or tv is UInt:
        text = format(int(value), "x")
    elif tv is str:
        try:
            text = value.encode("utf-8").hex()
        except UnicodeEncodeError:
            raise EvaluationError("error during formatting: string is not valid Unicode") from None
    elif tv is bytes:
        text = value.hex()
    else:
        raise _format_error("only integers, byte buffers, and strings can be formatted as hex", value)
    return text.upper() if upper else text


def _format_clause(verb: str, value: Any, precision: int | None) -> str:
    if verb == "s":
        return _format_value(value)
    if verb == "d":
        return _format_decimal(value, precision)
    if verb == "f" or verb == "e":
        return _format_float(value, precision, verb)
    if verb == "x" or verb == "X":
        return _format_hex(value, verb == "X")
    if verb == "b":
        return _format_binary(value, precision)
    return _format_octal(value, precision)


_FORMAT_VERBS = frozenset("sdfexXbo")
MAX_FORMAT_PRECISION = 1000  # digits after the point in %f/%e; far beyond a double's 17 significant


def _format(template: Any, *args: Any) -> str:
    """`"...%s...".format([args])`: clauses %s %d %f %e %x %X %o %b, precision as in %.3f, %% for %."""
    if type(template) is not str or len(args) != 1 or type(args[0]) not in _LISTS:
        raise _no_overload("format", template, *args)
    values = args[0]
    out: list[str] = []
    i = 0
    n = len(template)
    arg_index = 0
    while i < n:
        j = template.find("%", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if template[i : i + 1] == "%":
            out.append("%")
            i += 1
            continue
        precision: int | None = None
        if template[i : i + 1] == ".":
            k = i + 1
            while k < n and "0" <= template[k] <= "9":
                k += 1
            if k == i + 1:
                raise EvaluationError("could not parse formatting clause: missing precision after '.'")
            # checked before formatting: "%.999999999f" must not build a gigabyte string first
            if k - i - 1 > len(str(MAX_FORMAT_PRECISION)) or int(template[i + 1 : k]) > MAX_FORMAT_PRECISION:
                raise EvaluationError(
                    f"cost limit exceeded: format precision {template[i + 1 : k]} > {MAX_FORMAT_PRECISION}"
                )
            precision = int(template[i + 1 : k])
            i = k
        verb = template[i : i + 1]
        if verb not in _FORMAT_VERBS or not verb:
            raise EvaluationError(
                f'could not parse formatting clause: unrecognized formatting clause "{verb}"'
            )
        i += 1
        if arg_index >= len(values):
            raise EvaluationError(f"index {arg_index} out of range")
        out.append(_format_clause(verb, values[arg_index], precision))
        arg_index += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------------------

# Python exceptions a library function could still raise on hostile input, and what they mean to CEL.
_TRAPPED = (TypeError, ValueError, OverflowError, ZeroDivisionError, UnicodeError, KeyError, IndexError)


def _guarded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a named function so a wrong argument count or a stray Python error is an EvaluationError."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except EvaluationError:
            raise
        except _TRAPPED:
            raise _no_overload(name, *args) from None

    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


# Operators: the parser guarantees their arity, so they are registered unwrapped for speed.
_OPERATORS: dict[str, Callable[..., Any]] = {
    "_+_": _add,
    "_-_": _sub,
    "_*_": _mul,
    "_/_": _div,
    "_%_": _mod,
    "-_": _neg,
    "!_": _not,
    "_==_": equals,
    "_!=_": _ne,
    "_<_": _lt,
    "_<=_": _le,
    "_>_": _gt,
    "_>=_": _ge,
    "_[_]": _index,
    "@in": _in,
}

_NAMED_GLOBALS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "int": _to_int,
    "uint": _to_uint,
    "double": _to_double,
    "string": _to_string,
    "bytes": _to_bytes,
    "bool": _to_bool,
    "dyn": _dyn,
    "type": _type,
    "timestamp": _to_timestamp,
    "duration": _to_duration,
    "matches": _matches,
    "strings.quote": _quote,
}

_MEMBER_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "contains": _contains,
    "startsWith": _starts_with,
    "endsWith": _ends_with,
    "matches": _matches,
    "getFullYear": _get_full_year,
    "getMonth": _get_month,
    "getDayOfYear": _get_day_of_year,
    "getDayOfMonth": _get_day_of_month,
    "getDate": _get_date,
    "getDayOfWeek": _get_day_of_week,
    "getHours": _time_part("getHours", 3600 * NANOS, 24),
    "getMinutes": _time_part("getMinutes", 60 * NANOS, 60),
    "getSeconds": _time_part("getSeconds", NANOS, 60),
    "getMilliseconds": _get_milliseconds,
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "trim": _trim,
    "join": _join,
    "format": _format,
    "reverse": _reverse,
}

GLOBALS: dict[str, Callable[..., Any]] = {
    **_OPERATORS,
    **{name: _guarded(name, fn) for name, fn in _NAMED_GLOBALS.items()},
}
MEMBERS: dict[str, Callable[..., Any]] = {name: _guarded(name, fn) for name, fn in _MEMBER_FUNCTIONS.items()}

__all__ = [
    "GLOBALS",
    "MEMBERS",
    "TYPE_VALUES",
    "equals",
    "format_double",
    "format_duration",
    "format_timestamp",
    "parse_duration",
    "parse_timestamp",
    "type_name",
    "type_of",
]

# The extension libraries (math, encoders, lists, sets) live in extensions.py, which builds on the
# helpers above; imported last so that module sees this one fully initialised.
from .extensions import EXT_GLOBALS, EXT_MEMBERS  # noqa: E402

GLOBALS.update({name: _guarded(name, fn) for name, fn in EXT_GLOBALS.items()})
MEMBERS.update({name: _guarded(name, fn) for name, fn in EXT_MEMBERS.items()})
