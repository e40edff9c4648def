"""The YAML loader: plain data, positions, and a diagnostic (never an exception) for every bad input."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import loader
from dsl.diagnostics import CODES, Diagnostic, Severity
from dsl.loader import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, LoadedDocument, load_file, load_text

HEAD = 'charter: "1.0"\n'


def load_ok(text: str) -> LoadedDocument:
    doc, diags = load_text(text, "w.yaml")
    assert doc is not None, diags
    assert diags == [], diags
    return doc


def codes(diags: list[Diagnostic]) -> list[tuple[str, int, int]]:
    return [(d.code, d.line, d.column) for d in diags]


def only(text: str) -> Diagnostic:
    """The single diagnostic `text` produces."""
    _, diags = load_text(text, "w.yaml")
    assert len(diags) == 1, diags
    assert diags[0].code in CODES
    return diags[0]


# --- scalars: the YAML 1.2 core schema ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("no", "no"),
        ("y", "y"),
        ("n", "n"),
        ("Yes", "Yes"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("42", 42),
        ("-7", -7),
        ("007", 7),
        ("0o17", 15),
        ("0x1F", 31),
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("-.5", -0.5),
        ("2026-01-01", "2026-01-01"),
        ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
        ("10m", "10m"),
        ("'42'", "42"),
        ('"true"', "true"),
        ("!!str 12", "12"),
        ("!!int '12'", 12),
        ("!!float 1", 1.0),
        ("!!bool true", True),
        ("!!null ''", None),
    ],
)
def test_scalars_follow_the_core_schema(yaml_value: str, expected: object) -> None:
    doc = load_ok(f"{HEAD}v: {yaml_value}\n")
    assert doc.data["v"] == expected
    assert type(doc.data["v"]) is type(expected)


@pytest.mark.parametrize("number", [".nan", ".inf", "-.Inf", "1e999"])
def test_a_float_json_cannot_hold_is_refused(number: str) -> None:
    found = only(f"{HEAD}v: {number}\n")
    assert (found.code, found.line, found.column) == ("CH018", 2, 4)


def test_on_stays_a_string_key() -> None:
    doc = load_ok(f"{HEAD}guardrails:\n  - {{id: g, on: tool.input}}\n  - id: h\n    on: agent.output\n")
    assert doc.data["guardrails"] == [{"id": "g", "on": "tool.input"}, {"id": "h", "on": "agent.output"}]
    assert load_ok(f"{HEAD}yes: 1\nno: 2\n").data == {"charter": "1.0", "yes": 1, "no": 2}


def test_collections_and_nesting() -> None:
    doc = load_ok(HEAD + "steps:\n  - id: a\n    with: {x: [1, {y: z}], e: [], m: {}}\n")
    assert doc.data["steps"] == [{"id": "a", "with": {"x": [1, {"y": "z"}], "e": [], "m": {}}}]


# --- anchors, aliases and merge keys -----------------------------------------------------------------


def test_aliases_are_expanded_into_independent_copies() -> None:
    doc = load_ok(HEAD + "a: &r {attempts: 3}\nb: *r\n")
    assert doc.data["a"] == doc.data["b"] == {"attempts": 3}
    assert doc.data["a"] is not doc.data["b"]
    assert doc.position(["b", "attempts"]) == (2, 18)  # aliased content points at the anchored original


def test_merge_keys() -> None:
    text = HEAD + "base: &b {attempts: 3, backoff: fixed}\nretry:\n  <<: *b\n  backoff: exponential\n"
    doc = load_ok(text)
    assert doc.data["retry"] == {"backoff": "exponential", "attempts": 3}
    assert doc.position(["retry", "backoff"]) == (5, 12)
    assert doc.position(["retry", "attempts"]) == (2, 21)


def test_merge_of_several_mappings_first_wins() -> None:
    doc = load_ok(HEAD + "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b]}\n")
    assert doc.data["c"] == {"x": 1, "y": 2}


def test_quoted_merge_key_is_an_ordinary_key() -> None:
    assert load_ok(HEAD + "'<<': x\n").data["<<"] == "x"


def test_alias_bomb_is_refused() -> None:
    lines = [HEAD, "a: &a [x, x, x, x, x, x, x, x, x, x]\n"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n")
    doc, diags = load_text("".join(lines))
    assert doc is None
    assert [d.code for d in diags] == ["CH006"]
    assert str(MAX_ALIAS_NODES) in diags[0].message and diags[0].line == 5


def test_moderate_alias_use_is_fine() -> None:
    doc = load_ok(HEAD + "a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n")
    assert doc.data["b"] == [[1, 2, 3]] * 4


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"])
def test_recursive_alias_is_refused(text: str) -> None:
    d = only(HEAD + text)
    assert d.code == "CH006" and "recursive" in d.message


def test_undefined_alias() -> None:
    d = only(HEAD + "a: 1\nb: *nope\n")
    assert (d.code, d.line, d.column) == ("CH006", 3, 4)
    assert "'*nope'" in d.message


def test_duplicate_anchor() -> None:
    assert only(HEAD + "a: &x 1\nb: &x 2\n").code == "CH006"


def test_merge_of_a_scalar() -> None:
    _, diags = load_text(HEAD + "retry:\n  <<: fast\n")
    assert codes(diags) == [("CH017", 3, 3)]


# --- diagnostics for each CH0xx code -----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    doc, diags = load_file(tmp_path / "nope.yaml")
    assert doc is None and codes(diags) == [("CH001", 1, 1)]
    assert "no such file" in diags[0].message and diags[0].file.endswith("nope.yaml")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    _, diags = load_file(tmp_path)
    assert codes(diags) == [("CH001", 1, 1)] and "directory" in diags[0].message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(HEAD)
    path.chmod(0)
    assert codes(load_file(path)[1]) == [("CH001", 1, 1)]


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + "x: " + "a" * MAX_FILE_BYTES + "\n")
    doc, diags = load_file(path)
    assert doc is None and [d.code for d in diags] == ["CH002"]
    assert [d.code for d in load_text("a" * (MAX_FILE_BYTES + 1))[1]] == ["CH002"]


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEAD.encode() + "name: café\n".encode("latin-1"))
    doc, diags = load_file(path)
    assert doc is None and codes(diags) == [("CH003", 2, 10)]


def test_control_character() -> None:
    assert codes(load_text(HEAD + "a: x\x07y\n")[1]) == [("CH003", 2, 5)]


def test_lone_surrogate_in_text() -> None:
    assert codes(load_text(HEAD + "a: \udc80\n")[1]) == [("CH003", 2, 4)]


def test_utf8_file_with_bom_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + HEAD.encode() + b"name: x\n")
    doc, diags = load_file(path)
    assert diags == [] and doc is not None
    assert doc.data["name"] == "x" and doc.key_position(["charter"]) == (1, 1)


@pytest.mark.parametrize(
    ("text", "line", "column", "needle"),
    [
        ("instructions: Reply with: yes\n", 2, 25, "unexpected ':'"),
        ("a: [1, 2\nb: 3\n", 3, 2, "'['"),
        ("a: {b: 1\n", 3, 1, "'{'"),
        ("a: 'x\n", 2, 4, "quoted string that starts here is never closed"),
        ('a: "x\\qy"\n', 2, 6, "escape"),
        ("a: b\n c\nd\n", 4, 1, "expected ':'"),
        ("a:\n  - x\n  y: 1\n", 4, 3, "expected a list item"),
        ("a: `x`\n", 2, 4, "cannot start"),
        ("- a\nb: 1\n", 2, 1, "expected a mapping key"),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, needle: str) -> None:
    d = only(HEAD + text)
    assert d.code == "CH004" and d.severity is Severity.ERROR
    assert (d.line, d.column) == (line, column)
    assert d.message.startswith("YAML syntax error: ") and needle in d.message
    assert "Traceback" not in d.message and '"<unicode string>"' not in d.message


def test_syntax_error_hint() -> None:
    assert "quoted" in (only(HEAD + "a: Reply with: yes\n").hint or "")


def test_duplicate_key_points_at_second_occurrence() -> None:
    doc, diags = load_text(HEAD + "steps:\n  - id: a\n    tool: x\n    id: b\n")
    assert codes(diags) == [("CH005", 5, 5)]
    assert "'id'" in diags[0].message and "line 3" in diags[0].message
    assert doc is not None and doc.data["steps"][0]["id"] == "a"  # the first value is kept


def test_duplicate_key_in_flow_mapping() -> None:
    assert codes(load_text(HEAD + "a: {x: 1, x: 2}\n")[1]) == [("CH005", 2, 11)]


@pytest.mark.parametrize(
    ("text", "column", "kind"),
    [
        ("404: x\n", 1, "number"),
        ("true: x\n", 1, "boolean"),
        ("~: x\n", 1, "null"),
        ("1.5: x\n", 1, "number"),
    ],
)
def test_non_string_scalar_key(text: str, column: int, kind: str) -> None:
    doc, diags = load_text(HEAD + text)
    assert codes(diags) == [("CH007", 2, column)] and kind in diags[0].message
    assert doc is not None and text.split(":")[0] in doc.data  # kept under its source text


def test_collection_key() -> None:
    doc, diags = load_text(HEAD + "? [a, b]\n: x\n")
    assert codes(diags) == [("CH007", 2, 3)]
    assert doc is not None and doc.data == {"charter": "1.0"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("vars:\n\tregion: eu\n", 3),
        ("vars:\n  a: 1\n\tb: 2\n", 4),
        ("\tname: x\n", 2),
        ("p: |\n  one\n\ttwo\n", 4),
    ],
)
def test_tab_indentation(text: str, line: int) -> None:
    d = only(HEAD + text)
    assert (d.code, d.line, d.column) == ("CH008", line, 1)
    assert "spaces" in (d.hint or "")


def test_tab_after_colon_is_fine() -> None:
    assert load_ok(HEAD + "name:\tx\n").data["name"] == "x"


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n", "---\n...\n"])
def test_empty_document(text: str) -> None:
    doc, diags = load_text(text)
    assert doc is None
    assert [d.code for d in diags] == ["CH009"] or (text.startswith("---") and diags[0].code == "CH011")


def test_multiple_documents() -> None:
    d = only(HEAD + "name: a\n---\nname: b\n")
    assert (d.code, d.line, d.column) == ("CH010", 3, 1)


def test_leading_document_marker_is_fine() -> None:
    assert load_ok("---\n" + HEAD + "...\n").data == {"charter": "1.0"}


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("hello\n", "single value"), ("42\n", "single")]
)
def test_top_level_not_a_mapping(text: str, kind: str) -> None:
    doc, diags = load_text(text)
    assert doc is None and codes(diags) == [("CH011", 1, 1)] and kind in diags[0].message


def test_missing_version() -> None:
    doc, diags = load_text("# comment\nname: x\n")
    assert codes(diags) == [("CH012", 2, 1)] and '"1.0"' in (diags[0].hint or "")
    assert doc is not None and doc.data == {"name": "x"}


@pytest.mark.parametrize("value", ['"2.0"', '"1"', "1", "2.0", "[1.0]", "~", '"1.0 "'])
def test_unsupported_version(value: str) -> None:
    doc, diags = load_text(f"name: x\ncharter: {value}\n")
    assert codes(diags) == [("CH013", 2, 10)]
    assert doc is not None


def test_version_as_float_is_a_warning_and_normalised() -> None:
    doc, diags = load_text("charter: 1.0\n")
    assert codes(diags) == [("CH014", 1, 10)]
    assert diags[0].severity is Severity.WARNING and 'charter: "1.0"' in (diags[0].hint or "")
    assert doc is not None and doc.data["charter"] == "1.0"


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("a: !!timestamp 2026-01-01\n", 4),
        ("a: !!binary aGk=\n", 4),
        ("a: !vault x\n", 4),
        ("a: !!set {x}\n", 4),
    ],
)
def test_unsupported_tags(text: str, column: int) -> None:
    doc, diags = load_text(HEAD + text)
    assert codes(diags) == [("CH015", 2, column)]
    assert doc is not None


def test_a_negation_read_as_a_tag_is_told_to_quote_not_to_remove() -> None:
    # `if: !has(x)` is CEL's `not`, which YAML reads as a tag: removing the tag would invert the test
    (d,) = load_text(HEAD + "a: !has(steps.x) == false\n")[1]
    assert (
        d.code == "CH015"
        and d.hint
        == "a value that starts with ! is read as a YAML tag: quote it, e.g. '!has(steps.x) == false'"
    )
    (other,) = load_text(HEAD + "a: !!binary aGk=\n")[1]
    assert other.hint is not None and "remove the tag" in other.hint


def test_tag_with_invalid_value() -> None:
    d = only(HEAD + "a: !!int twelve\n")
    assert d.code == "CH015" and "'twelve'" in d.message


def test_nesting_too_deep_flow() -> None:
    doc, diags = load_text(HEAD + "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    assert doc is None and [d.code for d in diags] == ["CH016"] and diags[0].line == 2


def test_nesting_too_deep_block() -> None:
    text = (
        HEAD + "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * (MAX_DEPTH + 5) + "x\n"
    )
    doc, diags = load_text(text)
    assert doc is None and [d.code for d in diags] == ["CH016"]


def test_absurd_nesting_does_not_crash_the_c_parser() -> None:
    # libyaml's composer recurses on the C stack; 100,000 levels would overflow it without the pre-scan.
    doc, diags = load_text(HEAD + "a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert doc is None and [d.code for d in diags] == ["CH016"]


@pytest.mark.parametrize("unit", ["$[", "a{", "'x'[", "&a[", "!t{", "*a["])
def test_brackets_glued_to_other_characters_do_not_nest(unit: str) -> None:
    # The cheap nesting bound does not count these; the parser must stop at once, not recurse.
    doc, diags = load_text(HEAD + "a: [" + unit * 50_000 + "\n")
    assert doc is None and len(diags) == 1 and diags[0].code in ("CH004", "CH006")


def test_nesting_at_the_limit_is_fine() -> None:
    depth = MAX_DEPTH - 1
    doc = load_ok(HEAD + "a: " + "[" * depth + "]" * depth + "\n")
    assert doc.data["a"] is not None


def test_several_diagnostics_in_one_file() -> None:
    _, diags = load_text("name: a\nname: b\n1: x\nv: !!binary aGk=\n")
    assert [d.code for d in diags] == ["CH005", "CH007", "CH015", "CH012"]


# --- positions ---------------------------------------------------------------------------------------

SAMPLE = """\
charter: "1.0"
name: triage
steps:
  - id: classify
    if: 'input.x > 1'
    agent: {identity: triage, tools: [docs, search]}
  - id: answer
    llm:
      prompt: |
        Hello {{ name }}
        second line
