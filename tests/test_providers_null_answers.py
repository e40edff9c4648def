"""A model that answers the JSON `null` under an output_schema: a value like any other, which the schema
allows or not; never read as "the answer is not JSON". Against real servers on 127.0.0.1 (OpenAI and
Anthropic protocols) and the scripted provider, with a real event log, and replay of the runs."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl import diagnostics
from dsl.frontend import compile_file
from interpreter import RunOptions, replay_run, run_workflow
from interpreter.providers.base import NOT_JSON, parse_structured
from interpreter.store import open_store
from tests.fixtures.openai_server import AnthropicServer, OpenAIServer

pytestmark = pytest.mark.usefixtures("no_provider_env")

NULLABLE = "{anyOf: [{type: object, required: [risk], properties: {risk: {type: string}}}, {type: 'null'}]}"
STRICT = "{type: object, required: [risk], properties: {risk: {type: string}}}"

FLOW = """
charter: "1.0"
name: null-answers
models:
  default: {model}
{rules}steps:
  - id: rate
    llm:
      prompt: Rate ACME.
      max_retries: 1
      output_schema: {schema}
output: {{rated: "${{{{ steps.rate.output }}}}"}}
"""


def run(tmp_path: Path, model: str, schema: str, rules: str = "") -> tuple[Any, Any]:
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(model=model, schema=schema, rules=rules), encoding="utf-8")
    graph, diags = compile_file(path)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    assert graph is not None and not errors, diagnostics.format_text(errors)
    store = open_store(str(tmp_path / "charter.db"))
    return run_workflow(graph, {}, store=store, options=RunOptions(principal="tester")), store


def completed(store: Any, run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.kind == "model.completed"]


def openai(url: str) -> str:
    return f"{{provider: openai, model: test-model, base_url: '{url}'}}"


@pytest.fixture
def anthropic_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicServer]:
    monkeypatch.setenv("CHARTER_TEST_ANTHROPIC_KEY", "ak-test-123")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with AnthropicServer() as srv:
        yield srv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", None),
        ("```json\nnull\n```", None),
        (" 0 ", 0),
        ('{"a": null}', {"a": None}),
        ("", NOT_JSON),
        (None, NOT_JSON),
        ("nul", NOT_JSON),
        ("NaN", NOT_JSON),
        ("Risk: low.", NOT_JSON),
    ],
)
def test_parse_structured_tells_null_from_no_json(text: str | None, expected: Any) -> None:
    got = parse_structured(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("answer", ['{"value": null}', "null"])
def test_openai_null_answer_where_the_schema_allows_null(
    tmp_path: Path, server: OpenAIServer, answer: str
) -> None:
    """The schema's root is no object, so the answer is asked for as {"value": ...}; both that wrapper
    around null and a bare null are the answer null, taken at once (no re-ask)."""
    server.reply(answer)
    rule = "guardrails:\n  - {id: null-seen, on: model.output, check: 'output == null'}\n"
    result, store = run(tmp_path, openai(server.url), NULLABLE, rules=rule)
    assert result.status == "completed", result.error
    assert result.output == {"rated": None}
    assert len(server.requests) == 1
    (done,) = completed(store, result.run_id)
    assert done["response"]["text"] == "null" and done["response"]["structured"] is None
    assert replay_run(result.run_id, store=store).ok


def test_openai_null_answer_where_the_schema_refuses_it_is_re_asked_with_the_schema_problem(
    tmp_path: Path, server: OpenAIServer
) -> None:
    server.reply("null")
    server.reply('{"risk": "low"}')
    result, _ = run(tmp_path, openai(server.url), STRICT)
    assert result.status == "completed", result.error
    assert result.output == {"rated": {"risk": "low"}}
    feedback = server.requests[1]["messages"][-1]["content"]
    assert "does not match the required JSON schema" in feedback, feedback
    assert "not JSON" not in feedback and "None is not of type 'object'" in feedback


def test_anthropic_answer_tool_called_with_null(tmp_path: Path, anthropic_server: AnthropicServer) -> None:
    """The answer tool's input is {"value": null}: the answer null, not an answer missing."""
    anthropic_server.message(
        [{"type": "tool_use", "id": "toolu_1", "name": "respond", "input": {"value": None}}],
        "tool_use",
        (20, 5),
    )
    model = (
        "{provider: anthropic, model: claude-test, api_key_env: CHARTER_TEST_ANTHROPIC_KEY, "
        f"base_url: '{anthropic_server.url}'}}"
    )
    result, store = run(tmp_path, model, NULLABLE)
    assert result.status == "completed", result.error
    assert result.output == {"rated": None}
    assert len(anthropic_server.requests) == 1
    (done,) = completed(store, result.run_id)
    assert done["response"]["text"] == "null"
    assert replay_run(result.run_id, store=store).ok


def scripted(tmp_path: Path, entries: str) -> str:
    (tmp_path / "r.yaml").write_text(textwrap.dedent(entries), encoding="utf-8")
    return "{provider: scripted, responses: r.yaml}"


def test_scripted_json_null_where_the_schema_allows_null(tmp_path: Path) -> None:
    model = scripted(tmp_path, "responses:\n  - {step: rate, json: null}\n")
    result, store = run(tmp_path, model, NULLABLE)
    assert result.status == "completed", result.error
    assert result.output == {"rated": None}
    assert replay_run(result.run_id, store=store).ok


def test_scripted_json_null_where_the_schema_refuses_it_names_the_schema_problem(tmp_path: Path) -> None:
    model = scripted(
        tmp_path, "responses:\n  - {step: rate, json: null}\n  - {step: rate, turn: 2, text: 'null'}\n"
    )
    result, _ = run(tmp_path, model, STRICT)
    assert result.status == "failed"
    message = result.error["message"]
    assert "did not fit output_schema after 1 re-ask(s)" in message, message
    assert "not JSON" not in message and "None is not of type 'object'" in message
