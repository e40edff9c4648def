"""Concurrency and failure handling through `charter run` in real processes.

Parallel branches overlap in time; a for_each never exceeds its concurrency limit and reaches it; retries,
retry filters, timeouts (a hanging tool is cut off), try/catch; an approval pauses the run (exit 3) and
`charter approve` from another process finishes it or fails it; several processes share one database.
Overlap is measured from entry/exit times that the tools write themselves: no timing assertions.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import (
    ENGINE,
    FIXTURES,
    REPO,
    charter,
    charter_cmd,
    child_env,
    describe,
    events,
    json_doc_or_lines,
    read_jsonl,
    run_json,
    run_row,
    run_rows,
    walk,
)

pytestmark = pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")

ALLOW = "tests.fixtures.conc_tools"
ENV = child_env(allow=ALLOW)


def _run(flow: str, db: Path, inputs: dict[str, Any] | None = None, *extra: str, timeout: float = 30):
    args = ["run", str(FIXTURES / flow), "--db", str(db), "--json"]
    if inputs is not None:
        args += ["--input", json.dumps(inputs)]
    return charter(*args, *extra, env=ENV, timeout=timeout)


def _intervals(log: Path, prefix: str = "") -> list[tuple[float, float]]:
    enter: dict[str, float] = {}
    spans = []
    for rec in read_jsonl(log):
        if not rec["name"].startswith(prefix):
            continue
        if rec["event"] == "enter":
            enter[rec["name"]] = rec["t"]
        else:
            spans.append((enter.pop(rec["name"]), rec["t"]))
    assert not enter, f"calls that never returned: {sorted(enter)}"
    return spans


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most calls inside the tool at once (an exit at t happens before an entry at t)."""
    marks = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda m: (m[0], m[1]))
    best = cur = 0
    for _, delta in marks:
        cur += delta
        best = max(best, cur)
    return best


# --- parallel and for_each ------------------------------------------------------------------------------


def test_parallel_branches_run_at_the_same_time(tmp_path: Path) -> None:
    log = tmp_path / "times.jsonl"
    proc = _run("parallel_flow.yaml", tmp_path / "c.db", {"log": str(log)})
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    assert doc["status"] == "completed"
    assert doc["output"]["fan"] == {"a": {"name": "a"}, "b": {"name": "b"}, "c": {"name": "c"}}
    spans = _intervals(log)
    assert len(spans) == 3
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"branches did not overlap: {spans}"
    joined = [e for e in events(tmp_path / "c.db", doc["run_id"]) if e["kind"] == "parallel.joined"]
    assert len(joined) == 1 and sorted(joined[0]["payload"]["completed"]) == ["a", "b", "c"]


def test_for_each_respects_and_reaches_its_concurrency_limit(tmp_path: Path) -> None:
    log = tmp_path / "times.jsonl"
    items = list(range(9))
    proc = _run("foreach_flow.yaml", tmp_path / "c.db", {"log": str(log), "items": items})
    assert proc.returncode == 0, describe(proc)
    out = run_json(proc)["output"]
    # outputs in input order whatever the completion order
    assert out["limited"] == [{"name": f"limited-{i}"} for i in items]
    assert out["serial"] == [{"name": f"serial-{i}"} for i in items]
    assert _max_overlap(_intervals(log, "limited-")) == 3
    assert _max_overlap(_intervals(log, "serial-")) == 1
    iterations = [
        e for e in events(tmp_path / "c.db", run_json(proc)["run_id"]) if e["kind"] == "loop.iteration"
    ]
    assert len(iterations) == 18


# --- retries, timeouts, try/catch ----------------------------------------------------------------------


