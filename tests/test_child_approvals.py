"""Approvals inside child runs (`workflow` steps and workflow tools), as a user meets them: the hint of a
waiting run names the child run and its node, `charter approve PARENT NODE` forwards to the one request
waiting below NODE (or names each), and `charter approve CHILD` reports the top-level run it continued.
Real `charter` processes on a real SQLite file, and the Python API."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.charter_cli import events, run_json, run_rows
from fixtures.charter_cli import project_charter as charter
from fixtures.workflows import compiled

from interpreter import decide_approval, run_workflow
from interpreter.runtime import RunSetupError
from interpreter.store import open_store

LEAF = """\
charter: "1.0"
name: leaf
input: {type: object, properties: {n: {type: integer}}}
steps:
  - id: ok
    approval: {message: "leaf ${{ input.n }}?"}
output: {n: "${{ input.n }}", by: "${{ steps.ok.output.by }}"}
"""

MID = """\
charter: "1.0"
name: mid
steps:
  - id: inner
    workflow: {path: leaf.yaml, input: {n: 7}}
output: {leaf: "${{ steps.inner.output }}"}
"""

NESTED = """\
charter: "1.0"
name: nested
steps:
  - id: outer
    workflow: {path: mid.yaml}
output: {mid: "${{ steps.outer.output }}"}
"""

FAN = """\
charter: "1.0"
name: fan
tools:
  kid: {workflow: leaf.yaml, effect: write}
steps:
  - id: fe
    for_each:
      in: "${{ [1, 2] }}"
      concurrency: 2
      steps:
        - {id: call, tool: kid, args: {n: "${{ item }}"}}
output: {all: "${{ steps.fe.output }}"}
"""

TWO = """\
charter: "1.0"
name: two
steps:
  - {id: first, workflow: {path: leaf.yaml, input: {n: 1}}}
  - {id: second, workflow: {path: leaf.yaml, input: {n: 2}}}
output: {first: "${{ steps.first.output }}", second: "${{ steps.second.output }}"}
"""

THEN_FAIL = """\
charter: "1.0"
name: then-fail
steps:
  - {id: sub, workflow: {path: leaf.yaml, input: {n: 1}}}
  - {id: boom, fail: {code: after, message: "failed after the child"}}
"""

OWN = """\
charter: "1.0"
name: own
steps:
  - {id: gate, approval: {message: go?}}
