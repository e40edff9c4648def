"""The agent loop and llm steps against a real OpenAI-compatible HTTP server on 127.0.0.1.

Each test writes a workflow whose model points at the server, queues the model's answers, runs it with
the engine and checks the output, what the agent sent to the model, and the event log.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dsl import diagnostics
from dsl.frontend import compile_file
from interpreter import RunOptions, replay_run, resume_run, run_workflow
from interpreter.store import open_store
from tests.fixtures.openai_server import OpenAIServer

# No provider setting of the developer's (a key, a base URL) reaches these runs; examples.* is
# allowed by the project's pyproject.toml, in the repository's root.
pytestmark = pytest.mark.usefixtures("no_provider_env")

ROOT = Path(__file__).resolve().parent.parent

HEAD = """
charter: "1.0"
name: agent-test
input: {{type: object, properties: {{q: {{type: string}}}}}}
models:
  default:
    provider: openai
    model: test-model
    base_url: {url}
    prices: {{input_per_1k: 1.0, output_per_1k: 2.0}}
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
  send_email:
    python: "examples.tools:send_email"
    description: Email someone.
    args:
      type: object
      required: [to, subject, body]
      properties: {{to: {{type: string}}, subject: {{type: string}}, body: {{type: string}}}}
    effect: write
identities:
  analyst: {{kind: agent}}
grants:
  - {{id: analyst-read, to: analyst, tools: [lookup_company, lookup_invoice]}}
  - {{id: analyst-mail-inside, to: analyst, tools: [send_email], when: 'args.to.endsWith("@example.com")'}}
