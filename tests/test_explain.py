"""`charter explain` on the examples and on small workflows: the content of the decision trace (routes
with the values that chose them, authorizations, guardrails, model turns, approvals, budgets), and the
authorization audit that `charter verify` runs."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import REPO
from fixtures.charter_cli import project_charter as charter

from interpreter import store as s
from interpreter.audit import audit_authz
from interpreter.authz import args_digest

EXAMPLES = REPO / "examples"


def start(cwd: Path, *args: str) -> dict[str, Any]:
    proc = charter("run", *args, "--json", cwd=cwd)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def explain(cwd: Path, run_id: str, *extra: str) -> str:
    proc = charter("explain", run_id, *extra, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_tools_pipeline_explained(tmp_path: Path) -> None:
    result = start(
        tmp_path, str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", "--as", "ann"
    )
    text = explain(tmp_path, result["run_id"])
    lines = text.splitlines()
    assert lines[0] == f"run {result['run_id']} (price-orders) principal ann: completed"
    # the loop's exit with the values its condition read
    assert any(
        "collect: loop: `!steps.page.output.has_more` -> true; chose exit [index=1, "
        "steps.page.output.has_more=false]" in line
        for line in lines
    )
    assert any(
        "nothing_to_do: skipped: if `size(vars.lines) == 0` is false [vars.lines=" in line for line in lines
    )
    assert "authz ALLOW fetch_orders_page for user:ann > workflow:price-orders by workflow" in text
    assert (
        "FAILED [tool] tool 'quote_price' raised LookupError: no quote for XSKU-9 (caught by priced[2]/body/price)"
        in text
    )
    assert 'call list_price({"qty": 2, "sku": "XSKU-9"})' in text
    assert lines[-2] == (
        "budgets used: 8 tool call(s) (fetch_orders_page 2, list_price 1, quote_price 4, summarize_lines 1), "
        "0 model call(s), 0 tokens, cost 0, " + lines[-2].rsplit(", ", 1)[1]
    )
    assert lines[-1] == "audit: every tool call was authorized first"
    # every authorization precedes its call, in the order of the log
    seqs = [int(line.split()[0]) for line in lines[1:-2]]
    assert seqs == sorted(seqs)

    full = json.loads(explain(tmp_path, result["run_id"], "--json"))
    assert full["status"] == "completed" and full["audit"] == []
    whats = [e["what"] for e in full["trace"]]
    assert whats[0] == "run" and whats[-1] == "end"
    assert whats.count("authz") == whats.count("tool.call") == 8
    routes = [(e["values"], e["result"], e["chosen"]) for e in full["trace"] if e["what"] == "route"]
    assert routes == [  # the loop's `until` after each page: false (another page), then true
        ({"index": 0, "steps.page.output.has_more": True}, False, "repeat"),
        ({"index": 1, "steps.page.output.has_more": False}, True, "exit"),
    ]
    assert full["budgets"]["calls_per_tool"] == {
        "fetch_orders_page": 2, "quote_price": 4, "list_price": 1, "summarize_lines": 1
    }  # fmt: skip

    node = json.loads(explain(tmp_path, result["run_id"], "--node", "priced[2]", "--json"))
    assert {e["node_path"].split("/")[0] for e in node["trace"]} == {"priced[2]"}
    assert node["budgets"]["calls_per_tool"] == {"quote_price": 1, "list_price": 1}
    missing = charter("explain", result["run_id"], "--node", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "no events at node 'nowhere'" in missing.stderr


def test_an_explanation_of_a_tampered_or_truncated_log_says_so(tmp_path: Path) -> None:
    result = start(tmp_path, str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*")
    run_id, db = result["run_id"], tmp_path / "charter.db"
    assert json.loads(explain(tmp_path, run_id, "--json"))["integrity"] == {"intact": True}
    assert "WARNING" not in explain(tmp_path, run_id)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'XSKU-9', 'XSKU-8') WHERE run_id = ? AND seq = "
            "(SELECT min(seq) FROM events WHERE run_id = ? AND payload LIKE '%XSKU-9%')",
            (run_id, run_id),
        )
        edited = conn.execute(
            "SELECT min(seq) FROM events WHERE run_id = ? AND payload LIKE '%XSKU-8%'", (run_id,)
        ).fetchone()[0]
    assert (
        explain(tmp_path, run_id)
        .splitlines()[1]
        .startswith(f"WARNING: this run's log fails verification at seq {edited}: ")
    )
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'XSKU-8', 'XSKU-9') WHERE run_id = ?", (run_id,)
        )
        conn.execute("DELETE FROM events WHERE run_id = ? AND seq = (SELECT max(seq) FROM events)", (run_id,))
    integrity = json.loads(explain(tmp_path, run_id, "--json"))["integrity"]
    assert integrity["intact"] is False and "truncat" in integrity["reason"]


def test_approval_example_explained(tmp_path: Path) -> None:
    items = [{"category": "travel", "amount": 900}, {"category": "hotel", "amount": 300}]
    result = start(
        tmp_path,
        str(EXAMPLES / "approval.yaml"),
        "--allow-module",
        "examples.*",
        "--input",
        json.dumps({"employee": "ann", "items": items}),
    )
    assert result["status"] == "waiting"
    waiting = explain(tmp_path, result["run_id"])
    assert "finance_ok: approval requested from role:finance: ann claims 1200" in waiting
    assert "run waiting for approval at finance_ok" in waiting
    (tmp_path / "carol.json").write_text(json.dumps({"roles": ["finance"]}))
    proc = charter("approve", result["run_id"], "finance_ok", "--as", "carol", "--claims", "carol.json",
                   "--reason", "receipts ok", "--allow-module", "examples.*", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = explain(tmp_path, result["run_id"])
    line = next(ln for ln in text.splitlines() if "approval approved" in ln)
    assert "finance_ok: approval approved by carol at 20" in line and line.endswith(": receipts ok")
    assert "authz ALLOW book_expense" in text and "resumed (approval)" in text
    full = json.loads(explain(tmp_path, result["run_id"], "--json"))
    (decided,) = [e for e in full["trace"] if e["what"] == "approval"]
    assert decided["by"] == "carol" and decided["verified"] is True and decided["at"]


def test_switch_route_records_the_values_that_chose_it(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(
        textwrap.dedent("""\
        charter: "1.0"
        name: route
        input: {type: object, properties: {kind: {type: string}, size: {type: integer}}}
        vars: {x: null}
        steps:
          - id: pick
            switch:
              - when: input.kind == "a" && input.size > 10
                steps: [{id: big_a, set: {x: 1}}]
              - when: input.kind == "b"
                steps: [{id: b, set: {x: 2}}]
              - default: true
                steps: [{id: other, set: {x: 3}}]
        """)
    )
    result = start(tmp_path, "wf.yaml", "--input", '{"kind": "b", "size": 3}')
    text = explain(tmp_path, result["run_id"])
    assert (
        'pick: switch: `input.kind == "b"` -> true; chose case-1 [input.kind="b"]; not case-0 [input.kind="b", input.size=3]'
        in text
    )
    full = json.loads(explain(tmp_path, result["run_id"], "--json"))
    route = next(e for e in full["trace"] if e["what"] == "route")
    assert route["values"] == {"input.kind": "b"}


@pytest.mark.skipif(not (REPO / "interpreter" / "agent.py").exists(), reason="needs the agent loop")
def test_guarded_agent_example_explained(tmp_path: Path) -> None:
    message = "The lamp arrived broken. Card 4111 1111 1111 1111."
    result = start(
        tmp_path,
        str(EXAMPLES / "guarded_agent.yaml"),
        "--allow-module",
        "examples.*",
        "--input",
        json.dumps({"order_id": "ORD-7", "message": message}),
    )
    assert result["status"] == "completed", result
    text = explain(tmp_path, result["run_id"])
    assert "resolve: model" in text and "turn 1: prompt Order ORD-7: The lamp arrived broken." in text
    assert 'answer:  -> chose lookup_order({"order_id": "ORD-7"})' in text
    assert "authz ALLOW lookup_order for agent:refund_bot by support-read" in text
    assert "authz ALLOW issue_refund for agent:refund_bot by refund-desk-refunds" in text
    assert "authz ALLOW send_email for agent:refund_bot by email-customers-only" in text
    assert "guardrail no-card-numbers at agent.output: trip -> redact" in text
    assert (
        "3 tool call(s) (issue_refund 1, lookup_order 1, send_email 1), 4 model call(s), 3160 tokens" in text
    )
    full = json.loads(explain(tmp_path, result["run_id"], "--json"))
    answers = [e for e in full["trace"] if e["what"] == "model.answer"]
    assert [c["tool"] for a in answers for c in a["tool_calls"]] == [
        "lookup_order",
        "issue_refund",
        "send_email",
    ]
    assert full["budgets"]["model_calls"] == 4 and full["audit"] == []
    proc = charter("verify", result["run_id"], cwd=tmp_path)
    assert proc.returncode == 0 and "every tool call authorized" in proc.stdout


def _event(seq: int, kind: str, path: str, payload: dict[str, Any]) -> s.Event:
    return s.Event("r", seq, "2026-01-01T00:00:00+00:00", path, kind, None, payload, "", "")


def test_audit_finds_calls_without_an_allowing_decision() -> None:
    args = {"n": 1}
    good = [
        _event(1, s.AUTHZ_DECIDED, "a", {"tool": "t", "decision": "allow", "args_digest": args_digest(args)}),
        _event(2, s.TOOL_CALLED, "a", {"tool": "t", "args": args}),
    ]
    assert audit_authz(good) == []
    unauthorized = [_event(1, s.TOOL_CALLED, "a", {"tool": "t", "args": args})]
    assert "without an allowing authorization decision" in audit_authz(unauthorized)[0]
    denied = [
        _event(1, s.AUTHZ_DECIDED, "a", {"tool": "t", "decision": "deny", "args_digest": args_digest(args)}),
        _event(2, s.TOOL_CALLED, "a", {"tool": "t", "args": args}),
    ]
    assert audit_authz(denied)
    swapped = [
        _event(1, s.AUTHZ_DECIDED, "a", {"tool": "t", "decision": "allow", "args_digest": args_digest(args)}),
        _event(2, s.TOOL_CALLED, "a", {"tool": "t", "args": {"n": 2}}),
    ]
    assert "other than those authorized" in audit_authz(swapped)[0]
    elsewhere = [
        _event(1, s.AUTHZ_DECIDED, "a", {"tool": "t", "decision": "allow", "args_digest": args_digest(args)}),
        _event(2, s.TOOL_CALLED, "b", {"tool": "t", "args": args}),
    ]
    assert audit_authz(elsewhere)


@pytest.mark.skipif(not (REPO / "interpreter" / "agent.py").exists(), reason="needs the agent loop")
def test_agent_escalation_approved_across_processes_is_explained(tmp_path: Path) -> None:
    workflow = (EXAMPLES / "guarded_agent.yaml").read_text().replace("guarded_agent.responses.yaml", "r.yaml")
    (tmp_path / "wf.yaml").write_text(workflow)
    answers = (EXAMPLES / "guarded_agent.responses.yaml").read_text()
    (tmp_path / "r.yaml").write_text(answers.replace("amount: 64.5, reason", "amount: 150.0, reason"))
    args = ["--allow-module", "examples.*", "--input", json.dumps({"order_id": "ORD-7", "message": "broken"})]
    result = start(tmp_path, "wf.yaml", *args)
    assert result["status"] == "waiting"
    waiting = explain(tmp_path, result["run_id"])
    trip = waiting.index("guardrail refund-cap at tool.input: trip -> escalate")
    asked = waiting.index("approval requested from role:support_lead: Refund of 150.0 on ORD-7 exceeds")
    assert trip < asked and "call issue_refund" not in waiting  # nothing was refunded while waiting
    proc = charter("approve", result["run_id"], "resolve", "--as", "supervisor", "--allow-module", "examples.*",
                   cwd=tmp_path)  # fmt: skip
    assert "Traceback" not in proc.stderr
    text = explain(tmp_path, result["run_id"])
    assert "resolve: approval approved by supervisor at 20" in text
    assert (
        "guardrail refund-cap at tool.input: trip -> escalate (check is false: args.amount <= 100.0); verdict allow"
        in text
    )
    assert 'call issue_refund({"amount": 150.0' in text
    assert text.index("approval approved by supervisor") < text.index('call issue_refund({"amount": 150.0')


def test_child_runs_are_named_where_they_started_and_a_node_shows_its_outcome(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        'charter: "1.0"\nname: kid\nsteps:\n  - {id: x, set: {v: 1}}\nvars: {v: 0}\noutput: {v: "${{ vars.v }}"}\n'
    )
    (tmp_path / "wf.yaml").write_text(
        'charter: "1.0"\nname: parent\nsteps:\n  - {id: sub, workflow: {path: child.yaml}}\n'
        'output: {v: "${{ steps.sub.output.v }}"}\n'
    )
    result = start(tmp_path, "wf.yaml")
    assert result["status"] == "completed", result
    (child,) = [
        r
        for r in json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
        if r["run_id"] != result["run_id"]
    ]
    text = explain(tmp_path, result["run_id"])
    assert f"sub: child run {child['run_id']} (kid): completed (charter explain {child['run_id']})" in text
    node = explain(tmp_path, result["run_id"], "--node", "sub")  # used to say "no events at node"
    assert 'sub: completed = {"v": 1}' in node


def test_budgets_used_counts_execution_time_not_waits_or_downtime() -> None:
    """A run that executed 1 s, waited 100 s for a person, then executed 1 s more: 2 s, as its
    budgets and timeouts count it (the whole span would say 102 s)."""
    from interpreter.explain import budgets_used

    def at(seq: int, second: int, kind: str, path: str = "") -> s.Event:
        ts = f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000000Z"
        return s.Event("r", seq, ts, path, kind, None, {}, "", "")

    events = [
        at(1, 0, "run.started"),
        at(2, 1, "run.waiting"),
        at(3, 50, "approval.decided", "gate"),
        at(4, 101, "run.resumed"),
        at(5, 102, "run.completed"),
    ]
    assert budgets_used(events)["elapsed_s"] == 2.0
