"""The JSON Schema and `charter validate` agree about shape (spec §18).

- Every file of the invalid corpus (tests/invalid/) that expects a shape code (CH1xx) is rejected by the
  schema too, except the files in `SCHEMA_CANNOT`, which hold rules a JSON Schema cannot state (each entry
  says why; the schema's own description and spec §18 list the same cases).
- Every example workflow (examples/) and every valid example of the specification passes the schema.

So a file that passes the schema gets no CH1xx from `charter validate` except for documented reasons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dsl.frontend import check_file
from dsl.loader import load_file, load_text
from tests.test_invalid_corpus import CASES, expectations
from tests.test_spec_examples import Block, yaml_blocks

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "schema" / "charter.schema.json"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if ".responses." not in p.name)

# Corpus files whose shape error the schema cannot express; it accepts them. Keep in step with the
# schema's description (dsl/schema.py LIMITS) and spec §18.
SCHEMA_CANNOT = {
    # A `$ref` must resolve within the embedded schema: resolution is not a property JSON Schema can
    # check of an instance (the schema does check the embedded schema against the 2020-12 meta-schema).
    "CH111-unresolved-ref.yaml": "CH111",
    # RE2 syntax: `format: regex` means ECMA-262 and is only an annotation in 2020-12.
    "CH112-bad-regex.yaml": "CH112",
}

# Documents beyond the corpus that charter rejects and the schema accepts, for the same reasons.
SCHEMA_CANNOT_INLINE = {
    # JSON Schema's data model has numbers, not ints and floats: 2.0 *is* an integer to it (and a JSON
    # round trip may write it as 2). charter reads YAML's float 2.0 as not an integer.
    "float for integer": ("CH103", "steps: [{id: a, tool: t, retry: {attempts: 2.0}}]"),
    # The position of an item in a list (at most one default is checked; that it is last is not).
    "default case not last": (
        "CH109",
        "steps: [{id: s, switch: [{default: true, steps: [{id: a, tool: t}]}, {when: 'true', steps: []}]}]",
    ),
    # A comparison of two values of the instance (n and the number of branches).
    "n above the number of branches": (
        "CH109",
        "steps: [{id: p, parallel: {join: first-n, n: 3, branches: [[{id: a, tool: t}]]}}]",
    ),
    # The same, one of the two values perhaps a default (`index_as` is `index` unless written).
    "for_each item named like its index": (
        "CH109",
        "steps: [{id: e, for_each: {in: '${{ [1] }}', as: index, steps: [{id: a, tool: t}]}}]",
    ),
}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def _errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


SHAPE_CASES = [p for p in CASES if any(code.startswith("CH1") for code, _, _ in expectations(p))]


def test_corpus_has_shape_cases() -> None:
    assert len(SHAPE_CASES) >= 10
    names = {p.name for p in SHAPE_CASES}
    assert set(SCHEMA_CANNOT) <= names, "SCHEMA_CANNOT names a file that is not a CH1xx corpus file"


@pytest.mark.parametrize("path", SHAPE_CASES, ids=lambda p: p.name)
def test_schema_rejects_corpus_shape_errors(path: Path, validator: Draft202012Validator) -> None:
    doc, diags = load_file(path)
    assert doc is not None and not [d for d in diags if d.severity == "error"], diags
    errors = _errors(validator, doc.data)
    if path.name in SCHEMA_CANNOT:
        # Stays honest: once the schema rejects the file, take it off the list.
        assert errors == [], f"{path.name} is rejected now; remove it from SCHEMA_CANNOT"
        assert SCHEMA_CANNOT[path.name] in {code for code, _, _ in expectations(path)}
    else:
        assert errors, f"the schema accepts {path.name}, which charter rejects"


@pytest.mark.parametrize("code,body", SCHEMA_CANNOT_INLINE.values(), ids=SCHEMA_CANNOT_INLINE.keys())
def test_documented_limits(code: str, body: str, validator: Draft202012Validator, tmp_path: Path) -> None:
    text = 'charter: "1.0"\nname: t\ntools: {t: {python: "m:f", effect: read}}\nvars: {x: 0}\n' + body
    doc, diags = load_text(text, "limit.yaml")
    assert doc is not None and diags == []
    assert _errors(validator, doc.data) == []
    # what `charter validate` reports of shape (CH1xx), from the shape stage or the compiler's
    (tmp_path / "limit.yaml").write_text(text, encoding="utf-8")
    assert {d.code for d in check_file(tmp_path / "limit.yaml") if d.code.startswith("CH1")} == {code}


def test_schema_description_names_the_limits(validator: Draft202012Validator) -> None:
    description = validator.schema["description"]
    for code in {*SCHEMA_CANNOT.values(), *(c for c, _ in SCHEMA_CANNOT_INLINE.values())}:
        assert code in description


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_schema(path: Path, validator: Draft202012Validator) -> None:
    doc, diags = load_file(path)
    assert doc is not None and diags == []
    assert _errors(validator, doc.data) == []


VALID_SPEC_BLOCKS = [b for b in yaml_blocks() if not b.expect]


@pytest.mark.parametrize("block", VALID_SPEC_BLOCKS, ids=lambda b: f"line{b.line}")
def test_spec_examples_pass_schema(block: Block, validator: Draft202012Validator) -> None:
    doc, diags = load_text(block.text, block.name)
    assert doc is not None and diags == []
    assert _errors(validator, doc.data) == [], f"spec line {block.line}"


@pytest.mark.parametrize(
    "block", [b for b in yaml_blocks() if b.expect and b.expect[:3] == "CH1"], ids=lambda b: f"line{b.line}"
)
def test_spec_shape_errors_fail_schema(block: Block, validator: Draft202012Validator) -> None:
    doc, diags = load_text(block.text, block.name)
    assert doc is not None and diags == []
    assert _errors(validator, doc.data), f"spec line {block.line} expects {block.expect}"
