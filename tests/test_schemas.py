"""interpreter.schemas: the one JSON Schema validation path of the interpreter (run input, tool and MCP
arguments, model answers, guardrail `schema` rules) and its one message style."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dsl import model
from interpreter import schemas
from interpreter.engine import InputError, check_inputs
from interpreter.guardrails import GuardrailSet
from interpreter.runtime import StepError
from interpreter.tools import validate_args

ORDER = {
    "type": "object",
    "required": ["id", "lines"],
    "properties": {
        "id": {"type": "string"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}, "odd key": {"type": "string"}},
            },
        },
    },
}


def test_the_message_names_the_path_and_the_reason() -> None:
    problems = schemas.errors(ORDER, {"id": "o-1", "lines": [{"qty": 1}, {"qty": "two"}]})
    assert [p.where for p in problems] == ["lines[1].qty"]
    assert schemas.describe(problems, "tool 'order': invalid arguments") == (
        "tool 'order': invalid arguments at `lines[1].qty`: 'two' is not of type 'integer'"
    )


def test_keys_that_are_not_names_are_quoted_and_a_root_problem_has_no_path() -> None:
    problems = schemas.errors(ORDER, {"lines": [{"odd key": 3}]})
    text = schemas.describe(problems, "the answer")
    assert text == (
        "the answer: 'id' is a required property; at `lines[0][\"odd key\"]`: 3 is not of type 'string'"
    )


def test_most_relevant_first_and_the_rest_counted() -> None:
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in "abcde"}}
    problems = schemas.errors(schema, dict.fromkeys("abcde", "x"))
    assert len(problems) == 5
    text = schemas.describe(problems, "input")
    best = problems[0].where  # jsonschema's best_match among equals; the others follow in schema order
    assert [p.where for p in problems[1:]] == [k for k in "abcde" if k != best]
    assert text.startswith(f"input at `{best}`: 'x' is not of type 'integer'; at `") and text.endswith(
        "'x' is not of type 'integer' (and 2 more)"
    )


def test_best_match_descends_into_the_branch_that_nearly_matched() -> None:
    schema = {"oneOf": [{"type": "object", "required": ["refund_id"]}, {"type": "string"}]}
    (problem,) = schemas.errors(schema, {"amount": 3})
    assert problem.message == "'refund_id' is a required property"
    assert problem.schema_path == ("oneOf", 0, "required")


def test_without_quoting_the_reason_names_the_schema_rule_not_the_value() -> None:
    problems = schemas.errors(ORDER, {"id": "card 4111 1111 1111 1111", "lines": "4111"})
    text = schemas.describe(problems, "payload does not match the schema", quote_values=False)
    assert text == (
        'payload does not match the schema at `lines`: violates schema rule properties/lines/type = "array"'
    )
    assert "4111" not in text


def test_a_long_value_is_cut_short() -> None:
    (problem,) = schemas.errors({"type": "integer"}, "x" * 5000)
    assert len(problem.reason()) == schemas.MAX_REASON and problem.reason().endswith("…")


def test_validators_are_compiled_once() -> None:
    cache: dict[str, Any] = {}
    first = schemas.compiled(ORDER, cache, "tool order")
    assert schemas.compiled({"type": "null"}, cache, "tool order") is first  # the key decides
    assert schemas.compiled(dict(ORDER)) is schemas.compiled(dict(ORDER))  # shared by content
    odd = {1: "not json", "type": "object"}  # keys that cannot be sorted: nothing stable to share it by
    assert schemas.compiled(odd) is not schemas.compiled(odd)


def test_an_invalid_schema_is_refused_when_asked() -> None:
    from jsonschema.exceptions import SchemaError

    schemas.compiled({"type": 12})  # compiled and shared unchecked (an MCP server's schema, say)
    with pytest.raises(SchemaError):
        schemas.compiled({"type": 12}, check=True)


def test_every_call_site_uses_the_same_style() -> None:
    with pytest.raises(StepError) as caught:
        validate_args("order", ORDER, {"id": 7, "lines": []}, {})
    assert str(caught.value) == "tool 'order': invalid arguments at `id`: 7 is not of type 'string'"

    graph = SimpleNamespace(workflow=SimpleNamespace(input=ORDER))
    with pytest.raises(InputError) as bad_input:
        check_inputs(graph, {"id": "o", "lines": [{"qty": 0}]})
    assert str(bad_input.value) == (
        "the run input does not match the workflow's input schema at `lines[0].qty`: "
        "0 is less than the minimum of 1"
    )

    rules = GuardrailSet(
        [model.Guardrail.model_validate({"id": "shape", "on": "tool.input", "schema": ORDER})]
    )
    verdict = rules.evaluate("tool.input", {"tool": "order", "args": {"id": "secret-7"}})
    assert verdict.events[0].reason == (
        'payload does not match the schema: violates schema rule required = ["id","lines"]'
    )
    assert "secret-7" not in verdict.events[0].reason


def test_a_key_the_schema_does_not_allow_is_named_with_the_property_it_meant() -> None:
    closed = {
        "type": "object",
        "properties": {
            "delay": {"type": "number"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"qty": {"type": "integer"}},
                    "patternProperties": {"^x-": {}},
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    }
    problems = schemas.errors(closed, {"dealy": 1, "lines": [{"qty": 1, "x-note": "ok", "qtty": 2}]})
    assert schemas.describe(problems, "tool 't': invalid arguments", root_key="argument") == (
        "tool 't': invalid arguments: unknown argument 'dealy' (did you mean 'delay'?); "
        "at `lines[0]`: unknown property 'qtty' (did you mean 'qty'?)"
    )
    # a guardrail's reason never quotes the payload, its keys included
    assert schemas.describe(problems, "payload", quote_values=False) == (
        "payload: violates schema rule additionalProperties = false; "
        "at `lines[0]`: violates schema rule properties/lines/items/additionalProperties = false"
    )
    with pytest.raises(StepError) as caught:
        validate_args("t", {"type": "object", "additionalProperties": False}, {"a": 1}, {})
    assert str(caught.value) == "tool 't': invalid arguments: unknown argument 'a'; no argument is expected"
