"""CEL runtime values.

CEL values are native Python values wherever the two agree, so bindings need no wrapping:

    CEL type     Python                         note
    int          int                            always checked against int64 range
    uint         UInt (subclass of int)         `type(v) is UInt` tells it from int
    double       float
    bool         bool                           `type(v) is bool`; never treated as a number
    string       str                            indexed by code point
    bytes        bytes
    null_type    None
    list         list (tuples accepted)
    map          dict                           keys: int, UInt, bool, str (bool: see BoolKey)
    timestamp    Timestamp                      nanoseconds since the Unix epoch, UTC
    duration     Duration                       nanoseconds
    type         CelType                        the value of `type(x)`

Dispatch on `type(v) is ...`, never on isinstance: bool is an int and UInt is an int in Python.

Map keys follow CEL, not Python: int 1 and uint 1 are one key, but `true` is another (Python has
True == 1 and hash(True) == hash(1), so a dict cannot hold both). A bool key is stored as itself
unless the map also holds an int or uint key of the same value; then it is stored as its `BoolKey`.
Maps without such a pair, which is every map a Python caller can write, are plain dicts with plain
keys. The functions below are the only code that reads or writes keys other than strings:
`map_find`, `map_add`, and `map_keys`/`map_items`, which iterate with the bool keys unwrapped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class UInt(int):
    """An unsigned 64-bit CEL integer."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class Timestamp:
    """A point in time with nanosecond precision (CEL's google.protobuf.Timestamp)."""

    __slots__ = ("nanos",)

    def __init__(self, nanos: int) -> None:
        self.nanos = nanos

    def __eq__(self, other: object) -> bool:
        return type(other) is Timestamp and other.nanos == self.nanos

    def __lt__(self, other: Timestamp) -> bool:
        return self.nanos < other.nanos

    def __le__(self, other: Timestamp) -> bool:
        return self.nanos <= other.nanos

    def __gt__(self, other: Timestamp) -> bool:
        return self.nanos > other.nanos

    def __ge__(self, other: Timestamp) -> bool:
        return self.nanos >= other.nanos

    def __hash__(self) -> int:
        return hash(("timestamp", self.nanos))

    def __repr__(self) -> str:
        return f"Timestamp({self.nanos})"


class Duration:
    """A signed span of time with nanosecond precision (CEL's google.protobuf.Duration)."""

    __slots__ = ("nanos",)

    def __init__(self, nanos: int) -> None:
        self.nanos = nanos

    def __eq__(self, other: object) -> bool:
        return type(other) is Duration and other.nanos == self.nanos

    def __lt__(self, other: Duration) -> bool:
        return self.nanos < other.nanos

    def __le__(self, other: Duration) -> bool:
        return self.nanos <= other.nanos

    def __gt__(self, other: Duration) -> bool:
        return self.nanos > other.nanos

    def __ge__(self, other: Duration) -> bool:
        return self.nanos >= other.nanos

    def __hash__(self) -> int:
        return hash(("duration", self.nanos))

    def __repr__(self) -> str:
        return f"Duration({self.nanos})"


