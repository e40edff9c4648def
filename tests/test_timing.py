"""Time across process boundaries: the workflow `timeout` and step budgets count execution time over
every segment of a run (not the pauses), and `charter wake` applies approval timeouts. Real `charter`
processes on a real SQLite file; the tools sleep, so that the earlier segment's time is known to be at
least what they slept (no assertion depends on how fast the machine is)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.charter_cli import charter, charter_cmd, child_env, describe, events, run_json, run_row

TOOLS = '''
import os, time

def nap(seconds: float = 0, hang: bool = False) -> dict:
    """Sleep; with hang and $TIMING_HANG set, sleep until killed."""
    if hang and os.environ.get("TIMING_HANG"):
        time.sleep(600)
    time.sleep(seconds)
    return {"slept": seconds}
'''


def project(tmp_path: Path, workflow: str) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["timing_tools"]\n')
    (tmp_path / "timing_tools.py").write_text(TOOLS)
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(workflow).lstrip())
    return path


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return charter(*args, "--db", str(tmp_path / "charter.db"), cwd=tmp_path, env=child_env(env), timeout=120)


def start(tmp_path: Path, inputs: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    proc = cli(tmp_path, "run", "wf.yaml", "--json", "--input", json.dumps(inputs or {}))
    return proc.returncode, run_json(proc)


def log(tmp_path: Path, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events(tmp_path / "charter.db", run_id) if kind is None or e["kind"] == kind]


def wait_past_expiry(tmp_path: Path, run_id: str) -> None:
    """Sleep until every approval request of the run has expired."""
    for request in log(tmp_path, run_id, "approval.requested"):
        expires = datetime.fromisoformat(request["payload"]["expires_at"])
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)


# --- 1. the workflow timeout counts every execution segment --------------------------------------------

TIMED = """
charter: "1.0"
name: timed
timeout: 5s
input:
  type: object
  properties: {first: {type: number}, then: {type: number}}
tools:
  nap: {python: "timing_tools:nap", effect: write}
steps:
  - id: first
    tool: nap
    args: {seconds: "${{ input.first }}"}
  - id: second
    tool: nap
    args: {seconds: "${{ input.then }}", hang: true}
output:
  done: true
