"""Count budgets hold under concurrency, count failed calls, cover a loop's whole execution, and carry
across `charter resume` (spec §11.4). Real `charter` processes on a real SQLite file; the tools append
every call they make to calls.jsonl, which is what proves how many calls were made.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import project_events as events
from fixtures.charter_cli import read_jsonl, run_json

from tests.fixtures.openai_server import OpenAIServer

TOOLS = '''
import json, os, time

HERE = os.path.dirname(__file__)


def _log(name, **kw):
    with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"tool": name, **kw}) + "\\n")


def slow(n=0, **kw):
    """Returns only after a pause, so that calls started together are all in flight at once."""
    _log("slow", n=n)
    time.sleep(0.3)
    return {"n": n}


def tick(n=0, **kw):
    _log("tick", n=n)
    return {"n": n}


def boom(n=0, **kw):
    _log("boom", n=n)
    raise ValueError("boom")


def crashy(n=0, **kw):
    """Fails, except on its second call ever, where the process dies in the middle of the call."""
    _log("crashy", n=n)
    calls = len(open(os.path.join(HERE, "calls.jsonl")).read().splitlines())
    marker = os.path.join(HERE, "crashed")
    if calls == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    raise ValueError("crashy failed")
'''

HEAD = """\
charter: "1.0"
name: budgets
tools:
  slow: {python: "h60tools:slow", effect: write}
  tick: {python: "h60tools:tick", effect: read}
  boom: {python: "h60tools:boom", effect: write}
  crashy: {python: "h60tools:crashy", effect: write}
"""


def project(tmp_path: Path, workflow: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["h60tools"]\n')
    (tmp_path / "h60tools.py").write_text(TOOLS)
    (tmp_path / "wf.yaml").write_text(HEAD + textwrap.dedent(workflow))


def run(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    proc = charter("run", "wf.yaml", "--json", cwd=tmp_path)
    assert proc.stdout, proc.stderr
    return proc.returncode, run_json(proc)


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "calls.jsonl")


def explained(tmp_path: Path, run_id: str) -> dict[str, Any]:
    proc = charter("explain", run_id, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["budgets"]


def tripped(result: dict[str, Any], message: str) -> None:
    assert result["status"] == "failed", result
    assert result["error"]["code"] == "guardrail", result["error"]
    assert result["error"]["message"].endswith(message), result["error"]["message"]


# --- 1. calls that start together are checked against each other ---------------------------------------


def test_a_workflow_budget_holds_against_a_concurrent_for_each(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: b, limits: {max_tool_calls: 2}}
steps:
  - id: f
    for_each:
      in: "${{ [1,2,3,4,5,6,7,8,9,10] }}"
      concurrency: 10
      steps: [{id: a, tool: slow, args: {n: "${{ item }}"}}]
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")
    # With a limit of N, the call N + 1 is not made. The refusal halts the run, which may cancel a
    # counted call before its thread starts (or before it is logged): explain counts what was logged.
    logged = len(events(tmp_path, result["run_id"], "tool.called"))
    assert len(calls(tmp_path)) <= logged <= 2
    assert explained(tmp_path, result["run_id"])["tool_calls"] == logged


def test_a_step_budget_holds_against_parallel_branches(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: p
    guardrails:
      - {id: b, limits: {max_tool_calls: 2}}
    parallel:
      branches:
        - [{id: a, tool: slow, args: {n: 1}}]
        - [{id: b1, tool: slow, args: {n: 2}}]
        - [{id: c, tool: slow, args: {n: 3}}]
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")
    # The refusal fails the parallel at once: a sibling whose call was counted may be cancelled before
    # it is made. At most the two counted calls happen; the third never does.
    made = calls(tmp_path)
    assert 1 <= len(made) <= 2 and len({c["n"] for c in made}) == len(made)


AGENTS = """
models:
  default: {provider: scripted, responses: answers.yaml}
identities:
  bot: {kind: agent}
grants:
  - {id: g, to: bot, tools: [slow]}
