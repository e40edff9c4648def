"""Identity grants and guardrails enforced end to end: workflows of Python tool steps run by the real
`charter` CLI on a real SQLite file; the log is read back to check what was decided and recorded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import project_events as events
from fixtures.charter_cli import tool_calls as calls
from fixtures.charter_cli import tool_project


def project(tmp_path: Path, workflow: str, name: str = "wf.yaml") -> Path:
    tool_project(tmp_path, "h16tools")
    path = tmp_path / name
    path.write_text(HEAD + textwrap.dedent(workflow))
    return path


def run(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = charter("run", "wf.yaml", "--json", *extra, cwd=tmp_path, env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def verify_ok(tmp_path: Path, run_id: str) -> None:
    proc = charter("verify", run_id, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every tool call authorized" in proc.stdout


HEAD = """\
charter: "1.0"
name: h16
tools:
  echo: {python: "h16tools:echo", effect: read}
  lookup: {python: "h16tools:lookup", effect: read}
  send: {python: "h16tools:send", effect: write}
  tick: {python: "h16tools:tick", effect: read}
  same: {python: "h16tools:same", effect: read}
  blocked: {python: "h16tools:blocked", effect: read}
identities:
  bot: {kind: agent, roles: [support]}
  supervisor: {kind: user, roles: [lead]}
"""


# --- authorization -------------------------------------------------------------------------------------


def test_tool_outside_grants_is_denied_with_default_deny(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
grants:
  - {id: bot-read, to: bot, tools: [lookup]}
  - {id: bot-mail-own, to: bot, tools: [send], when: 'args.to.endsWith("@example.com")'}
steps:
  - {id: ok, tool: lookup, identity: bot, args: {id: A1}}
  - {id: mail, tool: send, identity: bot, args: {to: x@evil.test, body: hi}}
""",
    )
    code, result = run(tmp_path, "--as", "alice")
    assert code == 1 and result["error"]["code"] == "unauthorized"
    assert "default-deny" in result["error"]["message"]
    decided = events(tmp_path, result["run_id"], "authz.decided")
    assert [(d["tool"], d["decision"], d["grant"]) for d in decided] == [
        ("lookup", "allow", "bot-read"),
        ("send", "deny", "default-deny"),
    ]
    assert decided[1]["actor_chain"] == ["agent:bot"] and len(decided[1]["args_digest"]) == 64
    assert [c["tool"] for c in calls(tmp_path)] == ["lookup"]  # the denied tool never ran
    verify_ok(tmp_path, result["run_id"])


