"""CEL extension libraries that CEL users expect beside the standard library (cel-go `ext/`):
math (`math.greatest`, `math.ceil`, bit operations, ...), encoders (`base64.*`), lists
(`lists.range`, `distinct`, `flatten`, `reverse`, `slice`, `sort`, and the runtime half of the
`sortBy` macro), sets (`sets.contains`, `sets.equivalent`, `sets.intersects`), and the runtime
helper of the `transformMap` macro.

Same conventions as functions.py: arguments are evaluated CEL values, dispatch is on
`type(v) is X`, and every failure is an `EvaluationError`. functions.py merges `EXT_GLOBALS` and
`EXT_MEMBERS` into its registries, so the evaluator sees one library.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Any

from .errors import EvaluationError
from .functions import _LISTS, _NUMERIC, _ORDERED, _no_overload, _overflow, _reverse, equals, type_name
from .functions import _gt as _greater
from .functions import _lt as _less
from .values import INT64_MAX, INT64_MIN, UINT64_MAX, UInt, map_add

# Largest list a generating function (lists.range) builds before the evaluator's own size limit
# applies: the list must not exhaust memory before it can be measured.
MAX_GENERATED = 1_000_000

_U64 = (1 << 64) - 1


def _cost_error(what: str) -> EvaluationError:
    return EvaluationError(f"cost limit exceeded: {what}")


# ---------------------------------------------------------------------------------------------------
# math
# ---------------------------------------------------------------------------------------------------


def _extremum(name: str, better: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    """math.greatest / math.least: over numeric arguments, or over one list of numbers."""

    def pick(*args: Any) -> Any:
        values = args[0] if len(args) == 1 and type(args[0]) in _LISTS else args
        if not values:
            raise EvaluationError(f"{name}(list) argument must not be empty")
        best = values[0]
        for v in values:
            if type(v) not in _NUMERIC:
                raise _no_overload(name, *args)
        for v in values[1:]:
            if better(v, best):
                best = v
        return best

    return pick


def _double_only(name: str, fn: Callable[[float], Any]) -> Callable[..., Any]:
    def call(x: Any, *extra: Any) -> Any:
        if type(x) is not float or extra:
            raise _no_overload(name, x, *extra)
        return fn(x)

    return call


def _integral(fn: Callable[[float], int]) -> Callable[[float], float]:
    """ceil/floor/trunc as doubles; NaN, infinities and already-integral magnitudes pass through,
    and a zero result keeps the argument's sign (as Go's math package does)."""

    def apply(x: float) -> float:
        if not math.isfinite(x) or abs(x) >= 4503599627370496.0:  # 2**52: no fraction left
            return x
        return math.copysign(float(fn(x)), x)

    return apply


def _round_half_away(x: float) -> float:
    """Go's math.Round: halves round away from zero (Python's round() rounds half to even)."""
    if not math.isfinite(x) or abs(x) >= 4503599627370496.0:
        return x
    magnitude = abs(x)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    return math.copysign(float(whole), x)


def _abs(x: Any, *extra: Any) -> Any:
    tx = type(x)
    if not extra:
        if tx is int:
            if x == INT64_MIN:
                raise _overflow()
            return -x if x < 0 else x
        if tx is UInt:
            return x
        if tx is float:
            return abs(x)
    raise _no_overload("math.abs", x, *extra)


def _sign(x: Any, *extra: Any) -> Any:
    tx = type(x)
    if not extra:
        if tx is int:
            return (x > 0) - (x < 0)
        if tx is UInt:
            return UInt(1 if x else 0)
        if tx is float:
            if x > 0:
                return 1.0
            if x < 0:
                return -1.0
            return x  # zero (keeping its sign) or NaN
    raise _no_overload("math.sign", x, *extra)


def _sqrt(x: Any, *extra: Any) -> float:
    if type(x) not in _NUMERIC or extra:
        raise _no_overload("math.sqrt", x, *extra)
    value = float(x)
    return math.sqrt(value) if value >= 0 else math.nan


def _to_int64(value: int) -> int:
    """Two's-complement wrap to int64 (Go's shift semantics)."""
    value &= _U64
    return value - (1 << 64) if value > INT64_MAX else value


def _bitwise(name: str, op: Callable[[int, int], int]) -> Callable[..., Any]:
    def call(a: Any, b: Any, *extra: Any) -> Any:
        ta = type(a)
        if not extra and ta is type(b):
            if ta is int:
                return op(a, b)  # both in int64: and/or/xor stay in range
            if ta is UInt:
                return UInt(op(int(a), int(b)))
        raise _no_overload(name, a, b, *extra)

    return call


def _bit_not(a: Any, *extra: Any) -> Any:
    if not extra:
        if type(a) is int:
            return ~a
        if type(a) is UInt:
            return UInt(UINT64_MAX - a)
    raise _no_overload("math.bitNot", a, *extra)


def _shift_operands(name: str, a: Any, n: Any, extra: tuple[Any, ...]) -> None:
    if extra or type(n) is not int or type(a) not in (int, UInt):
        raise _no_overload(name, a, n, *extra)
    if n < 0:
        raise EvaluationError(f"{name}() negative offset: {n}")


def _shift_left(a: Any, n: Any, *extra: Any) -> Any:
    _shift_operands("math.bitShiftLeft", a, n, extra)
    if n >= 64:
        return UInt(0) if type(a) is UInt else 0
    if type(a) is UInt:
        return UInt((a << n) & _U64)
    return _to_int64(a << n)


def _shift_right(a: Any, n: Any, *extra: Any) -> Any:
    _shift_operands("math.bitShiftRight", a, n, extra)
    if n >= 64:
        return UInt(0) if type(a) is UInt else 0
    if type(a) is UInt:
        return UInt(a >> n)
    # a logical shift of the 64-bit pattern: cel-go's ext/math does not extend the sign bit
    return _to_int64((a & _U64) >> n)


# ---------------------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------------------


def _base64_encode(data: Any, *extra: Any) -> str:
    if type(data) is not bytes or extra:
        raise _no_overload("base64.encode", data, *extra)
    return base64.b64encode(data).decode("ascii")


def _base64_decode(text: Any, *extra: Any) -> bytes:
    if type(text) is not str or extra:
        raise _no_overload("base64.decode", text, *extra)
    padded = text + "=" * (-len(text) % 4)  # the unpadded form is accepted too (cel-go)
    try:
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EvaluationError("base64.decode: illegal base64 data") from None


# ---------------------------------------------------------------------------------------------------
# lists
# ---------------------------------------------------------------------------------------------------


def _range(n: Any, *extra: Any) -> list[int]:
    if type(n) is not int or extra:
        raise _no_overload("lists.range", n, *extra)
    if n > MAX_GENERATED:
        raise _cost_error(f"lists.range({n}) would exceed {MAX_GENERATED} elements")
    return list(range(n))


def _list_receiver(name: str, items: Any, extra: tuple[Any, ...], arity: int = 0) -> None:
    if type(items) not in _LISTS or len(extra) != arity:
        raise _no_overload(name, items, *extra)


def _distinct_key(v: Any) -> Any:
    """A hashable key equal for CEL-equal scalars (1, 1u and 1.0 share one), None if unhashable."""
    tv = type(v)
    if tv is bool:
        return ("bool", v)
    if tv in _NUMERIC:
        if v != v:
            # NaN equals nothing, itself included, but a set or tuple finds the same NaN object
            # by identity: it is compared by scan instead
            return None
        return ("number", v)  # Python compares int, UInt and float by value, as CEL does
    if tv in (list, tuple, dict):
        return None
    return (tv, v)


def _distinct(items: Any, *extra: Any) -> list[Any]:
    _list_receiver("distinct", items, extra)
    seen: set[Any] = set()
    unhashable: list[Any] = []
    out: list[Any] = []
    for v in items:
        key = _distinct_key(v)
        if key is None:
            if any(equals(v, u) for u in unhashable):
                continue
            unhashable.append(v)
        elif key in seen:
            continue
        else:
            seen.add(key)
        out.append(v)
    return out


def _flatten(items: Any, *extra: Any) -> list[Any]:
    if type(items) not in _LISTS or len(extra) > 1 or (extra and type(extra[0]) is not int):
        raise _no_overload("flatten", items, *extra)
    depth = extra[0] if extra else 1
    if depth < 0:
        raise EvaluationError("flatten(): level must be non-negative")
    return _flatten_into([], items, depth)


def _flatten_into(out: list[Any], items: Any, depth: int) -> list[Any]:
    for v in items:
        if depth > 0 and type(v) in _LISTS:
            _flatten_into(out, v, depth - 1)
        else:
            out.append(v)
    return out


def _reverse_any(value: Any, *extra: Any) -> Any:
    """`reverse()` of the lists extension, beside the strings extension's string reverse."""
    if type(value) in _LISTS and not extra:
        return list(reversed(value))
    return _reverse(value, *extra)


