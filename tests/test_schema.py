"""The published JSON Schema: current, valid 2020-12, and in agreement with the models."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dsl.loader import load_file, load_text
from dsl.schema import SCHEMA_ID, generate_schema, schema_text
from dsl.validate import validate

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "schema" / "charter.schema.json"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if ".responses." not in p.name)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def test_committed_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "schema/charter.schema.json is stale: run `python -m dsl.schema > schema/charter.schema.json`"
    )


def test_schema_is_valid_2020_12_with_identity() -> None:
    schema = generate_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] and schema["description"]
    assert schema["required"] == ["charter", "name", "steps"]


def test_schema_carries_descriptions_and_expression_kinds() -> None:
    schema = generate_schema()
    defs = schema["$defs"]
    agent = defs["AgentSpec"]["properties"]
    assert agent["prompt"]["x-charter-expr"] == "prompt" and agent["prompt"]["description"]
    assert "title" not in agent["prompt"]
    case_when = defs["Case"]["properties"]["when"]["anyOf"][0]
    assert case_when["x-charter-expr"] == "cel"
    undocumented = [
        f"{name}.{prop}"
        for name, model in defs.items()
        for prop, spec in model.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undocumented == []
    assert all(defs[name].get("description") for name in defs)


def _data(path: Path) -> Any:
    doc, diags = load_file(path)
    assert doc is not None and diags == []
    return doc.data


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_schema(path: Path, validator: Draft202012Validator) -> None:
    errors = [e.message for e in validator.iter_errors(_data(path))]
    assert errors == []


BROKEN = {
    "unknown field": "steps: [{id: a, set: {x: 1}, bogus: 1}]",
    "two kinds": "steps: [{id: a, tool: t, llm: {prompt: p}}]",
    "no kind": "steps: [{id: a}]",
    "missing id": "steps: [{tool: t}]",
    "bad duration": "steps: [{id: a, tool: t, timeout: 30}]",
    "bad enum": "steps: [{id: p, parallel: {branches: [], join: some}}]",
    "string for int": "steps: [{id: a, agent: {prompt: p, max_turns: '5'}}]",
    "tool without kind": "tools: {t: {effect: read}}\nsteps: [{id: a, tool: t}]",
    "guardrail two checks": "guardrails: [{id: g, on: tool.input, check: x, regex: y}]\nsteps: [{id: a, tool: t}]",
    "bad step id": "steps: [{id: 'not an id', tool: t}]",
    "no steps": "description: nothing to do",
}


@pytest.mark.parametrize("body", BROKEN.values(), ids=BROKEN.keys())
def test_broken_documents_fail_both(body: str, validator: Draft202012Validator) -> None:
    doc, diags = load_text('charter: "1.0"\nname: t\n' + textwrap.dedent(body), "b.yaml")
    assert doc is not None and diags == []
    assert list(validator.iter_errors(doc.data)), "the JSON Schema accepted a broken document"
    workflow, shape = validate(doc)
    assert workflow is None and shape, "the models accepted a broken document"
