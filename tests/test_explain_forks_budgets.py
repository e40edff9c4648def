"""`charter explain` and `charter runs` on child runs and forks, from real runs on a real event log:
the budgets used count what the budgets counted (the run with its child runs, spec §11.4) and say
which part the child runs spent; a fork (`charter run --from RUN@NODE`) says so at the top, its reused
results read as reused rather than as run, and `charter runs` marks it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import tool_calls, tool_project

TOOLS = "ftools"

# The parent spends 1 tool call, its child 1, its grandchild 2 before the 5th call of the run trips
# the parent's budget: every one of them counts in it.
PARENT = """\
charter: "1.0"
name: budget-parent
tools:
  tick: {python: "ftools:tick", effect: read}
guardrails:
  - id: run-budget
    limits: {max_tool_calls: 4}
steps:
  - {id: p1, tool: tick, args: {n: 0}}
  - id: kid
    workflow: {path: child.yaml}
"""
CHILD = """\
charter: "1.0"
name: budget-child
tools:
  tick: {python: "ftools:tick", effect: read}
steps:
  - {id: c1, tool: tick, args: {n: 1}}
  - id: grandkid
    workflow: {path: grandchild.yaml}
"""
GRANDCHILD = """\
charter: "1.0"
name: budget-grandchild
tools:
  tick: {python: "ftools:tick", effect: read}
steps:
  - {id: g1, tool: tick, args: {n: 2}}
  - {id: g2, tool: tick, args: {n: 3}}
  - {id: g3, tool: tick, args: {n: 4}}
"""

# A fork at `last` reuses `first` (completed), and `guarded`: a skip and a caught failure inside it.
FORKED = """\
charter: "1.0"
name: forky
vars: {n: 0}
tools:
  tick: {python: "ftools:tick", effect: read}
steps:
  - {id: first, tool: tick, args: {n: 1}}
  - id: guarded
    try:
      steps:
        - {id: never, if: "vars.n > 5", tool: tick, args: {n: 99}}
        - {id: bad, fail: {message: "nope"}}
      catch:
        as: err
        steps:
          - {id: fixed, set: {n: 1}}
  - {id: last, tool: tick, args: {n: 2}}
