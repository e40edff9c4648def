"""Load a workflow file: YAML text -> plain data + the file:line:col of every node, or diagnostics.

Decisions (the spec repeats them for authors):

- **Scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 default.** Only `true`/`false`
  (also `True`, `TRUE`, ...) are booleans; `on`, `off`, `yes`, `no`, `y`, `n` stay strings (a guardrail
  has a field named `on`). Timestamps stay strings (no datetime objects in the data). Integers are
  decimal, `0o17` or `0x1f` (`1_000` and `1:30` are strings); floats include `1e5`, `.inf`, `.nan`;
  `~`, `null` and an empty value are null. The explicit tags `!!str !!int !!float !!bool !!null !!map
  !!seq` work; any other tag (`!!timestamp`, `!!binary`, `!custom`, ...) is CH015.
- **Anchors and aliases are allowed, bounded.** Expanding aliases may create at most
  `MAX_ALIAS_NODES` nodes in total (a "billion laughs" file stops there with CH006), and an alias to
  one of its own enclosing nodes is CH006. Merge keys (`<<: *base`) work as in YAML 1.1; explicit
  keys win over merged ones. Positions of aliased content are those of the anchored original.
- **Duplicate keys** are CH005 at the second occurrence; the first value is kept.
- **Non-string keys** are CH007; a scalar key is kept under its source text so later stages go on.
- **Nesting** deeper than `MAX_DEPTH` is CH016 (it also protects the C parser's stack).
- `charter: 1.0` (a float) is accepted with warning CH014 and normalised to the string "1.0".
- A float JSON cannot hold (`.inf`, `.nan`, `1e999`) is CH018.
- **Positions** are 1-based; columns count Unicode code points (not bytes, not UTF-16 units); a
  leading byte-order mark is dropped. `value_position(path, offset)` maps a character offset inside a
  string value (e.g. a CEL error offset) to its file line and column for every scalar style: plain and
  quoted (escapes and `''` decoded), multi-line (folding), literal `|` and folded `>` blocks (the
  content's own line, after the block indentation). Whitespace produced by folding has no exact
  source; it maps to the nearest source whitespace. Line counting assumes `\n`/`\r\n` line ends
  (a raw NEL or U+2028, which YAML also treats as a line break, would shift later lines).

`load_text`/`load_file` never raise for anything the input holds. They return `(None, diags)` when no
usable mapping exists, else the document plus diagnostics (which may still hold errors).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from dsl.diagnostics import Diagnostic, error, warning

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 200
MAX_ALIAS_NODES = 10_000
SUPPORTED_VERSIONS = ("1.0",)

# An upper bound on nesting below which the (recursive, C-stack) composer is safe without a pre-scan.
_SAFE_NESTING_BOUND = 2_000

Path_ = Sequence[str | int]
ScalarStyle = Literal["plain", "single", "double", "literal", "folded"]

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, MAP, SEQ = (
    _TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)

# --- the YAML 1.2 core schema resolver --------------------------------------------------------------

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
_MAYBE_NOT_STR = frozenset("-+.0123456789~nNtTfF")
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


def _resolve_plain(value: str) -> str:
    if value and value[0] not in _MAYBE_NOT_STR:
        return STR  # the fast path: most plain scalars are words
    if value in _NULLS:
        return NULL
    if value in _TRUE or value in _FALSE:
        return BOOL
    if _INT_RE.fullmatch(value):
        return INT
    if _FLOAT_RE.fullmatch(value):
        return FLOAT
    return STR


class _CoreResolver(BaseResolver):
    """Replaces PyYAML's YAML 1.1 implicit resolvers (which turn `on`/`yes` into booleans)."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:  # type: ignore[override]
        if kind is ScalarNode:
            return _resolve_plain(value) if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP


