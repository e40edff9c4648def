"""A child run its parent no longer waits for is cancelled: nothing continues it afterwards.

A branch that lost a `join: any`, one cut off by a failing sibling, a `for_each` item cut off by a
failing item, a step cut off by its `timeout`, a run that ended while a child still waited: approving,
waking or resuming that child must not make its side effects for a parent that moved on.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.charter_cli import child_env, run_rows
from fixtures.charter_cli import project_charter as charter

TOOLS = """
import time

def wire(amount, log):
    with open(log, "a") as f:
        f.write(f"wire({amount})\\n")
    return amount

def slow(seconds):
    time.sleep(seconds)
    return seconds
"""

CHILD = """\
charter: "1.0"
name: wire-child
input: {type: object, required: [amount, log], properties: {amount: {type: integer}, log: {type: string}}}
tools: {wire: {python: "abandon_tools:wire", effect: write}}
steps:
  - id: ok
    approval: {message: "wire ${{ input.amount }}?"}
  - {id: send, tool: wire, args: {amount: "${{ input.amount }}", log: "${{ input.log }}"}}
"""

SLOW_CHILD = """\
charter: "1.0"
name: slow-child
input: {type: object, properties: {log: {type: string}}}
tools:
  wire: {python: "abandon_tools:wire", effect: write}
  slow: {python: "abandon_tools:slow", effect: read}
steps:
  - {id: wait, tool: slow, args: {seconds: 1}}
  - {id: send, tool: wire, args: {amount: 1, log: "${{ input.log }}"}}
"""

HEAD = """\
charter: "1.0"
name: parent
input: {type: object, properties: {log: {type: string}}}
steps:
"""
KID = '{id: kid, workflow: {path: child.yaml, input: {amount: 7, log: "${{ input.log }}"}}}'

PARENTS = {
    "a sibling branch failed": (
        f"  - id: p\n    parallel:\n      branches:\n        pay: [{KID}]\n"
        "        checks: [{id: no, fail: {code: sanctioned, message: on a list}}]\n",
        1,
    ),
    "another branch won join any": (
        f"  - id: p\n    parallel:\n      join: any\n      branches:\n        pay: [{KID}]\n"
        "        fast: [{id: quick, workflow: {path: child.yaml, input: {amount: 1, log: x}}, if: 'false'}]\n",
        0,
    ),
    "another for_each item failed": (
        "  - id: each\n    for_each:\n      in: ${{ [1, 2] }}\n      concurrency: 2\n      steps:\n"
        f"        - {{id: bad, if: item == 2, fail: {{message: item 2 is bad}}}}\n        - {KID}\n",
        1,
    ),
}


def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["abandon_tools"]\n')
    (tmp_path / "abandon_tools.py").write_text(TOOLS)
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "slow_child.yaml").write_text(SLOW_CHILD)
    return tmp_path


def child_of(tmp_path: Path) -> dict:
    (child,) = [r for r in run_rows(tmp_path / "charter.db") if r["parent_run_id"]]
    return child


@pytest.mark.parametrize("why", list(PARENTS))
def test_a_waiting_child_the_parent_no_longer_waits_for_is_cancelled(tmp_path: Path, why: str) -> None:
    steps, exit_code = PARENTS[why]
    (project(tmp_path) / "parent.yaml").write_text(HEAD + steps)
    log = tmp_path / "calls.log"
    ran = charter("run", "parent.yaml", "--input", f'{{"log": "{log}"}}', cwd=tmp_path)
    assert ran.returncode == exit_code, ran.stderr
    child = child_of(tmp_path)
    assert child["status"] == "cancelled", child
    approve = charter("approve", child["run_id"], "ok", "--as", "carol", cwd=tmp_path)
    assert approve.returncode == 2 and "cancelled" in approve.stderr, approve.stderr
    resume = charter("resume", child["run_id"], cwd=tmp_path)
    assert "already cancelled" in resume.stderr
    assert not log.exists()  # the wire was never made
    verify = charter("verify", child["run_id"], cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for run in run_rows(tmp_path / "charter.db"):
        replay = charter("replay", run["run_id"], cwd=tmp_path, timeout=60)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    events = charter("log", child["run_id"], cwd=tmp_path).stdout
    assert "run.cancelled" in events and "system:parent" in events
    explained = charter("explain", child["run_id"], cwd=tmp_path).stdout
    assert "run cancelled: its parent run" in explained
    if why != "another for_each item failed":  # the join names the branch it cut off while it waited
        parent = charter("log", child["parent_run_id"], "--json", cwd=tmp_path).stdout.splitlines()
        (joined,) = [e["payload"] for e in map(json.loads, parent) if e["kind"] == "parallel.joined"]
        assert joined["cancelled"] == ["pay"], joined


def test_a_child_cut_off_by_its_steps_timeout_is_cancelled_not_left_to_resume(tmp_path: Path) -> None:
    (project(tmp_path) / "parent.yaml").write_text(
        HEAD
        + '  - {id: kid, timeout: 200ms, workflow: {path: slow_child.yaml, input: {log: "${{ input.log }}"}}}\n'
    )
    log = tmp_path / "calls.log"
    ran = charter("run", "parent.yaml", "--input", f'{{"log": "{log}"}}', cwd=tmp_path)
    assert ran.returncode == 1 and "timed out" in ran.stderr, ran.stderr
    child = child_of(tmp_path)
    assert child["status"] == "cancelled"
    assert "cut its step 'kid' off" in child["error"]
    # not interrupted: its parent's timeout stopped it, which `run.cancelled` and the parent's log say
    logged = charter("log", child["run_id"], "--json", cwd=tmp_path).stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in logged]
    assert kinds[-1] == "run.cancelled" and "run.interrupted" not in kinds
    resume = charter("resume", child["run_id"], cwd=tmp_path)
    assert "already cancelled" in resume.stderr and not log.exists()
    for run in run_rows(tmp_path / "charter.db"):  # the cut-off call ends the child's replay, as it did
        replay = charter("replay", run["run_id"], cwd=tmp_path, timeout=60)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    listed = charter("runs", cwd=tmp_path).stdout
    assert "interrupted" not in listed


def test_a_child_the_parent_still_waits_for_is_left_waiting(tmp_path: Path) -> None:
    """The rule is about abandoned children only: a run waiting on its child keeps it waiting."""
    (project(tmp_path) / "parent.yaml").write_text(HEAD + f"  - {KID}\n")
    log = tmp_path / "calls.log"
    ran = charter("run", "parent.yaml", "--input", f'{{"log": "{log}"}}', cwd=tmp_path)
    assert ran.returncode == 3, ran.stderr
    child = child_of(tmp_path)
    assert child["status"] == "waiting"
    done = charter("approve", child["run_id"], "ok", "--as", "carol", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "wire(7)\n"


# --------------------------------------------------------------------------------------------------
# charter cancel: a person ends a run nobody should continue, with the runs it started


def test_charter_cancel_ends_a_waiting_run_and_its_child_and_nothing_continues_them(tmp_path: Path) -> None:
    (project(tmp_path) / "parent.yaml").write_text(HEAD + f"  - {KID}\n")
    log = tmp_path / "calls.log"
    assert charter("run", "parent.yaml", "--input", f'{{"log": "{log}"}}', cwd=tmp_path).returncode == 3
    child = child_of(tmp_path)
    parent_id = child["parent_run_id"]
    refused = charter("cancel", child["run_id"], cwd=tmp_path)
    assert refused.returncode == 2 and f"charter cancel {parent_id}" in refused.stderr, refused.stderr
    done = charter("cancel", parent_id, "--as", "ann", "--reason", "withdrawn", cwd=tmp_path)
    assert done.returncode == 0 and "and 1 run(s) it started" in done.stderr, done.stderr
    rows = {r["run_id"]: r for r in run_rows(tmp_path / "charter.db")}
    assert {r["status"] for r in rows.values()} == {"cancelled"}
    assert "cancelled by ann: withdrawn" in rows[parent_id]["error"]
    assert charter("approve", child["run_id"], "ok", "--as", "carol", cwd=tmp_path).returncode == 2
    assert charter("wake", cwd=tmp_path).returncode == 0
    assert "already cancelled" in charter("resume", parent_id, cwd=tmp_path).stderr
    again = charter("cancel", parent_id, cwd=tmp_path)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    assert not log.exists()
    for run_id in rows:
        assert charter("verify", run_id, cwd=tmp_path).returncode == 0
    events = charter("log", parent_id, "--json", cwd=tmp_path).stdout.splitlines()
    last = json.loads(events[-1])
    assert (last["kind"], last["actor"]) == ("run.cancelled", {"sub": "user:ann"})


CRASH_AFTER_CANCEL = """
import os, sys
import interpreter.engine as engine