output: {n: "${{ vars.n }}"}
"""


def _project(tmp_path: Path, **files: str) -> None:
    tool_project(tmp_path, TOOLS)
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")


def _run(cwd: Path, *args: str) -> dict[str, Any]:
    proc = charter("run", *args, "--json", cwd=cwd)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def _explain(cwd: Path, run_id: str, *extra: str) -> str:
    proc = charter("explain", run_id, *extra, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _runs(cwd: Path) -> list[dict[str, Any]]:
    proc = charter("runs", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _budget_line(text: str) -> str:
    (line,) = [x for x in text.splitlines() if x.startswith("budgets used: ")]
    return line


def _budget_run(tmp_path: Path) -> tuple[str, str, str]:
    """The parent, child and grandchild run ids of a run whose budget tripped in the grandchild."""
    _project(tmp_path, parent=PARENT, child=CHILD, grandchild=GRANDCHILD)
    result = _run(tmp_path, "parent.yaml")
    assert result["status"] == "failed", result
    assert "tool call 5 exceeds max_tool_calls 4" in json.dumps(result["error"])
    assert [c["n"] for c in tool_calls(tmp_path)] == [0, 1, 2, 3]  # the 5th call was not made
    by_workflow = {r["workflow"]: r["run_id"] for r in _runs(tmp_path)}
    return result["run_id"], by_workflow["budget-child"], by_workflow["budget-grandchild"]


def test_budgets_used_count_child_runs_as_the_budget_did(tmp_path: Path) -> None:
    parent, child, grandchild = _budget_run(tmp_path)

    # the budget tripped at call 5 of 4: explain reports the 4 calls it counted, 3 of them below
    line = _budget_line(_explain(tmp_path, parent))
    assert line.startswith("budgets used: 4 tool call(s) (tick 4), 0 model call(s), 0 tokens, cost 0, ")
    assert line.endswith(
        "; of which in 2 child run(s): 3 tool call(s) (tick 3), 0 model call(s), 0 tokens, cost 0"
    )
    budgets = json.loads(_explain(tmp_path, parent, "--json"))["budgets"]
    assert (budgets["tool_calls"], budgets["calls_per_tool"]) == (4, {"tick": 4})
    below = budgets["in_child_runs"]
    assert (below["tool_calls"], below["calls_per_tool"], below["model_calls"]) == (3, {"tick": 3}, 0)
    assert below["runs"] == [child, grandchild] and below["unreadable"] == []

    # a step's share: what ran inside it, with the runs it started (a step budget counts the same)
    line = _budget_line(_explain(tmp_path, parent, "--node", "kid"))
    assert line.startswith("budgets used: 3 tool call(s) (tick 3), ")
    assert "; of which in 2 child run(s): 3 tool call(s) (tick 3)" in line
    line = _budget_line(_explain(tmp_path, parent, "--node", "p1"))
    assert line.startswith("budgets used: 1 tool call(s) (tick 1), ") and "child run" not in line

    # the child's own explanation counts itself and its child, not its parent
    line = _budget_line(_explain(tmp_path, child))
    assert line.startswith("budgets used: 3 tool call(s) (tick 3), ")
    assert "; of which in 1 child run(s): 2 tool call(s) (tick 2)" in line


def test_a_child_run_whose_log_cannot_be_read_is_named_not_a_traceback(tmp_path: Path) -> None:
    parent, child, _ = _budget_run(tmp_path)
    with sqlite3.connect(tmp_path / "charter.db") as db:  # damage one payload of the child's log
        db.execute(
            "UPDATE events SET payload = '{not json' WHERE run_id = ? AND kind = 'tool.called'", (child,)
        )
    line = _budget_line(_explain(tmp_path, parent))
    assert f"(not counted: the log of {child} could not be read)" in line
    # the grandchild's log is intact and still counts
    assert "; of which in 1 child run(s): 2 tool call(s) (tick 2)" in line


def _fork(tmp_path: Path) -> tuple[str, str]:
    _project(tmp_path, forky=FORKED)
    original = _run(tmp_path, "forky.yaml")
    assert original["status"] == "completed", original
    fork = _run(tmp_path, "forky.yaml", "--from", f"{original['run_id']}@last")
    assert fork["status"] == "completed", fork
    assert [c["n"] for c in tool_calls(tmp_path)] == [1, 2, 2]  # the fork ran `last` only
    return original["run_id"], fork["run_id"]


def test_explain_of_a_fork_says_so_and_marks_what_it_reused(tmp_path: Path) -> None:
    original, fork = _fork(tmp_path)
    text = _explain(tmp_path, fork)
    lines = text.splitlines()
    assert lines[1].startswith(f"forked from run {original} at last: ")
    assert f"charter explain {original}" in lines[1]
    reused = f"(reused from run {original}, not run again)"
    assert f"first: reused from run {original}, not run again: = " in text
    assert f"guarded: reused from run {original}, not run again: = " in text
    assert "guarded/body/never: skipped: if `vars.n > 5` is false [vars.n=0] " + reused in text
    assert "guarded/body/bad: FAILED [" in text and "nope " + reused in text
    # what the fork did run reads as before, unmarked
    (call,) = [x for x in lines if "call tick(" in x]
    assert 'last: call tick({"n": 2})' in call and "reused" not in call
    assert 'call tick({"n": 1})' not in text  # `first` was not called in this run
    # its budgets count its own calls (the fork's budgets start at zero: the reused calls were spent
    # by the run it was forked from)
    assert _budget_line(text).startswith("budgets used: 1 tool call(s) (tick 1), ")

    full = json.loads(_explain(tmp_path, fork, "--json"))
    assert full["forked_from"] == {"run_id": original, "node_path": "last"}
    assert {e["node_path"] for e in full["trace"] if e["what"] == "reused"} >= {"first", "guarded"}
    node = _explain(tmp_path, fork, "--node", "first")
    assert f"first: completed (reused from run {original}, not run again) = " in node

    # the run it was forked from says nothing of the kind
    plain = _explain(tmp_path, original)
    assert "forked from" not in plain and "reused" not in plain
    assert json.loads(_explain(tmp_path, original, "--json"))["forked_from"] is None


def test_runs_marks_a_fork_in_text_and_json(tmp_path: Path) -> None:
    original, fork = _fork(tmp_path)
    listed = {r["run_id"]: r for r in _runs(tmp_path)}
    assert listed[fork]["forked_from"] == {"run_id": original, "node_path": "last"}
    assert listed[original]["forked_from"] is None
    # the fields scripts read are all still there, unchanged
    assert set(listed[original]) == {
        "run_id", "workflow", "status", "created_at", "updated_at", "parent_run_id", "events", "forked_from",
        "interrupted", "waiting_at",
    }  # fmt: skip
    proc = charter("runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (fork_line,) = [x for x in proc.stdout.splitlines() if x.startswith(fork)]
    (original_line,) = [x for x in proc.stdout.splitlines() if x.startswith(original)]
    assert fork_line.endswith(f"  (forked from {original}@last)")
    assert "forked" not in original_line