def test_deny_grant_overrides_allow_and_is_named(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
grants:
  - {id: support-all, to: "role:support", tools: ["*"]}
  - {id: no-big-ticks, to: bot, tools: [tick], effect: deny, when: "args.n > 10"}
steps:
  - {id: small, tool: tick, identity: bot, args: {n: 3}}
  - {id: big, tool: tick, identity: bot, args: {n: 30}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1
    decided = events(tmp_path, result["run_id"], "authz.decided")
    assert [(d["decision"], d["grant"]) for d in decided] == [
        ("allow", "support-all"),
        ("deny", "no-big-ticks"),
    ]


def test_tool_step_without_identity_runs_as_the_workflow(tmp_path: Path) -> None:
    project(tmp_path, "steps:\n  - {id: a, tool: echo, args: {x: 1}}\n")
    code, result = run(tmp_path, "--as", "alice")
    assert code == 0
    (decided,) = events(tmp_path, result["run_id"], "authz.decided")
    assert decided["grant"] == "workflow" and decided["decision"] == "allow"
    assert decided["principal"] == "alice"
    assert decided["actor_chain"] == ["user:alice", "workflow:h16"]
    assert decided["actor"] == {"sub": "user:alice", "act": {"sub": "workflow:h16"}}


def test_condition_on_claims_reads_the_runs_principal(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
grants:
  - {id: acme-only, to: bot, tools: [echo], when: 'principal.tenant == "acme" && args.tenant == principal.tenant'}
steps:
  - {id: a, tool: echo, identity: bot, args: {tenant: "${{ input.tenant }}"}}
""",
    )
    # a tool step's identity acts for nobody, yet `principal` is the run's principal (spec §10.2, §15)
    (tmp_path / "acme.json").write_text(json.dumps({"tenant": "acme", "roles": ["staff"]}))
    code, result = run(tmp_path, "--as", "alice", "--claims", "acme.json", "--input", '{"tenant": "acme"}')
    assert code == 0
    (decided,) = events(tmp_path, result["run_id"], "authz.decided")
    assert decided["decision"] == "allow" and decided["grant"] == "acme-only"
    code, result = run(tmp_path, "--as", "alice", "--input", '{"tenant": "acme"}')  # no claim: fails closed
    assert code == 1
    decided = events(tmp_path, result["run_id"], "authz.decided")
    assert decided[0]["decision"] == "deny" and "condition" in decided[0]["reason"]


# --- guardrail actions ---------------------------------------------------------------------------------


def test_deny_at_tool_input_stops_before_the_call(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: no-evil, on: tool.input, tools: [send], check: '!args.to.endsWith("@evil.test")', message: "no mail to evil"}
steps:
  - {id: mail, tool: send, args: {to: x@evil.test, body: hi}}
""",
    )
    code, result = run(tmp_path)
    assert (
        code == 1
        and result["error"]["code"] == "guardrail"
        and result["error"]["message"] == "no mail to evil"
    )
    (ev,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert (ev["rule"], ev["hook"], ev["outcome"], ev["decision"]) == (
        "no-evil",
        "tool.input",
        "trip",
        "deny",
    )
    assert calls(tmp_path) == [] and not events(tmp_path, result["run_id"], "tool.called")


def test_redact_masks_the_log_and_the_next_step(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: no-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
steps:
  - {id: find, tool: lookup, args: {id: A1}}
  - {id: tell, tool: send, args: {to: dana@example.com, body: "${{ steps.find.output.card }}"}}
output: {card: "${{ steps.find.output.card }}"}
""",
    )
    code, result = run(tmp_path)
    assert code == 0
    assert result["output"]["card"] == "[REDACTED:no-cards]"
    assert calls(tmp_path)[1]["body"] == "[REDACTED:no-cards]"  # the next step got the masked value
    raw = (tmp_path / "charter.db").read_bytes()
    assert b"4111 1111 1111 1111" not in raw  # never in the log, in clear
    kinds = {e["rule"]: e["decision"] for e in events(tmp_path, result["run_id"], "guardrail.evaluated")}
    assert kinds == {"no-cards": "redact"}


def test_redact_masks_a_failed_call_message_too(tmp_path: Path) -> None:
    """An error that quotes what the tool read is masked by the tool.output rules like a result."""
    project(
        tmp_path,
        """
guardrails:
  - {id: no-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
vars: {why: ""}
steps:
  - id: guarded
    try:
      steps:
        - {id: find, tool: blocked, args: {id: A1}}
      catch:
        as: problem
        steps:
          - {id: note, set: {why: "${{ problem.message }}"}}
output: {why: "${{ vars.why }}"}
""",
    )
    code, result = run(tmp_path)
    assert code == 0, result
    assert "[REDACTED:no-cards]" in result["output"]["why"]
    assert b"4111 1111 1111 1111" not in (tmp_path / "charter.db").read_bytes()


def test_a_result_denied_after_redaction_replays_as_denied(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: no-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
  - {id: stop-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', message: no card data}
steps:
  - {id: find, tool: lookup, args: {id: A1}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["message"] == "no card data", result
    replay = charter("replay", result["run_id"], cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr  # the masked log still says "denied"


def test_warn_records_and_goes_on(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: big-tick, on: tool.input, check: 'args.n < 5', action: warn}
steps:
  - {id: a, tool: tick, args: {n: 9}}
""",
    )
    code, result = run(tmp_path)
    assert code == 0
    (ev,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert ev["decision"] == "warn" and ev["verdict"] == "warn"


def test_observe_mode_records_without_enforcing(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: would-deny, on: tool.input, check: 'args.n < 5', mode: observe}
steps:
  - {id: a, tool: tick, args: {n: 9}}
""",
    )
    code, result = run(tmp_path)
    assert code == 0 and calls(tmp_path) == [{"tool": "tick", "n": 9}]
    (ev,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert (ev["outcome"], ev["mode"], ev["decision"]) == ("trip", "observe", "observed")


def test_a_check_that_errors_denies(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: broken, on: tool.input, check: 'args.missing.deeper > 1', action: warn}
steps:
  - {id: a, tool: tick, args: {n: 1}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail"
    (ev,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert (ev["outcome"], ev["action"], ev["decision"]) == ("error", "deny", "deny")
    assert calls(tmp_path) == []


def test_strictest_action_wins(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: w, on: tool.input, check: 'args.n < 5', action: warn}
  - {id: d, on: tool.input, check: 'args.n < 8', action: deny, message: "too big"}
  - {id: e, on: tool.input, check: 'args.n < 7', action: escalate}
steps:
  - {id: a, tool: tick, args: {n: 9}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["message"] == "too big"
    evs = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert {e["rule"]: e["action"] for e in evs} == {"w": "warn", "d": "deny", "e": "escalate"}
    assert {e["verdict"] for e in evs} == {"deny"}
    assert not events(tmp_path, result["run_id"], "approval.requested")  # deny beats escalate


def test_step_level_rules_add_to_workflow_rules(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - id: group
    guardrails:
      - {id: inner, on: tool.input, check: 'args.n != 2', message: "two is forbidden here"}
    steps:
      - {id: one, tool: tick, args: {n: 1}}
      - {id: two, tool: tick, args: {n: 2}}
  - {id: outside, tool: tick, args: {n: 2}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["step"] == "two"
    assert [c["n"] for c in calls(tmp_path)] == [1]


def test_escalate_waits_and_charter_approve_decides_across_processes(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - id: cap
    on: tool.input
    tools: [send]
    check: 'size(args.body) < 10'
    action: escalate
    message: "long mail to ${{ args.to }}"
    escalation: {approvers: ["role:lead"], timeout: 1h}
steps:
  - {id: before, tool: tick, args: {n: 1}}
  - {id: mail, tool: send, args: {to: dana@example.com, body: "a rather long body"}}
  - {id: after, tool: tick, args: {n: 2}}
""",
    )
    code, result = run(tmp_path, "--as", "alice")
    assert code == 3 and result["status"] == "waiting"
    run_id = result["run_id"]
    (req,) = events(tmp_path, run_id, "approval.requested")
    assert req["path"] == "mail" and req["message"] == "long mail to dana@example.com"
    assert req["approvers"] == ["role:lead"] and req["data"]["guardrail"] == "cap" and "expires_at" in req
    assert [c["tool"] for c in calls(tmp_path)] == ["tick"]  # the write waits
    (waiting,) = events(tmp_path, run_id, "run.waiting")
    assert waiting["reason"] == "escalation" and waiting["pending"] == ["mail"]
    refused = charter("approve", run_id, "mail", "--as", "bot", cwd=tmp_path)  # roles: support
    assert refused.returncode == 2 and "may not decide" in refused.stderr
    ok = charter("approve", run_id, "mail", "--as", "supervisor", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert [c["tool"] for c in calls(tmp_path)] == ["tick", "send", "tick"]
    (decided,) = events(tmp_path, run_id, "approval.decided")
    assert decided["by"] == "supervisor" and decided["decision"] == "approved"
    verify_ok(tmp_path, run_id)


def test_escalation_denied_fails_the_step_with_guardrail(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: cap, on: tool.input, tools: [send], check: 'size(args.body) < 10', action: escalate}
steps:
  - {id: mail, tool: send, args: {to: dana@example.com, body: "a rather long body"}}
""",
    )
    code, result = run(tmp_path)
    assert code == 3
    denied = charter("approve", result["run_id"], "mail", "--as", "bob", "--deny", "--reason", "no", "--json",
                     cwd=tmp_path)  # fmt: skip
    assert denied.returncode == 1
    final = json.loads(denied.stdout)
    assert final["error"]["code"] == "guardrail" and "denied by bob: no" in final["error"]["message"]
    assert calls(tmp_path) == []


def test_run_input_rules_run_before_the_first_step(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: no-drop, on: run.input, check: '!input.q.contains("DROP")', message: "bad input"}
  - {id: mask-mail, on: run.input, regex: '[a-z]+@secret\\.test', action: redact}
steps:
  - {id: a, tool: echo, args: {q: "${{ input.q }}"}}
""",
    )
    code, result = run(tmp_path, "--input", '{"q": "DROP TABLE"}')
    assert code == 1 and "bad input" in result["error"]["message"] and calls(tmp_path) == []
    code, result = run(tmp_path, "--input", '{"q": "write to eve@secret.test"}')
    assert code == 0 and calls(tmp_path) == [{"tool": "echo", "q": "write to [REDACTED:mask-mail]"}]
    assert b"eve@secret.test" not in (tmp_path / "charter.db").read_bytes()


def test_budget_stops_a_looping_workflow_with_a_clear_reason(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: budget, limits: {max_tool_calls: 5}}
steps:
  - id: spin
    loop:
      max_iterations: 100
      until: "false"
      steps:
        - {id: t, tool: tick, args: {n: "${{ index }}"}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail"
    assert "budget exceeded: tool call 6 exceeds max_tool_calls 5" in result["error"]["message"]
    assert len(calls(tmp_path)) == 5


def test_repeated_identical_calls_budget(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: no-spin, limits: {max_repeated_calls: 2}}
steps:
  - id: spin
    loop:
      max_iterations: 10
      until: "false"
      steps:
        - {id: t, tool: same}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and "identical call 3 in a row" in result["error"]["message"]


def test_secrets_are_masked_everywhere_in_the_log(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
secrets: [H16_TOKEN]
steps:
  - {id: a, tool: echo, args: {auth: "Bearer ${{ secrets.H16_TOKEN }}"}}
output: {seen: "${{ steps.a.output.auth }}"}
""",
    )
    code, result = run(tmp_path, env={"H16_TOKEN": "s3cr3t-value-42"})
    assert code == 0
    assert calls(tmp_path) == [{"tool": "echo", "auth": "Bearer s3cr3t-value-42"}]  # the tool gets it
    assert result["output"] == {"seen": "Bearer [REDACTED]"}
    assert b"s3cr3t-value-42" not in (tmp_path / "charter.db").read_bytes()


def test_budget_stops_a_looping_agent_with_a_clear_reason(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
models:
  default: {provider: scripted, responses: answers.yaml}
grants:
  - {id: g, to: bot, tools: [same]}
guardrails:
  - {id: budget, limits: {max_tool_calls: 3}}
steps:
  - id: act
    agent: {identity: bot, tools: [same], prompt: "spin", max_turns: 20}
""",
    )
    spin = [{"step": "act", "turn": i, "tool_calls": [{"name": "same", "args": {}}]} for i in range(1, 21)]
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": spin}))
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail"
    assert result["error"]["message"].endswith("budget exceeded: tool call 4 exceeds max_tool_calls 3")
    assert len(calls(tmp_path)) == 3
    assert len(events(tmp_path, result["run_id"], "model.called")) == 4  # stopped at once, not at max_turns


def test_budgets_count_what_ran_before_a_resume(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
guardrails:
  - {id: budget, limits: {max_tool_calls: 3}}
steps:
  - {id: one, tool: tick, args: {n: 1}}
  - {id: two, tool: tick, args: {n: 2}}
  - {id: wait, approval: {message: go on?}}
  - {id: three, tool: tick, args: {n: 3}}
  - {id: four, tool: tick, args: {n: 4}}
""",
    )
    code, result = run(tmp_path)
    assert code == 3
    proc = charter("approve", result["run_id"], "wait", "--as", "bob", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    final = json.loads(proc.stdout)
    assert (
        final["error"]["step"] == "four"
        and "tool call 4 exceeds max_tool_calls 3" in final["error"]["message"]
    )
    assert [c["n"] for c in calls(tmp_path)] == [1, 2, 3]


def test_a_history_rule_sees_the_calls_made_before_a_resume(tmp_path: Path) -> None:
    # The exfiltration pattern: no mail once something was looked up, even across a pause for a person.
    project(
        tmp_path,
        """
guardrails:
  - id: no-mail-after-lookup
    on: tool.input
    tools: [send]
    check: '!history.exists(e, e.kind == "tool" && e.tool == "lookup")'
    action: deny
    message: "no mail after a lookup"
steps:
  - {id: find, tool: lookup, args: {id: A1}}
  - {id: wait, approval: {message: go on?}}
  - {id: mail, tool: send, args: {to: x@example.com, body: hi}}
""",
    )
    code, result = run(tmp_path)
    assert code == 3
    proc = charter("approve", result["run_id"], "wait", "--as", "bob", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    final = json.loads(proc.stdout)
    assert final["error"]["code"] == "guardrail" and "no mail after a lookup" in final["error"]["message"]
    assert [c["tool"] for c in calls(tmp_path)] == ["lookup"]


# --- tool.select on tool steps, deny vs budget in agents, escalations kept apart -----------------------


def test_tool_select_rules_apply_to_tool_steps_before_authorization(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
grants:
  - {id: bot-all, to: bot, tools: ["*"]}
guardrails:
  - {id: no-send, on: tool.select, tools: [send], check: "false", message: "sending is switched off"}
steps:
  - {id: ok, tool: lookup, identity: bot, args: {id: A1}}
  - {id: mail, tool: send, identity: bot, args: {to: dana@example.com, body: hi}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail" and result["error"]["step"] == "mail"
    assert result["error"]["message"] == "sending is switched off"
    (trip,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert (trip["rule"], trip["hook"], trip["path"]) == ("no-send", "tool.select", "mail")
    # select comes before authorization: the refused call was never even decided
    assert [d["tool"] for d in events(tmp_path, result["run_id"], "authz.decided")] == ["lookup"]
    assert [c["tool"] for c in calls(tmp_path)] == ["lookup"]


AGENT_ANSWERS = [
    {"step": "act", "turn": 1, "tool_calls": [{"name": "send", "args": {"to": "x@evil.test", "body": "hi"}}]},
    {
        "step": "act",
        "turn": 2,
        "tool_calls": [{"name": "send", "args": {"to": "dana@example.com", "body": "hi"}}],
    },
    {"step": "act", "turn": 3, "text": "Mailed dana."},
]


def test_a_denying_rule_refuses_an_agents_call_and_the_agent_goes_on(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
models:
  default: {provider: scripted, responses: answers.yaml}
grants:
  - {id: g, to: bot, tools: [send]}
guardrails:
  - id: inside-only
    on: tool.input
    tools: [send]
    check: 'args.to.endsWith("@example.com")'
    message: "mail stays inside example.com"
steps:
  - id: act
    agent: {identity: bot, tools: [send], prompt: "mail dana"}
output: {answer: "${{ steps.act.output }}"}
""",
    )
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": AGENT_ANSWERS}))
    code, result = run(tmp_path)
    assert code == 0 and result["output"] == {"answer": "Mailed dana."}
    assert calls(tmp_path) == [{"tool": "send", "to": "dana@example.com", "body": "hi"}]
    told = events(tmp_path, result["run_id"], "model.called")[1]["messages"][-1]
    assert told["role"] == "tool" and told["content"] == "refused: mail stays inside example.com"
    (trip,) = events(tmp_path, result["run_id"], "guardrail.evaluated")
    assert (trip["rule"], trip["verdict"]) == ("inside-only", "deny")


def test_a_budget_stops_the_agent_where_a_deny_would_not(tmp_path: Path) -> None:
    """The same agent under a budget of one tool call: the second call is not refused-and-told, the step
    fails with code `guardrail`, marked as a budget, and the agent is not asked again."""
    project(
        tmp_path,
        """
models:
  default: {provider: scripted, responses: answers.yaml}
grants:
  - {id: g, to: bot, tools: [send]}
steps:
  - id: act
    agent: {identity: bot, tools: [send], prompt: "mail dana"}
    guardrails:
      - {id: one-mail, limits: {max_tool_calls: 1}}
""",
    )
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": AGENT_ANSWERS}))
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail" and result["error"]["step"] == "act"
    assert result["error"]["message"].endswith("budget exceeded: tool call 2 exceeds max_tool_calls 1")
    assert len(calls(tmp_path)) == 1 and len(events(tmp_path, result["run_id"], "model.called")) == 2
    (failed,) = events(tmp_path, result["run_id"], "step.failed")
    assert failed["error"]["details"] == {
        "rules": ["one-mail"],
        "budget": True,
        "halts_run": False,
        "halts_ancestors": 0,
    }


def test_two_escalations_in_one_tool_step_are_asked_apart(tmp_path: Path) -> None:
    """tool.select and tool.input both escalate: the first is asked at the step's path, the second at
    `<path>/escalation[2]`; approving the first does not settle the second, and neither is asked again."""
    project(
        tmp_path,
        """
guardrails:
  - {id: pick, on: tool.select, tools: [send], check: "false", action: escalate, message: "send at all?"}
  - {id: body, on: tool.input, tools: [send], check: "false", action: escalate, message: "this body?"}
steps:
  - {id: mail, tool: send, args: {to: dana@example.com, body: hi}}
""",
    )
    code, result = run(tmp_path)
    assert code == 3
    run_id = result["run_id"]
    first = charter("approve", run_id, "mail", "--as", "bob", "--json", cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    assert json.loads(first.stdout)["status"] == "waiting" and calls(tmp_path) == []
    assert "mail/escalation[2]" in first.stderr  # where to decide next
    second = charter("approve", run_id, "mail/escalation[2]", "--as", "bob", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert [c["tool"] for c in calls(tmp_path)] == ["send"]
    requested = events(tmp_path, run_id, "approval.requested")
    assert [(r["path"], r["data"]["hook"]) for r in requested] == [
        ("mail", "tool.select"),
        ("mail/escalation[2]", "tool.input"),
    ]
    replayed = charter("replay", run_id, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


# --- child runs inherit the parent's rules (spec §11, §13.13) -------------------------------------------

CHILD = """
input: {type: object, properties: {to: {type: string}}}
steps:
  - {id: find, tool: lookup, args: {id: A1}}
  - {id: mail, tool: send, args: {to: "${{ input.to }}", body: "${{ steps.find.output.card }}"}}
output: {found: "${{ steps.find.output }}"}
"""


def test_a_child_run_is_bound_by_the_parent_workflow_and_enclosing_step_rules(tmp_path: Path) -> None:
    project(tmp_path, CHILD, name="child.yaml")
    project(
        tmp_path,
        """
guardrails:
  - {id: no-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
steps:
  - id: outer
    guardrails:
      - {id: no-evil, on: tool.input, tools: [send], check: '!args.to.endsWith("@evil.test")', message: no mail to evil}
    steps:
      - {id: sub, workflow: {path: child.yaml, input: {to: x@evil.test}}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and "no mail to evil" in result["error"]["message"]  # the step rule, in the child
    assert [c["tool"] for c in calls(tmp_path)] == ["lookup"]  # send was never called
    assert b"4111 1111 1111 1111" not in (tmp_path / "charter.db").read_bytes()  # redacted in the child
    child_id = result["error"]["details"]["run_id"]
    rules = {e["rule"] for e in events(tmp_path, child_id, "guardrail.evaluated")}
    assert rules == {"no-cards", "no-evil"}


def test_a_parent_budget_counts_the_child_run_calls_and_halts_the_parent(tmp_path: Path) -> None:
    project(tmp_path, CHILD, name="child.yaml")
    project(
        tmp_path,
        """
guardrails:
  - {id: two-calls, limits: {max_tool_calls: 2}}
steps:
  - {id: first, tool: tick, args: {n: 1}}
  - id: guarded
    try:
      steps:
        - {id: sub, workflow: {path: child.yaml, input: {to: dana@example.com}}}
      catch:
        steps:
          - {id: swallowed, tool: tick, args: {n: 2}}
""",
    )
    code, result = run(tmp_path)
    assert code == 1 and result["error"]["code"] == "guardrail", result["error"]
    assert "max_tool_calls 2" in result["error"]["message"]
    assert [c["tool"] for c in calls(tmp_path)] == ["tick", "lookup"]  # no catch ran: the budget halts
    (failed,) = [
        e for e in events(tmp_path, result["run_id"], "step.failed") if e["error"]["code"] == "guardrail"
    ][:1]
    assert failed["caught_by"] is None  # the log does not claim the `try` handled it


def test_a_parent_budget_still_counts_a_child_continued_after_an_approval(tmp_path: Path) -> None:
    """The child waits for a person; once approved (in another process) its calls and the parent's
    later ones are counted together against the parent's budget, as in one uninterrupted run."""
    project(
        tmp_path,
        """
steps:
  - {id: gate, approval: {message: go on?}}
  - {id: a, tool: tick, args: {n: 1}}
  - {id: b, tool: tick, args: {n: 2}}
""",
        name="child.yaml",
    )
    project(
        tmp_path,
        """
guardrails:
  - {id: two, limits: {max_tool_calls: 2}}
steps:
  - {id: sub, workflow: {path: child.yaml}}
  - {id: after, tool: tick, args: {n: 3}}
""",
    )
    code, waiting = run(tmp_path)
    assert code == 3, waiting
    runs = json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
    (child,) = [r["run_id"] for r in runs if r["run_id"] != waiting["run_id"]]
    proc = charter("approve", child, "gate", "--as", "alice", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the decision stands; the run it continued failed
    (ended,) = events(tmp_path, waiting["run_id"], "run.failed")
    assert "max_tool_calls 2" in ended["error"]["message"], ended
    assert [c["n"] for c in calls(tmp_path)] == [1, 2]  # the third call was never made


def test_a_child_budget_with_the_id_of_a_parent_rule_does_not_halt_the_parent(tmp_path: Path) -> None:
    """Rule ids are unique per file only: the child's own spent budget is a child failure the parent's
    `try` catches, whatever the parent names its rules."""
    project(
        tmp_path,
        """
guardrails:
  - {id: budget, limits: {max_tool_calls: 1}}
steps:
  - {id: a, tool: tick, args: {n: 1}}
  - {id: b, tool: tick, args: {n: 2}}
""",
        name="child.yaml",
    )
    project(
        tmp_path,
        """
guardrails:
  - {id: budget, limits: {max_tool_calls: 100}}
vars: {caught: false}
steps:
  - id: guarded
    try:
      steps:
        - {id: sub, workflow: {path: child.yaml}}
      catch:
        steps:
          - {id: note, set: {caught: true}}
output: {caught: "${{ vars.caught }}"}
""",
    )
    code, result = run(tmp_path)
    assert code == 0 and result["output"] == {"caught": True}, result


def test_a_resumed_child_run_is_still_bound_by_its_parent_rules(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
steps:
  - {id: gate, approval: {message: go on?}}
  - {id: find, tool: lookup, args: {id: A1}}
output: {found: "${{ steps.find.output }}"}
""",
        name="child.yaml",
    )
    project(
        tmp_path,
        """
guardrails:
  - {id: no-cards, on: tool.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
steps:
  - {id: sub, workflow: {path: child.yaml}}
output: {child: "${{ steps.sub.output }}"}
""",
    )
    code, waiting = run(tmp_path)
    assert code == 3, waiting
    child_id = next(
        r["run_id"]
        for r in json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
        if r["run_id"] != waiting["run_id"]
    )
    proc = charter("approve", child_id, "gate", "--as", "alice", cwd=tmp_path)  # continued in a new process
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (completed,) = events(tmp_path, child_id, "tool.completed")
    assert completed["result"]["card"] == "[REDACTED:no-cards]"
    assert b"4111 1111 1111 1111" not in (tmp_path / "charter.db").read_bytes()
