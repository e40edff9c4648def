"""CEL source -> `ast.Expr`, with Lark's LALR parser (grammar in cel.lark) built once per process.

The tree is built during parsing (Lark's inline transformer), so no intermediate parse tree exists.
Macros (`has`, `all`, `exists`, `exists_one`/`existsOne`, `map`, `filter`, the two-variable
`transformList`/`transformMap`, `cel.bind` and the lists extension's `sortBy`) are expanded here into
`Comprehension` nodes exactly as langdef "Macros" describes; the evaluator recognises them by
`Comprehension.macro` to take fast paths.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dsl.expr import ast
from dsl.expr.errors import ExpressionSyntaxError
from dsl.expr.values import INT64_MAX, INT64_MIN, UINT64_MAX, UInt

MAX_DEPTH = 250  # deepest AST accepted; keeps the closure compiler and evaluator far from Python's limit

RESERVED = frozenset(
    "as break const continue else for function if import let loop package namespace return var void while".split()
)
ACCU = ast.ACCU_VAR

_GRAMMAR = Path(__file__).with_name("cel.lark")
_parsers: dict[bool, Lark] = {}
_lock = threading.Lock()


class _Fail(Exception):
    """A syntax error found while building the tree (carries offset; source is added later)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


# ---- literals ----------------------------------------------------------------------------------

_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\?\"'`])|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-3][0-7]{2})|([\s\S]?))"
)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(body: str, is_bytes: bool, offset: int) -> str | bytes:
    """Interpret CEL escape sequences; octal and \\x in bytes denote octets, not code points."""
    if "\\" not in body:
        return body.encode("utf-8") if is_bytes else body
    out: list[Any] = []  # str pieces, or for bytes: bytes pieces
    pos = 0
    for m in _ESCAPE.finditer(body):
        if m.start() > pos:
            text = body[pos : m.start()]
            out.append(text.encode("utf-8") if is_bytes else text)
        pos = m.end()
        simple, hex2, hex4, hex8, octal, bad = m.groups()
        where = offset + m.start()
        if simple is not None:
            ch = _SIMPLE.get(simple, simple)
            out.append(ch.encode("ascii") if is_bytes else ch)
            continue
        if bad is not None:
            raise _Fail(f"invalid escape sequence '\\{bad}'", where)
        if hex8 and is_bytes:
            raise _Fail("\\U escapes are not allowed in bytes literals", where)
        code = int(octal, 8) if octal else int(hex2 or hex4 or hex8, 16)
        if hex2 or octal:
            out.append(bytes([code]) if is_bytes else chr(code))
            continue
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise _Fail(f"invalid unicode code point in escape '{m.group(0)}'", where)
        # \u in bytes (langdef): the UTF-8 encoding of the code point
        out.append(chr(code).encode("utf-8") if is_bytes else chr(code))
    if pos < len(body):
        text = body[pos:]
        out.append(text.encode("utf-8") if is_bytes else text)
    return b"".join(out) if is_bytes else "".join(out)


def _string_literal(tok: Token) -> str | bytes:
    text = str(tok)
    i = 0
    is_bytes = is_raw = False
    while text[i] not in "\"'":
        if text[i] in "bB":
            is_bytes = True
        else:
            is_raw = True
        i += 1
    q = 3 if text[i : i + 3] in ('"""', "'''") and len(text) - i >= 6 else 1
    body = text[i + q : len(text) - q]
    if is_raw:
        return body.encode("utf-8") if is_bytes else body
    return _unescape(body, is_bytes, tok.start_pos + i + q)


class _BigInt(int):
    """An int literal above int64 max: legal only as the operand of a unary minus."""

    __slots__ = ()


# ---- tree building -----------------------------------------------------------------------------


def _pos(x: Any) -> int:
    return x.start_pos if isinstance(x, Token) else x.offset


def _qualified_name(e: ast.Expr) -> str | None:
    """`a.b.c` for an Ident/Select chain, else None."""
    parts: list[str] = []
    while type(e) is ast.Select and not e.test_only:
        parts.append(e.field)
        e = e.operand
    if type(e) is not ast.Ident:
        return None
    parts.append(e.name)
    return ".".join(reversed(parts))