def _slice(items: Any, *args: Any) -> list[Any]:
    _list_receiver("slice", items, args, 2)
    start, end = args
    if type(start) is not int or type(end) is not int:
        raise _no_overload("slice", items, *args)
    if start < 0 or end < 0:
        raise EvaluationError(f"cannot slice({start}, {end}), negative indexes not supported")
    if start > end:
        raise EvaluationError(
            f"cannot slice({start}, {end}), start index must be less than or equal to end index"
        )
    if end > len(items):
        raise EvaluationError(f"cannot slice({start}, {end}), list is length {len(items)}")
    return list(items[start:end])


def _sortable(name: str, values: Any) -> None:
    """Sorting needs one orderable element type (cel-go rejects mixed lists)."""
    if not values:
        return
    first = type(values[0])
    if first not in _ORDERED:
        raise EvaluationError(f"{name}: list elements of type {type_name(values[0])} are not comparable")
    for v in values:
        if type(v) is not first:
            raise EvaluationError(f"{name}: list elements must have the same type")


def _sort(items: Any, *extra: Any) -> list[Any]:
    _list_receiver("sort", items, extra)
    _sortable("sort", items)
    return sorted(items)


def _sort_by_keys(items: Any, keys: Any, *extra: Any) -> list[Any]:
    """Runtime half of `list.sortBy(e, key)`: a stable sort of `items` by the computed `keys`."""
    if type(items) not in _LISTS or type(keys) not in _LISTS or extra or len(items) != len(keys):
        raise _no_overload("sortBy", items, keys, *extra)
    _sortable("sortBy", keys)
    order = sorted(range(len(items)), key=keys.__getitem__)
    return [items[i] for i in order]


