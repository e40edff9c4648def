"""Diagnostics: what every front-end stage returns instead of raising, and how they are printed.

A diagnostic has a stable code (`CODES`), a severity, a message a person understands, the file:line:col
of the offending node (1-based; columns count Unicode code points) and optionally a hint. The formatters
turn a list of them into text for people, JSON for scripts, GitHub workflow annotations and SARIF 2.1.0.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from urllib.parse import quote


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@functools.total_ordering
@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    file: str
    line: int
    column: int
    hint: str | None = None
    end_line: int | None = None
    end_column: int | None = None

    @property
    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.code, self.message)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Diagnostic):
            return NotImplemented
        return self.sort_key < other.sort_key


# Every code used anywhere must be registered here: code -> one-line title (the SARIF rule description).
# Ranges are stable; add new codes inside the right range and never renumber.
CODES: dict[str, str] = {
    # CH0xx: the file and its YAML (dsl/loader.py)
    "CH001": "file cannot be read",
    "CH002": "file is too large",
    "CH003": "invalid text: not UTF-8, or a character YAML forbids",
    "CH004": "YAML syntax error",
    "CH005": "duplicate mapping key",
    "CH006": "anchor or alias problem (undefined, recursive, or expanding too much)",
    "CH007": "mapping key is not a string",
    "CH008": "tab character in indentation",
    "CH009": "empty document",
    "CH010": "more than one YAML document in the file",
    "CH011": "top level of the document is not a mapping",
    "CH012": "missing `charter:` language version",
    "CH013": "unsupported `charter:` language version",
    "CH014": "`charter:` version written as a number",
    "CH015": "unsupported or invalid YAML tag",
    "CH016": "document nested too deeply",
    "CH017": "invalid merge key `<<`",
    "CH018": "a number JSON cannot hold (`.inf`, `.nan`)",
    # CH1xx: schema and shape (dsl/validate.py)
    "CH100": "invalid workflow shape",
    "CH101": "unknown field",
    "CH102": "missing required field",
    "CH103": "wrong type",
    "CH104": "invalid value",
    "CH105": "step has no kind or several kinds",
    "CH106": "invalid duration",
    "CH107": "invalid name or format",
    "CH108": "value out of range or empty",
    "CH109": "conflicting or incomplete fields",
    "CH110": "needs exactly one of several alternatives",
    "CH111": "invalid JSON Schema, or a `$ref` that does not resolve within it",
    "CH112": "invalid regular expression",
    # CH2xx: references (dsl/compiler.py)
    "CH201": "duplicate step id",
    "CH202": "unknown step",
    "CH203": "step read where it cannot have completed",
    "CH204": "unknown tool",
    "CH205": "unknown model",
    "CH206": "unknown identity",
    "CH207": "undeclared secret",
    "CH208": "duplicate grant or guardrail id",
    "CH209": "called workflow file does not exist",
    "CH210": "guardrail tool pattern matches no declared tool",
    "CH211": "set of a variable not declared in `vars`",
    "CH212": "for_each or catch binds a built-in variable name",
    "CH213": "read of a variable not declared in `vars`",
    "CH214": "retry.on names an error code nothing raises",
    "CH215": "step `timeout` on an approval step, which never fires",
    "CH216": "`max_cost` budget over a model that declares no prices",
    "CH299": "internal compiler error",
    # CH3xx: expressions and templates
    "CH301": "CEL syntax error",
    "CH302": "CEL type error",
    "CH303": "condition is not a bool",
    "CH304": "variable not in scope here",
    "CH305": "bad `${{ }}` interpolation",
    "CH306": "Jinja2 template syntax error",
    "CH307": "prompt variable not defined in the step's vars",
    "CH308": "condition written as a `${{ }}` template",
    "CH309": "`${{ }}` in a Jinja2 prompt",
    "CH310": "`{{ }}` without `$` in a value: literal text, not an expression",
    # CH4xx: graph structure
    "CH401": "unreachable step",
    "CH402": "workflow calls itself (cycle)",
    # CH5xx: identity and grants
    "CH501": "agent or tool step calls a tool no grant of its identity covers",
    "CH502": "grant to an unknown identity or role",
    "CH503": "grant tool pattern matches no declared tool",
}


def error(code: str, message: str, file: str, line: int, column: int, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, file, line, column, hint)


def warning(
    code: str, message: str, file: str, line: int, column: int, hint: str | None = None
) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, file, line, column, hint)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` was most likely meant to be, for a "did you mean" hint; None if none is close."""
    pool = [c for c in candidates if c != name]
    folded = {c.lower(): c for c in pool}
    if name.lower() in folded:  # only the case differs: always the best guess
        return folded[name.lower()]
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- formatters -------------------------------------------------------------------------------------