def _ident(name: str, offset: int) -> ast.Ident:
    return ast.Ident(offset, name)


def _call(fn: str, offset: int, *args: ast.Expr) -> ast.Call:
    return ast.Call(offset, fn, tuple(args))


# Receiver macros: name -> accepted argument counts (variables included).
_RECEIVER_MACROS: dict[str, tuple[int, ...]] = {
    "all": (2, 3),
    "exists": (2, 3),
    "exists_one": (2, 3),
    "existsOne": (2, 3),  # cel-go's newer spelling of exists_one
    "filter": (2,),
    "map": (2, 3),
    "transformList": (3, 4),  # two-variable comprehensions (cel-go ext, cel-spec macros2)
    "transformMap": (3, 4),
    "sortBy": (2,),  # lists extension
}
_TWO_VARIABLE = frozenset(("transformList", "transformMap"))


def _macro_vars(name: str, args: list[ast.Expr], count: int) -> list[str]:
    names: list[str] = []
    for v in args[:count]:
        if type(v) is not ast.Ident or v.name.startswith("."):
            raise _Fail(f"{name}() macro: argument must be a simple name", v.offset)
        if v.name == ACCU:
            raise _Fail(f"{name}() macro: variable name '{ACCU}' is reserved", v.offset)
        names.append(v.name)
    if count == 2 and names[0] == names[1]:
        raise _Fail(f"{name}() macro: the two variables must have different names", args[1].offset)
    return names


def _expand_macro(name: str, target: ast.Expr, args: list[ast.Expr], offset: int) -> ast.Expr | None:
    """Expand a receiver-style macro call, or None when `name`/arity is not a macro."""
    n = len(args)
    if n not in _RECEIVER_MACROS.get(name, ()):
        return None
    if name == "existsOne":
        name = "exists_one"
    if name == "sortBy":
        # lists extension: sort by computed keys; the keys are a map() over the same list
        keys = _expand_macro("map", target, args, offset)
        return _call("@sortByAssociatedKeys", offset, target, keys)  # type: ignore[arg-type]
    two_var = name in _TWO_VARIABLE or (n == 3 and name in ("all", "exists", "exists_one"))
    var_count = 2 if two_var else 1
    names = _macro_vars(name, args, var_count)
    var = names[0]
    var2 = names[1] if two_var else ""
    body = args[var_count:]
    accu = _ident(ACCU, offset)
    if name == "all":
        init: ast.Expr = ast.Literal(offset, True)
        cond: ast.Expr = _call("@not_strictly_false", offset, accu)
        step: ast.Expr = _call("_&&_", offset, accu, body[0])
        result: ast.Expr = accu
    elif name == "exists":
        init = ast.Literal(offset, False)
        cond = _call("@not_strictly_false", offset, _call("!_", offset, accu))
        step = _call("_||_", offset, accu, body[0])
        result = accu
    elif name == "exists_one":
        init = ast.Literal(offset, 0)
        cond = ast.Literal(offset, True)
        step = _call("_?_:_", offset, body[0], _call("_+_", offset, accu, ast.Literal(offset, 1)), accu)
        result = _call("_==_", offset, accu, ast.Literal(offset, 1))
    elif name in ("map", "transformList"):
        init = ast.CreateList(offset, ())
        cond = ast.Literal(offset, True)
        append = _call("_+_", offset, accu, ast.CreateList(offset, (body[-1],)))
        step = append if len(body) == 1 else _call("_?_:_", offset, body[0], append, accu)
        result = accu
    elif name == "transformMap":
        init = ast.CreateMap(offset, ())
        cond = ast.Literal(offset, True)
        insert = _call("cel.@mapInsert", offset, accu, _ident(var, offset), body[-1])
        step = insert if len(body) == 1 else _call("_?_:_", offset, body[0], insert, accu)
        result = accu
    else:  # filter
        init = ast.CreateList(offset, ())
        cond = ast.Literal(offset, True)
        append = _call("_+_", offset, accu, ast.CreateList(offset, (_ident(var, offset),)))
        step = _call("_?_:_", offset, body[0], append, accu)
        result = accu
    return ast.Comprehension(offset, var, target, ACCU, init, cond, step, result, macro=name, iter_var2=var2)


