"""Agents as production meets them: a model that answers in odd shapes, a process killed in the middle of
an agent loop, declared secrets on their way to the model provider.

Real parts throughout: the OpenAI-compatible server on 127.0.0.1 (tests/fixtures/openai_server.py),
`charter` processes on a real SQLite file for the crash, the event log read back from that file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import charter_cmd, child_env, describe, project_charter, tool_calls, tool_project
from fixtures.openai_server import OpenAIServer

from tests.test_agent import agent, events, model_flow, run, workflow

pytestmark = pytest.mark.usefixtures("no_provider_env")


def answer(server: OpenAIServer, message: dict[str, Any], finish: str = "stop") -> None:
    """Queue a chat completion whose message is `message` exactly as given (any shape)."""
    body = {
        "id": "chatcmpl-x",
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    server.answers.append((200, body))


# --- answers in odd shapes --------------------------------------------------------------------------------


def test_tool_calls_that_are_not_a_list_fail_the_step_with_code_model_not_internal(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """A server that sends `tool_calls` as a number: a bad answer (code `model`, retryable, the call in
    the log), never a Python TypeError that fails the run as `internal`."""
    answer(server, {"content": None, "tool_calls": 5}, "tool_calls")
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "Globex"})
    assert result.status == "failed"
    assert result.error["code"] == "model", result.error
    assert result.error["retryable"] is True
    assert "tool_calls is not a list" in result.error["message"]
    assert len(events(store, result.run_id, "model.called")) == 1


def test_an_answer_given_as_text_parts_is_its_text(tmp_path: Path, server: OpenAIServer) -> None:
    """Some compatible servers answer with content parts, as requests may send them: their text is
    the answer."""
    answer(server, {"content": [{"type": "text", "text": "Globex is "}, {"type": "text", "text": "BBB."}]})
    result, store = run(tmp_path, workflow(tmp_path, server.url, agent()), {"q": "Globex"})
    assert result.status == "completed", result.error
    assert result.output == {"answer": "Globex is BBB."}
    (done,) = events(store, result.run_id, "model.completed")
    assert done["response"]["text"] == "Globex is BBB."


# --- secrets on their way to the provider -----------------------------------------------------------------

TOKEN = 'tok-"quoted"\\-5512-secret'  # a password may hold a quote or a backslash, which JSON escapes


def test_a_secret_a_prompt_reads_reaches_the_provider_masked(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt whose vars read a declared secret: the provider, a third party, gets the prompt as the
    log records it, the secret masked."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    server.reply("ok")
    graph = model_flow(
        tmp_path,
        f'default: {{provider: openai, model: test-model, base_url: "{server.url}"}}',
        """
        secrets: [API_TOKEN]
        steps:
          - id: ask
            llm: {prompt: "Check the key {{ key }}.", vars: {key: "${{ secrets.API_TOKEN }}"}}
        """,
    )
    result, store = run(tmp_path, graph)
    assert result.status == "completed", result.error
    assert server.requests[0]["messages"] == [{"role": "user", "content": "Check the key [REDACTED]."}]


def log_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("charter.db*"))


def test_a_secret_with_a_quote_in_a_tool_result_reaches_neither_the_provider_nor_the_log(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """A tool that returns the secret (it reads the environment): the result goes to the model as JSON
    text, where the secret's quote and backslash are escaped; it is masked before, not looked for in
    the escaped text, where it no longer stands as it is."""
    server.call_tools(("getenv", {"var": "API_TOKEN"}))
    server.reply("Done.")
    tool_project(tmp_path, "envtools")
    (tmp_path / "wf.yaml").write_text(
        textwrap.dedent(
            f"""\
            charter: "1.0"
            name: echoes
            secrets: [API_TOKEN]
            models:
              default: {{provider: openai, model: test-model, base_url: "{server.url}"}}
            tools:
              getenv: {{python: "envtools:getenv", effect: read}}
            identities:
              bot: {{kind: agent}}
            grants:
              - {{id: bot-env, to: bot, tools: [getenv]}}
            steps:
              - id: ask
                agent: {{identity: bot, tools: [getenv], prompt: "Read the token."}}
            """
        )
    )
    ran = project_charter("run", "wf.yaml", "--json", cwd=tmp_path, env={"API_TOKEN": TOKEN})
    assert ran.returncode == 0, describe(ran)
    (tool_message,) = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_message["content"]) == {"value": "[REDACTED]"}
    escaped = json.dumps(TOKEN)[1:-1]  # the secret as JSON text holds it
    for form in (TOKEN, escaped):
        assert form not in json.dumps(server.requests[1]), form
        assert form.encode() not in log_bytes(tmp_path), form


# --- a crash in the middle of an agent loop ---------------------------------------------------------------


class KillingServer(OpenAIServer):
    """Kills the `charter` process it serves (SIGKILL: no chance to write anything more) when request
    number `kill_at` arrives, as a crash during a model call would."""

    def __init__(self) -> None:
        super().__init__()
        self.victim: subprocess.Popen[str] | None = None
        self.kill_at = 0

    def check(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        if self.victim is not None and len(self.requests) == self.kill_at:
            os.kill(self.victim.pid, signal.SIGKILL)
            return 500, {"error": {"message": "the client is gone"}}
        return None


def test_a_crash_during_a_model_call_repeats_neither_the_answer_nor_the_tool_calls_it_read(
    tmp_path: Path,
) -> None:
    """The model asks for a write and a read; both run; the process dies while the model reads their
    results. Resume reuses the recorded answer (no new request for it), calls neither tool again (their
    completions were committed before the provider was asked), and asks the model only the call that
    was in flight, which the log shows as called."""
    with KillingServer() as server:
        tool_project(tmp_path, "crashtools")
        (tmp_path / "wf.yaml").write_text(
            textwrap.dedent(
                f"""\
                charter: "1.0"
                name: crash-in-loop
                models:
                  default: {{provider: openai, model: test-model, base_url: "{server.url}"}}
                tools:
                  send: {{python: "crashtools:send", effect: write}}
                  lookup: {{python: "crashtools:lookup", effect: read}}
                identities:
                  bot: {{kind: agent}}
                grants:
                  - {{id: bot-all, to: bot, tools: [send, lookup]}}
                steps:
                  - id: ask
                    agent: {{identity: bot, tools: [send, lookup], prompt: "Mail dana, then look up 7."}}
                """
            )
        )
        server.call_tools(("send", {"to": "dana@example.com", "body": "hi"}), ("lookup", {"id": "7"}))
        server.kill_at = 2
        env = child_env({"CHARTER_DB": str(tmp_path / "charter.db")})
        proc = subprocess.Popen(
            charter_cmd("run", "wf.yaml", "--json"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server.victim = proc
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        with sqlite3.connect(tmp_path / "charter.db") as db:
            (run_id,) = db.execute("SELECT run_id FROM runs").fetchone()
            kinds = [
                k for (k,) in db.execute("SELECT kind FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
            ]
        assert kinds.count("tool.completed") == 2 and kinds[-1] == "model.called", kinds
        server.victim = None
        server.reply("Mailed dana; 7 is found.")
        resumed = project_charter("resume", run_id, "--json", cwd=tmp_path)
        assert resumed.returncode == 0, describe(resumed)
        assert [c["tool"] for c in tool_calls(tmp_path)] == ["send", "lookup"]
        assert len(server.requests) == 3  # the first answer was not asked for again