guardrails:
  - {id: b, limits: {max_tool_calls: 1, max_model_calls: 3}}
steps:
  - id: p
    parallel:
      branches:
        - [{id: x, agent: {identity: bot, tools: [slow], prompt: go, max_turns: 3}}]
        - [{id: y, agent: {identity: bot, tools: [slow], prompt: go, max_turns: 3}}]
"""


def test_agents_side_by_side_share_the_count_budgets(tmp_path: Path) -> None:
    project(tmp_path, AGENTS)
    answers = [
        {"step": step, "turn": 1, "tool_calls": [{"name": "slow", "args": {"n": n}}]}
        for step, n in (("x", 1), ("y", 2))
    ] + [{"step": step, "turn": 2, "text": "done"} for step in ("x", "y")]
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": answers}))
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail", result
    # both agents asked for a call at once: one passed the check (logged); the refusal halts the run,
    # which may cancel that call before its thread starts
    assert len(events(tmp_path, result["run_id"], "tool.called")) == 1 and len(calls(tmp_path)) <= 1
    # 3 model calls allowed: the two first turns and one more; the fourth is never made
    assert len(events(tmp_path, result["run_id"], "model.called")) <= 3
    budgets = explained(tmp_path, result["run_id"])
    assert budgets["tool_calls"] == 1 and budgets["model_calls"] <= 3


def test_model_calls_started_together_are_checked_against_each_other(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
models:
  default: {provider: openai, model: test-model}
steps:
  - id: p
    guardrails:
      - {id: b, limits: {max_model_calls: 1}}
    parallel:
      on_failure: continue  # the branch refused fails alone; the other one finishes its call
      branches:
        - [{id: x, llm: {prompt: one}}]
        - [{id: y, llm: {prompt: two}}]
""",
    )
    with OpenAIServer() as server:
        server.stall(0.5)  # the first answer comes late: the other branch asks while it is in flight
        server.reply("a")
        server.reply("b")
        proc = charter(
            "run", "wf.yaml", "--json", "--model", f"default=openai:test-model@{server.url}", cwd=tmp_path
        )
        asked = len(server.requests)
    result = run_json(proc)
    assert proc.returncode == 0, proc.stderr
    assert asked == 1  # the model was asked once
    assert len(events(tmp_path, result["run_id"], "model.called")) == 1
    (refused,) = [e for e in events(tmp_path, result["run_id"], "step.failed") if e["error"]]
    assert refused["error"]["code"] == "guardrail"
    assert refused["error"]["message"].endswith("model call 2 exceeds max_model_calls 1")
    assert explained(tmp_path, result["run_id"])["model_calls"] == 1


# --- 2. a call that was made counts, whatever its outcome ----------------------------------------------


def test_failed_tool_calls_count_in_a_loop_with_try(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: b, limits: {max_tool_calls: 2}}
steps:
  - id: l
    loop:
      max_iterations: 6
      steps:
        - id: t
          try:
            steps: [{id: a, tool: boom, args: {n: "${{ index }}"}}]
            catch: {steps: []}
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")
    assert [c["n"] for c in calls(tmp_path)] == [0, 1]
    assert explained(tmp_path, result["run_id"])["tool_calls"] == 2


def test_failed_tool_calls_count_under_retry(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: b, limits: {max_tool_calls: 2, max_calls_per_tool: 5}}
steps:
  - id: a
    retry: {attempts: 6, backoff: {initial: 1ms}}
    tool: boom
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")  # not the tool's own error
    assert len(calls(tmp_path)) == 2


# --- 3. a step budget covers one execution of its step: every iteration or item ------------------------