def _expand_bind(args: list[ast.Expr], offset: int) -> ast.Expr:
    """`cel.bind(name, init, expr)` (bindings extension): a comprehension over an empty list whose
    accumulator is the bound name, as cel-go expands it, so `expr` sees `name` = `init`."""
    if len(args) != 3:
        raise _Fail("cel.bind() macro: expected 3 arguments (name, value, expression)", offset)
    (name,) = _macro_vars("cel.bind", args, 1)
    var, init, body = args
    return ast.Comprehension(
        offset,
        "#unused",
        ast.CreateList(offset, ()),
        name,
        init,
        ast.Literal(offset, False),
        _ident(name, var.offset),
        body,
        macro="cel.bind",
    )


# cel.block (cel-go's common-subexpression form, cel-spec block_ext): `cel.block([e0, e1, ...], r)`
# where `cel.index(i)` (also spelled `@index<i>`) refers to entry i, and entries are evaluated lazily
# where used. Expressions are pure, so substituting each entry for its references means the same.
# Entries may refer to comprehension variables of the place they are used in: `cel.iterVar(i, j)` and
# `cel.accuVar(i, j)` name those (`@it:i:j`, `@ac:i:j`).
_BLOCK_INDEX = re.compile(r"@index[0-9]+")  # the only '@' names source may contain (cel.block entries)
MAX_BLOCK_NODES = 100_000  # expanded size limit: entries referring to each other could otherwise double


def _block_ref(name: str, args: list[ast.Expr], offset: int) -> ast.Expr:
    """`cel.index(i)`, `cel.iterVar(i, j)`, `cel.accuVar(i, j)` as the identifiers they stand for."""
    want = 1 if name == "index" else 2
    if len(args) != want or any(type(a) is not ast.Literal or type(a.value) is not int for a in args):
        raise _Fail(f"cel.{name}() needs {want} integer literal argument{'s' * (want > 1)}", offset)
    numbers = [a.value for a in args]  # type: ignore[attr-defined]
    if name == "index":
        return ast.Ident(offset, f"@index{numbers[0]}")
    prefix = "@it" if name == "iterVar" else "@ac"
    return ast.Ident(offset, f"{prefix}:{numbers[0]}:{numbers[1]}")


def _expand_block(args: list[ast.Expr], offset: int) -> ast.Expr:
    if len(args) != 2 or type(args[0]) is not ast.CreateList:
        raise _Fail("cel.block() needs a list literal of expressions and a result expression", offset)
    entries: dict[str, tuple[ast.Expr, int]] = {}  # "@index<i>" -> (substituted entry, its size)
    for i, entry in enumerate(args[0].elements):
        entries[f"@index{i}"] = _substitute(entry, entries)
    return _substitute(args[1], entries)[0]


def _substitute(node: ast.Expr, entries: dict[str, tuple[ast.Expr, int]]) -> tuple[ast.Expr, int]:
    """`node` with block references replaced, and its expanded size (shared entries counted per use)."""
    t = type(node)
    if t is ast.Ident:
        found = entries.get(node.name)  # type: ignore[attr-defined]
        return found if found is not None else (node, 1)
    children = _children(node)
    if not children:
        return node, 1
    done = []
    for c in children:  # a loop, not a comprehension: one Python frame per level of a deep tree
        done.append(_substitute(c, entries))
    size = 1 + sum(n for _, n in done)
    if size > MAX_BLOCK_NODES:
        raise _Fail(f"cel.block() expands to more than {MAX_BLOCK_NODES} nodes", node.offset)
    new = [c for c, _ in done]
    if all(a is b for a, b in zip(new, children, strict=True)):
        return node, size
    return _rebuild(node, new), size