# ---------------------------------------------------------------------------------------------------
# sets (lists as sets, CEL equality)
# ---------------------------------------------------------------------------------------------------


class _Members:
    """Membership by CEL equality: hashed for scalars, a scan for lists and maps."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.keys = {k for k in map(_distinct_key, container) if k is not None}

    def __contains__(self, v: Any) -> bool:
        key = _distinct_key(v)
        if key is not None:
            return key in self.keys
        return any(equals(v, c) for c in self.container)


def _contains_all(container: Any, items: Any) -> bool:
    members = _Members(container)
    return all(v in members for v in items)


def _set_pair(name: str, a: Any, b: Any, extra: tuple[Any, ...]) -> None:
    if type(a) not in _LISTS or type(b) not in _LISTS or extra:
        raise _no_overload(name, a, b, *extra)


def _sets_contains(a: Any, b: Any, *extra: Any) -> bool:
    _set_pair("sets.contains", a, b, extra)
    return _contains_all(a, b)


def _sets_equivalent(a: Any, b: Any, *extra: Any) -> bool:
    _set_pair("sets.equivalent", a, b, extra)
    return _contains_all(a, b) and _contains_all(b, a)


def _sets_intersects(a: Any, b: Any, *extra: Any) -> bool:
    _set_pair("sets.intersects", a, b, extra)
    members = _Members(a)
    return any(v in members for v in b)


# ---------------------------------------------------------------------------------------------------
# macro helpers
# ---------------------------------------------------------------------------------------------------


def _map_insert(m: Any, key: Any, *value: Any) -> dict[Any, Any]:
    """`cel.@mapInsert(map, key, value)` (transformMap's step): a new map with one more entry."""
    if type(m) is not dict or len(value) != 1 or type(key) not in (str, int, UInt, bool):
        raise _no_overload("cel.@mapInsert", m, key, *value)
    out = dict(m)
    if not map_add(out, key, value[0]):  # CEL keys: true and 1 differ, 1 and 1u do not
        raise EvaluationError(f"insert failed: key {key!r} already exists")
    return out


EXT_GLOBALS: dict[str, Callable[..., Any]] = {
    "math.greatest": _extremum("math.greatest", _greater),
    "math.least": _extremum("math.least", _less),
    "math.ceil": _double_only("math.ceil", _integral(math.ceil)),
    "math.floor": _double_only("math.floor", _integral(math.floor)),
    "math.trunc": _double_only("math.trunc", _integral(math.trunc)),
    "math.round": _double_only("math.round", _round_half_away),
    "math.isInf": _double_only("math.isInf", math.isinf),
    "math.isNaN": _double_only("math.isNaN", math.isnan),
    "math.isFinite": _double_only("math.isFinite", math.isfinite),
    "math.abs": _abs,
    "math.sign": _sign,
    "math.sqrt": _sqrt,
    "math.bitAnd": _bitwise("math.bitAnd", lambda a, b: a & b),
    "math.bitOr": _bitwise("math.bitOr", lambda a, b: a | b),
    "math.bitXor": _bitwise("math.bitXor", lambda a, b: a ^ b),
    "math.bitNot": _bit_not,
    "math.bitShiftLeft": _shift_left,
    "math.bitShiftRight": _shift_right,
    "base64.encode": _base64_encode,
    "base64.decode": _base64_decode,
    "lists.range": _range,
    "sets.contains": _sets_contains,
    "sets.equivalent": _sets_equivalent,
    "sets.intersects": _sets_intersects,
    "@sortByAssociatedKeys": _sort_by_keys,
    "cel.@mapInsert": _map_insert,
}

EXT_MEMBERS: dict[str, Callable[..., Any]] = {
    "distinct": _distinct,
    "flatten": _flatten,
    "reverse": _reverse_any,
    "slice": _slice,
    "sort": _sort,
}
