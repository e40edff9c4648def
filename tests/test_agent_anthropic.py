"""The agent loop and llm steps with an `anthropic` model, against a real Messages-API server on 127.0.0.1
(tests/fixtures/openai_server.py's `AnthropicServer`): tool_use blocks, the Python tools they call,
tool_result blocks linked by id in the next request, structured answers through the answer tool, errors
with their HTTP status, the event log, and `charter replay` of such a run with the server gone; extended
thinking blocks carried through a tool loop, resume and replay (the server checks them like the real API);
an answer-tool call made together with other tool calls.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl import diagnostics
from dsl.frontend import compile_file
from interpreter import RunOptions, decide_approval, replay_run, resume_run, run_workflow
from interpreter.explain import build_trace, format_text
from interpreter.store import open_store
from tests.fixtures.charter_cli import REPO, charter, child_env, run_json
from tests.fixtures.openai_server import AnthropicServer, thinking_blocks
from tests.test_agent import ESCALATING  # the same rule for every provider

KEY_ENV = "CHARTER_TEST_ANTHROPIC_KEY"
KEY = "ak-test-123"

HEAD = """
charter: "1.0"
name: anthropic-agent-test
input: {{type: object, properties: {{q: {{type: string}}}}}}
models:
  default:
    provider: anthropic
    model: claude-test
    base_url: {url}
    api_key_env: {key_env}
    parameters: {{max_tokens: 512, temperature: 0}}
    prices: {{input_per_1k: 3.0, output_per_1k: 15.0}}
tools:
  lookup_company:
    python: "examples.tools:lookup_company"
    description: Public facts about a company.
    args: {{type: object, required: [name], properties: {{name: {{type: string}}}}}}
    effect: read
  lookup_invoice:
    python: "examples.tools:lookup_invoice"
    description: An invoice by id.
    args: {{type: object, required: [invoice_id], properties: {{invoice_id: {{type: string}}}}}}
    effect: read
identities:
  analyst: {{kind: agent}}
grants:
  - {{id: analyst-read, to: analyst, tools: [lookup_company, lookup_invoice]}}
"""

AGENT = """
steps:
  - id: assess
    agent:
      identity: analyst
      tools: [lookup_company, lookup_invoice]
      max_turns: 4
      instructions: You assess companies.
      prompt: "Assess {{ name }}."
      vars: {name: "${{ input.q }}"}
output: {answer: "${{ steps.assess.output }}"}
"""

RISK = """
      output_schema:
        type: object
        required: [risk]
        properties: {risk: {enum: [low, medium, high]}}
"""

LLM = (
    """
steps:
  - id: rate
    llm:
      instructions: You rate credit risk.
      prompt: "Rate {{ name }}."
      vars: {name: "${{ input.q }}"}
      max_retries: 1"""
    + RISK
    + """output: {risk: "${{ steps.rate.output.risk }}"}