def _rebuild(node: ast.Expr, new: list[ast.Expr]) -> ast.Expr:
    """A copy of `node` with its children (in `_children` order) replaced by `new`."""
    t = type(node)
    if t is ast.Call:
        if node.target is None:  # type: ignore[attr-defined]
            return ast.Call(node.offset, node.function, tuple(new))  # type: ignore[attr-defined]
        return ast.Call(node.offset, node.function, tuple(new[1:]), new[0])  # type: ignore[attr-defined]
    if t is ast.Select:
        return ast.Select(node.offset, new[0], node.field, node.test_only)  # type: ignore[attr-defined]
    if t is ast.CreateList:
        return ast.CreateList(node.offset, tuple(new))
    if t is ast.CreateMap:
        return ast.CreateMap(node.offset, tuple(zip(new[::2], new[1::2], strict=True)))
    if t is ast.CreateStruct:
        names = [name for name, _ in node.fields]  # type: ignore[attr-defined]
        return ast.CreateStruct(node.offset, node.message, tuple(zip(names, new, strict=True)))  # type: ignore[attr-defined]
    assert type(node) is ast.Comprehension
    rng, init, cond, step, result = new
    return ast.Comprehension(
        node.offset,
        node.iter_var,
        rng,
        node.accu_var,
        init,
        cond,
        step,
        result,
        macro=node.macro,
        iter_var2=node.iter_var2,
    )