class _PyComposer(Reader, Scanner, Parser, Composer, _CoreResolver):
    """PyYAML's pure-Python composer: the fallback when PyYAML was built without libyaml."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)


try:
    from yaml._yaml import CParser

    class _CComposer(CParser, _CoreResolver):  # type: ignore[misc,valid-type]
        """libyaml's composer: about 10x faster than the pure-Python one."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _CoreResolver.__init__(self)

    _Composer: type = _CComposer
    HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _Composer = _PyComposer
    HAVE_LIBYAML = False


# --- positions ----------------------------------------------------------------------------------------


class _Map:
    """Shadow of a mapping: key -> (key node, shadow of the value)."""

    __slots__ = ("node", "entries")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.entries: dict[str, tuple[Node, _Shadow]] = {}


class _Seq:
    __slots__ = ("node", "items")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.items: list[_Shadow] = []


_Shadow = _Map | _Seq | ScalarNode

_STYLES: dict[str | None, ScalarStyle] = {
    None: "plain",
    "": "plain",
    "'": "single",
    '"': "double",
    "|": "literal",
    ">": "folded",
}


def _node_of(shadow: _Shadow) -> Node:
    return shadow if isinstance(shadow, ScalarNode) else shadow.node


def _start(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


@dataclass
class LoadedDocument:
    """A loaded file: `data` is plain dict/list/str/int/float/bool/None; positions are 1-based."""

    file: str
    text: str
    data: Any
    _root: _Shadow | None = field(default=None, repr=False, compare=False)

    def _walk(self, path: Path_) -> tuple[Node | None, _Shadow | None, bool]:
        """(key node of the last step, shadow reached, whether the whole path exists)."""
        key: Node | None = None
        shadow = self._root
        for part in path:
            if isinstance(shadow, _Map) and isinstance(part, str) and part in shadow.entries:
                key, shadow = shadow.entries[part]
            elif (
                isinstance(shadow, _Seq)
                and isinstance(part, int)
                and -len(shadow.items) <= part < len(shadow.items)
            ):
                shadow = shadow.items[part]
                key = _node_of(shadow)
            else:
                return key, shadow, False
        return key, shadow, True

    def has(self, path: Path_) -> bool:
        return self._walk(path)[2]

    def position(self, path: Path_) -> tuple[int, int]:
        """Line and column of the value at `path`, or of the nearest existing ancestor."""
        _, shadow, _ = self._walk(path)
        return _start(_node_of(shadow)) if shadow is not None else (1, 1)

    def key_position(self, path: Path_) -> tuple[int, int]:
        """Line and column of the key of the last step of `path` (for a list index: the item)."""
        key, shadow, found = self._walk(path)
        if found and key is not None:
            return _start(key)
        return _start(_node_of(shadow)) if shadow is not None else (1, 1)

    def end_position(self, path: Path_) -> tuple[int, int]:
        """Line and column just after the value at `path` (or its nearest existing ancestor)."""
        _, shadow, _ = self._walk(path)
        if shadow is None:
            return 1, 1
        mark = _node_of(shadow).end_mark
        return mark.line + 1, mark.column + 1

    def scalar_style(self, path: Path_) -> ScalarStyle | None:
        """How the scalar at `path` is written; None if the path is missing or not a scalar."""
        _, shadow, found = self._walk(path)
        if not found or not isinstance(shadow, ScalarNode):
            return None
        return _STYLES.get(shadow.style, "plain")

    def value_position(self, path: Path_, offset: int) -> tuple[int, int]:
        """File line and column of character `offset` of the string at `path`.

        Exact for plain and quoted scalars (escapes, `''` and line folding accounted for) and for
        literal (`|`) and folded (`>`) block scalars. `offset == len(value)` gives the position just
        after the last character. Falls back to `position(path)` when `path` is not a scalar.
        """
        _, shadow, found = self._walk(path)
        if not found or not isinstance(shadow, ScalarNode):
            return self.position(path)
        return _offset_position(self.text, shadow, offset)

    def content_start(self, path: Path_) -> tuple[int, int]:
        """Position of the first character of the string's content (after an opening quote, a block header)."""
        return self.value_position(path, 0)


def _offset_position(text: str, node: ScalarNode, offset: int) -> tuple[int, int]:
    start, end, value = node.start_mark.index, node.end_mark.index, node.value
    style = node.style or ""
    if style == "" and "\n" not in text[start:end]:  # the common case: a single-line plain scalar
        return node.start_mark.line + 1, node.start_mark.column + 1 + max(0, min(offset, len(value)))
    p = _content_begin(text, node, style)
    offset = max(0, min(offset, len(value)))
    for k in range(offset + 1):
        if k == len(value):
            break
        matched = _align(text, p, end, value[k], style)
        if matched is None:
            return _start(node)
        begin, p = matched
        if k == offset:
            return _index_position(text, node, begin)
    return _index_position(text, node, p)


def _content_begin(text: str, node: ScalarNode, style: str) -> int:
    start = node.start_mark.index
    if style in ("'", '"'):
        return start + 1
    if style in ("|", ">"):
        newline = text.find("\n", start)
        return len(text) if newline < 0 else newline + 1
    return start


_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
    "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028",
    "P": "\u2029",
}  # fmt: skip
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
_SPACE = " \t\r\n"