"""
)

AGENT_WITH_SCHEMA = AGENT.replace("      max_turns: 4\n", "      max_turns: 4\n" + RISK.lstrip("\n")).replace(
    '{answer: "${{ steps.assess.output }}"}', '{risk: "${{ steps.assess.output.risk }}"}'
)


@pytest.fixture
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.chdir(REPO)  # examples.* is allowed by the project's pyproject.toml


def write(tmp_path: Path, url: str, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(head.format(url=url, key_env=KEY_ENV) + textwrap.dedent(body), encoding="utf-8")
    return path


def run(tmp_path: Path, url: str, body: str, inputs: Any = None, head: str = HEAD) -> tuple[Any, Any]:
    graph, diags = compile_file(write(tmp_path, url, body, head))
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    assert graph is not None and not errors, diagnostics.format_text(errors)
    store = open_store(str(tmp_path / "charter.db"))
    options = RunOptions(principal="tester")
    return run_workflow(graph, inputs or {}, store=store, options=options), store


def events(store: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.kind == kind]


def test_agent_calls_two_tools_from_one_answer_and_links_results_by_id(
    tmp_path: Path, server: AnthropicServer
) -> None:
    server.call_tools(
        ("lookup_company", {"name": "Globex"}),
        ("lookup_invoice", {"invoice_id": "INV-404"}),
        text="Let me look both up.",
        usage=(200, 30),
    )
    server.reply("Globex is rated BBB; the invoice does not exist.", usage=(400, 25))
    result, store = run(tmp_path, server.url, AGENT, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is rated BBB; the invoice does not exist."}

    assert server.paths == ["/v1/messages", "/v1/messages"]
    assert server.headers[0]["x-api-key"] == KEY and server.headers[0]["anthropic-version"] == "2023-06-01"
    first, second = server.requests
    # The system prompt is the instructions; the prompt is the rendered template, as content blocks.
    assert first["system"] == "You assess companies."
    assert first["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Assess Globex."}]}]
    assert (first["model"], first["max_tokens"], first["temperature"]) == ("claude-test", 512, 0)
    assert "tool_choice" not in first
    assert first["tools"] == [
        {
            "name": "lookup_company",
            "description": "Public facts about a company.",
            "input_schema": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            },
        },
        {
            "name": "lookup_invoice",
            "description": "An invoice by id.",
            "input_schema": {
                "type": "object",
                "required": ["invoice_id"],
                "properties": {"invoice_id": {"type": "string"}},
            },
        },
    ]
    # The next request: the answer's tool_use blocks as they came, then one user turn with a tool_result
    # per call, linked by id, in order; the failing tool's result is marked as an error.
    user, assistant, results = second["messages"]
    assert user == first["messages"][0]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look both up."},
            {"type": "tool_use", "id": "toolu_1_1", "name": "lookup_company", "input": {"name": "Globex"}},
            {
                "type": "tool_use",
                "id": "toolu_1_2",
                "name": "lookup_invoice",
                "input": {"invoice_id": "INV-404"},
            },
        ],
    }
    assert results["role"] == "user"
    company, invoice = results["content"]
    assert company["type"] == "tool_result" and company["tool_use_id"] == "toolu_1_1"
    assert json.loads(company["content"])["rating"] == "BBB" and "is_error" not in company
    assert invoice["tool_use_id"] == "toolu_1_2" and invoice["is_error"] is True
    assert invoice["content"].startswith("error:") and "no invoice INV-404" in invoice["content"]
    assert second["system"] == first["system"] and second["tools"] == first["tools"]

    called = events(store, result.run_id, "model.called")
    completed = events(store, result.run_id, "model.completed")
    assert [(c["provider"], c["model"], c["call"]) for c in called] == [
        ("anthropic", "claude-test", 1),
        ("anthropic", "claude-test", 2),
    ]
    assert called[0]["tools"] == ["lookup_company", "lookup_invoice"]
    assert called[0]["params"] == {"max_tokens": 512, "temperature": 0}
    assert completed[0]["model"] == "claude-test-20250101"  # the model the server says answered
    assert completed[0]["response"]["finish_reason"] == "tool_use"
    assert [c["id"] for c in completed[0]["response"]["tool_calls"]] == ["toolu_1_1", "toolu_1_2"]
    assert [c["usage"] for c in completed] == [
        {"input_tokens": 200, "output_tokens": 30},
        {"input_tokens": 400, "output_tokens": 25},
    ]
    assert completed[1]["cost"] == pytest.approx((400 * 3.0 + 25 * 15.0) / 1000)
    tool_called = events(store, result.run_id, "tool.called")
    assert [(t["tool"], t["tool_call_id"], t["args"]) for t in tool_called] == [
        ("lookup_company", "toolu_1_1", {"name": "Globex"}),
        ("lookup_invoice", "toolu_1_2", {"invoice_id": "INV-404"}),
    ]
    assert events(store, result.run_id, "tool.completed")[0]["result"]["rating"] == "BBB"
    assert events(store, result.run_id, "tool.failed")[0]["tool"] == "lookup_invoice"


def test_llm_structured_answer_through_the_answer_tool_with_a_re_ask(
    tmp_path: Path, server: AnthropicServer
) -> None:
    server.message(
        [{"type": "tool_use", "id": "toolu_a", "name": "respond", "input": {"risk": "moderate"}}],
        "tool_use",
        (50, 9),
    )
    server.message(
        [{"type": "tool_use", "id": "toolu_b", "name": "respond", "input": {"risk": "medium"}}],
        "tool_use",
        (80, 9),
    )
    result, store = run(tmp_path, server.url, LLM, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "medium"}
    first, second = server.requests
    # Without other tools the model is made to answer through the answer tool, whose input is the schema.
    assert first["tool_choice"] == {"type": "tool", "name": "respond"}
    (respond,) = first["tools"]
    assert respond["name"] == "respond"
    assert respond["input_schema"]["properties"] == {"risk": {"enum": ["low", "medium", "high"]}}
    assert first["system"] == "You rate credit risk."
    # The re-ask shows the model its answer and what was wrong with it.
    assistant, feedback = second["messages"][1:]
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": '{"risk": "moderate"}'}]}
    assert feedback["role"] == "user"
    assert "'moderate' is not one of ['low', 'medium', 'high']" in feedback["content"][0]["text"]
    completed = events(store, result.run_id, "model.completed")
    assert [c["response"]["structured"] for c in completed] == [{"risk": "moderate"}, {"risk": "medium"}]
    assert completed[1]["usage"] == {"input_tokens": 80, "output_tokens": 9}
    assert events(store, result.run_id, "tool.called") == []  # the answer tool is not a tool call


def test_agent_uses_a_tool_then_answers_through_the_answer_tool(
    tmp_path: Path, server: AnthropicServer
) -> None:
    server.call_tools(("lookup_company", {"name": "Globex"}))
    server.message(
        [
            {"type": "text", "text": "Rated BBB, so:"},
            {"type": "tool_use", "id": "toolu_9", "name": "respond", "input": {"risk": "medium"}},
        ],
        "tool_use",
        (300, 12),
    )
    result, store = run(tmp_path, server.url, AGENT_WITH_SCHEMA, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "medium"}
    first = server.requests[0]
    assert [t["name"] for t in first["tools"]] == ["lookup_company", "lookup_invoice", "respond"]
    assert "tool_choice" not in first  # the model may use its tools first
    assert (
        first["system"]
        == "You assess companies.\n\nWhen you have the final answer, call the `respond` tool with it."
    )
    assert [t["tool"] for t in events(store, result.run_id, "tool.called")] == ["lookup_company"]


def test_an_answer_cut_off_at_max_tokens_fails_the_step_clearly(
    tmp_path: Path, server: AnthropicServer
) -> None:
    # Cut off inside a tool_use block: running the tool with half its input would be wrong.
    server.message(
        [{"type": "tool_use", "id": "toolu_1", "name": "lookup_company", "input": {}}],
        "max_tokens",
        (100, 512),
    )
    result, store = run(tmp_path, server.url, AGENT, {"q": "Globex"})
    assert result.status == "failed"
    assert result.error["code"] == "model"
    assert "the answer was cut off at max_tokens=512" in result.error["message"]
    assert "raise `max_tokens`" in result.error["message"]
    assert events(store, result.run_id, "tool.called") == []


def test_a_refusal_fails_the_step_clearly(tmp_path: Path, server: AnthropicServer) -> None:
    server.reply("I can't help with that.", stop="refusal")
    result, _ = run(tmp_path, server.url, AGENT, {"q": "Globex"})
    assert result.status == "failed" and result.error["code"] == "model"
    assert "refused to answer (stop_reason refusal): I can't help with that." in result.error["message"]


@pytest.mark.parametrize(
    ("status", "message", "says"),
    [
        (400, "max_tokens: 999999 > 8192, which is the maximum", "HTTP 400: max_tokens: 999999 > 8192"),
        (401, "invalid x-api-key", "HTTP 401: invalid x-api-key (check the API key)"),
        (404, "model: claude-test", "HTTP 404: model: claude-test"),
    ],
)
def test_http_errors_are_step_errors_with_the_status(
    tmp_path: Path, server: AnthropicServer, status: int, message: str, says: str
) -> None:
    server.fail(status, message)
    result, _ = run(tmp_path, server.url, AGENT, {"q": "Globex"})
    assert result.status == "failed"
    assert result.error["code"] == "model" and result.error["node_path"] == "assess"
    assert result.error["message"].startswith(
        f"agent step 'assess': anthropic model call to {server.url}/v1/messages"
    )
    assert says in result.error["message"]
    assert result.error["details"]["status"] == status
    assert len(server.requests) == 1  # a 4xx is not retried


def test_charter_replay_reproduces_the_run_with_the_server_stopped(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """The run goes through the CLI with the key in the environment; replay has neither server nor key."""
    server.call_tools(("lookup_company", {"name": "ACME Corp"}), ("lookup_company", {"name": "Globex"}))
    server.reply("ACME Corp is rated A, Globex BBB.")
    flow = write(tmp_path, server.url, AGENT)
    db = tmp_path / "cli.db"
    proc = charter(
        "run",
        str(flow),
        "--input",
        json.dumps({"q": "ACME Corp"}),
        "--json",
        db=db,
        env=child_env({KEY_ENV: KEY}),
    )
    assert proc.returncode == 0, proc.stderr
    result = run_json(proc)
    assert result["status"] == "completed"
    assert result["output"] == {"answer": "ACME Corp is rated A, Globex BBB."}
    asked = len(server.requests)
    assert asked == 2
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens on the port any more

    replay = charter("replay", result["run_id"], "--json", db=db)  # child_env(): no key, no base URL
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = json.loads(replay.stdout)
    assert report["ok"] is True and report["divergence"] is None
    assert report["events_checked"] >= 4  # two model calls and two tool calls at least
    assert len(server.requests) == asked


def test_an_empty_answer_is_re_asked_without_an_empty_assistant_message(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """The Messages API refuses a message with no content: the empty answer is left out of the re-ask,
    whose feedback then joins the user turn."""
    server.message([], "end_turn", (50, 0))
    server.message(
        [{"type": "tool_use", "id": "toolu_b", "name": "respond", "input": {"risk": "low"}}],
        "tool_use",
        (60, 5),
    )
    result, _ = run(tmp_path, server.url, LLM, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "low"}
    (turn,) = server.requests[1]["messages"]
    assert turn["role"] == "user"
    prompt, feedback = turn["content"]
    assert prompt == {"type": "text", "text": "Rate Globex."}
    assert "the answer is not JSON" in feedback["text"]


def test_provider_counts_cached_input_and_renames_its_answer_tool_when_taken(server: AnthropicServer) -> None:
    import asyncio

    from interpreter.providers import Message, ModelRequest, ToolSpec
    from interpreter.providers.anthropic import AnthropicProvider

    server.answers.append(
        (
            200,
            {
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "respond_answer", "input": {"risk": "low"}}
                ],
                "stop_reason": "tool_use",
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": 200,
                    "cache_read_input_tokens": 1000,
                    "output_tokens": 7,
                },
            },
        )
    )
    request = ModelRequest(
        messages=(Message("user", "Rate Globex."),),
        tools=(ToolSpec("respond", "A workflow tool that happens to be called respond."),),
        response_schema={"type": "object", "properties": {"risk": {"type": "string"}}},
    )

    async def go() -> Any:
        provider = AnthropicProvider(model="claude-test", api_key=KEY, base_url=server.url)
        try:
            return await provider.complete(request)
        finally:
            await provider.close()

    response = asyncio.run(go())
    assert response.structured == {"risk": "low"} and response.tool_calls == ()
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1210, 7)
    sent = server.requests[0]
    assert [t["name"] for t in sent["tools"]] == ["respond", "respond_answer"]
    assert "call the `respond_answer` tool" in sent["system"]


# --- extended thinking ---------------------------------------------------------------------------------

THINKING_HEAD = HEAD.replace(
    "parameters: {{max_tokens: 512, temperature: 0}}",
    "parameters: {{max_tokens: 4096, thinking: {{type: enabled, budget_tokens: 2048}}}}",
)
assert THINKING_HEAD != HEAD


def test_the_test_server_refuses_a_tool_use_turn_without_its_thinking(server: AnthropicServer) -> None:
    """The fixture is not vacuous: like the real API, it answers 400 when thinking is on and the assistant
    turn of a tool-use cycle comes back without its thinking blocks, or with one changed."""
    import httpx

    server.call_tools(("lookup_company", {"name": "Globex"}), thinking="Look it up.", redacted="EnC0d3d")
    server.reply("done")
    (_, first), _ = server.answers
    issued = first["content"]
    user = {"role": "user", "content": "Assess Globex."}
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1_1", "content": "{}"}],
    }
    body = {"model": "m", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    changed = dict(issued[0], thinking="Something else.")
    for content, says in [
        (issued[2:], "Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
        ([changed, *issued[1:]], "Invalid `signature` in `thinking` block"),
        ([issued[1], *issued[2:]], "not those of this tool_use turn"),
    ]:
        messages = [user, {"role": "assistant", "content": content}, result]
        answer = httpx.post(server.url + "/v1/messages", json={**body, "messages": messages})
        assert answer.status_code == 400 and says in answer.json()["error"]["message"]
    forced = {**body, "tool_choice": {"type": "tool", "name": "respond"}, "messages": [user]}
    assert httpx.post(server.url + "/v1/messages", json=forced).status_code == 400
    messages = [user, {"role": "assistant", "content": issued}, result]
    assert httpx.post(server.url + "/v1/messages", json={**body, "messages": messages}).status_code == 200


def test_a_tool_loop_with_extended_thinking_sends_the_thinking_back_unchanged(
    tmp_path: Path, server: AnthropicServer
) -> None:
    server.call_tools(
        ("lookup_company", {"name": "Globex"}),
        thinking="The user wants Globex; I should look up its rating.",
        redacted="EnCrYpTeD-thinking==",
        text="Let me look it up.",
    )
    server.reply("Globex is rated BBB.", thinking="The rating is BBB; that answers it.")
    result, store = run(tmp_path, server.url, AGENT, {"q": "Globex"}, head=THINKING_HEAD)
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is rated BBB."}  # the thinking is not the answer

    first, second = server.requests
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    issued = thinking_blocks("The user wants Globex; I should look up its rating.", "EnCrYpTeD-thinking==")
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][:2] == issued  # first in the turn, exactly as they came
    assert [b["type"] for b in assistant["content"][2:]] == ["text", "tool_use"]

    completed = events(store, result.run_id, "model.completed")
    assert completed[0]["response"]["thinking"] == issued
    assert completed[0]["response"]["text"] == "Let me look it up."
    assert completed[1]["response"]["text"] == "Globex is rated BBB."
    assert [b["type"] for b in completed[1]["response"]["thinking"]] == ["thinking"]
    called = events(store, result.run_id, "model.called")
    assert called[1]["messages"][2]["thinking"] == issued  # after the system and user messages
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence


def test_resume_with_extended_thinking_reuses_the_answer_and_its_thinking(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """The run waits for an approval after the first answer; the resumed run takes that answer, with its
    thinking blocks, from the log (the server is not asked again) and the server accepts the next turn."""
    server.call_tools(("lookup_company", {"name": "Globex"}), thinking="Look it up.", redacted="xyz")
    result, store = run(tmp_path, server.url, ESCALATING + AGENT, {"q": "Globex"}, head=THINKING_HEAD)
    assert result.status == "waiting", result.error
    assert len(server.requests) == 1

    server.reply("Globex: BBB.", thinking="Done.")
    resumed = decide_approval(result.run_id, result.pending[0], store=store, person="tester", approved=True)
    if resumed.status == "waiting":
        resumed = resume_run(result.run_id, store=store)
    assert resumed.status == "completed", resumed.error
    assert resumed.output == {"answer": "Globex: BBB."}
    assert len(server.requests) == 2  # turn 1 came from the log
    assert server.requests[1]["messages"][1]["content"][:2] == thinking_blocks("Look it up.", "xyz")
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence


def test_model_input_redaction_leaves_the_thinking_sent_back_unchanged(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """A model.input redact rule that matches inside a thinking block masks the messages, not the block:
    the API checks the block's signature and would refuse the turn."""
    rule = """
guardrails:
  - {id: no-globex, on: model.input, regex: "Globex", action: redact}
"""
    server.call_tools(("lookup_company", {"name": "Initech"}), thinking="Globex? No: look up Initech.")
    server.reply("Initech is BBB.", thinking="Done.")
    result, store = run(tmp_path, server.url, rule + AGENT, {"q": "Initech or Globex"}, head=THINKING_HEAD)
    assert result.status == "completed", result.error
    sent = server.requests[1]["messages"]
    assert "Globex" not in sent[0]["content"][0]["text"]  # the rule still masks the prompt
    assert sent[1]["content"][0] == thinking_blocks("Globex? No: look up Initech.")[0]
    assert replay_run(result.run_id, store=store).ok


