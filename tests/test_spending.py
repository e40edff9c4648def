"""Resume, replay and `charter explain` read what a run spent from its log in one way
(interpreter/spending.py). Where they used to disagree: a child run whose last call was cut off (by its
own timeout, or by its parent step's) spent that call, and `charter explain` counted it, but a resumed
parent left it out as a call the child would "meet again" -- a child nothing continues -- and let the
parent make one call more than its budget allows (spec §11.4, §13.13). Real `charter` processes on a
real SQLite file; the tools append every call they make to calls.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import read_jsonl, run_json

from interpreter.spending import spent, totals
from interpreter.store import Event

TOOLS = """
import json, os, time


def _log(name, **kw):
    with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as f:
        f.write(json.dumps({"tool": name, **kw}) + "\\n")


def tick(n=0):
    _log("tick", n=n)
    return {"n": n}


def slow(n=0):
    _log("slow", n=n)
    time.sleep(1.0)
    return {"n": n}
"""

# The child spends 2 calls of the parent's 3: `c1`, and `c2`, made and then cut off by a timeout. The
# parent then makes `p2` (call 3) and is refused `p3` (call 4), with or without a pause before them.
PARENT = """\
charter: "1.0"
name: spend-parent
tools:
  tick: {python: "s9tools:tick", effect: read}
guardrails:
  - id: run-budget
    limits: {max_tool_calls: 3}
steps:
  - id: kid
    try:
      steps:
        - id: w
          STEP_TIMEOUT
          workflow: {path: child.yaml}
      catch: {steps: []}
  - PAUSE
  - {id: p2, tool: tick, args: {n: 10}}
  - {id: p3, tool: tick, args: {n: 11}}
"""
CHILD = """\
charter: "1.0"
name: spend-child
RUN_TIMEOUT
tools:
  tick: {python: "s9tools:tick", effect: read}
  slow: {python: "s9tools:slow", effect: write}
steps:
  - {id: c1, tool: tick, args: {n: 1}}
  - {id: c2, tool: slow, args: {n: 2}}
"""
CUT_OFF = {
    # the child's own timeout: it failed, and nothing runs it again
    "child timeout": {"RUN_TIMEOUT": "timeout: 300ms", "STEP_TIMEOUT": ""},
    # the parent step's timeout: the child stops unfinished, and the parent never continues it
    "parent step timeout": {"RUN_TIMEOUT": "", "STEP_TIMEOUT": "timeout: 300ms"},
}
REFUSED = "tool call 4 exceeds max_tool_calls 3"


def _project(tmp_path: Path, cut_off: dict[str, str], *, pause: bool) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["s9tools"]\n')
    (tmp_path / "s9tools.py").write_text(TOOLS)
    parent, child = PARENT, CHILD
    for mark, text in {**cut_off, "PAUSE": "{id: ok, approval: {message: go on?}}" if pause else ""}.items():
        parent, child = parent.replace(mark, text), child.replace(mark, text)
    (tmp_path / "parent.yaml").write_text(parent.replace("  - \n", ""))
    (tmp_path / "child.yaml").write_text(child)


def _budgets(tmp_path: Path, run_id: str) -> dict[str, Any]:
    proc = charter("explain", run_id, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["budgets"]


def _calls(tmp_path: Path) -> list[Any]:
    return [(c["tool"], c["n"]) for c in read_jsonl(tmp_path / "calls.jsonl")]


@pytest.mark.parametrize("cut_off", CUT_OFF.values(), ids=CUT_OFF.keys())
def test_a_resumed_parent_enforces_what_explain_says_its_child_spent(
    tmp_path: Path, cut_off: dict[str, str]
) -> None:
    live, paused = tmp_path / "live", tmp_path / "paused"
    live.mkdir(), paused.mkdir()

    # without a pause: the child's 2 calls and p2 reach the limit, p3 is refused
    _project(live, cut_off, pause=False)
    proc = charter("run", "parent.yaml", "--json", cwd=live)
    result = run_json(proc)
    assert result["status"] == "failed" and result["error"]["message"].endswith(REFUSED), result
    assert _calls(live) == [("tick", 1), ("slow", 2), ("tick", 10)]

    # with a pause before p2: explain reports the 2 calls spent in the child...
    _project(paused, cut_off, pause=True)
    proc = charter("run", "parent.yaml", "--json", cwd=paused)
    run_id = run_json(proc)["run_id"]
    assert proc.returncode == 3, proc.stderr
    budgets = _budgets(paused, run_id)
    assert (budgets["tool_calls"], budgets["in_child_runs"]["tool_calls"]) == (2, 2)
    # ... and the resumed run enforces them: p3 is refused as it was without the pause (it was made,
    # a 4th call under a limit of 3, when resume counted only the child's first call)
    proc = charter("approve", run_id, "ok", "--as", "bob", "--json", cwd=paused)
    result = run_json(proc)
    assert result["status"] == "failed" and result["error"]["message"].endswith(REFUSED), result
    assert _calls(paused) == [("tick", 1), ("slow", 2), ("tick", 10)]
    assert _budgets(paused, run_id)["tool_calls"] == 3
    # replay counts the recorded child the same way, and reproduces the refusal
    replayed = charter("replay", run_id, cwd=paused)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def _event(seq: int, kind: str, path: str, **payload: Any) -> Event:
    return Event("r", seq, "2026-01-01T00:00:00.000000Z", path, kind, None, payload, "", "")


def test_what_explain_totals_is_what_spent_charges() -> None:
    from interpreter.records import build_records

    events = [
        _event(1, "step.started", "a", attempt=1),
        _event(2, "tool.called", "a", tool="t", args={}, idempotency_key="k1"),
        _event(3, "step.completed", "a", attempt=1),
        _event(4, "step.started", "b", attempt=1),
        _event(5, "model.called", "b", attempt=1, call=1),
        _event(6, "model.completed", "b", usage={"input_tokens": 3, "output_tokens": 4}, cost=0.5),
        _event(7, "tool.called", "b", tool="t", args={}, idempotency_key="k2"),
        _event(8, "tool.called", "b", tool="t", args={}, idempotency_key="k2"),  # made again: the same
    ]
    spend = totals(events)
    assert (spend["tool_calls"], spend["calls_per_tool"], spend["model_calls"]) == (2, {"t": 2}, 1)
    assert (spend["tokens"], spend["cost"]) == (7, 0.5)
    assert totals(events, "a")["tool_calls"] == 1
    # a continued run meets the calls of the unfinished `b` again, and counts them then
    assert [e.seq for e in spent(events, build_records(events))] == [2]
