"""An approval is a person's decision (spec §13.11): `charter approve RUN NODE --as NAME` is refused (exit
2, nothing recorded) when NAME is declared as an agent (or service) identity of the run's workflow, or of
a run above it, whatever the approvers list says (`[]` and a role the agent holds included), as
`charter run --as` refuses an agent. Real `charter` processes on a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fixtures.charter_cli import charter, describe, events, run_json, run_row, run_rows

FLOW = """\
charter: "1.0"
name: expenses
identities:
  triage_bot: {kind: agent, roles: [finance]}
  ledger: {kind: service, roles: [finance]}
  carol: {kind: user, roles: [finance]}
steps:
  - id: finance_ok
    approval: {message: "pay?", approvers: ["role:finance"]}
  - id: anyone
    approval: {message: "anyone?"}
output: {finance: "${{ steps.finance_ok.output.by }}", anyone: "${{ steps.anyone.output.by }}"}
"""

CHILD = """\
charter: "1.0"
name: child
steps:
  - id: ok
    approval: {message: "child?"}
output: {by: "${{ steps.ok.output.by }}"}
"""

PARENT = """\
charter: "1.0"
name: parent
identities:
  triage_bot: {kind: agent}
steps:
  - id: kid
    workflow: {path: child.yaml}
output: {kid: "${{ steps.kid.output }}"}
"""


def started(tmp_path: Path, name: str, text: str, db: Path) -> str:
    (tmp_path / f"{name}.yaml").write_text(text)
    proc = charter("run", str(tmp_path / f"{name}.yaml"), "--json", db=db, cwd=tmp_path)
    assert proc.returncode == 3, describe(proc)
    return run_json(proc)["run_id"]


def decisions(db: Path, run_id: str) -> list[dict[str, Any]]:
    return [e for e in events(db, run_id) if e["kind"] == "approval.decided"]


def test_an_agent_holding_the_approvers_role_may_not_approve(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = started(tmp_path, "expenses", FLOW, db)
    for name in ("triage_bot", "user:triage_bot"):
        proc = charter("approve", run_id, "finance_ok", "--as", name, db=db, cwd=tmp_path)
        assert proc.returncode == 2, describe(proc)
        assert (
            "'triage_bot' may not decide: it is the name of an agent identity of workflow 'expenses', "
            "and an approval is a person's decision (approve --as PERSON), never an agent's; "
            "nothing was recorded"
        ) in proc.stderr
        assert "Traceback" not in proc.stderr
    proc = charter("approve", run_id, "finance_ok", "--as", "ledger", db=db, cwd=tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert (
        "'ledger' may not decide: it is the name of a service identity of workflow 'expenses'" in proc.stderr
    )
    assert decisions(db, run_id) == [] and run_row(db, run_id)["status"] == "waiting"

    proc = charter("approve", run_id, "finance_ok", "--as", "carol", db=db, cwd=tmp_path)
    assert proc.returncode == 3, describe(proc)  # the person with the role decides; `anyone` waits
    assert [d["payload"]["by"] for d in decisions(db, run_id)] == ["carol"]


def test_an_agent_may_not_approve_when_anyone_may(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = started(tmp_path, "expenses", FLOW, db)
    proc = charter("approve", run_id, "finance_ok", "--as", "carol", db=db, cwd=tmp_path)
    assert proc.returncode == 3, describe(proc)
    for name, kind in (("triage_bot", "an agent"), ("ledger", "a service")):
        proc = charter("approve", run_id, "anyone", "--as", name, "--deny", db=db, cwd=tmp_path)
        assert proc.returncode == 2, describe(proc)
        assert (
            f"'{name}' may not decide: it is the name of {kind} identity of workflow 'expenses'"
            in proc.stderr
        )
    assert [d["node_path"] for d in decisions(db, run_id)] == ["finance_ok"]
    assert run_row(db, run_id)["status"] == "waiting"

    proc = charter("approve", run_id, "anyone", "--as", "dave", "--json", db=db, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)  # a person the workflow does not declare, as before
    assert run_json(proc)["output"] == {"finance": "carol", "anyone": "dave"}


def test_an_agent_of_the_parent_workflow_may_not_approve_in_its_child_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    (tmp_path / "child.yaml").write_text(CHILD)
    parent = started(tmp_path, "parent", PARENT, db)
    (child,) = [r["run_id"] for r in run_rows(db) if r["parent_run_id"] == parent]
    for target in ((child, "ok"), (parent, "kid")):  # the child's own node, and forwarded from the parent
        proc = charter("approve", *target, "--as", "triage_bot", db=db, cwd=tmp_path)
        assert proc.returncode == 2, describe(proc)
        assert (
            "'triage_bot' may not decide: it is the name of an agent identity of workflow 'parent'"
            in proc.stderr
        )
    assert decisions(db, child) == []
    proc = charter("approve", parent, "kid", "--as", "carol", "--json", db=db, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert run_json(proc)["output"] == {"kid": {"by": "carol"}}