output: {by: "${{ steps.gate.output.by }}"}
"""


def project(folder: Path, top: str) -> Path:
    """The workflows in `folder`; `top` is written as top.yaml, the file to run."""
    (folder / "leaf.yaml").write_text(LEAF, encoding="utf-8")
    (folder / "mid.yaml").write_text(MID, encoding="utf-8")
    (folder / "top.yaml").write_text(top, encoding="utf-8")
    return folder / "top.yaml"


def children_of(folder: Path, run_id: str) -> dict[str, str]:
    """{parent_node: run id} of the runs `run_id` started."""
    return {
        str(r["parent_node"]): str(r["run_id"])
        for r in run_rows(folder / "charter.db")
        if r["parent_run_id"] == run_id
    }


def statuses(folder: Path) -> dict[str, str]:
    return {str(r["run_id"]): str(r["status"]) for r in run_rows(folder / "charter.db")}


def decided(folder: Path, run_id: str) -> list[tuple[str, str, str]]:
    return [
        (e["node_path"], e["payload"]["decision"], e["actor"]["sub"])
        for e in events(folder / "charter.db", run_id)
        if e["kind"] == "approval.decided"
    ]


def started(tmp_path: Path, top: str) -> tuple[subprocess.CompletedProcess[str], str]:
    proc = charter("run", str(project(tmp_path, top)), "--json", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    return proc, run_json(proc)["run_id"]


# --------------------------------------------------------------------------------------------------
# The hint of a waiting run


def test_run_waiting_for_approvals_in_child_runs_names_each_child_and_its_node(tmp_path: Path) -> None:
    proc, parent = started(tmp_path, FAN)
    kids = children_of(tmp_path, parent)
    assert sorted(kids) == ["fe[0]/body/call", "fe[1]/body/call"]
    for node, kid in kids.items():
        assert f"charter approve {kid} ok --as NAME" in proc.stderr, proc.stderr
        assert f"child run of {node}" in proc.stderr
    assert f"charter approve {parent} " not in proc.stderr  # the parent has no request to decide
    result = run_json(proc)
    assert result["pending"] == ["fe[0]/body/call", "fe[1]/body/call"]  # the parent's nodes, as before
    assert [(a["run_id"], a["node_path"], a["via"], a["message"]) for a in result["approvals"]] == [
        (
            kids[f"fe[{i}]/body/call"],
            "ok",
            [{"run_id": parent, "node_path": f"fe[{i}]/body/call"}],
            f"leaf {i + 1}?",
        )
        for i in range(2)
    ]


def test_the_hint_names_a_grandchild_run_and_the_given_db(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    proc = charter("run", str(project(tmp_path, NESTED)), "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    (top,) = [r for r in run_rows(db) if r["parent_run_id"] is None]
    (mid,) = [r for r in run_rows(db) if r["parent_run_id"] == top["run_id"]]
    (leaf,) = [r for r in run_rows(db) if r["parent_run_id"] == mid["run_id"]]
    assert (
        f"run {top['run_id']} is waiting for approval at ok in child run {leaf['run_id']} "
        f"(of step outer → {mid['run_id']} at inner); "
        f"decide with: charter approve {leaf['run_id']} ok --as NAME --db {db}"
    ) in proc.stderr, proc.stderr
    resumed = charter("resume", str(top["run_id"]), "--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 3
    assert f"decide with: charter approve {leaf['run_id']} ok --as NAME --db {db}" in resumed.stderr


def test_a_run_with_its_own_request_keeps_its_hint(tmp_path: Path) -> None:
    proc, run_id = started(tmp_path, OWN)
    assert f"decide with: charter approve {run_id} gate --as NAME" in proc.stderr
    assert run_json(proc)["approvals"] == [
        {"run_id": run_id, "node_path": "gate", "via": [], "message": "go?"}
    ]


# --------------------------------------------------------------------------------------------------
# charter approve PARENT NODE


def test_approve_the_parent_step_forwards_to_the_one_request_of_its_grandchild(tmp_path: Path) -> None:
    _, parent = started(tmp_path, NESTED)
    (mid,) = children_of(tmp_path, parent).values()
    (leaf,) = children_of(tmp_path, mid).values()
    proc = charter("approve", parent, "outer", "--as", "bob", "--reason", "fine", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == {"mid": {"leaf": {"n": 7, "by": "bob"}}}
    assert (
        f"approved ok in child run {leaf} (of {parent}'s step outer → {mid} at inner) as bob" in proc.stderr
    )
    assert f"run {parent} completed" in proc.stderr
    # the decision is the grandchild's, made by bob; nothing was recorded in the runs above it
    assert decided(tmp_path, leaf) == [("ok", "approved", "user:bob")]
    assert decided(tmp_path, parent) == decided(tmp_path, mid) == []
    assert set(statuses(tmp_path).values()) == {"completed"}
    resumed = [
        e["payload"]["reason"] for e in events(tmp_path / "charter.db", parent) if e["kind"] == "run.resumed"
    ]
    assert resumed == ["approval"]


def test_approve_the_parent_step_with_several_child_requests_names_each_and_decides_none(
    tmp_path: Path,
) -> None:
    _, parent = started(tmp_path, FAN)
    kids = children_of(tmp_path, parent)
    proc = charter("approve", parent, "fe", "--as", "bob", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"run {parent} waits at 'fe' for 2 approvals in child runs" in proc.stderr
    for kid in kids.values():
        assert f"charter approve {kid} ok" in proc.stderr
    assert all(decided(tmp_path, kid) == [] for kid in kids.values())
    # one item's node names one request: that one is decided, the run waits for the other
    one = charter("approve", parent, "fe[1]/body/call", "--as", "bob", "--json", cwd=tmp_path)
    assert one.returncode == 3, one.stderr
    assert decided(tmp_path, kids["fe[1]/body/call"]) == [("ok", "approved", "user:bob")]
    assert decided(tmp_path, kids["fe[0]/body/call"]) == []
    assert run_json(one)["run_id"] == parent and run_json(one)["status"] == "waiting"
    assert f"decide with: charter approve {kids['fe[0]/body/call']} ok --as NAME" in one.stderr


def test_approve_a_parent_node_without_request_lists_the_child_requests(tmp_path: Path) -> None:
    _, parent = started(tmp_path, TWO)
    (kid,) = children_of(tmp_path, parent).values()
    proc = charter("approve", parent, "nowhere", "--as", "bob", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nothing is pending" not in proc.stderr
    assert f"'ok' in child run {kid} of step first (charter approve {kid} ok --as NAME)" in proc.stderr, (
        proc.stderr
    )


# --------------------------------------------------------------------------------------------------
# charter approve CHILD: the outcome of the top-level run


def test_approve_a_child_exits_with_the_parent_that_then_failed(tmp_path: Path) -> None:
    _, parent = started(tmp_path, THEN_FAIL)
    (kid,) = children_of(tmp_path, parent).values()
    proc = charter("approve", kid, "ok", "--as", "bob", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (
        f"approved ok in child run {kid} (of {parent}'s step sub) as bob; run {kid} completed" in proc.stderr
    )
    assert f"run {parent} failed at boom: failed after the child" in proc.stderr
    assert statuses(tmp_path) == {parent: "failed", kid: "completed"}


def test_approve_a_child_whose_parent_then_waits_again_exits_3_and_names_the_next(tmp_path: Path) -> None:
    _, parent = started(tmp_path, TWO)
    first = children_of(tmp_path, parent)["first"]
    proc = charter("approve", first, "ok", "--as", "bob", "--json", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    second = children_of(tmp_path, parent)["second"]
    result = run_json(proc)
    assert (result["run_id"], result["status"], result["pending"]) == (parent, "waiting", ["second"])
    assert result["decided"]["run_id"] == first and result["decided"]["status"] == "completed"
    assert [a["run_id"] for a in result["approvals"]] == [second]
    assert f"decide with: charter approve {second} ok --as NAME" in proc.stderr
    done = charter("approve", second, "ok", "--as", "ann", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"first": {"n": 1, "by": "bob"}, "second": {"n": 2, "by": "ann"}}
    assert f"run {parent} completed" in done.stderr


def test_approve_a_child_whose_parent_another_process_holds_exits_4(tmp_path: Path) -> None:
    _, parent = started(tmp_path, TWO)
    first = children_of(tmp_path, parent)["first"]
    store = open_store(tmp_path / "charter.db")
    try:
        lease = store.acquire_lease(parent)  # this (live) process executes the parent right now
        proc = charter("approve", first, "ok", "--as", "bob", cwd=tmp_path)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert (
            f"the decision was recorded and run {first} is completed; its parent run {parent} is being "
            in (proc.stderr)
        )
        assert "which continues with it" in proc.stderr
        store.release_lease(lease)
    finally:
        store.close()
    assert decided(tmp_path, first) == [("ok", "approved", "user:bob")]
    resumed = charter("resume", parent, cwd=tmp_path)
    assert resumed.returncode == 3
    assert f"charter approve {children_of(tmp_path, parent)['second']} ok" in resumed.stderr


# --------------------------------------------------------------------------------------------------
# The Python API


def test_python_api_forwards_and_returns_the_top_level_outcome(tmp_path: Path) -> None:
    from interpreter.approvals import decide, pending_approvals

    store = open_store(tmp_path / "api.db")
    try:
        waiting = run_workflow(compiled(project(tmp_path, TWO)), {}, store=store)
        assert waiting.status == "waiting" and waiting.pending == ["first"]
        (first,) = store.children(waiting.run_id, "first")
        (request,) = pending_approvals(store, waiting.run_id)
        assert (request.run_id, request.node_path, request.via) == (
            first.run_id,
            "ok",
            ((waiting.run_id, "first"),),
        )
        # the child's request, decided through the child: the top-level run's outcome comes back
        after = decide_approval(first.run_id, "ok", store=store, person="bob", approved=True)
        assert (after.run_id, after.status, after.pending) == (waiting.run_id, "waiting", ["second"])
        # through the parent's step: forwarded to the one request waiting below it
        outcome = decide(waiting.run_id, "second", store=store, person="ann", approved=False, reason="no")
        (second,) = store.children(waiting.run_id, "second")
        assert (outcome.run_id, outcome.node_path, outcome.forwarded) == (
            second.run_id,
            "ok",
            (waiting.run_id, "second"),
        )
        assert outcome.decided.status == "failed" and outcome.result.run_id == waiting.run_id
        assert outcome.result.status == "failed" and (outcome.result.error or {}).get("code") == "workflow"
        assert pending_approvals(store, waiting.run_id) == []
        with pytest.raises(RunSetupError, match="nothing is pending"):
            decide_approval(waiting.run_id, "second", store=store, person="ann", approved=True)
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------
# Continuing a child run: `charter resume CHILD` and `charter wake` report the top-level run too


def _decide_without_continuing(folder: Path, run_id: str, node: str) -> None:
    """A decision recorded by a process that stopped before it continued the run (the log alone)."""
    with open_store(folder / "charter.db") as store:
        payload = {"decision": "approved", "by": "bob", "reason": None, "verified": False}
        assert store.decide(run_id, node, payload, {"sub": "user:bob"}) is None


def test_resume_a_child_reports_and_exits_with_its_top_level_run(tmp_path: Path) -> None:
    _, parent = started(tmp_path, THEN_FAIL)
    (kid,) = children_of(tmp_path, parent).values()
    _decide_without_continuing(tmp_path, kid, "ok")
    proc = charter("resume", kid, "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the parent failed after the child
    result = run_json(proc)
    assert (result["run_id"], result["status"]) == (parent, "failed")
    assert (result["resumed"]["run_id"], result["resumed"]["status"]) == (kid, "completed")
    assert f"child run {kid} completed" in proc.stderr
    assert f"run {parent} failed at boom: failed after the child" in proc.stderr
    assert statuses(tmp_path) == {parent: "failed", kid: "completed"}


def test_wake_of_a_child_names_its_top_level_run(tmp_path: Path) -> None:
    leaf = LEAF.replace("approval: {", "approval: {timeout: 1s, on_timeout: approve, ")
    (tmp_path / "timed.yaml").write_text(leaf, encoding="utf-8")
    _, parent = started(tmp_path, THEN_FAIL.replace("leaf.yaml", "timed.yaml"))
    (kid,) = children_of(tmp_path, parent).values()
    time.sleep(1.2)  # past the child's request's expiry
    woke = charter("wake", "--json", cwd=tmp_path)
    assert woke.returncode == 0, woke.stdout + woke.stderr
    (line,) = [json.loads(text) for text in woke.stdout.splitlines()]
    assert (line["run_id"], line["status"]) == (kid, "completed")
    assert line["top"] == {"run_id": parent, "status": "failed"}
    assert charter("wake", cwd=tmp_path).stderr.startswith("no waiting run")


def test_a_decision_reads_each_log_through_once(tmp_path: Path) -> None:
    """`approve` verifies the decided run and every run above it before it records the decision; it
    does not verify them all again when it continues them (a long log costs a read per check)."""
    from collections import Counter

    store = open_store(tmp_path / "api.db")
    try:
        waiting = run_workflow(compiled(project(tmp_path, NESTED)), {}, store=store)
        (mid,) = store.children(waiting.run_id, "outer")
        (leaf,) = store.children(mid.run_id, "inner")
        checked: Counter[str] = Counter()
        verify = store.verify

        def counting(run_id: str) -> object:
            checked[run_id] += 1
            return verify(run_id)

        store.verify = counting  # type: ignore[method-assign]
        after = decide_approval(leaf.run_id, "ok", store=store, person="bob", approved=True)
        assert (after.run_id, after.status) == (waiting.run_id, "completed")
        assert checked == {waiting.run_id: 1, mid.run_id: 1, leaf.run_id: 1}
    finally:
        store.close()