def _escape(text: str, p: int) -> tuple[str, int]:
    """The character a double-quoted escape at `p` produces, and the escape's length in the source."""
    kind = text[p + 1 : p + 2]
    digits = _HEX_DIGITS.get(kind)
    if digits is None:
        return _ESCAPES.get(kind, ""), 2
    try:
        return chr(int(text[p + 2 : p + 2 + digits], 16)), 2 + digits
    except ValueError:
        return "", 2 + digits


def _skip_space(text: str, p: int, limit: int) -> int:
    while p < limit and text[p] in _SPACE:
        p += 1
    return p


def _align(text: str, p: int, end: int, char: str, style: str) -> tuple[int, int] | None:
    """Find where value character `char` comes from, scanning source from `p`: (its index, next index).

    Escapes and `''` are decoded exactly. Whitespace in the value may come from folded line breaks and
    indentation, so it matches a run of source whitespace, or nothing (zero width); other characters
    skip source until they match.
    """
    limit = min(end, len(text))
    space = char in _SPACE
    while p < limit:
        c = text[p]
        if style == '"' and c == "\\":
            if text[p + 1 : p + 2] in ("\n", "\r"):  # an escaped line break produces nothing
                p = _skip_space(text, p + 1, limit)
                continue
            produced, length = _escape(text, p)
        elif style == "'" and c == "'" and text[p + 1 : p + 2] == "'":
            produced, length = "'", 2
        elif space:
            return (p, _skip_space(text, p, limit)) if c in _SPACE else (p, p)
        else:
            produced, length = c, 1
        if produced == char:
            return p, p + length
        if space:
            return p, p
        p += length
    return None


def _index_position(text: str, node: ScalarNode, index: int) -> tuple[int, int]:
    base = node.start_mark.index
    line = node.start_mark.line + text.count("\n", base, index)
    last_newline = text.rfind("\n", 0, index)
    column = node.start_mark.column + (index - base) if last_newline < base else index - last_newline - 1
    return line + 1, column + 1


# --- building plain data ------------------------------------------------------------------------------


class _Stop(Exception):
    """Abandon the document: a diagnostic that leaves nothing usable (alias bomb, nesting)."""

    def __init__(self, diag: Diagnostic) -> None:
        super().__init__(diag.message)
        self.diag = diag