class CelType:
    """A CEL type as a runtime value: what `type(x)` returns, and what `int`, `string`, ... denote."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return type(other) is CelType and other.name == self.name

    def __hash__(self) -> int:
        return hash(("type", self.name))

    def __repr__(self) -> str:
        return self.name


class BoolKey:
    """The stored form of a bool map key whose map also has an int or uint key of the same value.

    Exactly two instances exist (TRUE_KEY and FALSE_KEY, also what `BoolKey(b)` returns), so the
    default identity equality and hashing are right, and a dict finds them at C speed. They equal
    no other value: a map may hold BoolKey(True) beside 1 and 1u (which are one key).
    """

    __slots__ = ("value",)
    value: bool

    def __new__(cls, value: bool) -> BoolKey:
        return TRUE_KEY if value else FALSE_KEY

    def __reduce__(self) -> str:
        # copy and pickle keep the singletons (a string names the module-level object)
        return "TRUE_KEY" if self.value else "FALSE_KEY"

    def __repr__(self) -> str:
        return f"BoolKey({self.value})"


def _bool_key(value: bool) -> BoolKey:
    key = object.__new__(BoolKey)
    object.__setattr__(key, "value", value)
    return key


TRUE_KEY = _bool_key(True)
FALSE_KEY = _bool_key(False)
_BOOL_KEYS = (FALSE_KEY, TRUE_KEY)  # indexed by the bool

MISSING: Any = object()  # what map_find returns for an absent key


def _stored_is_bool(m: dict[Any, Any], key: Any) -> bool:
    """Whether the plain key `m` holds equal to `key` (0, 1, False or True) is a bool.

    A dict does not say which of the equal keys True, 1 and 1u it holds; only 0 and 1 need this
    scan, and only when the lookup found something.
    """
    for stored in m:
        if type(stored) is not str and stored == key and type(stored) is not BoolKey:
            return type(stored) is bool
    return False


def map_find(m: dict[Any, Any], key: Any) -> Any:
    """The value under `key` with CEL key semantics, or MISSING.

    Numeric keys match across int, uint and double by value (langdef "Numbers"); a bool key only
    matches a bool. Keys that cannot be map keys (lists, maps, null ...) are simply absent.
    """
    tk = type(key)
    if tk is str:
        return m.get(key, MISSING)
    if tk is bool or tk is BoolKey:
        flag = key if tk is bool else key.value
        value = m.get(_BOOL_KEYS[flag], MISSING)
        if value is not MISSING:
            return value
        value = m.get(flag, MISSING)
        if value is MISSING or _stored_is_bool(m, flag):
            return value
        return MISSING  # what is stored is an int or uint 0/1
    if tk is float:
        if not key.is_integer():
            return MISSING
    elif tk is not int and tk is not UInt:
        try:
            return m.get(key, MISSING)
        except TypeError:  # unhashable: a list or a map is never a key
            return MISSING
    value = m.get(key, MISSING)
    if value is MISSING or (key != 0 and key != 1) or not _stored_is_bool(m, key):
        return value
    return MISSING  # what is stored is the bool of the same value


def map_add(m: dict[Any, Any], key: Any, value: Any) -> bool:
    """Add an entry under a key of a CEL map key type (str, int, UInt, bool or BoolKey);
    False, leaving `m` unchanged, when the map already has that key."""
    tk = type(key)
    if tk is str or (tk is not bool and tk is not BoolKey and key != 0 and key != 1):
        if key in m:
            return False
        m[key] = value
        return True
    if tk is bool or tk is BoolKey:
        flag = key if tk is bool else key.value
        wrapped = _BOOL_KEYS[flag]
        if wrapped in m:
            return False
        if flag in m:
            if _stored_is_bool(m, flag):
                return False
            m[wrapped] = value  # an int or uint of the same value holds the plain key
        else:
            m[flag] = value
        return True
    # int or uint 0 or 1
    if key in m:
        if not _stored_is_bool(m, key):
            return False
        flag = bool(key)
        m[_BOOL_KEYS[flag]] = m.pop(flag)  # the bool moves to its wrapper; the number takes the key
    m[key] = value
    return True


def map_keys(m: dict[Any, Any]) -> Iterable[Any]:
    """A map's keys as CEL values (a stored BoolKey as its bool)."""
    if TRUE_KEY in m or FALSE_KEY in m:
        return [k.value if type(k) is BoolKey else k for k in m]
    return m


def map_items(m: dict[Any, Any]) -> Iterable[tuple[Any, Any]]:
    """A map's entries with keys as CEL values (a stored BoolKey as its bool)."""
    if TRUE_KEY in m or FALSE_KEY in m:
        return [(k.value if type(k) is BoolKey else k, v) for k, v in m.items()]
    return m.items()