"""


def workflow(tmp_path: Path, url: str, body: str) -> Any:
    path = tmp_path / "flow.yaml"
    path.write_text(HEAD.format(url=url) + textwrap.dedent(body), encoding="utf-8")
    graph, diags = compile_file(path)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    assert graph is not None and not errors, diagnostics.format_text(errors)
    return graph


def model_flow(tmp_path: Path, model: str, body: str) -> Any:
    """A workflow of its own (not HEAD's agent setup) whose one model is `model` (a flow mapping)."""
    path = tmp_path / "model_flow.yaml"
    head = f'charter: "1.0"\nname: model-flow\nmodels:\n  {model}\n'
    path.write_text(head + textwrap.dedent(body), encoding="utf-8")
    graph, diags = compile_file(path)
    assert graph is not None, [str(d) for d in diags]
    return graph


def run(tmp_path: Path, graph: Any, inputs: Any = None) -> tuple[Any, Any]:
    store = open_store(str(tmp_path / "charter.db"))
    return run_workflow(graph, inputs or {}, store=store, options=RunOptions(principal="tester")), store


def events(store: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.kind == kind]


AGENT = """
steps:
  - id: assess
    agent:
      identity: analyst
      tools: [lookup_company, lookup_invoice]
      max_turns: {max_turns}
      instructions: You assess companies.
      prompt: "Assess {{{{ name }}}}."
      vars: {{name: "${{{{ input.q }}}}"}}
output: {{answer: "${{{{ steps.assess.output }}}}"}}
"""


def agent(max_turns: int = 5) -> str:
    return AGENT.format(max_turns=max_turns)


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def test_agent_chooses_a_tool_and_answers(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("lookup_company", {"name": "Globex"}), usage=(200, 10))
    server.reply("Globex is rated BBB: medium risk.", usage=(300, 20))
    graph = workflow(tmp_path, server.url, agent())
    result, store = run(tmp_path, graph, {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is rated BBB: medium risk."}
    first, second = server.requests
    # The prompt is the rendered template; only the step's tools are offered, described by their schema.
    assert first["messages"] == [
        {"role": "system", "content": "You assess companies."},
        {"role": "user", "content": "Assess Globex."},
    ]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(offered) == {"lookup_company", "lookup_invoice"}
    assert offered["lookup_company"]["parameters"]["required"] == ["name"]
    assert offered["lookup_company"]["description"] == "Public facts about a company."
    (answer,) = tool_messages(second)
    assert json.loads(answer["content"])["rating"] == "BBB"
    # Every model call and tool call is in the log, with usage and cost from the declared prices.
    called = events(store, result.run_id, "model.called")
    completed = events(store, result.run_id, "model.completed")
    assert [c["call"] for c in called] == [1, 2]
    assert called[0]["provider"] == "openai" and called[0]["model"] == "test-model"
    assert called[0]["tools"] == ["lookup_company", "lookup_invoice"]
    assert completed[0]["response"]["tool_calls"][0]["name"] == "lookup_company"
    assert completed[1]["usage"] == {"input_tokens": 300, "output_tokens": 20}
    assert completed[1]["cost"] == pytest.approx((300 * 1.0 + 20 * 2.0) / 1000)
    (tool_called,) = events(store, result.run_id, "tool.called")
    assert tool_called["tool"] == "lookup_company" and tool_called["args"] == {"name": "Globex"}
    assert events(store, result.run_id, "tool.completed")[0]["result"]["rating"] == "BBB"


def test_a_tool_error_goes_back_to_the_model(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("lookup_invoice", {"invoice_id": "INV-404"}))
    server.reply("There is no such invoice.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "x"})
    assert result.status == "completed", result.error
    (message,) = tool_messages(server.requests[1])
    assert message["content"].startswith("error:") and "no invoice INV-404" in message["content"]
    (failed,) = events(store, result.run_id, "tool.failed")
    assert failed["tool"] == "lookup_invoice" and failed["error"]["code"] == "tool"


def test_the_turn_limit_fails_the_step(tmp_path: Path, server: OpenAIServer) -> None:
    for _ in range(3):
        server.call_tools(("lookup_company", {"name": "Globex"}))
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent(max_turns=2)), {"q": "x"})
    assert result.status == "failed"
    assert result.error["code"] == "max_turns"
    assert "max_turns=2" in result.error["message"]
    assert len(server.requests) == 2  # no third turn is asked for
    assert len(events(store, result.run_id, "tool.called")) == 1  # the last turn's tools are not run


def test_an_unknown_tool_is_refused_and_the_model_told(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("send_email", {"to": "a@b.c", "subject": "s", "body": "b"}), ("drop_tables", {}))
    server.reply("I cannot do that.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "x"})
    assert result.status == "completed", result.error
    email, drop = tool_messages(server.requests[1])
    # send_email is declared in the workflow but not listed by this step: not available either.
    assert "no tool named 'send_email'" in email["content"]
    assert "no tool named 'drop_tables'" in drop["content"]
    assert "lookup_company, lookup_invoice" in drop["content"]
    assert events(store, result.run_id, "tool.called") == []
    # `charter explain` says why the chosen calls did not happen, as the model was told
    from interpreter.explain import build_trace, format_text

    text = format_text(build_trace(store, result.run_id))
    assert "told: drop_tables: error: there is no tool named 'drop_tables'" in text


def test_malformed_tool_arguments_are_reported_to_the_model(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("lookup_company", "{not json"), ("lookup_company", {"nom": "Globex"}))
    server.reply("Sorry.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "x"})
    assert result.status == "completed", result.error
    bad_json, bad_args = tool_messages(server.requests[1])
    assert "not a JSON object" in bad_json["content"]
    assert "invalid arguments" in bad_args["content"] and "name" in bad_args["content"]
    assert events(store, result.run_id, "tool.called") == []


def test_a_tool_the_identity_may_not_use_is_refused(tmp_path: Path, server: OpenAIServer) -> None:
    body = """
    steps:
      - id: mailer
        agent:
          identity: analyst
          tools: [send_email]
          prompt: "Mail the report."
    """
    server.call_tools(("send_email", {"to": "someone@elsewhere.test", "subject": "s", "body": "b"}))
    server.reply("I am not allowed to send email there.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, body))
    assert result.status == "completed", result.error
    (message,) = tool_messages(server.requests[1])
    assert message["content"].startswith("refused:") and "not authorized" in message["content"]
    assert events(store, result.run_id, "tool.called") == []
    (decision,) = events(store, result.run_id, "authz.decided")
    assert decision["decision"] == "deny"


SCHEMA_STEP = """
steps:
  - id: rate
    {kind}:
      {extra}prompt: "Rate {{{{ name }}}}."
      vars: {{name: "${{{{ input.q }}}}"}}
      max_retries: {retries}
      output_schema:
        type: object
        required: [risk]
        properties: {{risk: {{enum: [low, medium, high]}}}}
output: {{risk: "${{{{ steps.rate.output.risk }}}}"}}
"""


@pytest.mark.parametrize("kind", ["agent", "llm"])
def test_an_answer_that_does_not_fit_the_schema_is_re_asked(
    tmp_path: Path, server: OpenAIServer, kind: str
) -> None:
    server.reply("medium, I think")
    server.reply('{"risk": "moderate"}')
    server.reply('{"risk": "medium"}')
    body = SCHEMA_STEP.format(kind=kind, extra="", retries=2)
    result, store = run(tmp_path, workflow(tmp_path, server.url, body), {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"risk": "medium"}
    assert len(server.requests) == 3
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    feedback = server.requests[1]["messages"][-1]
    assert feedback["role"] == "user" and "not JSON" in feedback["content"]
    feedback = server.requests[2]["messages"][-1]["content"]
    assert "does not match the required JSON schema" in feedback and "moderate" in feedback
    assert "the answer at `risk`: 'moderate' is not one of ['low', 'medium', 'high']" in feedback
    assert len(events(store, result.run_id, "model.completed")) == 3


def test_re_asks_are_bounded_by_max_retries(tmp_path: Path, server: OpenAIServer) -> None:
    server.reply('{"risk": "unknown"}')
    server.reply('{"risk": "unknowable"}')
    body = SCHEMA_STEP.format(kind="llm", extra="", retries=1)
    result, _ = run(tmp_path, workflow(tmp_path, server.url, body), {"q": "x"})
    assert result.status == "failed"
    assert result.error["code"] == "model"
    assert "after 1 re-ask" in result.error["message"]
    assert len(server.requests) == 2


def test_a_model_that_refuses_the_request_fails_the_step_clearly(
    tmp_path: Path, server: OpenAIServer
) -> None:
    server.fail(400, "model 'test-model' does not exist")
    body = SCHEMA_STEP.format(kind="llm", extra="", retries=0)
    result, _ = run(tmp_path, workflow(tmp_path, server.url, body), {"q": "x"})
    assert result.status == "failed" and result.error["code"] == "model"
    assert "does not exist" in result.error["message"]


def test_replay_of_an_agentic_run_needs_no_model(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("lookup_company", {"name": "ACME Corp"}))
    server.reply("ACME Corp is rated A.")
    graph = workflow(tmp_path, server.url, agent())
    result, store = run(tmp_path, graph, {"q": "ACME Corp"})
    assert result.status == "completed", result.error
    asked = len(server.requests)
    server.httpd.shutdown()  # no server any more: replay must not need one
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence
    assert replayed.events_checked > 0
    assert len(server.requests) == asked


def test_replay_reports_a_changed_prompt(tmp_path: Path, server: OpenAIServer) -> None:
    server.reply("fine")
    graph = workflow(tmp_path, server.url, agent())
    result, store = run(tmp_path, graph, {"q": "ACME Corp"})
    changed = workflow(tmp_path, server.url, agent().replace("Assess", "Judge"))
    replayed = replay_run(result.run_id, store=store, graph=changed)
    assert not replayed.ok
    assert replayed.divergence.node_path == "assess"
    assert "messages sent to the model differ" in replayed.divergence.reason


ESCALATING = """
guardrails:
  - id: company-lookups-need-a-person
    on: tool.input
    tools: [lookup_company]
    check: "false"
    action: escalate
    message: A person must approve company lookups.
    escalation: {approvers: [tester]}
"""


def test_resume_reuses_recorded_model_answers(tmp_path: Path, server: OpenAIServer) -> None:
    """An escalation pauses the agent mid-loop; after approval the run resumes, the first answer comes
    from the log (the server is not asked again) and only the next turn calls the model."""
    server.call_tools(("lookup_company", {"name": "Globex"}))
    graph = workflow(tmp_path, server.url, ESCALATING + agent())
    result, store = run(tmp_path, graph, {"q": "Globex"})
    assert result.status == "waiting", result.error
    assert len(server.requests) == 1
    from interpreter import decide_approval

    server.reply("Globex: BBB.")
    resumed = decide_approval(
        result.run_id,
        result.pending[0],
        store=store,
        person="tester",
        approved=True,
        reason="ok",
        options=RunOptions(),
    )
    if resumed.status == "waiting":  # an engine that records the decision without continuing
        resumed = resume_run(result.run_id, store=store)
    assert resumed.status == "completed", resumed.error
    assert resumed.output == {"answer": "Globex: BBB."}
    assert len(server.requests) == 2  # turn 1 was not asked again
    assert [c["call"] for c in events(store, result.run_id, "model.called")] == [1, 2]
    assert replay_run(result.run_id, store=store).ok


def test_resume_never_makes_a_call_with_a_secret_the_log_keeps_masked(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model put a declared secret in a tool call's arguments; the log keeps it masked, so a resumed
    answer cannot make that call as the model asked: the step fails and says how to run it again,
    rather than calling the tool with `[REDACTED]`."""
    monkeypatch.setenv("CODENAME", "Zorblax")
    server.call_tools(("lookup_company", {"name": "Zorblax"}))
    graph = workflow(tmp_path, server.url, "secrets: [CODENAME]\n" + ESCALATING + agent())
    result, store = run(tmp_path, graph, {"q": "the codename"})
    assert result.status == "waiting", result.error
    (completed,) = events(store, result.run_id, "model.completed")
    assert completed["tool_args_masked"] is True and "Zorblax" not in json.dumps(completed)
    from interpreter import decide_approval

    resumed = decide_approval(result.run_id, result.pending[0], store=store, person="tester", approved=True)
    assert resumed.status == "failed" and resumed.error["code"] == "model", resumed
    assert "tool call arguments of model call 1 contained a declared secret" in resumed.error["message"]
    assert not events(store, result.run_id, "tool.called")


def test_replay_refuses_arguments_the_run_refused_by_type_hints(tmp_path: Path, server: OpenAIServer) -> None:
    """A python tool without `args` is checked against its type hints; replay, which calls nothing,
    loads the tool to check the same and so reproduces the refusal the model was told about."""
    server.call_tools(("lookup_company", {}))  # `name` is missing
    server.reply("I could not look it up.")
    graph = model_flow(
        tmp_path,
        f"default: {{provider: openai, model: test-model, base_url: {server.url}}}",
        """
        tools:
          lookup_company: {python: "examples.tools:lookup_company", effect: read}
        identities: {analyst: {kind: agent}}
        grants: [{id: read, to: analyst, tools: [lookup_company]}]
        steps:
          - {id: assess, agent: {identity: analyst, tools: [lookup_company], prompt: Look it up.}}
        """,
    )
    result, store = run(tmp_path, graph)
    assert result.status == "completed", result.error
    assert not events(store, result.run_id, "tool.called")
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence


def test_run_usage_sums_tokens_and_cost(tmp_path: Path, server: OpenAIServer) -> None:
    from types import SimpleNamespace

    from interpreter.agent import usage_of, usage_of_events
    from interpreter.records import build_records

    server.call_tools(("lookup_company", {"name": "Globex"}), usage=(200, 10))
    server.reply("ok", usage=(300, 20))
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "Globex"})
    totals = usage_of_events(store.events(result.run_id)).to_dict()
    assert totals["model_calls"] == 2
    assert (totals["input_tokens"], totals["output_tokens"], totals["tokens"]) == (500, 30, 530)
    assert totals["cost"] == pytest.approx((500 * 1.0 + 30 * 2.0) / 1000)
    recorded = SimpleNamespace(records=build_records(store.events(result.run_id)), replaying=True)
    assert usage_of(recorded) == totals


GUARDED = """
guardrails:
  - id: no-invoices-here
    on: tool.select
    tools: [lookup_invoice]
    check: "false"
    message: Invoices are off limits in this step.
  - id: answers-name-a-rating
    on: agent.output
    check: output.contains("rated")
    action: retry
    max_retries: 1
    message: Say how the company is rated.
"""


def test_guard_hooks_refuse_a_tool_and_re_ask_an_answer(tmp_path: Path, server: OpenAIServer) -> None:
    server.call_tools(("lookup_invoice", {"invoice_id": "INV-1001"}))
    server.reply("Looks fine.")
    server.reply("Globex is rated BBB.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, GUARDED + agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is rated BBB."}
    (refused,) = tool_messages(server.requests[1])
    assert refused["content"] == "refused: Invoices are off limits in this step."
    assert server.requests[2]["messages"][-1] == {"role": "user", "content": "Say how the company is rated."}
    assert events(store, result.run_id, "tool.called") == []
    rules = [e["rule"] for e in events(store, result.run_id, "guardrail.evaluated")]
    assert rules == ["no-invoices-here", "answers-name-a-rating"]


MCP_STEPS = """
steps:
  - id: find
    tool: search_docs
    args: {query: "backoff"}
  - id: read
    tool: read_page
    args: {title: "Retries"}
  - id: broken
    tool: broken_server
    args: {query: x}
output: {found: "${{ steps.find.output }}"}
"""


def test_mcp_tool_steps_use_the_same_path_and_a_dead_server_is_a_clear_error(tmp_path: Path) -> None:
    head = """
    charter: "1.0"
    name: mcp-steps
    tools:
      search_docs:
        mcp: {command: [python, -m, examples.mcp_docs_server]}
        effect: read
      read_page:
        mcp: {command: [python, -m, examples.mcp_docs_server]}
        effect: read
      broken_server:
        mcp: {command: [python, -m, examples.no_such_server], tool: search_docs}
        effect: read
    """
    path = tmp_path / "mcp.yaml"
    path.write_text(textwrap.dedent(head) + textwrap.dedent(MCP_STEPS), encoding="utf-8")
    graph, diags = compile_file(path)
    assert graph is not None, diags
    result, store = run(tmp_path, graph)
    assert result.status == "failed"
    assert result.error["node_path"] == "broken" and result.error["code"] == "tool"
    assert "failed to start" in result.error["message"] and "no_such_server" in result.error["message"]
    # The results are what the tools returned: a list of pages, a page's text as a string.
    found, page = [e["result"] for e in events(store, result.run_id, "tool.completed")]
    assert [hit["title"] for hit in found] == ["Retries"]
    assert isinstance(page, str) and page.startswith("Retry 429 and 5xx responses")


def test_each_escalation_in_one_agent_step_needs_its_own_approval(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """Two escalating calls in one agent step (two turns): approving the first does not let the second
    through; each is its own approval request, keyed by the node path and the call."""
    from interpreter import decide_approval

    server.call_tools(("lookup_company", {"name": "Globex"}))
    server.call_tools(("lookup_company", {"name": "Initech"}))
    server.reply("Both looked up.")
    graph = workflow(tmp_path, server.url, ESCALATING + agent())
    result, store = run(tmp_path, graph, {"q": "Globex"})
    assert result.status == "waiting", result.error
    (first,) = result.pending
    assert first.startswith("assess")
    second = decide_approval(result.run_id, first, store=store, person="tester", approved=True)
    assert second.status == "waiting", second.error
    (key,) = second.pending
    assert key == "assess/escalation[2]"  # a new request, not settled by the first approval
    requests = events(store, result.run_id, "approval.requested")
    assert len(requests) == 2 and requests[0]["data"]["fingerprint"] != requests[1]["data"]["fingerprint"]
    assert [c["args"]["name"] for c in events(store, result.run_id, "tool.called")] == ["Globex"]
    final = decide_approval(result.run_id, key, store=store, person="tester", approved=True)
    assert final.status == "completed", final.error
    assert final.output == {"answer": "Both looked up."}
    assert [c["args"]["name"] for c in events(store, result.run_id, "tool.called")] == ["Globex", "Initech"]
    assert len(server.requests) == 3  # recorded answers were reused, never asked again
    decided = events(store, result.run_id, "approval.decided")
    assert [d["decision"] for d in decided] == ["approved", "approved"]
    assert replay_run(result.run_id, store=store).ok


REDACTING = r"""
guardrails:
  - id: no-cards
    on: model.output
    regex: '\b(?:\d[ -]?){13,16}\b'
    action: redact
"""


def test_model_output_redaction_happens_before_the_log_and_the_next_turn(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """An answer that calls a tool and says a card number: the log records it masked, the model is sent
    the masked text back on the next turn, and the final answer is masked too; resume and replay use
    the masked answers."""
    card = "4111 1111 1111 1111"
    server.call_tools(("lookup_company", {"name": "Globex"}))
    server.answers[-1][1]["choices"][0]["message"]["content"] = f"Card {card} noted; looking Globex up."
    server.reply(f"Globex is fine; card {card}.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, REDACTING + agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is fine; card [REDACTED:no-cards]."}
    first, final = events(store, result.run_id, "model.completed")
    masked = "Card [REDACTED:no-cards]noted; looking Globex up."  # the pattern takes the space too
    assert first["response"]["text"] == masked
    assert first["response"]["tool_calls"][0]["name"] == "lookup_company"
    assert final["response"]["text"] == result.output["answer"]
    sent = [m for m in server.requests[1]["messages"] if m["role"] == "assistant"]
    assert sent[0]["content"] == masked
    kinds = [e.kind for e in store.events(result.run_id) if e.node_path == "assess"]
    assert kinds.index("guardrail.evaluated") < kinds.index("model.completed")  # decided, then written
    assert card.encode() not in (tmp_path / "charter.db").read_bytes()
    assert replay_run(result.run_id, store=store).ok


def test_tool_output_redaction_happens_before_the_log_and_the_model(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """A tool.output redact rule masks an agent's tool result before `tool.completed` is written, so
    the value is nowhere in the file; the model is sent the masked result, and replay reproduces it."""
    rule = "guardrails:\n  - {id: ratings, on: tool.output, regex: 'unrated', action: redact}\n"
    server.call_tools(("lookup_company", {"name": "Initech"}))  # unknown: its rating is "unrated"
    server.reply("Initech has no public rating.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, rule + agent()), {"q": "Initech"})
    assert result.status == "completed", result.error
    (completed,) = events(store, result.run_id, "tool.completed")
    assert completed["result"]["rating"] == "[REDACTED:ratings]"
    (answer,) = tool_messages(server.requests[1])
    assert json.loads(answer["content"])["rating"] == "[REDACTED:ratings]"
    kinds = [e.kind for e in store.events(result.run_id)]
    assert kinds.index("guardrail.evaluated") < kinds.index("tool.completed")  # decided, then written
    assert b"unrated" not in (tmp_path / "charter.db").read_bytes()
    assert replay_run(result.run_id, store=store).ok


def test_a_model_call_past_its_timeout_fails_with_code_timeout_and_is_retried(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """`retry.on: [timeout]` applies to a model call cut off by the model's `timeout` (Appendix A)."""
    server.stall(2.0)  # the first call answers too late; the retry's answer comes at once
    server.reply("too late")
    server.reply("on time")
    graph = model_flow(
        tmp_path,
        f"default: {{provider: openai, model: test-model, base_url: '{server.url}', timeout: 300ms}}",
        """\
        steps:
          - id: ask
            retry: {attempts: 2, backoff: {initial: 10ms}, on: [timeout]}
            llm: {prompt: Say hi}
        output: {answer: "${{ steps.ask.output }}"}
        """,
    )
    result, store = run(tmp_path, graph)
    assert result.status == "completed", result.error
    assert result.output == {"answer": "on time"}
    (retrying,) = events(store, result.run_id, "step.retrying")
    assert retrying["error"]["code"] == "timeout"
    assert retrying["error"]["category"] == "model"  # `retry.on: [model]` still matches it


def test_a_model_call_cut_off_by_an_enclosing_timeout_replays(tmp_path: Path, server: OpenAIServer) -> None:
    """The recorded call has no answer because the group around it timed out: replay ends it the same
    way at once (it used to report a divergence, or to wait for the timeout in real time)."""
    server.stall(2.0)
    server.reply("too late")
    graph = model_flow(
        tmp_path,
        f"default: {{provider: openai, model: test-model, base_url: '{server.url}'}}",
        """\
        steps:
          - id: guarded
            try:
              steps:
                - id: group
                  timeout: 300ms
                  steps:
                    - {id: ask, llm: {prompt: Say hi}}
              catch:
                as: problem
                steps:
                  - {id: note, set: {why: "${{ problem.code }}"}}
        vars: {why: ""}
        output: {why: "${{ vars.why }}"}
        """,
    )
    result, store = run(tmp_path, graph)
    assert result.status == "completed", result.error
    assert result.output == {"why": "timeout"}
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence


def test_a_model_output_check_on_text_passes_a_turn_that_only_calls_tools(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """At model.output, a turn without text has `output == ""`: a string check evaluates (it used to
    fail closed on null and end the agent at its first tool call)."""
    rule = "guardrails:\n  - {id: polite, on: model.output, check: '!output.contains(\"stupid\")'}\n"
    server.call_tools(("lookup_company", {"name": "Globex"}))
    server.reply("Globex is rated BBB.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, rule + agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    outcomes = [e["outcome"] for e in events(store, result.run_id, "guardrail.evaluated")]
    assert "error" not in outcomes


def test_a_tool_result_denied_after_redaction_is_denied_again_on_replay(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """A `deny` rule matched what a `redact` rule masked: the log holds the masked result, on which the
    deny would not match again. Replay (and resume) tell the model the same refusal as the run did."""
    rule = (
        "guardrails:\n"
        "  - {id: mask, on: tool.output, regex: 'unrated', action: redact}\n"
        "  - {id: no-unrated, on: tool.output, regex: 'unrated', action: deny, message: no unrated companies}\n"
    )
    server.call_tools(("lookup_company", {"name": "Initech"}))
    server.reply("Initech: no data.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, rule + agent()), {"q": "Initech"})
    assert result.status == "completed", result.error
    (answer,) = tool_messages(server.requests[1])
    assert answer["content"] == "refused: the result was withheld: no unrated companies"
    (completed,) = events(store, result.run_id, "tool.completed")
    assert completed["withheld"] == {"rules": ["no-unrated"], "message": "no unrated companies"}
    replayed = replay_run(result.run_id, store=store)
    assert replayed.ok, replayed.divergence
