"""`$ref` in the JSON Schemas of a workflow (run `input`, step `output_schema`, tool `args`, guardrail
`schema`): every reference must resolve within its schema. `charter validate` reports one that does not
as CH111 at the reference; at run time a schema the front end never saw fails clearly, never with a
traceback or an `internal` error, and nothing is ever fetched."""

from __future__ import annotations

import dataclasses
import textwrap
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dsl import model
from dsl.diagnostics import Diagnostic
from dsl.frontend import check_file, compile_file
from dsl.schema_refs import broken_refs
from interpreter import RunOptions, run_workflow, schemas
from interpreter.engine import InputError, check_inputs
from interpreter.guardrails import GuardrailSet
from interpreter.runtime import StepError
from interpreter.store import open_store
from interpreter.tools import validate_args
from tests.fixtures.charter_cli import charter, describe

MISSING = {"$ref": "#/$defs/missing"}


def diagnose(tmp_path: Path, text: str) -> list[Diagnostic]:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return check_file(path)


def only(tmp_path: Path, text: str) -> Diagnostic:
    diags = diagnose(tmp_path, text)
    assert len(diags) == 1, [str(d) for d in diags]
    return diags[0]


# --- charter validate: every place a workflow holds a schema --------------------------------------------


def test_input_schema(tmp_path: Path) -> None:
    d = only(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        input: {"$ref": "#/$defs/missing"}
        steps: [{id: a, set: {x: 1}}]
        vars: {x: null}
        """,
    )
    assert (d.code, d.line, d.column) == ("CH111", 3, 17)  # the reference itself
    assert d.message == (
        "'input' in the workflow is not a valid JSON Schema (at '$ref'): $ref '#/$defs/missing' does not "
        "resolve: the schema has nothing at '/$defs/missing'"
    )


def test_llm_output_schema_nested_block_style(tmp_path: Path) -> None:
    d = only(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        models: {default: {provider: openai, model: gpt-4.1-mini}}
        steps:
          - id: a
            llm:
              prompt: hi
              output_schema:
                type: object
                $defs: {item: {type: string}}
                properties:
                  items:
                    type: array
                    items:
                      $ref: "#/$defs/itme"
        """,
    )
    assert (d.code, d.line, d.column) == ("CH111", 15, 21)
    assert "'output_schema' in llm step 'a'" in d.message
    assert "(at 'properties/items/items/$ref')" in d.message and "'/$defs/itme'" in d.message


def test_agent_output_schema(tmp_path: Path) -> None:
    d = only(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        models: {default: {provider: openai, model: gpt-4.1-mini}}
        steps:
          - id: a
            agent:
              prompt: hi
              output_schema: {anyOf: [{type: string}, {$ref: "#/$defs/nope"}]}
        """,
    )
    assert (d.code, d.line, d.column) == ("CH111", 8, 54)
    assert "'output_schema' in agent step 'a'" in d.message and "(at 'anyOf/1/$ref')" in d.message


def test_tool_args_and_guardrail_schema_each_reported(tmp_path: Path) -> None:
    diags = diagnose(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        tools:
          lookup: {python: "examples.tools:search", effect: read, args: {"$ref": "#/$defs/nope"}}
        guardrails:
          - {id: sch, on: tool.output, schema: {"$ref": "#/$defs/missing"}, action: warn}
        steps: [{id: a, tool: lookup, args: {}}]
        """,
    )
    assert [(d.code, d.line, d.column) for d in diags] == [("CH111", 4, 74), ("CH111", 6, 49)]
    assert "'args' in tool 'lookup'" in diags[0].message
    assert "'schema' in guardrail 'sch'" in diags[1].message


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ('{"$ref": "https://example.com/s.json"}', "refers to another document, which is never fetched"),
        ('{"$ref": "other.json#/a"}', "refers to another document"),
        ('{"$ref": "#nowhere"}', "the schema has no $anchor 'nowhere'"),
        ('{"$dynamicRef": "#/$defs/x"}', "$dynamicRef '#/$defs/x' does not resolve"),
        ('{"$ref": "#/required", required: [a]}', "does not point at a schema but at a list"),
        ('{"$id": "https://e.com/r.json", "$ref": "https://e.com/r.json#/$defs/x"}', "nothing at"),
    ],
)
def test_every_way_a_reference_breaks(tmp_path: Path, schema: str, reason: str) -> None:
    d = only(
        tmp_path,
        f'charter: "1.0"\nname: t\ninput: {schema}\nsteps: [{{id: a, set: {{x: 1}}}}]\nvars: {{x: null}}\n',
    )
    assert (d.code, d.line) == ("CH111", 3) and reason in d.message, d.message