class _Builder(Transformer):
    """Inline (parse-time) transformer: each callback gets the children of one reduced rule."""

    def __init__(self, macros: bool) -> None:
        super().__init__(visit_tokens=False)
        self.macros = macros

    # -- operators --
    def binop(self, c: list[Any]) -> ast.Expr:
        left, op, right = c
        fn = "@in" if op.type == "IN" else f"_{op}_"
        return ast.Call(op.start_pos, fn, (left, right))

    def ternary(self, c: list[Any]) -> ast.Expr:
        cond, q, a, _colon, b = c
        return ast.Call(q.start_pos, "_?_:_", (cond, a, b))

    def logical_not(self, c: list[Any]) -> ast.Expr:
        e = c[-1]
        for tok in reversed(c[:-1]):
            e = ast.Call(tok.start_pos, "!_", (e,))
        return e

    def negate(self, c: list[Any]) -> ast.Expr:
        e = c[-1]
        toks = c[:-1]
        if type(e) is ast.Literal and type(e.value) in (int, float, _BigInt):
            # fold the innermost minus into the literal so that -9223372036854775808 is representable
            last = toks[-1]
            big = type(e.value) is _BigInt
            value = -int(e.value) if big else -e.value
            if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                if big:
                    raise _Fail(f"integer literal out of range: -{e.value}", last.start_pos)
                # -(-9223372036854775808): leave the overflow to evaluation
            else:
                e = ast.Literal(last.start_pos, value)
                toks = toks[:-1]
        for tok in reversed(toks):
            e = ast.Call(tok.start_pos, "-_", (e,))
        return e

    # -- members --
    def select(self, c: list[Any]) -> ast.Expr:
        operand, dot, sel = c
        _check_field(sel)
        return ast.Select(dot.start_pos, operand, _field_name(sel))

    def member_call(self, c: list[Any]) -> ast.Expr:
        target, _dot, sel, _lpar, *rest = c
        args = rest[0] if rest else []
        if sel.type == "QUOTED_IDENT":
            raise _Fail("a quoted field name cannot be called", sel.start_pos)
        _check_selector(sel)
        name = str(sel)
        if name[0] == "@" and not (name == "@block" and type(target) is ast.Ident and target.name == "cel"):
            raise _Fail(f"invalid function name '{name}'", sel.start_pos)
        if self.macros:
            if type(target) is ast.Ident and target.name == "cel":
                if name == "bind":
                    return _expand_bind(args, sel.start_pos)
                if name in ("block", "@block"):
                    return _expand_block(args, sel.start_pos)
                if name in ("index", "iterVar", "accuVar"):
                    return _block_ref(name, args, sel.start_pos)
            expanded = _expand_macro(name, target, args, sel.start_pos)
            if expanded is not None:
                return expanded
        return ast.Call(sel.start_pos, name, tuple(args), target)

    def index(self, c: list[Any]) -> ast.Expr:
        operand, lbrack, key = c
        return ast.Call(lbrack.start_pos, "_[_]", (operand, key))

    def struct_lit(self, c: list[Any]) -> ast.Expr:
        member, lbrace, *rest = c
        name = _qualified_name(member)
        if name is None:
            raise _Fail("unexpected '{' after an expression", lbrace.start_pos)
        fields = tuple(rest[0]) if rest else ()
        return ast.CreateStruct(member.offset, name, fields)

    # -- primaries --
    def ident(self, c: list[Any]) -> ast.Expr:
        tok = c[-1]
        name = str(tok)
        if name in RESERVED or name in _KEYWORDS:
            # keywords reach here as IDENT where the contextual lexer cannot take them (e.g. `in`)
            raise _Fail(f"reserved identifier '{name}'", tok.start_pos)
        if name[0] == "@" and not _BLOCK_INDEX.fullmatch(name):
            raise _Fail(
                f"invalid identifier '{name}': only cel.block references start with '@'", tok.start_pos
            )
        if len(c) == 2:
            return ast.Ident(c[0].start_pos, "." + name)
        return ast.Ident(tok.start_pos, name)

    def global_call(self, c: list[Any]) -> ast.Expr:
        dotted = c[0].type == "DOT"
        if dotted:
            c = c[1:]
        tok, _lpar, *rest = c
        name = str(tok)
        if name in RESERVED or name in _KEYWORDS:
            raise _Fail(f"reserved identifier '{name}' cannot be a function name", tok.start_pos)
        if name[0] == "@":
            raise _Fail(f"invalid function name '{name}'", tok.start_pos)
        args = rest[0] if rest else []
        if self.macros and name == "has" and not dotted and len(args) == 1:
            arg = args[0]
            if type(arg) is not ast.Select or arg.test_only:
                raise _Fail("has() macro: argument must be a field selection", arg.offset)
            return ast.Select(arg.offset, arg.operand, arg.field, test_only=True)
        return ast.Call(tok.start_pos, ("." if dotted else "") + name, tuple(args))

    def paren(self, c: list[Any]) -> ast.Expr:
        e = c[1]
        if type(e) is ast.Literal and type(e.value) is _BigInt:
            # only a literal directly after '-' folds: -(9223372036854775808) stays out of range
            raise _Fail(f"integer literal out of range: {e.value}", e.offset)
        return e

    def list_lit(self, c: list[Any]) -> ast.Expr:
        return ast.CreateList(c[0].start_pos, tuple(c[1]) if len(c) > 1 else ())

    def map_lit(self, c: list[Any]) -> ast.Expr:
        return ast.CreateMap(c[0].start_pos, tuple(c[1]) if len(c) > 1 else ())

    def exprlist(self, c: list[Any]) -> list[Any]:
        return _extend(c)

    def mapinits(self, c: list[Any]) -> list[Any]:
        return _extend(c)

    def mapinit(self, c: list[Any]) -> tuple[ast.Expr, ast.Expr]:
        return (c[0], c[2])

    def fieldinits(self, c: list[Any]) -> list[Any]:
        return _extend(c)

    def fieldinit(self, c: list[Any]) -> tuple[str, ast.Expr]:
        _check_field(c[0])
        return (_field_name(c[0]), c[2])

    def literal(self, c: list[Any]) -> ast.Expr:
        tok = c[0]
        kind = tok.type
        off = tok.start_pos
        text = str(tok)
        if kind == "INT":
            value = _int_literal(text, text, off)
            if value > INT64_MAX:
                # may still be the operand of a unary minus (int64 minimum): checked in negate/_finish
                return ast.Literal(off, _BigInt(value))
            return ast.Literal(off, value)
        if kind == "UINT":
            value = _int_literal(text[:-1], text, off)
            if value > UINT64_MAX:
                raise _Fail(f"unsigned integer literal out of range: {text}", off)
            return ast.Literal(off, UInt(value))
        if kind == "FLOAT":
            value = float(text)
            if value in (_INF, -_INF):  # 1e309: beyond the largest double, as cel-go rejects it
                raise _Fail(f"double literal out of range: {text}", off)
            return ast.Literal(off, value)
        if kind in ("STRING", "RAW_STRING"):
            return ast.Literal(off, _string_literal(tok))
        if kind == "TRUE":
            return ast.Literal(off, True)
        if kind == "FALSE":
            return ast.Literal(off, False)
        return ast.Literal(off, None)