cancel_tree = engine.cancel_tree

def cancel_then_crash(*args, **kwargs):
    done = cancel_tree(*args, **kwargs)
    os._exit(9)  # the process dies right after the child's cancellation is committed

engine.cancel_tree = cancel_then_crash
import cli
sys.argv = ["charter", *sys.argv[1:]]
cli.main()
"""


def test_the_decision_that_gives_a_child_up_is_logged_before_the_child_is_cancelled(tmp_path: Path) -> None:
    """A crash right after the cancellation: the parent's log already says why (its join), so resume
    finishes the parent as the live run would have, not failing on a child it had given up."""
    steps, _ = PARENTS["another branch won join any"]
    (project(tmp_path) / "parent.yaml").write_text(HEAD + steps)
    (tmp_path / "crash_after_cancel.py").write_text(CRASH_AFTER_CANCEL)
    log = tmp_path / "calls.log"
    crashed = subprocess.run(
        [sys.executable, "crash_after_cancel.py", "run", "parent.yaml", "--input", f'{{"log": "{log}"}}'],
        cwd=tmp_path, env=child_env({"CHARTER_DB": str(tmp_path / "charter.db")}), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr
    child = child_of(tmp_path)
    assert child["status"] == "cancelled"
    parent = child["parent_run_id"]
    assert "parallel.joined" in charter("log", parent, cwd=tmp_path).stdout
    resumed = charter("resume", parent, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not log.exists()


def test_a_child_is_not_decided_nor_continued_when_its_parents_log_fails_verify(tmp_path: Path) -> None:
    """The child's rules, grants and budgets come from its parent's log, and the parent continues after
    it: a parent log changed by hand stops `approve` and `resume` of the child before anything is
    recorded or done."""
    (project(tmp_path) / "parent.yaml").write_text(HEAD + f"  - {KID}\n")
    log = tmp_path / "calls.log"
    assert charter("run", "parent.yaml", "--input", f'{{"log": "{log}"}}', cwd=tmp_path).returncode == 3
    child = child_of(tmp_path)
    with sqlite3.connect(tmp_path / "charter.db") as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'parent', 'changed') WHERE run_id = ? AND seq = 1",
            (child["parent_run_id"],),
        )
    conn.close()
    for command in (("approve", child["run_id"], "ok", "--as", "carol"), ("resume", child["run_id"])):
        refused = charter(*command, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"run {child['parent_run_id']}: its log fails verification" in refused.stderr
    assert not log.exists()
    events = charter("log", child["run_id"], "--json", cwd=tmp_path).stdout
    assert "approval.decided" not in events