def test_flaky_tool_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    log, db = tmp_path / "calls.jsonl", tmp_path / "c.db"
    proc = _run("retry_flow.yaml", db, {"log": str(log), "fail_times": 2})
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    assert doc["output"] == {"calls": 3}
    assert len(read_jsonl(log)) == 3
    evs = events(db, doc["run_id"])
    retrying = [e for e in evs if e["kind"] == "step.retrying"]
    assert [e["payload"]["attempt"] for e in retrying] == [1, 2]
    assert all("flaky failure" in e["payload"]["error"]["message"] for e in retrying)
    (done,) = [e for e in evs if e["kind"] == "step.completed" and e["node_path"] == "eventually"]
    assert done["payload"]["attempt"] == 3
    keys = [e["payload"]["idempotency_key"] for e in evs if e["kind"] == "tool.called"]
    assert keys == [f"{doc['run_id']}/eventually/{n}" for n in (1, 2, 3)]


def test_retries_exhausted_fail_the_run(tmp_path: Path) -> None:
    log, db = tmp_path / "calls.jsonl", tmp_path / "c.db"
    proc = _run("retry_flow.yaml", db, {"log": str(log), "fail_times": 5})
    assert proc.returncode == 1, describe(proc)
    doc = run_json(proc)
    assert doc["status"] == "failed"
    assert "flaky failure on call 3" in json.dumps(doc["error"])
    assert len(read_jsonl(log)) == 3
    assert "Traceback" not in proc.stderr


