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
    # entries of maps keyed by names: a bad name is an error, and the entry is still checked
    "tool name with a space": "tools: {'send email': {python: 'm:f', effect: read}}\nsteps: [{id: a, tool: t}]",
    "misspelt field under a bad tool name": "tools: {'send email': {pyhton: 'm:f', effect: read}}\n"
    "steps: [{id: a, tool: t}]",
    "model name with a space": "models: {'fast model': {provider: openai, model: m}}\nsteps: [{id: a, tool: t}]",
    "identity kind": "identities: {'ops team': {kind: robot}}\nsteps: [{id: a, tool: t}]",
    "var name": "vars: {my-var: 0}\nsteps: [{id: a, tool: t}]",
    "set name": "steps: [{id: a, set: {my-var: 1}}]",
    "prompt var name": "steps: [{id: a, llm: {prompt: p, vars: {my-var: 1}}}]",
    "branch name": "steps: [{id: p, parallel: {branches: {bad-name: [{id: a, tool: t}]}}}]",
    "bad entry under a good tool name": "tools: {t: {python: 'm:f', efect: read}}\nsteps: [{id: a, tool: t}]",
    # cross-field rules (CH109/CH110)
    "budget with on": "guardrails: [{id: g, on: tool.input, limits: {max_tool_calls: 3}}]\n"
    "steps: [{id: a, tool: t}]",
    "rule without on": "guardrails: [{id: g, check: 'true'}]\nsteps: [{id: a, tool: t}]",
    "budget with retry": "guardrails: [{id: g, limits: {max_tool_calls: 3}, action: retry}]\n"
    "steps: [{id: a, tool: t}]",
    "empty budget": "guardrails: [{id: g, limits: {}}]\nsteps: [{id: a, tool: t}]",
    "max_retries without retry": "guardrails: [{id: g, on: tool.input, check: 'true', max_retries: 2}]\n"
    "steps: [{id: a, tool: t}]",
    "escalation without escalate": "guardrails: [{id: g, on: tool.input, check: 'true', escalation: {}}]\n"
    "steps: [{id: a, tool: t}]",
    "redact without regex": "guardrails: [{id: g, on: tool.input, check: 'true', action: redact}]\n"
    "steps: [{id: a, tool: t}]",
    "tool guardrail on a model hook": "tools: {t: {python: 'm:f', effect: read, guardrails: "
    "[{id: g, on: model.input, check: 'true'}]}}\nsteps: [{id: a, tool: t}]",
    "body and json": "tools: {t: {http: {url: u, json: {}, body: b}, effect: write}}\nsteps: [{id: a, tool: t}]",
    "key env and secret": "models: {default: {provider: openai, model: m, api_key_env: K, api_key_secret: S}}\n"
    "steps: [{id: a, tool: t}]",
    "responses on openai": "models: {default: {provider: openai, model: m, responses: r.yaml}}\n"
    "steps: [{id: a, tool: t}]",
    "scripted without responses": "models: {default: {provider: scripted}}\nsteps: [{id: a, tool: t}]",
    "openai without model": "models: {default: {provider: openai}}\nsteps: [{id: a, tool: t}]",
    "n without first-n": "steps: [{id: p, parallel: {n: 1, branches: [[{id: a, tool: t}]]}}]",
    "first-n without n": "steps: [{id: p, parallel: {join: first-n, branches: [[{id: a, tool: t}]]}}]",
    "default: null case": "steps: [{id: s, switch: [{default: null, steps: []}]}]",
    "two default cases": "steps: [{id: s, switch: [{default: true, steps: []}, {default: true, steps: []}]}]",
    "agent tools without identity": "steps: [{id: a, agent: {prompt: p, tools: [t]}}]",
    "two tool kinds, one null": "tools: {t: {python: 'm:f', workflow: w.yaml, http: null, effect: read}}\n"
    "steps: [{id: a, tool: t}]",
    # scalars
    "zero duration": "steps: [{id: a, tool: t, timeout: 0s}]",
    "zero compound duration": "steps: [{id: a, tool: t, timeout: 0h0.0m}]",
    "blank condition": "steps: [{id: a, tool: t, if: '  '}]",
    "invalid input schema": "input: {type: 5}\nsteps: [{id: a, tool: t}]",
}


@pytest.mark.parametrize("body", BROKEN.values(), ids=BROKEN.keys())
def test_broken_documents_fail_both(body: str, validator: Draft202012Validator) -> None:
    doc, diags = load_text('charter: "1.0"\nname: t\n' + textwrap.dedent(body), "b.yaml")
    assert doc is not None and diags == []
    assert list(validator.iter_errors(doc.data)), "the JSON Schema accepted a broken document"
    workflow, shape = validate(doc)
    assert workflow is None and shape, "the models accepted a broken document"


ACCEPTED = {
    # the models read an explicit null as an absent field; so does the schema
    "nulls": "description:\ntimeout:\nvars: {x: 0}\nsteps: [{id: a, timeout: null, retry: null, set: {x: 1}}]",
    "null beside the one check": "guardrails: [{id: g, on: tool.input, check: null, regex: x}]\n"
    "steps: [{id: a, tool: t}]",
    "null beside the one kind": "tools: {t: {python: 'm:f', http: null, effect: read}}\nsteps: [{id: a, tool: t}]",
    "budget with on: null": "guardrails: [{id: g, on: null, limits: {max_tool_calls: 1}}]\n"
    "steps: [{id: a, tool: t}]",
    "when: null beside default": "steps: [{id: s, switch: [{when: null, default: true, steps: []}]}]",
    "n: null without first-n": "steps: [{id: p, parallel: {n: null, branches: [[{id: a, tool: t}]]}}]",
    "agent without tools": "steps: [{id: a, agent: {prompt: p, tools: []}}]",
    "plugin provider": "models: {default: {provider: my_plugin}}\nsteps: [{id: a, tool: t}]",
    "durations above zero": "steps: [{id: a, tool: t, timeout: 0.5s, retry: {attempts: 2, backoff: {initial: 0m1ms}}}]",
    "names with dots and dashes": "models: {fast.model-2: {provider: openai, model: m}}\n"
    "identities: {ops.team-1: {kind: agent}}\ntools: {send-email: {python: 'm:f', effect: write}}\n"
    "steps: [{id: a, tool: send-email}]",
}


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_valid_documents_pass_both(body: str, validator: Draft202012Validator) -> None:
    doc, diags = load_text('charter: "1.0"\nname: t\n' + textwrap.dedent(body), "ok.yaml")
    assert doc is not None and diags == []
    assert [e.message for e in validator.iter_errors(doc.data)] == []
    workflow, shape = validate(doc)
    assert workflow is not None, shape
