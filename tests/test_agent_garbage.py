"""A model that answers garbage never takes the run down: against a real OpenAI-compatible server on
127.0.0.1 and a real event log, what it answers is refused or re-asked inside the step, as spec §13.3
says of invalid tool calls and §13.2 of answers that do not fit `output_schema`."""

from __future__ import annotations

from pathlib import Path

import pytest

from interpreter import replay_run
from tests.fixtures.openai_server import OpenAIServer
from tests.test_agent import agent, events, run, tool_messages, workflow

# No provider setting of the developer's (a key, a base URL) reaches these runs; examples.* is
# allowed by the project's pyproject.toml, in the repository's root.
pytestmark = pytest.mark.usefixtures("no_provider_env")


def test_tool_arguments_with_the_logs_reserved_key_are_refused_and_the_model_told(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """`$blob` is the event log's blob-reference key: a call with it as an argument could not be logged.
    It is not made, and the model is told, instead of the whole run failing with code `output`."""
    server.call_tools(("lookup_company", {"name": "Globex", "$blob": "x"}))
    server.reply("Globex could not be looked up.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex could not be looked up."}
    (told,) = tool_messages(server.requests[1])
    assert told["content"].startswith("error: invalid arguments for lookup_company")
    assert "'$blob' is reserved" in told["content"]
    assert events(store, result.run_id, "tool.called") == []
    assert replay_run(result.run_id, store=store).ok


STRUCTURED = """
steps:
  - id: rate
    {kind}:
      {extra}prompt: Rate it.
      output_schema: {{type: object}}
      max_retries: 1
output: {{risk: "${{{{ steps.rate.output.risk }}}}"}}
"""


def test_a_structured_answer_with_the_logs_reserved_key_is_re_asked(
    tmp_path: Path, server: OpenAIServer
) -> None:
    server.reply('{"$blob": "0000"}')
    server.reply('{"risk": "low"}')
    body = STRUCTURED.format(kind="llm", extra="")
    result, store = run(tmp_path, workflow(tmp_path, server.url, body))
    assert result.status == "completed", result.error
    assert result.output == {"risk": "low"}
    feedback = server.requests[1]["messages"][-1]["content"]
    assert "the key '$blob'" in feedback
    assert replay_run(result.run_id, store=store).ok


def test_an_agent_that_keeps_answering_the_reserved_key_fails_its_step_with_code_model(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """The step fails as for any answer that does not fit (code `model`), which `try` can catch; the
    run is not cut short by an event it cannot write."""
    server.reply('{"$blob": "0000"}')
    server.reply('{"$blob": "1111"}')
    body = STRUCTURED.format(kind="agent", extra="identity: analyst\n      ")
    result, store = run(tmp_path, workflow(tmp_path, server.url, body))
    assert result.status == "failed"
    assert result.error["code"] == "model" and result.error["step"] == "rate", result.error
    assert "'$blob'" in result.error["message"]
    assert len(events(store, result.run_id, "model.completed")) == 2


def test_a_garbage_answer_is_retried_by_the_steps_retry_without_on(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """An answer with no choices (or cut off, filtered...) is one another attempt can change: a step's
    `retry` without `on` retries it (spec §12.4), as it does a 5xx."""
    server.answers.append((200, {"choices": [], "usage": {}}))
    server.reply("hello")
    body = """
    steps:
      - id: greet
        retry: {attempts: 2, backoff: {initial: 10ms}}
        llm: {prompt: Say hello.}
    output: {said: "${{ steps.greet.output }}"}
    """
    result, store = run(tmp_path, workflow(tmp_path, server.url, body))
    assert result.status == "completed", result.error
    assert result.output == {"said": "hello"}
    assert len(server.requests) == 2
    assert replay_run(result.run_id, store=store).ok


def test_an_llm_step_whose_model_asks_for_tools_fails_rather_than_answering_nothing(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """An llm step offers no tools; an answer that only asks for some is no answer. The step used to
    complete with "" as its output, silently; it now fails with code `model` and says why."""
    server.call_tools(("search", {"q": "queues"}))
    body = """
    steps:
      - id: summarize
        llm: {prompt: Summarize queues.}
    output: {summary: "${{ steps.summarize.output }}"}
    """
    result, store = run(tmp_path, workflow(tmp_path, server.url, body))
    assert result.status == "failed", result.output
    assert result.error["code"] == "model" and result.error["step"] == "summarize"
    assert "asked for tools (search) instead of answering" in result.error["message"]
    assert len(events(store, result.run_id, "model.completed")) == 1  # the answer is in the log
    assert replay_run(result.run_id, store=store).ok