def test_retry_filter_does_not_retry_other_errors(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    proc = _run("retry_filter_flow.yaml", tmp_path / "c.db", {"log": str(log)})
    assert proc.returncode == 1, describe(proc)
    assert len(read_jsonl(log)) == 1, "a retry `on: [timeout]` retried a plain tool error"


def test_hanging_tool_is_cut_off_and_caught(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    # the tool would hang 20 s: the step's 300 ms timeout must end it, and the process must not wait for it
    proc = _run("timeout_flow.yaml", db, timeout=15)
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    assert doc["output"] == {"err": "timeout", "step": "slow", "after": "done"}
    failed = [e for e in events(db, doc["run_id"]) if e["kind"] == "step.failed"]
    assert [e["node_path"] for e in failed] == ["guarded/body/slow"]
    assert failed[0]["payload"]["caught_by"], "the failure was caught: caught_by must name the try"


def test_hanging_tool_with_a_tool_timeout_fails_the_run(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = _run("timeout_uncaught_flow.yaml", db, timeout=15)
    assert proc.returncode == 1, describe(proc)
    doc = run_json(proc)
    assert doc["status"] == "failed"
    assert "timeout" in json.dumps(doc["error"]).lower() or "timed out" in json.dumps(doc["error"]).lower()
    assert run_row(db, doc["run_id"])["status"] == "failed"
    assert "Traceback" not in proc.stderr


def test_try_catch_handles_tool_errors_and_fail_steps(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = _run("trycatch_flow.yaml", db)
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    out = doc["output"]
    assert "kaboom" in out["first"]
    assert out["code"] == "nope" and out["step"] == "refuse"
    assert out["t2"] == {"second_code": "nope", "second_step": "refuse"}
    failed = {e["node_path"]: e["payload"] for e in events(db, doc["run_id"]) if e["kind"] == "step.failed"}
    assert set(failed) >= {"t1/body/explode", "t2/body/refuse"}
    assert all(p["caught_by"] for p in failed.values() if p is not None)


# --- approval across processes --------------------------------------------------------------------------


def _approval_events(log_doc: Any) -> list[dict[str, Any]]:
    return [e for e in walk(log_doc) if e.get("kind") == "approval.decided"]


def test_approval_pauses_and_another_process_approves(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = _run("approval_flow.yaml", db, {"amount": 1200})
    assert proc.returncode == 3, describe(proc)
    doc = run_json(proc)
    assert doc["status"] == "waiting"
    run_id = doc["run_id"]
    assert run_row(db, run_id)["status"] == "waiting"
    requested = [e for e in events(db, run_id) if e["kind"] == "approval.requested"]
    assert len(requested) == 1 and requested[0]["node_path"] == "ok"
    assert requested[0]["payload"]["message"] == "Pay 1200?"

    # a resume does not get past a pending approval, and a decision must name a pending node
    still = charter("resume", run_id, "--db", str(db), env=ENV)
    assert still.returncode == 3, describe(still)
    wrong = charter("approve", run_id, "pay", "--as", "alice", "--db", str(db), env=ENV)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, describe(wrong)
    assert run_row(db, run_id)["status"] == "waiting"

    approve = charter(
        "approve", run_id, "ok", "--as", "alice", "--reason", "within budget", "--db", str(db), env=ENV
    )
    assert approve.returncode == 0, describe(approve)
    row = run_row(db, run_id)
    assert row["status"] == "completed"
    assert json.loads(row["output"]) == {"paid": 1200, "approved_by": "alice"}

    log = charter("log", run_id, "--json", "--db", str(db), env=ENV)
    assert log.returncode == 0, describe(log)
    (decided,) = _approval_events(json_doc_or_lines(log.stdout))
    assert decided["payload"]["decision"] == "approved"
    assert decided["payload"]["by"] == "alice"
    assert decided["payload"]["reason"] == "within budget"
    assert decided["ts"], "the decision's time must be in the log"
    assert "alice" in json.dumps(decided["actor"]), "the approver must be the event's actor"


def test_denial_fails_the_run(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = _run("approval_flow.yaml", db, {"amount": 99})
    assert proc.returncode == 3, describe(proc)
    run_id = run_json(proc)["run_id"]
    deny = charter(
        "approve", run_id, "ok", "--as", "bob", "--deny", "--reason", "no", "--db", str(db), env=ENV
    )
    assert deny.returncode == 1, describe(deny)
    assert run_row(db, run_id)["status"] == "failed"
    kinds = [e["kind"] for e in events(db, run_id)]
    assert "tool.called" not in kinds, "the payment ran although it was denied"
    log = charter("log", run_id, "--json", "--db", str(db), env=ENV)
    (decided,) = _approval_events(json_doc_or_lines(log.stdout))
    assert (decided["payload"]["decision"], decided["payload"]["by"]) == ("denied", "bob")


def test_approving_a_run_twice_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    run_id = run_json(_run("approval_flow.yaml", db, {"amount": 5}))["run_id"]
    first = charter("approve", run_id, "ok", "--as", "alice", "--db", str(db), env=ENV)
    assert first.returncode == 0, describe(first)
    second = charter("approve", run_id, "ok", "--as", "mallory", "--deny", "--db", str(db), env=ENV)
    assert second.returncode != 0, describe(second)
    assert "Traceback" not in second.stderr
    assert run_row(db, run_id)["status"] == "completed"
    assert len([e for e in events(db, run_id) if e["kind"] == "approval.decided"]) == 1


# --- several processes, one database ---------------------------------------------------------------------


def _concurrent_runs(db: Path, tmp_path: Path, count: int) -> None:
    procs = []
    for n in range(count):
        inputs = {"log": str(tmp_path / f"t{n}.jsonl"), "items": list(range(12)), "hold": 0.01}
        cmd = charter_cmd("run", str(FIXTURES / "foreach_flow.yaml"), "--db", str(db), "--json")
        cmd += ["--input", json.dumps(inputs)]
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
    rows = run_rows(db)
    assert len(rows) >= count and {r["status"] for r in rows} == {"completed"}
    for r in rows:
        check = charter("verify", r["run_id"], "--db", str(db), env=ENV)
        assert check.returncode == 0, describe(check)


def test_runs_from_several_processes_share_an_existing_database(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    first = _run("trycatch_flow.yaml", db)
    assert first.returncode == 0, describe(first)
    _concurrent_runs(db, tmp_path, 3)


def test_runs_from_several_processes_start_on_a_new_database(tmp_path: Path) -> None:
    # the first processes race to create the file and its schema
    _concurrent_runs(tmp_path / "new.db", tmp_path, 3)
