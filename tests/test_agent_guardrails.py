"""Guardrails inside the agent loop, against a real OpenAI-compatible server on 127.0.0.1 and a real
event log: what a rule changes in the conversation, and what it must leave as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interpreter import replay_run
from tests.fixtures.openai_server import OpenAIServer
from tests.test_agent import agent, events, run, workflow

# No provider setting of the developer's (a key, a base URL) reaches these runs; examples.* is
# allowed by the project's pyproject.toml, in the repository's root.
pytestmark = pytest.mark.usefixtures("no_provider_env")

TOKENS = """
guardrails:
  - id: long-tokens
    description: Mask anything that looks like an API key before a model sees it.
    on: model.input
    regex: '[A-Za-z0-9_]{24,}'
    action: redact
"""

# OpenAI's own tool call ids: "call_" and 24 letters and digits, which such a rule matches.
IDS = ("call_9pw1qnYScqvGrCH58HWCvFH6", "call_Ab1qnYScqvGrCH58HWCvFH7")


def _two_calls(server: OpenAIServer, token: str) -> None:
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "lookup_company", "arguments": args}}
        for call_id, args in zip(
            IDS, (json.dumps({"name": "Globex"}), json.dumps({"name": token})), strict=True
        )
    ]
    server._answer({"content": None, "tool_calls": calls}, "tool_calls", (10, 5))


def test_model_input_redaction_keeps_the_tool_call_ids_that_pair_results_with_calls(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """A `model.input` redact rule masks what the messages say (text, a call's arguments), not the ids
    that pair each tool result with its call: masked alike, the two results of one turn could no longer be
    told apart, and a provider refuses such a turn."""
    token = "sk_live_0123456789abcdefghijklmnop"
    _two_calls(server, token)
    server.reply("Globex is rated BBB.")
    result, store = run(tmp_path, workflow(tmp_path, server.url, TOKENS + agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    sent = server.requests[1]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == list(IDS)
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["lookup_company"] * 2
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == list(IDS)
    # what the messages say is masked, to the model and in the log
    assert token not in json.dumps(sent)
    assert "[REDACTED:long-tokens]" in assistant["tool_calls"][1]["function"]["arguments"]
    called = events(store, result.run_id, "model.called")[1]
    assert token not in json.dumps(called)
    assert [m.get("tool_call_id") for m in called["messages"] if m["role"] == "tool"] == list(IDS)
    assert replay_run(result.run_id, store=store).ok