"""


def test_position_of_values_and_keys() -> None:
    doc = load_ok(SAMPLE)
    assert doc.position(["name"]) == (2, 7)
    assert doc.key_position(["name"]) == (2, 1)
    assert doc.position(["steps"]) == (4, 3)
    assert doc.position(["steps", 0]) == (4, 5)
    assert doc.key_position(["steps", 0]) == (4, 5)
    assert doc.position(["steps", 0, "id"]) == (4, 9)
    assert doc.key_position(["steps", 0, "if"]) == (5, 5)
    assert doc.position(["steps", 0, "agent", "tools", 1]) == (6, 45)
    assert doc.position(["steps", -1, "llm", "prompt"]) == (9, 15)
    assert doc.position([]) == (1, 1)


def test_position_falls_back_to_nearest_ancestor() -> None:
    doc = load_ok(SAMPLE)
    assert doc.position(["steps", 0, "agent", "model"]) == doc.position(["steps", 0, "agent"]) == (6, 12)
    assert doc.position(["steps", 7, "id"]) == doc.position(["steps"])
    assert doc.position(["name", "deeper"]) == (2, 7)
    assert doc.key_position(["steps", 0, "nope"]) == (4, 5)
    assert doc.position(["steps", "0"]) == doc.position(["steps"])  # a mapping key is not a list index
    assert doc.has(["steps", 1, "llm"]) and not doc.has(["steps", 2])


def test_end_position() -> None:
    doc = load_ok(SAMPLE)
    assert doc.end_position(["name"]) == (2, 13)
    assert doc.end_position(["steps", 0, "agent"]) == (6, 53)


def test_unicode_positions_count_code_points() -> None:
    doc = load_ok(HEAD + "héllo: 'ñ😀 x'\n😀😀: [a, b]\n")
    assert doc.position(["héllo"]) == (2, 8)
    assert doc.key_position(["😀😀"]) == (3, 1)
    assert doc.position(["😀😀", 1]) == (3, 9)
    assert doc.value_position(["héllo"], 3) == (2, 12)  # the 'x'


def test_crlf_line_endings() -> None:
    doc = load_ok(HEAD.replace("\n", "\r\n") + "a: 1\r\nb: 'xy'\r\n")
    assert doc.position(["b"]) == (3, 4)
    assert doc.value_position(["b"], 1) == (3, 6)


@pytest.mark.parametrize(
    ("line", "style"),
    [
        ("c: x > 1 && y", "plain"),
        ("c: 'x > 1 && y'", "single"),
        ('c: "x > 1 && y"', "double"),
    ],
)
def test_scalar_style_and_content_start(line: str, style: str) -> None:
    doc = load_ok(HEAD + line + "\n")
    assert doc.scalar_style(["c"]) == style
    offset = 0 if style == "plain" else 1
    assert doc.content_start(["c"]) == (2, 4 + offset)
    assert doc.value_position(["c"], doc.data["c"].index("y")) == (2, 4 + offset + 9)
    assert doc.value_position(["c"], len(doc.data["c"])) == (2, 4 + offset + 10)


def test_scalar_style_of_non_scalars() -> None:
    doc = load_ok(SAMPLE)
    assert doc.scalar_style(["steps"]) is None and doc.scalar_style(["nope"]) is None
    assert doc.scalar_style(["steps", 1, "llm", "prompt"]) == "literal"
    assert doc.value_position(["steps"], 3) == doc.position(["steps"])


def locate(text: str, key: str, needle: str) -> tuple[str, tuple[int, int]]:
    """The source text found at value_position of `needle` inside the value of `key`."""
    doc = load_ok(text)
    line, col = doc.value_position([key], doc.data[key].index(needle))
    return text.split("\n")[line - 1][col - 1 : col - 1 + len(needle)], (line, col)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("e: 'it''s && bad'", (2, 14)),  # '' is one character
        ('e: "a\\"b\\n\\u00e9 && bad"', (2, 21)),  # escapes are several source characters
        ('e: "\\x41\\U0001F600 bad"', (2, 20)),
        ("e: |\n  line one\n    two && bad", (4, 12)),  # literal block, more-indented line
        ("e: |-\n  one\n\n  bad", (5, 3)),  # empty line inside a literal block
        ("e: >\n  folded one\n  two && bad", (4, 10)),  # folded block
        ("e: plain one\n  two && bad", (3, 10)),  # multi-line plain scalar
        ("e: 'quoted one\n   two && bad'", (3, 11)),  # multi-line quoted scalar
        ('e: "esc\\\n   aped bad"', (3, 9)),  # escaped line break
    ],
)
def test_value_position_maps_offsets_to_file_columns(body: str, expected: tuple[int, int]) -> None:
    found, position = locate(HEAD + body + "\n", "e", "bad")
    assert found == "bad" and position == expected


def test_value_position_clamps_offsets() -> None:
    doc = load_ok(HEAD + "e: 'abc'\n")
    assert doc.value_position(["e"], -5) == (2, 5)
    assert doc.value_position(["e"], 99) == (2, 8)


# --- a large file --------------------------------------------------------------------------------------


def generated_workflow(steps: int) -> str:
    out = [HEAD.rstrip("\n"), "name: big", "steps:"]
    for i in range(steps):
        out += [
            f"  - id: step_{i}",
            f"    if: 'input.n > {i}'",
            '    tool: {name: lookup, args: {q: "${{ input.q }}", on: yes}}',
        ]
    return "\n".join(out) + "\n"


def test_large_file_loads_with_positions() -> None:
    doc = load_ok(generated_workflow(500))
    assert len(doc.data["steps"]) == 500
    assert doc.data["steps"][499]["tool"]["args"] == {"q": "${{ input.q }}", "on": "yes"}
    assert doc.position(["steps", 499, "if"]) == (4 + 3 * 499 + 1, 9)
    assert doc.value_position(["steps", 499, "if"], 6) == (4 + 3 * 499 + 1, 16)


# --- the pure-Python composer (used when PyYAML lacks libyaml) -------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SAMPLE, []),
        (HEAD + "on: yes\nt: 2026-01-01\n", []),
        (HEAD + "a: 1\na: 2\n", [("CH005", 3, 1)]),
        (HEAD + "a: [1, 2\nb: 3\n", [("CH004", 3, 2)]),
        (HEAD + "vars:\n\tx: 1\n", [("CH008", 3, 1)]),
        (HEAD + "a: *nope\n", [("CH006", 2, 4)]),
        (HEAD + "a: x\x07\n", [("CH003", 2, 5)]),
        (HEAD + "---\nb: 1\n", [("CH010", 2, 1)]),
        (HEAD + "a: " + "[" * 3000 + "]" * 3000 + "\n", [("CH016", 2, 204)]),
    ],
)
def test_pure_python_composer_agrees(monkeypatch: pytest.MonkeyPatch, text: str, expected: list) -> None:
    c_doc, c_diags = load_text(text)
    monkeypatch.setattr(loader, "_Composer", loader._PyComposer)
    doc, diags = load_text(text)
    assert [(d.code, d.line) for d in diags] == [(code, line) for code, line, _ in expected]
    assert [(d.code, d.line) for d in c_diags] == [(d.code, d.line) for d in diags]
    if doc is not None and c_doc is not None:
        assert doc.data == c_doc.data and doc.position(["name"]) == c_doc.position(["name"])


# --- never a traceback -------------------------------------------------------------------------------

YAML_BITS = st.sampled_from(
    [":", " ", "\n", "-", "- ", "[", "]", "{", "}", ",", "'", '"', "&a ", "*a", "!!", "!x ", "|", ">", "#", "\t",
     "---\n", "...", "? ", "<<: ", "\\", "%", "@", "`", "\x00", "\ufeff", "\udc80", "é", "😀", "\r", "on", "1.0"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    doc, diags = load_text(text)
    assert doc is not None or diags
    assert all(d.code in CODES and d.line >= 1 and d.column >= 1 for d in diags)


@settings(max_examples=300, deadline=None)
@given(st.lists(YAML_BITS | st.text(max_size=5), max_size=60).map("".join))
def test_yaml_like_text_never_raises(text: str) -> None:
    doc, diags = load_text(text)
    assert doc is not None or diags
    if doc is not None:
        doc.position(["steps", 0, "id"])
        doc.value_position(["charter"], 3)


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    text = SAMPLE
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate-line", "swap-lines"]))
        if kind == "insert":
            text = text[:at] + draw(YAML_BITS) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 4)) :]
        else:
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate-line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@settings(max_examples=400, deadline=None)
@given(mutated_sample())
def test_mutated_yaml_never_raises(text: str) -> None:
    doc, diags = load_text(text)
    assert doc is not None or diags
    for d in diags:
        assert d.code in CODES and d.line >= 1 and d.column >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.yaml"
        path.write_bytes(raw)
        doc, diags = load_file(path)
    assert doc is not None or diags


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab :#'\"\\\n\t&|>-{}[],é😀\x07"), min_size=1, max_size=120),
    st.sampled_from([None, "'", '"', "|", ">"]),
    st.sampled_from([20, 80]),
)
def test_value_position_finds_each_character_in_the_source(value: str, style: str | None, width: int) -> None:
    # PyYAML's emitter writes the value in every style, folding long lines and escaping as it must.
    text = HEAD + yaml.safe_dump({"x": {"e": value}}, default_style=style, width=width, allow_unicode=True)
    doc, diags = load_text(text)
    assert doc is not None and diags == [] and doc.data["x"]["e"] == value, (text, diags)
    lines = text.split("\n")
    for k, char in enumerate(value):
        line, col = doc.value_position(["x", "e"], k)
        source = lines[line - 1][col - 1 : col]
        if char in " \t\n":
            continue  # folding and indentation make whitespace ambiguous; expressions point at tokens
        escaped = source == "\\" and doc.scalar_style(["x", "e"]) == "double"
        assert source == char or escaped, (text, k)