class _Builder:
    """Turns composed nodes into plain data and the position shadow, collecting diagnostics."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diags: list[Diagnostic] = []
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.alias_budget = MAX_ALIAS_NODES
        self.last_written: Node | None = None

    def _err(self, code: str, message: str, node: Node | None, hint: str | None = None) -> Diagnostic:
        line, col = _start(node) if node is not None else (1, 1)
        return error(code, message, self.file, line, col, hint)

    def build(self, node: Node, depth: int = 0, aliased: bool = False) -> tuple[Any, _Shadow]:
        ident = id(node)
        if ident in self.active:
            raise _Stop(
                self._err("CH006", "an alias refers to a node that contains it (recursive alias)", node)
            )
        if ident in self.seen:
            aliased = True  # this node is reached a second time: through an alias
        else:
            self.seen.add(ident)
        if not aliased:
            self.last_written = node  # aliased nodes lie elsewhere; report expansion where it happens
        else:
            self.alias_budget -= 1
            if self.alias_budget < 0:
                raise _Stop(
                    self._err(
                        "CH006",
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)",
                        self.last_written,
                        "use fewer nested aliases; repeat the content instead",
                    )
                )
        if depth > MAX_DEPTH:
            raise _Stop(self._err("CH016", f"the document nests more than {MAX_DEPTH} levels deep", node))
        if isinstance(node, ScalarNode):
            return self._scalar(node), node
        self.active.add(ident)
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, depth, aliased)
            return self._sequence(node, depth, aliased)
        finally:
            self.active.discard(ident)

    def _check_tag(self, node: Node, allowed: tuple[str, ...]) -> None:
        if node.tag not in allowed and node.tag != "!":
            short = node.tag.replace(_TAG, "!!")
            hint = (
                "Charter files use plain YAML values; remove the tag (only !!str, !!int, !!float, "
                "!!bool, !!null, !!map and !!seq are allowed)"
            )
            if not short.startswith("!!"):  # `if: !has(x)`: CEL's `not` read as a tag
                rest = node.value if isinstance(node, ScalarNode) and node.value else ""
                written = f"{short} {rest}".strip()
                hint = f"a value that starts with ! is read as a YAML tag: quote it, e.g. '{written}'"
            self.diags.append(self._err("CH015", f"YAML tag {short} is not supported here", node, hint))

    def _scalar(self, node: ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == STR:
            return value
        try:
            if tag == NULL:
                if value in _NULLS:
                    return None
            elif tag == BOOL:
                if value in _TRUE or value in _FALSE:
                    return value in _TRUE
            elif tag == INT:
                return _to_int(value)
            elif tag == FLOAT:
                number = _to_float(value)
                if not math.isfinite(number):  # workflows, their values and the log are JSON
                    self.diags.append(self._err("CH018", f"{value} is not a number JSON can hold", node))
                return number
            else:
                self._check_tag(node, (STR,))
                return value
        except ValueError:
            pass
        short = tag.replace(_TAG, "!!")
        self.diags.append(self._err("CH015", f"{value!r} is not a valid {short} value", node))
        return value

    def _mapping(self, node: MappingNode, depth: int, aliased: bool) -> tuple[dict[str, Any], _Map]:
        self._check_tag(node, (MAP,))
        data: dict[str, Any] = {}
        shadow = _Map(node)
        merged: list[tuple[dict[str, Any], _Map]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style:
                merged.extend(self._merge_sources(key_node, value_node, depth, aliased))
                continue
            key = self._key(key_node)
            value, value_shadow = self.build(value_node, depth + 1, aliased)
            if key is None:
                continue
            if key in shadow.entries:
                first = shadow.entries[key][0].start_mark
                self.diags.append(
                    self._err(
                        "CH005",
                        f"duplicate key {key!r} (first defined at line {first.line + 1}, column {first.column + 1})",
                        key_node,
                        "remove one of them; the first value is the one kept",
                    )
                )
                continue
            data[key] = value
            shadow.entries[key] = (key_node, value_shadow)
        for source_data, source_shadow in merged:  # explicit keys, then earlier merge sources, win
            for key, value in source_data.items():
                if key not in data:
                    data[key] = value
                    shadow.entries[key] = source_shadow.entries[key]
        return data, shadow

    def _merge_sources(
        self, key_node: Node, node: Node, depth: int, aliased: bool
    ) -> list[tuple[dict[str, Any], _Map]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        out: list[tuple[dict[str, Any], _Map]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                self.diags.append(
                    self._err(
                        "CH017",
                        "the merge key `<<` needs a mapping or a list of mappings (usually an alias like *base)",
                        key_node,
                    )
                )
                continue
            data, shadow = self.build(source, depth + 1, True)  # merged content is expanded content
            assert isinstance(shadow, _Map)
            out.append((data, shadow))
        return out

    def _key(self, key_node: Node) -> str | None:
        if isinstance(key_node, ScalarNode):
            if key_node.tag == STR:
                return key_node.value
            shown = key_node.value if key_node.value else "an empty key"
            self.diags.append(
                self._err(
                    "CH007",
                    f"mapping key {shown!r} is a {_kind(key_node.tag)}, not a string",
                    key_node,
                    f'quote it: "{key_node.value}"' if key_node.value else "give the key a name",
                )
            )
            return key_node.value
        self.diags.append(
            self._err("CH007", "a mapping key must be a string, not a list or a mapping", key_node)
        )
        return None

    def _sequence(self, node: SequenceNode, depth: int, aliased: bool) -> tuple[list[Any], _Seq]:
        self._check_tag(node, (SEQ,))
        data: list[Any] = []
        shadow = _Seq(node)
        for item in node.value:
            value, item_shadow = self.build(item, depth + 1, aliased)
            data.append(value)
            shadow.items.append(item_shadow)
        return data, shadow


def _kind(tag: str) -> str:
    return {INT: "number", FLOAT: "number", BOOL: "boolean", NULL: "null"}.get(tag, tag.replace(_TAG, "!!"))


def _to_int(value: str) -> int:
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


def _to_float(value: str) -> float:
    lowered = value.lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    return float(value)


# --- composing, and turning PyYAML's errors into diagnostics ------------------------------------------


def _line_col(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# A bracket can only open a flow collection at the start of a line or after whitespace or one of
# `[{,:?-`; after any other character libyaml stops with a syntax error before nesting deeper. So
# the `{{` of `${{ expr }}` counts once, not twice.
_FLOW_OPENER = re.compile(r"(?<![^\s\[{,:?\-])[\[{]")


def _nesting_bound(text: str) -> int:
    """A cheap upper bound of the nesting depth: block levels need indentation, flow levels brackets."""
    longest = max((len(line) for line in text.split("\n")), default=0)
    return 2 * (longest + 1) + len(_FLOW_OPENER.findall(text))


def _scan_depth(text: str, file: str) -> Diagnostic | None:
    """Walk the event stream (iterative in libyaml) and refuse nesting deeper than MAX_DEPTH."""
    parser = None
    depth = 0
    try:
        parser = _Composer(text)  # the pure-Python reader already checks characters here
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = event.start_mark.line + 1, event.start_mark.column + 1
                    return error(
                        "CH016", f"the document nests more than {MAX_DEPTH} levels deep", file, line, col
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except Exception:  # any failure here: composing again below reports it properly
        return None  # the composer reports the error with its full context
    finally:
        if parser is not None:
            parser.dispose()
    return None


_FRIENDLY: tuple[tuple[str, str, str | None], ...] = (
    (
        "mapping values are not allowed",
        "unexpected ':' here",
        "a value that contains ': ' must be quoted; otherwise check the indentation",
    ),
    (
        "could not find expected ':'",
        "expected ':' after a mapping key",
        "check the indentation of this line and the lines before; a value continued on a new line may need quotes",
    ),
    ("did not find expected key", "expected a mapping key here", "check the indentation of this line"),
    ("did not find expected '-' indicator", "expected a list item '- ' here", "check the indentation"),
    ("did not find expected node content", "expected a value here", None),
    (
        "did not find expected ',' or ']'",
        "unclosed '[': expected ',' or ']'",
        "close the list with ']' or quote a value that contains brackets or commas",
    ),
    (
        "did not find expected ',' or '}'",
        "unclosed '{': expected ',' or '}'",
        "close the mapping with '}' or quote a value that contains braces or commas",
    ),
    ("found unexpected end of stream", "unexpected end of file", "a quote or bracket is probably not closed"),
    (
        "found unknown escape character",
        "unknown escape sequence in a double-quoted string",
        "in double quotes a backslash starts an escape; use single quotes for regexes and CEL",
    ),
    (
        "found character that cannot start any token",
        "found a character that cannot start a YAML value",
        "quote values that start with ` @ or %",
    ),
)


_UNCLOSED = {
    "quoted scalar": "the quoted string that starts here",
    "flow sequence": "the '[' list that starts here",
    "flow mapping": "the '{' mapping that starts here",
}


def _mark_at(mark: Any) -> tuple[int, int]:
    return (mark.line, mark.column) if mark is not None else (0, 0)


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, text: str, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    unclosed = exc.context_mark is not None and "end of stream" in (exc.problem or "")
    if unclosed:
        mark = exc.context_mark  # the end of the file says little; point at what was left open
    elif exc.context_mark is not None and "could not find expected ':'" in (exc.problem or ""):
        mark = exc.context_mark  # the line that lacks its ':' (the problem mark is on the next line)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    index = mark.index if mark is not None else 0
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    if "maximum nesting depth" in problem:  # PyYAML >= 6.0.4 has a nesting limit of its own
        return error("CH016", f"the document nests more than {MAX_DEPTH} levels deep", file, line, col)
    if "\t" in text[index : index + 1] or "tab" in problem:
        return error(
            "CH008",
            "tab character in indentation; YAML indents with spaces only",
            file,
            line,
            col,
            "replace the tab with spaces",
        )
    if "alias" in problem or "anchor" in f"{exc.context} {problem}":
        name = re.match(r"[*&]([^\s,\[\]{}]+)", text[index:])
        shown = f" '{name.group(0)}'" if name else ""
        if "undefined" in problem:
            message = f"alias{shown} refers to an anchor that is not defined before it"
        else:
            message = f"anchor{shown} is defined twice"
        return error("CH006", message, file, line, col)
    message, hint = problem, None
    for needle, friendly, friendly_hint in _FRIENDLY:
        if needle in problem:
            message, hint = friendly, friendly_hint
            break
    if unclosed:
        what = next((v for k, v in _UNCLOSED.items() if k in (exc.context or "")), "this construct")
        return error("CH004", f"YAML syntax error: {what} is never closed", file, line, col, hint)
    if exc.context and exc.context_mark is not None and _mark_at(exc.context_mark) != _mark_at(mark):
        where = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message = f"{message} ({exc.context} started at {where})"
    return error("CH004", f"YAML syntax error: {message}", file, line, col, hint)


def _second_document_start(text: str, node: Node | None) -> tuple[int, int]:
    """The `---` line that starts the second document (or its first node when there is none)."""
    if node is None:
        return 1, 1
    index = node.start_mark.index
    separators = [m.start() for m in re.finditer(r"(?m)^---", text[: index + 3])]
    return _line_col(text, separators[-1]) if separators else _start(node)


def _compose(text: str, file: str) -> tuple[Node | None, list[Diagnostic]]:
    """Compose the single document of `text`; (None, diags) when there is none or it is broken."""
    if _nesting_bound(text) > _SAFE_NESTING_BOUND:
        deep = _scan_depth(text, file)
        if deep is not None:
            return None, [deep]
    composer = None
    try:
        composer = _Composer(text)
        if not composer.check_node():
            return None, [error("CH009", "the document is empty", file, 1, 1, 'start with: charter: "1.0"')]
        root = composer.get_node()
        if composer.check_node():
            extra = composer.get_node()
            line, col = _second_document_start(text, extra)
            return None, [
                error(
                    "CH010",
                    "the file holds more than one YAML document; a workflow file is exactly one",
                    file,
                    line,
                    col,
                    "remove the '---' separator (or split the file)",
                )
            ]
        return root, []
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_diagnostic(exc, text, file)]
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        return None, [error("CH003", f"invalid character: {exc.reason}", file, line, col)]
    except yaml.YAMLError as exc:
        return None, [error("CH004", f"YAML syntax error: {exc}", file, 1, 1)]
    except RecursionError:
        return None, [error("CH016", f"the document nests more than {MAX_DEPTH} levels deep", file, 1, 1)]
    except Exception as exc:  # last resort: PyYAML must never turn input into a traceback
        return None, [error("CH004", f"YAML syntax error: {exc}", file, 1, 1)]
    finally:
        if composer is not None:
            composer.dispose()


def _first_bad_character(text: str) -> int | None:
    """Index of a character that cannot be encoded as UTF-8 (a lone surrogate), if any."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _check_version(doc: LoadedDocument, diags: list[Diagnostic]) -> None:
    data = doc.data
    if "charter" not in data:
        diags.append(
            error(
                "CH012",
                "missing `charter:` language version",
                doc.file,
                *doc.position([]),
                hint=f'add `charter: "{SUPPORTED_VERSIONS[-1]}"` at the top of the file',
            )
        )
        return
    version = data["charter"]
    line, col = doc.position(["charter"])
    if (
        isinstance(version, float)
        and not isinstance(version, bool)
        and f"{version:.1f}" in SUPPORTED_VERSIONS
    ):
        quoted = f"{version:.1f}"
        diags.append(
            warning(
                "CH014",
                f"`charter: {quoted}` is a number; write the version as a string",
                doc.file,
                line,
                col,
                hint=f'write charter: "{quoted}" (as a number, 1.10 would read as 1.1)',
            )
        )
        data["charter"] = quoted
        return
    if version not in SUPPORTED_VERSIONS or not isinstance(version, str):
        supported = ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
        diags.append(
            error(
                "CH013",
                f"unsupported Charter language version {version!r}; supported: {supported}",
                doc.file,
                line,
                col,
                hint=f'write charter: "{SUPPORTED_VERSIONS[-1]}"',
            )
        )