def test_a_step_budget_on_a_loop_covers_all_its_iterations(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: l
    guardrails:
      - {id: b, limits: {max_tool_calls: 2}}
    loop:
      max_iterations: 5
      steps: [{id: a, tool: tick, args: {n: "${{ index }}"}}]
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")
    assert result["error"]["step"] == "a" and [c["n"] for c in calls(tmp_path)] == [0, 1]


def test_a_step_budget_on_a_for_each_covers_all_its_items(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: f
    guardrails:
      - {id: b, limits: {max_tool_calls: 2}}
    for_each:
      in: "${{ [1,2,3,4] }}"
      steps: [{id: a, tool: tick, args: {n: "${{ item }}"}}]
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    tripped(result, "tool call 3 exceeds max_tool_calls 2")
    assert [c["n"] for c in calls(tmp_path)] == [1, 2]


def test_each_execution_of_a_loop_inside_an_outer_loop_has_its_own_budget(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: outer
    for_each:
      in: "${{ [10, 20, 30] }}"
      steps:
        - id: inner
          guardrails:
            - {id: b, limits: {max_tool_calls: 2}}
          loop:
            max_iterations: 2
            steps: [{id: a, tool: tick, args: {n: "${{ item + index }}"}}]
""",
    )
    code, result = run(tmp_path)
    assert code == 0, result
    assert [c["n"] for c in calls(tmp_path)] == [10, 11, 20, 21, 30, 31]  # 2 per execution of `inner`


def test_a_retry_attempt_is_a_new_execution_of_the_step(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: g
    retry: {attempts: 2, backoff: {initial: 1ms}}
    guardrails:
      - {id: b, limits: {max_tool_calls: 2}}
    steps:
      - {id: a, tool: tick, args: {n: 1}}
      - {id: c, tool: tick, args: {n: 2}}
      - {id: stop, fail: {message: again}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    assert result["error"]["code"] == "failed" and result["error"]["message"] == "again", result["error"]
    assert [c["n"] for c in calls(tmp_path)] == [1, 2, 1, 2]  # each attempt had its 2 calls


# --- resume: neither count a call twice nor forget one ---------------------------------------------------


def test_a_budget_carries_across_a_crash_and_resume(tmp_path: Path) -> None:
    # crashy: attempt 1 fails; attempt 2 kills the process in the middle of its call; resumed, attempt 2
    # is made again under its key (the same call), fails, and attempt 3 is refused: 2 calls counted.
    # Forgetting attempt 1 would let attempt 3 run; counting attempt 2 twice would refuse its re-run.
    project(
        tmp_path,
        """
guardrails:
  - {id: b, limits: {max_tool_calls: 2}}
steps:
  - id: a
    retry: {attempts: 6, backoff: {initial: 1ms}}
    tool: crashy
""",
    )
    crashed = charter("run", "wf.yaml", "--json", cwd=tmp_path)
    assert crashed.returncode == 9, crashed.stderr
    run_id = events_run_id(tmp_path)
    resumed = charter("resume", run_id, "--json", cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr
    tripped(run_json(resumed), "tool call 3 exceeds max_tool_calls 2")
    assert len(calls(tmp_path)) == 3  # attempt 1, attempt 2 (cut off by the crash), attempt 2 again
    assert len(events(tmp_path, run_id, "tool.called")) == 3
    assert explained(tmp_path, run_id)["tool_calls"] == 2  # the same call counts once


def test_a_loop_budget_carries_across_a_pause_and_resume(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: l
    guardrails:
      - {id: b, limits: {max_tool_calls: 3}}
    loop:
      max_iterations: 4
      steps:
        - {id: a, tool: tick, args: {n: "${{ index }}"}}
        - {id: wait, if: index == 1, approval: {message: go on?}}
""",
    )
    code, result = run(tmp_path)
    assert code == 3, result
    proc = charter("approve", result["run_id"], "l[1]/body/wait", "--as", "bob", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    final = run_json(proc)
    tripped(final, "tool call 4 exceeds max_tool_calls 3")
    assert [c["n"] for c in calls(tmp_path)] == [0, 1, 2]


def events_run_id(tmp_path: Path) -> str:
    import sqlite3

    with sqlite3.connect(tmp_path / "charter.db") as db:
        (run_id,) = db.execute("SELECT run_id FROM runs").fetchone()
    return str(run_id)