def test_resume_refuses_clearly_to_send_back_thinking_the_log_keeps_masked(
    tmp_path: Path, server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared secret in a thinking block never reaches the log in clear; a resumed tool loop that would
    have to send that block back fails the step with the reason and the way out, not with the API's 400."""
    monkeypatch.setenv("CODENAME", "Zorblax")
    head = THINKING_HEAD + "secrets: [CODENAME]\n"
    server.call_tools(("lookup_company", {"name": "Globex"}), thinking="Codename Zorblax; look up Globex.")
    result, store = run(tmp_path, server.url, ESCALATING + AGENT, {"q": "Globex"}, head=head)
    assert result.status == "waiting", result.error
    (completed,) = events(store, result.run_id, "model.completed")
    assert completed["thinking_masked"] is True
    assert "Zorblax" not in json.dumps([e.payload for e in store.events(result.run_id)])

    server.reply("Globex: BBB.", thinking="Done.")
    resumed = decide_approval(result.run_id, result.pending[0], store=store, person="tester", approved=True)
    assert resumed.status == "failed"
    assert resumed.error["code"] == "model"
    assert "contained a declared secret" in resumed.error["message"]
    assert f"--from {result.run_id}@assess" in resumed.error["message"]
    assert len(server.requests) == 1  # nothing was sent that the API would refuse


def test_a_re_asked_tool_answer_does_not_send_its_thinking_alone(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """A model.output retry of an answer that only called tools re-asks without those calls: its thinking
    alone would be an assistant turn the API refuses, so the turn is left out."""
    rule = """
guardrails:
  - {id: answer-directly, on: model.output, check: "usage.model_calls >= 2", action: retry,
     message: "Answer directly."}
"""
    server.call_tools(("lookup_company", {"name": "Globex"}), thinking="Look it up.")
    server.reply("Globex is BBB.", thinking="Done.")
    result, store = run(tmp_path, server.url, rule + AGENT, {"q": "Globex"}, head=THINKING_HEAD)
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is BBB."}
    sent = server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user"]
    assert [b["text"] for b in sent[0]["content"]][-1] == "Answer directly."
    assert replay_run(result.run_id, store=store).ok


def test_llm_step_with_extended_thinking_is_not_forced_to_the_answer_tool(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """The API refuses forced tool use with thinking on: the model is told to call the answer tool."""
    server.message(
        [
            *thinking_blocks("Globex is BBB, a medium risk."),
            {"type": "tool_use", "id": "toolu_1", "name": "respond", "input": {"risk": "medium"}},
        ],
        "tool_use",
        (50, 30),
    )
    result, store = run(tmp_path, server.url, LLM, {"q": "Globex"}, head=THINKING_HEAD)
    assert result.status == "completed", result.error
    assert result.output == {"risk": "medium"}
    (request,) = server.requests
    assert "tool_choice" not in request
    assert request["system"].endswith("When you have the final answer, call the `respond` tool with it.")
    completed = events(store, result.run_id, "model.completed")
    assert completed[0]["response"]["structured"] == {"risk": "medium"}


# --- the answer tool together with other tool calls ----------------------------------------------------


def test_an_answer_with_other_tool_calls_is_taken_and_the_calls_are_logged_as_not_run(
    tmp_path: Path, server: AnthropicServer
) -> None:
    server.message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup_company", "input": {"name": "Globex"}},
            {"type": "tool_use", "id": "toolu_2", "name": "respond", "input": {"risk": "low"}},
        ],
        "tool_use",
        (100, 20),
    )
    result, store = run(tmp_path, server.url, AGENT_WITH_SCHEMA, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "low"}
    assert len(server.requests) == 1  # the model said it is done: not asked again
    assert events(store, result.run_id, "tool.called") == []
    (completed,) = events(store, result.run_id, "model.completed")
    response = completed["response"]
    assert response["structured"] == {"risk": "low"} and response["tool_calls"] == []
    assert response["skipped_tool_calls"] == [
        {"id": "toolu_1", "name": "lookup_company", "arguments": {"name": "Globex"}}
    ]
    assert replay_run(result.run_id, store=store).ok
    # explain says what the model asked for and why it did not run
    trace = build_trace(store, result.run_id)
    (answer,) = [e for e in trace["trace"] if e["what"] == "model.answer"]
    assert answer["skipped_tool_calls"] == [{"tool": "lookup_company", "arguments": {"name": "Globex"}}]
    assert 'also asked for lookup_company({"name": "Globex"}), not run' in format_text(trace)


def test_a_skipped_call_is_logged_with_its_arguments_masked_by_tool_input_redaction(
    tmp_path: Path, server: AnthropicServer
) -> None:
    """A call left out with the final answer is still in the log: its arguments reach it masked, as those
    of a call that runs would."""
    masking = """
guardrails:
  - {id: no-company-names, on: tool.input, tools: [lookup_company], regex: "Globex", action: redact}
"""
    server.message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup_company", "input": {"name": "Globex"}},
            {"type": "tool_use", "id": "toolu_2", "name": "respond", "input": {"risk": "high"}},
        ],
        "tool_use",
        (100, 20),
    )
    result, store = run(tmp_path, server.url, masking + AGENT_WITH_SCHEMA, {"q": "Initech"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "high"}
    (completed,) = events(store, result.run_id, "model.completed")
    (skipped,) = completed["response"]["skipped_tool_calls"]
    assert skipped["arguments"] == {"name": "[REDACTED:no-company-names]"}
    assert "Globex" not in json.dumps([e.payload for e in store.events(result.run_id)])
