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
    map          dict                           keys: int, UInt, bool, str
    timestamp    Timestamp                      nanoseconds since the Unix epoch, UTC
    duration     Duration                       nanoseconds
    type         CelType                        the value of `type(x)`

Dispatch on `type(v) is ...`, never on isinstance: bool is an int and UInt is an int in Python.
"""

from __future__ import annotations

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