"""


def _kill_at_tool_call(tmp_path: Path, node: str, inputs: dict[str, Any]) -> str:
    """Start a run that hangs in `node`'s tool; SIGKILL it once the call is in the log. Its run id."""
    db = tmp_path / "charter.db"
    cmd = charter_cmd("run", "wf.yaml", "--db", str(db), "--input", json.dumps(inputs))
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=child_env({"TIMING_HANG": "1"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            row = _tool_call(db, node) if db.exists() else None
            if row is not None:
                return row
            time.sleep(0.01)
        raise AssertionError(f"the run never called the tool of {node}")
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _tool_call(db: Path, node: str) -> str | None:
    """The run id of the `tool.called` at `node`, once there is one."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT run_id FROM events WHERE kind = 'tool.called' AND node_path = ?", (node,)
        ).fetchone()
    except sqlite3.OperationalError:  # the schema is still being created
        return None
    finally:
        conn.close()
    return str(row[0]) if row is not None else None


def test_the_run_timeout_counts_work_done_before_a_kill(tmp_path: Path) -> None:
    project(tmp_path, TIMED)
    # 3 s of work are in the log before the kill; the resumed attempt of `second` needs 2.5 s more:
    # over the 5 s budget, though well within a fresh one.
    run_id = _kill_at_tool_call(tmp_path, "second", {"first": 3.0, "then": 2.5})
    assert run_row(tmp_path / "charter.db", run_id)["status"] == "running"
    resumed = cli(tmp_path, "resume", run_id, "--json")
    assert resumed.returncode == 1, describe(resumed)
    error = run_json(resumed)["error"]
    assert error["code"] == "timeout" and "timed out after 5s" in error["message"]
    kinds = [e["kind"] for e in log(tmp_path, run_id)]
    assert "run.resumed" in kinds and kinds[-1] == "run.failed"


APPROVAL_TIMED = """
charter: "1.0"
name: approval-timed
timeout: 2s
input:
  type: object
  properties: {before: {type: number}, after: {type: number}}
tools:
  nap: {python: "timing_tools:nap", effect: read}
steps:
  - id: before
    tool: nap
    args: {seconds: "${{ input.before }}"}
  - id: ok
    approval: {message: "go on?"}
  - id: after
    tool: nap
    args: {seconds: "${{ input.after }}"}
output:
  done: true
"""


def test_waiting_for_an_approval_does_not_count_toward_the_run_timeout(tmp_path: Path) -> None:
    project(tmp_path, APPROVAL_TIMED)
    code, result = start(tmp_path, {"before": 0, "after": 0})
    assert code == 3 and result["status"] == "waiting"
    time.sleep(2.2)  # longer than the whole run's timeout, spent waiting
    approved = cli(tmp_path, "approve", result["run_id"], "ok", "--as", "carol", "--json")
    assert approved.returncode == 0, describe(approved)
    assert run_json(approved)["output"] == {"done": True}


def test_the_run_timeout_counts_the_segment_before_an_approval(tmp_path: Path) -> None:
    project(tmp_path, APPROVAL_TIMED)
    code, result = start(tmp_path, {"before": 1.2, "after": 1.2})  # 2.4 s of work in a 2 s budget
    assert code == 3, result
    approved = cli(tmp_path, "approve", result["run_id"], "ok", "--as", "carol", "--json")
    assert approved.returncode == 1, describe(approved)
    error = run_json(approved)["error"]
    assert error["code"] == "timeout" and error["node_path"] is None


def test_a_run_resumed_after_its_timeout_fails_at_once_and_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log already says the run's time is spent: the resume fails it with `timeout`, runs nothing."""
    import interpreter.enforcement
    from interpreter import decide_approval, run_workflow
    from interpreter.store import open_store

    wf = project(tmp_path, APPROVAL_TIMED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from dsl.frontend import compile_file

    graph, _ = compile_file(wf)
    store = open_store(tmp_path / "charter.db")
    try:
        first = run_workflow(graph, {"before": 0, "after": 0}, store=store)
        assert first.status == "waiting"
        spent = interpreter.enforcement.execution_time
        monkeypatch.setattr(
            interpreter.enforcement,
            "execution_time",
            lambda spans, since=None: spent(spans, since) + (5.0 if since is None else 0.0),
        )
        result = decide_approval(first.run_id, "ok", store=store, person="carol", approved=True)
        assert result.status == "failed" and result.error is not None
        assert result.error["code"] == "timeout" and "before this resume" in result.error["message"]
        tail = [e.kind for e in store.events(first.run_id)][-3:]
        assert tail == ["approval.decided", "run.resumed", "run.failed"]  # nothing ran
        assert store.run(first.run_id).status == "failed"
        assert store.verify(first.run_id).ok
    finally:
        store.close()


# --- 3. a step's own budget is restored from the log on resume ------------------------------------------

STEP_BUDGET = """
charter: "1.0"
name: step-budget
input:
  type: object
  properties: {before: {type: number}, after: {type: number}}
tools:
  nap: {python: "timing_tools:nap", effect: read}
steps:
  - id: group
    guardrails:
      - id: group-budget
        limits: {max_tool_calls: 3, timeout: 2s}
    steps:
      - id: one
        tool: nap
        args: {seconds: "${{ input.before }}"}
      - id: ok
        approval: {message: "go on?"}
      - id: two
        tool: nap
        args: {seconds: "${{ input.after }}"}
      - id: three
        tool: nap
        args: {seconds: 0}
      - id: four
        tool: nap
        args: {seconds: 0}
"""


def _budget_failure(tmp_path: Path, inputs: dict[str, Any], wait: float = 0.0) -> dict[str, Any]:
    project(tmp_path, STEP_BUDGET)
    code, result = start(tmp_path, inputs)
    assert code == 3, result
    time.sleep(wait)
    approved = cli(tmp_path, "approve", result["run_id"], "group/body/ok", "--as", "carol", "--json")
    assert approved.returncode == 1, describe(approved)
    error = run_json(approved)["error"]
    assert error["code"] == "guardrail" and error["details"]["rules"] == ["group-budget"], error
    return error


def test_a_step_budget_counts_the_calls_made_before_a_resume(tmp_path: Path) -> None:
    # `one` before the approval, then two, three: four is the 4th call of the group's execution.
    # The 2.2 s spent waiting are not the group's wall time (it would stop `two` otherwise).
    error = _budget_failure(tmp_path, {"before": 0, "after": 0}, wait=2.2)
    assert error["node_path"] == "group/body/four" and "max_tool_calls 3" in error["message"]


def test_a_step_budget_wall_time_counts_the_segment_before_a_resume(tmp_path: Path) -> None:
    # 1.2 s before the approval + 1 s after it: `three` is checked past the group's 2 s.
    error = _budget_failure(tmp_path, {"before": 1.2, "after": 1.0})
    assert error["node_path"] == "group/body/three" and "wall time" in error["message"]


# --- 2. charter wake ---------------------------------------------------------------------------------

APPROVAL = """
charter: "1.0"
name: expiring
steps:
  - id: ok
    approval:
      message: "ship it?"
      timeout: TIMEOUT
      on_timeout: ON_TIMEOUT
output:
  by: "${{ steps.ok.output.by }}"
"""


def _approval(timeout: str, on_timeout: str) -> str:
    return APPROVAL.replace("ON_TIMEOUT", on_timeout).replace("TIMEOUT", timeout)


def _wake(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(tmp_path, "wake", *args)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_wake_applies_on_timeout_approve_and_leaves_unexpired_runs_alone(tmp_path: Path) -> None:
    project(tmp_path, _approval("1h", "deny"))
    code, later = start(tmp_path)
    assert code == 3
    project(tmp_path, _approval("1s", "approve"))
    code, soon = start(tmp_path)
    assert code == 3
    idle = _wake(tmp_path)  # nothing has expired yet
    assert idle.returncode == 0 and "no waiting run" in idle.stderr, describe(idle)
    wait_past_expiry(tmp_path, soon["run_id"])
    woke = _wake(tmp_path, "--json")
    assert woke.returncode == 0, describe(woke)
    (line,) = _lines(woke.stdout)
    assert line["run_id"] == soon["run_id"] and line["expired"] == ["ok"]
    assert line["action"] == "resumed" and line["status"] == "completed"
    db = tmp_path / "charter.db"
    assert json.loads(run_row(db, soon["run_id"])["output"]) == {"by": "system:timeout"}
    (resumed,) = log(tmp_path, soon["run_id"], "run.resumed")
    assert resumed["payload"]["reason"] == "timeout"
    assert run_row(db, later["run_id"])["status"] == "waiting"
    assert not log(tmp_path, later["run_id"], "run.resumed")
    replayed = cli(tmp_path, "replay", soon["run_id"])  # the step's `at` is the logged decision's time
    assert replayed.returncode == 0, describe(replayed)


def test_wake_applies_on_timeout_deny(tmp_path: Path) -> None:
    project(tmp_path, _approval("1s", "deny"))
    code, result = start(tmp_path)
    assert code == 3
    wait_past_expiry(tmp_path, result["run_id"])
    woke = _wake(tmp_path)
    assert woke.returncode == 0, describe(woke)
    assert f"run {result['run_id']} (expiring): expired ok; resumed: failed" in woke.stdout
    row = run_row(tmp_path / "charter.db", result["run_id"])
    assert row["status"] == "failed" and json.loads(row["error"])["code"] == "denied"
    (decided,) = log(tmp_path, result["run_id"], "approval.decided")
    assert decided["payload"]["by"] == "system:timeout" and decided["payload"]["decision"] == "denied"


def test_wake_denies_an_expired_escalation(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        charter: "1.0"
        name: escalating
        tools:
          nap: {python: "timing_tools:nap", effect: write}
        guardrails:
          - id: ask
            on: tool.input
            tools: [nap]
            check: "false"
            action: escalate
            escalation: {timeout: 1s}
        steps:
          - {id: go, tool: nap, args: {seconds: 0}}
        """,
    )
    code, result = start(tmp_path)
    assert code == 3 and result["status"] == "waiting"
    wait_past_expiry(tmp_path, result["run_id"])
    woke = _wake(tmp_path, "--json")
    assert woke.returncode == 0, describe(woke)
    (line,) = _lines(woke.stdout)
    assert line["status"] == "failed" and "escalation denied by system:timeout" in line["message"]
    assert not log(tmp_path, result["run_id"], "tool.called")


def test_wake_skips_a_run_it_cannot_take(tmp_path: Path) -> None:
    """Another connection holds the database's write lock: wake reports the run and moves on."""
    project(tmp_path, _approval("1s", "approve"))
    code, result = start(tmp_path)
    assert code == 3
    wait_past_expiry(tmp_path, result["run_id"])
    holder = sqlite3.connect(tmp_path / "charter.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        woke = _wake(tmp_path, "--json")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert woke.returncode == 0 and "Traceback" not in woke.stderr, describe(woke)
    (line,) = _lines(woke.stdout)
    assert line["action"] == "skipped" and "locked" in line["message"]
    assert run_row(tmp_path / "charter.db", result["run_id"])["status"] == "waiting"


def test_wake_watch_picks_up_a_run_and_stops_cleanly(tmp_path: Path) -> None:
    project(tmp_path, _approval("1s", "approve"))
    db = tmp_path / "charter.db"
    watcher = subprocess.Popen(
        charter_cmd("wake", "--db", str(db), "--watch", "--interval", "100ms", "--json"),
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code, result = start(tmp_path)
        assert code == 3
        deadline = time.monotonic() + 60
        while (
            run_row(db, result["run_id"])["status"] not in ("completed", "failed")
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert run_row(db, result["run_id"])["status"] == "completed"
    finally:
        watcher.terminate()
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and "Traceback" not in err, (out, err)
    (line,) = _lines(out)
    assert line["run_id"] == result["run_id"] and line["status"] == "completed"


def test_wake_rejects_a_bad_interval(tmp_path: Path) -> None:
    proc = _wake(tmp_path, "--watch", "--interval", "often")
    assert proc.returncode == 2 and "--interval" in proc.stderr and "Traceback" not in proc.stderr


# --- the segment rule --------------------------------------------------------------------------------


def _event(seq: int, second: float, kind: str, payload: Any = None) -> Any:
    from interpreter.store import Event

    ts = datetime.fromtimestamp(1_800_000_000 + second, UTC).isoformat()
    return Event("R", seq, ts, "", kind, None, payload or {}, "", "")


def test_segments_end_at_run_waiting_or_at_the_last_event_before_a_resume() -> None:
    from interpreter.timing import execution_time, segments

    log_ = [
        _event(1, 0, "run.started"),
        _event(2, 3, "step.completed"),
        _event(3, 4, "run.waiting"),  # paused: 4 s of execution
        _event(4, 60, "approval.decided"),  # a person, a minute later: not execution
        _event(5, 61, "run.resumed"),
        _event(6, 63, "tool.called"),  # then killed: 2 s logged
        _event(7, 500, "run.resumed"),
        _event(8, 501, "step.completed"),
    ]
    spans = segments(log_)
    base = 1_800_000_000
    assert [(a - base, b - base) for a, b in spans] == [(0, 4), (61, 63), (500, 501)]
    assert execution_time(spans) == pytest.approx(7.0)
    assert execution_time(spans, since=base + 62) == pytest.approx(2.0)  # a step begun at second 62