def format_text(diags: Sequence[Diagnostic]) -> str:
    """`file:line:col: CODE message`; warnings read `file:line:col: CODE warning: message`."""
    lines: list[str] = []
    for d in diags:
        word = "warning: " if d.severity is Severity.WARNING else ""
        lines.append(f"{d.file}:{d.line}:{d.column}: {d.code} {word}{d.message}")
        if d.hint:
            lines.append(f"  hint: {d.hint}")
    return "\n".join(lines)


def as_json(d: Diagnostic) -> dict[str, object]:
    out: dict[str, object] = {
        "file": d.file,
        "line": d.line,
        "column": d.column,
        "code": d.code,
        "severity": d.severity.value,
        "message": d.message,
    }
    if d.hint:
        out["hint"] = d.hint
    return out


def format_json(diags: Sequence[Diagnostic]) -> str:
    """A JSON list of `{file, line, column, code, severity, message}` objects (plus `hint` when there is one)."""
    return json.dumps([as_json(d) for d in diags], indent=2, ensure_ascii=False)


def _gh_data(text: str) -> str:
    # GitHub workflow-command escaping: data escapes %, CR and LF; properties also `:` and `,`.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(diags: Sequence[Diagnostic]) -> str:
    """One `::error file=..,line=..,col=..,title=CODE::message` annotation per diagnostic."""
    lines: list[str] = []
    for d in diags:
        props = [f"file={_gh_prop(d.file)}", f"line={d.line}", f"col={d.column}"]
        if d.end_line is not None:
            props.append(f"endLine={d.end_line}")
        if d.end_column is not None:
            props.append(f"endColumn={d.end_column}")
        props.append(f"title={_gh_prop(d.code)}")
        message = f"{d.message}\nhint: {d.hint}" if d.hint else d.message
        lines.append(f"::{d.severity.value} {','.join(props)}::{_gh_data(message)}")
    return "\n".join(lines)


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _sarif_uri(file: str) -> str:
    path = PurePath(file)
    if path.is_absolute():
        return path.as_uri()
    return quote(file.replace(os.sep, "/"), safe="/")


def _sarif_region(d: Diagnostic) -> dict[str, int]:
    region = {"startLine": max(d.line, 1), "startColumn": max(d.column, 1)}
    if d.end_line is not None:
        region["endLine"] = d.end_line
    if d.end_column is not None:
        region["endColumn"] = d.end_column
    return region


def format_sarif(diags: Sequence[Diagnostic]) -> str:
    """SARIF 2.1.0 log with one run; one rule per code used, described from `CODES`."""
    from dsl import __version__

    codes = sorted({d.code for d in diags})
    index = {code: i for i, code in enumerate(codes)}
    worst = {code: "warning" for code in codes}
    for d in diags:
        if d.severity is Severity.ERROR:
            worst[d.code] = "error"
    rules = [
        {
            "id": code,
            "name": code,
            "shortDescription": {"text": CODES.get(code, code)},
            "defaultConfiguration": {"level": worst[code]},
        }
        for code in codes
    ]
    results = []
    for d in diags:
        text = f"{d.message}\nhint: {d.hint}" if d.hint else d.message
        results.append(
            {
                "ruleId": d.code,
                "ruleIndex": index[d.code],
                "level": d.severity.value,
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _sarif_uri(d.file)},
                            "region": _sarif_region(d),
                        }
                    }
                ],
            }
        )
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "charter", "version": __version__, "rules": rules}},
                # Our columns count code points; SARIF's default would be UTF-16 code units.
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)