def test_several_broken_references_are_counted(tmp_path: Path) -> None:
    d = only(
        tmp_path,
        'charter: "1.0"\nname: t\ninput: {properties: {a: {$ref: "#/x"}, b: {$ref: "#/y"}}}\n'
        "steps: [{id: a, set: {x: 1}}]\nvars: {x: null}\n",
    )
    assert "'#/x'" in d.message and d.message.endswith("(and 1 more)")


def test_references_that_resolve_pass(tmp_path: Path) -> None:
    diags = diagnose(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        input:
          $id: "https://example.com/order.json"
          type: object
          $defs:
            qty: {type: integer, minimum: 1}
            line: {$anchor: line, type: object, properties: {qty: {$ref: "#/$defs/qty"}}}
            money: {$id: "money.json", type: number, $defs: {cents: {type: integer}}}
            tree: {type: object, properties: {kids: {type: array, items: {$ref: "#/$defs/tree"}}}}
          properties:
            lines: {type: array, items: {$ref: "#line"}}
            total: {$ref: "money.json"}
            cents: {$ref: "money.json#/$defs/cents"}
            absolute: {$ref: "https://example.com/order.json#/$defs/qty"}
            tree: {$ref: "#/$defs/tree"}
            meta: {$ref: "https://json-schema.org/draft/2020-12/schema"}
            $ref: {type: string}
            literal: {const: {$ref: "#/nowhere"}, default: {$ref: "#/nowhere"}}
            picked: {enum: [{$ref: "#/nowhere"}]}
        steps: [{id: a, set: {x: 1}}]
        vars: {x: null}
        """,
    )
    assert diags == []


def test_an_invalid_schema_is_placed_at_the_offending_keyword(tmp_path: Path) -> None:
    d = only(
        tmp_path,
        """\
        charter: "1.0"
        name: t
        input:
          type: object
          properties:
            a: {type: 5}
        steps: [{id: a, set: {x: 1}}]
        vars: {x: null}
        """,
    )
    assert (d.code, d.line, d.column) == ("CH111", 6, 15)


def test_broken_refs_walks_only_subschemas() -> None:
    schema = {
        "properties": {"$ref": {"$ref": "#/a"}},
        "const": {"$ref": "#/b"},
        "x-extension": {"$ref": "#/c"},
        "prefixItems": [True, {"$ref": "#/d"}],
    }
    assert [(b.path, b.ref) for b in broken_refs(schema)] == [
        (("properties", "$ref", "$ref"), "#/a"),
        (("prefixItems", 1, "$ref"), "#/d"),
    ]


def test_a_schema_reached_only_through_a_reference_is_checked_too() -> None:
    """Under an unknown keyword a `$ref` is data, until a reference leads there: the validator would
    then follow it, so it must resolve. Reported at the reference that leads there."""
    schema = {
        "x-lib": {"item": {"$ref": "#/nope"}},
        "properties": {"a": {"$ref": "#/x-lib/item"}},
        "$defs": {"loop": {"properties": {"next": {"$ref": "#/$defs/loop"}}}},  # recursion: walked once
    }
    assert [(b.path, b.ref) for b in broken_refs(schema)] == [(("properties", "a", "$ref"), "#/nope")]


# --- run time: a schema the front end never saw ------------------------------------------------------------


def test_errors_report_a_broken_reference_instead_of_raising() -> None:
    (problem,) = schemas.errors(MISSING, {"a": 1})
    assert problem.broken_schema and problem.keyword == "$ref"
    text = "the schema is broken: a $ref does not resolve (nothing at '/$defs/missing')"
    assert schemas.describe([problem], "the answer") == f"the answer: {text}"
    assert problem.reason(quote_values=False) == text  # says what is wrong, quotes no value


def test_a_remote_reference_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a $ref was fetched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    (problem,) = schemas.errors({"$ref": "http://127.0.0.1:9/schema.json"}, 1)
    assert "'http://127.0.0.1:9/schema.json' is another document, which is never fetched" in problem.message
    assert schemas.errors({"$ref": "https://json-schema.org/draft/2020-12/schema"}, {"type": "string"}) == []


def test_a_checked_schema_refuses_a_broken_reference() -> None:
    from jsonschema.exceptions import SchemaError

    with pytest.raises(SchemaError, match="does not resolve") as caught:
        schemas.compiled({"properties": {"a": MISSING}}, check=True)
    assert list(caught.value.path) == ["properties", "a", "$ref"]


def test_every_call_site_fails_clearly() -> None:
    graph = SimpleNamespace(workflow=SimpleNamespace(input=MISSING))
    with pytest.raises(InputError, match="input schema: the schema is broken: a \\$ref does not resolve"):
        check_inputs(graph, {})

    with pytest.raises(StepError) as caught:
        validate_args("lookup", {"$ref": "#/$defs/nope"}, {"order_id": "A1"}, {})
    assert caught.value.code == "tool" and "the schema is broken" in caught.value.message

    # a guardrail whose schema cannot be used fails closed: deny, whatever its action
    rule = model.Guardrail.model_construct(
        id="sch", on="tool.output", schema_=MISSING, action="warn", check=None, regex=None, limits=None
    )
    verdict = GuardrailSet([rule]).evaluate("tool.output", {"tool": "t", "output": {"a": 1}})
    (event,) = verdict.events
    assert (event.outcome, event.action) == ("error", "deny") and "does not resolve" in event.reason


def test_a_run_whose_tool_schema_breaks_after_validation_fails_the_step(tmp_path: Path) -> None:
    (tmp_path / "ref_tools.py").write_text("def lookup(order_id):\n    return {'id': order_id}\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: t
            tools:
              lookup: {python: "ref_tools:lookup", effect: read, args: {type: object}}
            vars: {e: null}
            steps:
              - id: t
                try:
                  steps: [{id: a, tool: lookup, args: {order_id: "A1"}}]
                  catch: {steps: [{id: c, set: {e: "${{ error.code }}"}}]}
            output: {e: "${{ vars.e }}"}
            """
        )
    )
    graph, diags = compile_file(flow)
    assert graph is not None, [str(d) for d in diags]
    tool = graph.workflow.tools["lookup"].model_copy(update={"args": {"$ref": "#/$defs/nope"}})
    workflow = graph.workflow.model_copy(update={"tools": {"lookup": tool}})
    store = open_store(tmp_path / "charter.db")
    try:
        result = run_workflow(
            dataclasses.replace(graph, workflow=workflow),
            {},
            store=store,
            options=RunOptions(allow_modules=("ref_tools",)),
        )
    finally:
        store.close()
    assert result.status == "completed", result.error
    assert result.output == {"e": "tool"}  # caught by try/catch, not an `internal` failure


# --- the CLI --------------------------------------------------------------------------------------------------


def test_validate_and_run_print_the_diagnostic_not_a_traceback(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        'charter: "1.0"\nname: t\ninput: {"$ref": "#/$defs/missing"}\nsteps: [{id: a, set: {x: 1}}]\nvars: {x: null}\n'
    )
    checked = charter("validate", str(flow))
    assert checked.returncode != 0, describe(checked)
    assert f"{flow}:3:17: CH111" in checked.stdout + checked.stderr, describe(checked)
    ran = charter("run", str(flow), db=tmp_path / "charter.db")
    assert ran.returncode != 0 and "Traceback" not in ran.stdout + ran.stderr, describe(ran)
    assert "CH111" in ran.stdout + ran.stderr, describe(ran)
