"""Values and prompts in a workflow file: `${{ }}` CEL templates and sandboxed Jinja2 prompts.

The rules (spec/charter-1.0.md, "Expressions and templates"):

- a string that is exactly `${{ expr }}` evaluates to the typed value of `expr`;
- a string with `${{ expr }}` inside is interpolation and yields a string;
- `$${{` stands for a literal `${{`;
- prompt fields are Jinja2 templates, rendered in a sandbox with StrictUndefined, over variables that
  were computed by CEL beforehand. One pass only: the output of one language is never fed to the other,
  so a model or tool that answers `${{ secrets.KEY }}` or `{{ x }}` gets that text back verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dsl import expr
from dsl.expr.types import STRING, Type

OPEN = "${{"
ESCAPED_OPEN = "$${{"


class TemplateError(Exception):
    """A template that does not compile. `offset` is the character offset inside the string."""

    def __init__(self, message: str, offset: int, kind: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.kind = kind  # "syntax", "type" or "template"
        self.line = line


# --- ${{ }} values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interpolation:
    """A string with `${{ }}` parts: constants and programs, joined into a string."""

    parts: tuple[str | expr.Program, ...]

    def evaluate(self, bindings: Mapping[str, Any]) -> str:
        return "".join(p if type(p) is str else to_text(p.evaluate(bindings)) for p in self.parts)


@dataclass(frozen=True, slots=True)
class CompiledValue:
    """A YAML value with its expressions compiled; `evaluate` yields the JSON-like value."""

    evaluate: Callable[[Mapping[str, Any]], Any]
    programs: tuple[expr.Program, ...]  # every CEL program inside, for references and explain
    type: Type  # the static type of the value (dyn when it is a container or unknown)
    constant: bool
    # A string with `${{ }}` parts: its pieces, for a caller that must render each value itself (an
    # HTTP tool's url percent-encodes them).
    parts: tuple[str | expr.Program, ...] | None = None


def to_text(value: Any) -> str:
    """How an interpolated value prints (spec §14.2): a value whose JSON form is text (a string, bytes,
    a timestamp, a duration) as that text, without quotes; everything else as compact JSON."""
    if type(value) is str:
        return value
    data = expr.from_cel(value)
    if type(data) is str:
        return data
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def split_template(text: str) -> list[tuple[str, int] | tuple[None, str, int]]:
    """Split `text` into literal pieces `(text, offset)` and expressions `(None, source, offset)`.

    The end of an expression is the first `}}` outside string literals and outside `{...}` map
    literals, so `${{ {'a': {'b': 1}} }}` works.
    """
    pieces: list[Any] = []
    literal: list[str] = []
    i, n = 0, len(text)
    literal_start = 0
    while i < n:
        if text.startswith(ESCAPED_OPEN, i):
            literal.append(OPEN)
            i += len(ESCAPED_OPEN)
            continue
        if text.startswith(OPEN, i):
            if literal:
                pieces.append(("".join(literal), literal_start))
                literal = []
            start = i + len(OPEN)
            end = _find_close(text, start)
            if end < 0:
                raise TemplateError("unterminated `${{`: add the closing `}}`", i, "syntax")
            pieces.append((None, text[start:end], start))
            i = end + 2
            literal_start = i
            continue
        literal.append(text[i])
        i += 1
    if literal:
        pieces.append(("".join(literal), literal_start))
    return pieces


def _find_close(text: str, i: int) -> int:
    depth = 0
    quote = ""
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
        elif c in "'\"":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth:
                depth -= 1
            elif text.startswith("}}", i):
                return i
        i += 1
    return -1


ExprCompiler = Callable[[str, Any], expr.Program]


def compile_string(
    text: str,
    declarations: Mapping[str, Any] | None,
    limits: expr.Limits | None = None,
    compiler: ExprCompiler | None = None,
) -> CompiledValue:
    """Compile one string value. Raises TemplateError with the offset inside `text`.

    `compiler(source, declarations)` replaces `dsl.expr.compile`, e.g. with a cache.
    """
    if OPEN not in text:
        return _constant(text)
    pieces = split_template(text)
    if len(pieces) == 1 and pieces[0][0] is None and text.startswith(OPEN) and text.endswith("}}"):
        program = _compile_expr(pieces[0][1], pieces[0][2], declarations, limits, compiler)
        return CompiledValue(program.evaluate, (program,), program.type, False)
    parts: list[str | expr.Program] = []
    for piece in pieces:
        if piece[0] is None:
            parts.append(_compile_expr(piece[1], piece[2], declarations, limits, compiler))
        else:
            parts.append(piece[0])
    programs = tuple(p for p in parts if type(p) is not str)
    if not programs:
        return _constant("".join(parts))  # only escapes
    return CompiledValue(Interpolation(tuple(parts)).evaluate, programs, STRING, False, tuple(parts))


def _compile_expr(
    source: str,
    offset: int,
    declarations: Mapping[str, Any] | None,
    limits: expr.Limits | None,
    compiler: ExprCompiler | None,
) -> expr.Program:
    stripped = source.strip()
    lead = len(source) - len(source.lstrip())
    if not stripped:
        raise TemplateError("empty expression in `${{ }}`", offset, "syntax")
    try:
        if compiler is not None:
            return compiler(stripped, declarations)
        return expr.compile(stripped, declarations, limits=limits)
    except expr.ExpressionSyntaxError as e:
        raise TemplateError(e.message, offset + lead + e.offset, "syntax") from None
    except expr.ExpressionTypeError as e:
        raise TemplateError(e.message, offset + lead + e.offset, "type") from None


def _constant(value: Any) -> CompiledValue:
    from dsl.expr.types import DYN

    return CompiledValue(lambda _bindings: value, (), STRING if type(value) is str else DYN, True)


def compile_value(
    value: Any,
    declarations: Mapping[str, Any] | None,
    limits: expr.Limits | None = None,
    on_error: Callable[[TemplateError, tuple[str | int, ...]], None] | None = None,
    path: tuple[str | int, ...] = (),
    compiler: ExprCompiler | None = None,
) -> CompiledValue:
    """Compile a JSON-like value whose strings may hold `${{ }}`.

    Errors go to `on_error(error, path_inside_value)` when given (so that a compiler can report all of
    them), otherwise they raise.
    """
    if type(value) is str:
        try:
            return compile_string(value, declarations, limits, compiler)
        except TemplateError as e:
            if on_error is None:
                raise
            on_error(e, path)
            return _constant(value)
    if isinstance(value, Mapping):
        items = {
            k: compile_value(v, declarations, limits, on_error, (*path, k), compiler)
            for k, v in value.items()
        }
        return _combine(items, lambda evaluated: evaluated)
    if isinstance(value, list | tuple):
        elements = {
            i: compile_value(v, declarations, limits, on_error, (*path, i), compiler)
            for i, v in enumerate(value)
        }
        return _combine(elements, lambda evaluated: list(evaluated.values()))
    return _constant(value)


def _combine(children: dict[Any, CompiledValue], build: Callable[[dict[Any, Any]], Any]) -> CompiledValue:
    from dsl.expr.types import DYN

    programs = tuple(p for child in children.values() for p in child.programs)
    if all(child.constant for child in children.values()):
        value = build({k: child.evaluate({}) for k, child in children.items()})
        return CompiledValue(lambda _bindings: value, (), DYN, True)
    pairs = tuple((k, child.evaluate) for k, child in children.items())

    def evaluate(bindings: Mapping[str, Any]) -> Any:
        return build({k: fn(bindings) for k, fn in pairs})

    return CompiledValue(evaluate, programs, DYN, False)


# --- Jinja2 prompts -------------------------------------------------------------------------------

_environment = None


def _jinja() -> Any:
    global _environment
    if _environment is None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        _environment = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
    return _environment


@dataclass(frozen=True, slots=True)
class Prompt:
    """A compiled Jinja2 prompt and the variables it reads."""

    source: str
    variables: frozenset[str]
    _template: Any

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with CEL-computed variables. Raises PromptRenderError, never anything else."""
        import jinja2

        try:
            return self._template.render(dict(variables))
        except jinja2.TemplateError as e:  # includes SecurityError and UndefinedError
            raise PromptRenderError(str(e)) from None
        except Exception as e:  # a filter that fails on a value: still a clean error
            raise PromptRenderError(f"{type(e).__name__}: {e}") from None


class PromptRenderError(Exception):
    """A prompt failed to render (undefined variable, sandbox violation, bad filter argument)."""


def compile_prompt(text: str) -> Prompt:
    """Compile a Jinja2 prompt. Raises TemplateError(kind="template") with the line on syntax errors."""
    import jinja2
    import jinja2.meta

    env = _jinja()
    try:
        tree = env.parse(text)
        template = env.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"prompt template: {e.message}", 0, "template", e.lineno or 1) from None
    return Prompt(text, frozenset(jinja2.meta.find_undeclared_variables(tree)), template)