_KEYWORDS = frozenset(("true", "false", "null", "in"))
_INF = float("inf")


def _int_literal(body: str, text: str, off: int) -> int:
    """The value of an int or uint literal's digits. More than 20 significant digits are out of any
    range (and Python refuses to convert over 4300 decimal digits): reported before converting."""
    hexadecimal = body[:2] in ("0x", "0X")
    digits = (body[2:] if hexadecimal else body).lstrip("0")
    if len(digits) > (16 if hexadecimal else 20):
        kind = "unsigned integer" if text.endswith(("u", "U")) else "integer"
        raise _Fail(f"{kind} literal out of range: {text[:24]}... ({len(text)} characters)", off)
    return int(body, 16) if hexadecimal else int(body)


def _check_selector(tok: Token) -> None:
    # after '.', the contextual lexer reads keywords as IDENT; langdef forbids them as selectors
    if tok.type == "IDENT" and str(tok) in _KEYWORDS:
        raise _Fail(f"keyword '{tok}' cannot be used as a field name", tok.start_pos)


def _check_field(tok: Token) -> None:
    _check_selector(tok)
    if str(tok)[0] == "@":  # '@' names are tool-generated block references, never fields
        raise _Fail(f"invalid field name '{tok}'", tok.start_pos)


def _extend(c: list[Any]) -> list[Any]:
    """Left-recursive list rule: [item] or [list_so_far, item]; appends in place (linear time)."""
    if len(c) == 1:
        return [c[0]]
    c[0].append(c[1])
    return c[0]


def _field_name(tok: Token) -> str:
    text = str(tok)
    return text[1:-1] if tok.type == "QUOTED_IDENT" else text


def _parser(macros: bool) -> Lark:
    p = _parsers.get(macros)
    if p is None:
        with _lock:
            p = _parsers.get(macros)
            if p is None:
                p = Lark(
                    _GRAMMAR.read_text(encoding="utf-8"),
                    parser="lalr",
                    lexer="contextual",
                    transformer=_Builder(macros),
                    propagate_positions=False,
                    maybe_placeholders=False,
                    cache=True,
                )
                _parsers[macros] = p
    return p


# ---- error messages ----------------------------------------------------------------------------

_EXPR_START = {
    "IDENT",
    "INT",
    "UINT",
    "FLOAT",
    "STRING",
    "RAW_STRING",
    "TRUE",
    "FALSE",
    "NULL",
    "LPAR",
    "LBRACK",
}
_TOKEN_TEXT = {
    "QMARK": "'?'",
    "COLON": "':'",
    "OR": "'||'",
    "AND": "'&&'",
    "LE": "'<='",
    "GE": "'>='",
    "EQ": "'=='",
    "NE": "'!='",
    "LT": "'<'",
    "GT": "'>'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "PERCENT": "'%'",
    "BANG": "'!'",
    "DOT": "'.'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACK": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "IN": "'in'",
    "IDENT": "a name",
    "QUOTED_IDENT": "a quoted name",
    "$END": "end of input",
}


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type in ("STRING", "RAW_STRING"):
        return "a string"
    if tok.type in ("INT", "UINT", "FLOAT"):
        return f"number {tok}"
    if tok.type == "IDENT":
        return f"name '{tok}'"
    return f"'{tok}'"


_PUNCTUATION = {"COMMA", "RPAR", "RSQB", "RBRACE", "COLON"}


def _describe_expected(expected: set[str]) -> str:
    if "INT" in expected:  # only where an operand may start
        return "an expression"
    if expected <= {"IDENT", "QUOTED_IDENT"}:
        return "a field name"
    punctuation = expected & _PUNCTUATION
    if punctuation and len(expected) > 4:  # after a complete operand: any operator, or the closer
        names = ["an operator", *sorted(_TOKEN_TEXT.get(e, e.lower()) for e in punctuation)]
        return ", ".join(names[:-1]) + " or " + names[-1]
    names = sorted({_TOKEN_TEXT.get(e, e.lower()) for e in expected})
    if not names:
        return "something else"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


