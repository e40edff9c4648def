"""Diagnostics: the record, the code registry, the "did you mean" helper and the four output formats."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError

import jsonschema
import pytest

from dsl.diagnostics import (
    CODES,
    SARIF_SCHEMA,
    Diagnostic,
    Severity,
    closest,
    error,
    format_github,
    format_json,
    format_sarif,
    format_text,
    warning,
)

E1 = error("CH005", "duplicate key 'id'", "flows/a.yaml", 7, 5, hint="remove one of them")
W1 = warning("CH014", "`charter: 1.0` is a number", "flows/a.yaml", 2, 10)
E2 = error("CH004", "YAML syntax error: unexpected ':' here", "b.yaml", 3, 1)


def test_error_and_warning_build_diagnostics() -> None:
    assert E1 == Diagnostic(
        "CH005", Severity.ERROR, "duplicate key 'id'", "flows/a.yaml", 7, 5, "remove one of them"
    )
    assert W1.severity is Severity.WARNING and W1.hint is None
    assert W1.end_line is None and W1.end_column is None
    assert Severity.ERROR == "error" and str(Severity.WARNING) == "warning"


def test_diagnostic_is_frozen_and_hashable() -> None:
    with pytest.raises(FrozenInstanceError):
        E1.line = 3  # type: ignore[misc]
    assert len({E1, E1, W1}) == 2


def test_diagnostics_sort_by_file_then_line_then_column() -> None:
    late = error("CH005", "m", "flows/a.yaml", 7, 9)
    assert sorted([late, E2, E1, W1]) == [E2, W1, E1, late]


def test_codes_registry_is_well_formed() -> None:
    for code, title in CODES.items():
        assert re.fullmatch(r"CH\d{3}", code), code
        assert title and "\n" not in title
    loader_codes = [c for c in CODES if c.startswith("CH0")]
    assert loader_codes == [f"CH{n:03d}" for n in range(1, len(loader_codes) + 1)]  # no gaps, in order


def test_loader_module_uses_only_registered_codes() -> None:
    from pathlib import Path

    import dsl.loader

    source = Path(dsl.loader.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r'"(CH\d{3})"', source))
    assert used and used <= CODES.keys()


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("clasify", ["classify", "route", "answer"], "classify"),
        ("Classify", ["classify", "Classify2"], "classify"),
        ("zzz", ["classify", "route"], None),
        ("route", ["route"], None),  # the name itself is no suggestion
        ("x", [], None),
        ("timout", iter(["timeout", "retry"]), "timeout"),
    ],
)
def test_closest(name: str, candidates: list[str], expected: str | None) -> None:
    assert closest(name, candidates) == expected


def test_format_text() -> None:
    out = format_text([E1, W1])
    assert out.splitlines() == [
        "flows/a.yaml:7:5: CH005 duplicate key 'id'",
        "  hint: remove one of them",
        "flows/a.yaml:2:10: CH014 warning: `charter: 1.0` is a number",
    ]
    assert format_text([]) == ""


def test_format_json_shape() -> None:
    data = json.loads(format_json([E1, W1]))
    assert data == [
        {
            "file": "flows/a.yaml",
            "line": 7,
            "column": 5,
            "code": "CH005",
            "severity": "error",
            "message": "duplicate key 'id'",
            "hint": "remove one of them",
        },
        {
            "file": "flows/a.yaml",
            "line": 2,
            "column": 10,
            "code": "CH014",
            "severity": "warning",
            "message": "`charter: 1.0` is a number",
        },
    ]
    assert json.loads(format_json([])) == []


def test_format_json_keeps_unicode_readable() -> None:
    out = format_json([error("CH005", "clé dupliquée 'é'", "ü.yaml", 1, 1)])
    assert "clé" in out and json.loads(out)[0]["file"] == "ü.yaml"


def test_format_github() -> None:
    lines = format_github([E1, W1]).splitlines()
    assert lines == [
        "::error file=flows/a.yaml,line=7,col=5,title=CH005::duplicate key 'id'%0Ahint: remove one of them",
        "::warning file=flows/a.yaml,line=2,col=10,title=CH014::`charter: 1.0` is a number",
    ]


def test_format_github_escapes_properties_and_data() -> None:
    d = error("CH004", "100% bad\nsecond line", "dir,x/a:b.yaml", 1, 2)
    assert (
        format_github([d])
        == "::error file=dir%2Cx/a%3Ab.yaml,line=1,col=2,title=CH004::100%25 bad%0Asecond line"
    )


def test_format_github_includes_end_position_when_known() -> None:
    d = Diagnostic("CH004", Severity.ERROR, "m", "a.yaml", 1, 2, end_line=1, end_column=8)
    assert format_github([d]) == "::error file=a.yaml,line=1,col=2,endLine=1,endColumn=8,title=CH004::m"


# The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json) that our output uses, with the same
# constraints: required properties, enums, minimums and the rule-index link.
SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                    "properties": {"text": {"type": "string"}},
                                                },
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {
                                                            "enum": ["none", "note", "warning", "error"]
                                                        }
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": -1},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {"text": {"type": "string"}},
                                },
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation", "region"],
                                                "properties": {
                                                    "artifactLocation": {
                                                        "type": "object",
                                                        "required": ["uri"],
                                                        "properties": {"uri": {"type": "string"}},
                                                    },
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine", "startColumn"],
                                                        "properties": {
                                                            "startLine": {"type": "integer", "minimum": 1},
                                                            "startColumn": {"type": "integer", "minimum": 1},
                                                            "endLine": {"type": "integer", "minimum": 1},
                                                            "endColumn": {"type": "integer", "minimum": 1},
                                                        },
                                                    },
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_format_sarif_is_valid_sarif_2_1_0() -> None:
    log = json.loads(format_sarif([E1, W1, E2]))
    jsonschema.validate(log, SARIF_SUBSET)
    assert log["$schema"] == SARIF_SCHEMA and log["version"] == "2.1.0"
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "charter"
    rules = driver["rules"]
    assert [r["id"] for r in rules] == ["CH004", "CH005", "CH014"]  # one rule per code used
    assert rules[1]["shortDescription"]["text"] == CODES["CH005"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    first = run["results"][0]
    assert first["level"] == "error" and first["ruleId"] == "CH005"
    assert first["message"]["text"] == "duplicate key 'id'\nhint: remove one of them"
    location = first["locations"][0]["physicalLocation"]
    assert location == {
        "artifactLocation": {"uri": "flows/a.yaml"},
        "region": {"startLine": 7, "startColumn": 5},
    }
    assert run["results"][1]["level"] == "warning"


def test_format_sarif_empty_run_and_uris() -> None:
    log = json.loads(format_sarif([]))
    jsonschema.validate(log, SARIF_SUBSET)
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []
    spaced = json.loads(format_sarif([error("CH004", "m", "my flows/a b.yaml", 1, 1)]))
    uri = spaced["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "my%20flows/a%20b.yaml"
    absolute = json.loads(format_sarif([error("CH004", "m", "/tmp/a.yaml", 1, 1)]))
    uri = absolute["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "file:///tmp/a.yaml"


def test_retry_codes_the_compiler_knows_include_every_runtime_error_code_of_the_spec() -> None:
    """CH214 warns about a retry.on code nothing raises: every code of spec Appendix A must count as
    raised, or a correct file gets a warning."""
    from pathlib import Path

    from dsl.compiler import _ERROR_CODES

    spec = (Path(__file__).resolve().parents[1] / "spec" / "charter-1.0.md").read_text(encoding="utf-8")
    appendix = spec.split("## Appendix A", 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \|(.*)$", appendix, flags=re.MULTILINE)
    # a code "no step raises" (the run's own failures) is one a retry.on cannot meet: CH214 rightly warns
    codes = {code for code, meaning in rows if "no step raises it" not in meaning}
    assert len(codes) >= 15, codes
    assert codes <= _ERROR_CODES, codes - _ERROR_CODES