def load_text(text: str, file: str = "<string>") -> tuple[LoadedDocument | None, list[Diagnostic]]:
    """Load one workflow document from `text`. Never raises for anything `text` holds."""
    if len(text) > MAX_FILE_BYTES:
        return None, [
            error(
                "CH002", f"the document is larger than the limit of {MAX_FILE_BYTES:,} characters", file, 1, 1
            )
        ]
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not content, and editors do not count it as a column
    bad = _first_bad_character(text)
    if bad is not None:
        return None, [error("CH003", "invalid character (a lone surrogate)", file, *_line_col(text, bad))]
    root, diags = _compose(text, file)
    if root is None:
        return None, diags
    builder = _Builder(file)
    try:
        data, shadow = builder.build(root)
    except _Stop as stop:
        return None, [*builder.diags, stop.diag]
    except RecursionError:
        return None, [error("CH016", f"the document nests more than {MAX_DEPTH} levels deep", file, 1, 1)]
    diags = builder.diags
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        line, col = _start(root)
        diags.append(
            error(
                "CH011",
                f"the top level of a workflow must be a mapping (key: value lines), not {kind}",
                file,
                line,
                col,
                'start with: charter: "1.0"',
            )
        )
        return None, diags
    doc = LoadedDocument(file=file, text=text, data=data, _root=shadow)
    _check_version(doc, diags)
    return doc, diags


def load_file(path: str | Path) -> tuple[LoadedDocument | None, list[Diagnostic]]:
    """Read and load one workflow file. Never raises for a missing, unreadable or malformed file."""
    file = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        return None, [error("CH001", "cannot read the file: it is a directory", file, 1, 1)]
    except FileNotFoundError:
        return None, [error("CH001", "cannot read the file: no such file", file, 1, 1)]
    except OSError as exc:
        return None, [error("CH001", f"cannot read the file: {exc.strerror or exc}", file, 1, 1)]
    if len(raw) > MAX_FILE_BYTES:
        return None, [
            error("CH002", f"the file is larger than the limit of {MAX_FILE_BYTES:,} bytes", file, 1, 1)
        ]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace")) + 1
        return None, [
            error("CH003", "the file is not valid UTF-8 text", file, line, column, "save the file as UTF-8")
        ]
    return load_text(text, file)
