"""The agentic examples as a user runs them: `python -m cli run examples/X.yaml`, offline with their
scripted responses (the MCP example with its real MCP server process), then `charter replay`; the same
file pointed at an OpenAI-compatible server with `--model`; a paused agent resumed after approval."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import REPO
from fixtures.charter_cli import charter as run_charter

from tests.fixtures.openai_server import OpenAIServer

EXAMPLES = REPO / "examples"

CASES = {
    "sequential": ({"document": "ACME Corp sells Globex 1,250,000 EUR of parts until 2027-06-30."}, "report"),
    "routing": ({"message": "I was charged twice for INV-1002"}, "reply"),
    "parallel": ({"question": "What is the API rate limit?"}, "answer"),
    "guarded_agent": ({"order_id": "ORD-7", "message": "The lamp arrived broken."}, "summary"),
    "mcp_agent": ({"question": "Why do I get 429s?"}, "answer"),
}


def charter(*args: str, db: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`charter ARGS` with its log at `db`: required, so that no run writes a log into the repository."""
    return run_charter(*args, db=db, cwd=cwd, timeout=120)


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_offline_and_replays(tmp_path: Path, name: str) -> None:
    inputs, key = CASES[name]
    db = tmp_path / "charter.db"
    proc = charter("run", f"examples/{name}.yaml", "--input", json.dumps(inputs), "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    result = as_json(proc)
    assert result["status"] == "completed"
    assert isinstance(result["output"][key], str) and result["output"][key]
    assert "model usage:" in proc.stderr
    replay = charter("replay", result["run_id"], db=db)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reproduced" in replay.stdout
    log = charter("log", result["run_id"], db=db)
    assert "model.called" in log.stdout and "model.completed" in log.stdout
    assert "model usage:" in log.stdout
    logged = [
        json.loads(line) for line in charter("log", result["run_id"], "--json", db=db).stdout.splitlines()
    ]
    called = [e["payload"] for e in logged if e["kind"] == "model.called"]
    assert called and all(isinstance(c["model"], str) for c in called)  # event-log §5: a string


def test_the_mcp_example_calls_the_real_server(tmp_path: Path) -> None:
    db = tmp_path / "charter.db"
    inputs = json.dumps(CASES["mcp_agent"][0])
    result = as_json(charter("run", "examples/mcp_agent.yaml", "--input", inputs, "--json", db=db))
    log = charter("log", result["run_id"], "--json", db=db)
    events = [json.loads(line) for line in log.stdout.splitlines()]
    completed = [e["payload"] for e in events if e["kind"] == "tool.completed"]
    assert [c["call"] for c in completed] == [1, 2, 3]
    # search_docs ran in the server process: its result is the list of matching pages it returned;
    # read_page returned a page's text, which stays a string.
    titles = {hit["title"] for hit in completed[0]["result"]}
    assert {"Rate limits", "Retries"} <= titles
    assert isinstance(completed[1]["result"], str) and "600 requests per minute" in completed[1]["result"]
    assert result["output"]["sources"] == ["Rate limits", "Retries"]


def test_an_mcp_server_command_needs_the_allow_list(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        (EXAMPLES / "mcp_agent.yaml").read_text(encoding="utf-8").replace("mcp_agent.responses", "r"),
        encoding="utf-8",
    )
    (tmp_path / "r.yaml").write_text("responses: [{step: answer, text: hi}]\n", encoding="utf-8")
    proc = charter("run", str(flow), "--input", '{"question": "q"}', db=tmp_path / "c.db", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "MCP" not in proc.stdout
    assert "examples.mcp_docs_server" in proc.stderr and "not allowed" in proc.stderr


def test_the_same_file_runs_against_an_openai_compatible_server(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        server.reply(
            json.dumps({"parties": ["ACME Corp", "Globex"], "total_value": 5, "end_date": "2030-01-01"})
        )
        server.call_tools(("lookup_company", {"name": "ACME Corp"}), ("lookup_company", {"name": "Globex"}))
        server.reply("Risk: low.")
        server.reply("All good.")
        db = tmp_path / "charter.db"
        proc = charter(
            "run",
            "examples/sequential.yaml",
            "--input",
            json.dumps(CASES["sequential"][0]),
            "--model",
            f"default=openai:test-model@{server.url}",
            "--json",
            db=db,
        )
        assert proc.returncode == 0, proc.stderr
        assert as_json(proc)["output"]["report"] == "All good."
        assert [r["model"] for r in server.requests] == ["test-model"] * 4
        asked = len(server.requests)
        server.httpd.shutdown()
    # No server and no key: replay takes every answer from the log.
    replay = charter("replay", as_json(proc)["run_id"], db=db)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert asked == 4


def test_a_bad_model_option_is_a_usage_error(tmp_path: Path) -> None:
    proc = charter("run", "examples/sequential.yaml", "--model", "default=openai", db=tmp_path / "c.db")
    assert proc.returncode == 2
    assert "NAME=PROVIDER:MODEL" in proc.stderr


def test_an_escalated_agent_resumes_with_the_next_scripted_answer(tmp_path: Path) -> None:
    """A refund over the desk's limit pauses the agent at its second tool call; approving it resumes the
    run, which takes turns 1-2 from the log and asks the scripted model only for turn 3."""
    script = tmp_path / "ord8.yaml"
    script.write_text(
        """responses:
  - {step: resolve, turn: 1, tool_calls: [{name: lookup_order, args: {order_id: ORD-8}}]}
  - step: resolve
    turn: 2
    tool_calls: [{name: issue_refund, args: {order_id: ORD-8, amount: 300, reason: damaged}}]
  - step: resolve
    turn: 3
    json: {refunded: true, amount: 300, summary: Refunded 300 for ORD-8 after approval.}
""",
        encoding="utf-8",
    )
    db = tmp_path / "charter.db"
    model = f"default=scripted:{script}"
    inputs = json.dumps({"order_id": "ORD-8", "message": "broken"})
    proc = charter("run", "examples/guarded_agent.yaml", "--input", inputs, "--model", model, "--json", db=db)
    assert proc.returncode == 3, proc.stderr
    run_id = as_json(proc)["run_id"]
    approved = charter("approve", run_id, "resolve", "--as", "supervisor", "--model", model, "--json", db=db)
    assert approved.returncode == 0, approved.stderr
    assert as_json(approved)["output"]["amount"] == 300
    assert charter("replay", run_id, db=db).returncode == 0