_CLOSERS = {
    "LPAR": "an operator, ',' or ')'",
    "LBRACK": "an operator, ',' or ']'",
    "LBRACE": "an operator, ':', ',' or '}'",
}


def _after_operand(source: str, offset: int) -> str | None:
    """What may follow a complete operand at `offset`, from the innermost unclosed bracket.

    LALR merges lookahead sets, so the parser's own list names every closer; re-lexing the prefix
    tells which one is actually open."""
    stack: list[str] = []
    try:
        for tok in _parser(True).lex(source[:offset]):
            if tok.type in _CLOSERS:
                stack.append(tok.type)
            elif tok.type in ("RPAR", "RSQB", "RBRACE") and stack:
                stack.pop()
    except Exception:  # noqa: BLE001 - best effort: keep the parser's own description
        return None
    return _CLOSERS[stack[-1]] if stack else "an operator or end of input"


def _syntax_error(e: UnexpectedInput, source: str) -> ExpressionSyntaxError:
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else ""
        if ch in "\"'":
            msg = "unterminated string literal"
        elif ch == "`":
            msg = "invalid quoted field name"
        else:
            msg = f"unexpected character {ch!r}"
        return ExpressionSyntaxError(msg, source, e.pos_in_stream)
    if isinstance(e, UnexpectedToken):
        tok = e.token
        offset = len(source) if tok.type == "$END" else tok.start_pos
        expected = set(e.expected)
        wanted = _describe_expected(expected)
        if wanted.startswith("an operator"):
            wanted = _after_operand(source, offset) or wanted
        msg = f"unexpected {_describe_token(tok)}, expected {wanted}"
        return ExpressionSyntaxError(msg, source, offset)
    if isinstance(e, UnexpectedEOF):
        return ExpressionSyntaxError(
            f"unexpected end of input, expected {_describe_expected(set(e.expected))}", source, len(source)
        )
    return ExpressionSyntaxError(str(e), source, getattr(e, "pos_in_stream", 0) or 0)


# ---- entry point -------------------------------------------------------------------------------


def parse(source: str, *, macros: bool = True) -> ast.Expr:
    """Parse CEL source into an AST; raises ExpressionSyntaxError (with offset) on any problem."""
    if not isinstance(source, str):
        raise ExpressionSyntaxError("expression must be a string")
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ExpressionSyntaxError("invalid UTF-8 in expression", source, e.start) from None
    try:
        tree = _parser(macros).parse(source)
        _finish(tree)
    except _Fail as f:
        raise ExpressionSyntaxError(f.message, source, f.offset) from None
    except UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    except RecursionError:
        raise ExpressionSyntaxError("expression nests too deeply", source, 0) from None
    return tree


def _finish(tree: ast.Expr) -> None:
    """Check the depth limit and that no out-of-range int literal survived, iteratively."""
    stack: list[tuple[ast.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Fail(f"expression nests too deeply (more than {MAX_DEPTH} levels)", node.offset)
        t = type(node)
        if t is ast.Literal:
            if type(node.value) is _BigInt:
                raise _Fail(f"integer literal out of range: {node.value}", node.offset)
            continue
        for child in _children(node):
            stack.append((child, depth + 1))


def _children(node: ast.Expr) -> tuple[ast.Expr, ...]:
    t = type(node)
    if t is ast.Call:
        return node.args if node.target is None else (node.target, *node.args)
    if t is ast.Select:
        return (node.operand,)
    if t is ast.CreateList:
        return node.elements
    if t is ast.CreateMap:
        return tuple(x for kv in node.entries for x in kv)
    if t is ast.CreateStruct:
        return tuple(v for _, v in node.fields)
    if t is ast.Comprehension:
        return (node.iter_range, node.accu_init, node.loop_condition, node.loop_step, node.result)
    return ()
