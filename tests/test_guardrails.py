"""Guardrails: each action, strictest wins, observe mode, fail closed, budgets, redaction, trace rules."""

from __future__ import annotations

from typing import Any

import pytest

from dsl import expr, model
from dsl.graph import GUARDRAIL_SCOPE, CompiledGuardrail
from interpreter.guardrails import Budget, GuardrailSet, RetryLedger, Verdict
from interpreter.hashing import canonical_json
from interpreter.redact import MASK, compile_pattern, mask_matches, mask_secrets


def rule(**fields: Any) -> model.Guardrail:
    return model.Guardrail.model_validate(fields)


def check(id: str, source: str, on: str = "tool.input", **extra: Any) -> model.Guardrail:  # noqa: A002
    return rule(id=id, on=on, check=source, **extra)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- each action ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["deny", "escalate", "retry", "warn"])
def test_each_action_trips_on_a_false_check(action: str) -> None:
    rules = GuardrailSet([check("small", "args.amount < 100", action=action)])
    assert rules.evaluate("tool.input", {"tool": "refund", "args": {"amount": 5}}).action == "allow"
    verdict = rules.evaluate("tool.input", {"tool": "refund", "args": {"amount": 500}})
    assert verdict.action == action
    assert verdict.rules == ("small",)
    assert [e.rule for e in verdict.events] == ["small"]
    assert verdict.events[0].outcome == "trip" and verdict.events[0].decision == action
    assert verdict.allowed is (action == "warn")


def test_pass_yields_no_events() -> None:
    verdict = GuardrailSet([check("ok", "true")]).evaluate("tool.input", {"tool": "t", "args": {}})
    assert verdict == Verdict("allow", value={}, events=())


def test_redact_masks_nested_values() -> None:
    rules = GuardrailSet([rule(id="ssn", on="tool.output", regex=r"\d{3}-\d{2}-\d{4}", action="redact")])
    result = {
        "name": "Ann",
        "ids": ["ssn 123-45-6789 and 987-65-4321", {"deep": [{"ssn": "111-22-3333"}]}],
        "n": 7,
        "ok": True,
        "none": None,
        "json_text": '{"ssn": "555-66-7777"}',
    }
    verdict = rules.evaluate("tool.output", {"tool": "crm", "result": result})
    assert verdict.action == "redact" and verdict.allowed and verdict.redacted
    masked = "[REDACTED:ssn]"
    assert verdict.redacted_value == {
        "name": "Ann",
        "ids": [f"ssn {masked} and {masked}", {"deep": [{"ssn": masked}]}],
        "n": 7,
        "ok": True,
        "none": None,
        "json_text": f'{{"ssn": "{masked}"}}',
    }
    assert result["ids"][1]["deep"][0]["ssn"] == "111-22-3333"  # the input is not mutated
    assert "123-45" not in canonical_json([e.to_event_payload() for e in verdict.events])


def test_redact_numbers_and_keys() -> None:
    regex = compile_pattern(r"4111\d{12}")
    value, n = mask_matches({"4111111111111111": 4111111111111111, "x": [True, 1.5]}, regex)
    assert n == 1
    assert value == {"4111111111111111": MASK, "x": [True, 1.5]}  # keys are never touched


def test_regex_empty_matches_do_not_count() -> None:
    rules = GuardrailSet([rule(id="as", on="model.output", regex="a*")])
    assert rules.evaluate("model.output", {"output": "bcd"}).action == "allow"
    assert rules.evaluate("model.output", {"output": "bad"}).action == "deny"


def test_mask_secrets_longest_first() -> None:
    value = {"log": "key=sk-abc123 short=sk-abc", "list": ["sk-abc123"]}
    assert mask_secrets(value, ["sk-abc", "sk-abc123", ""]) == {
        "log": f"key={MASK} short={MASK}",
        "list": [MASK],
    }


def test_schema_check() -> None:
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    rules = GuardrailSet([rule(id="shape", on="agent.output", schema=schema, action="retry")])
    assert rules.evaluate("agent.output", {"output": {"answer": "yes"}}).action == "allow"
    verdict = rules.evaluate("agent.output", {"output": {"answer": 42, "secret": "hunter2"}})
    assert verdict.action == "retry"
    assert "answer" in verdict.events[0].reason and "hunter2" not in verdict.events[0].reason
    assert verdict.events[0].reason.endswith(
        'at `answer`: violates schema rule properties/answer/type = "string"'
    )


def test_escalate_carries_the_approval_request() -> None:
    rules = GuardrailSet(
        [
            check(
                "big",
                "args.amount < 1000",
                action="escalate",
                message="refund over 1000 needs a manager",
                escalation={"approvers": ["role:manager"], "timeout": "1h"},
            )
        ]
    )
    verdict = rules.evaluate("tool.input", {"tool": "refund", "args": {"amount": 5000}})
    assert verdict.action == "escalate"
    assert verdict.escalation == {
        "rule": "big",
        "approvers": ["role:manager"],
        "timeout_s": 3600.0,
        "message": "refund over 1000 needs a manager",
        "generation": 0,  # the run's own rule: its own file names the approvers
    }


# --- strictest wins -------------------------------------------------------------------------------------


ORDER = ["warn", "redact", "retry", "escalate", "deny"]


@pytest.mark.parametrize("k", range(len(ORDER)))
def test_strictest_wins(k: int) -> None:
    present = ORDER[: k + 1]
    rules = []
    for action in reversed(present):  # the order of the rules does not matter
        if action == "redact":
            rules.append(rule(id="r-redact", on="model.output", regex="secret", action="redact"))
        else:
            rules.append(check(f"r-{action}", "false", on="model.output", action=action))
    verdict = GuardrailSet(rules).evaluate("model.output", {"output": "a secret"})
    assert verdict.action == present[-1]
    assert verdict.rules == (f"r-{present[-1]}",)
    assert len(verdict.events) == len(present)
    if "redact" in present:  # redaction is applied whatever wins, so the log never sees the match
        assert verdict.redacted and verdict.value == "a [REDACTED:r-redact]"


def test_messages_of_the_winning_rules_reach_the_model() -> None:
    rules = GuardrailSet(
        [
            check("a", "false", on="model.output", action="retry", message="answer in English"),
            check("b", "false", on="model.output", action="retry", message="cite a source"),
            check("c", "false", on="model.output", action="warn", message="not shown"),
        ]
    )
    verdict = rules.evaluate("model.output", {"output": "x"})
    assert verdict.action == "retry" and verdict.rules == ("a", "b")
    assert verdict.message == "answer in English\ncite a source"


def test_compiled_message_template_and_check() -> None:
    decls = {name: "dyn" for name in GUARDRAIL_SCOPE}
    from dsl.templates import CompiledValue

    message = CompiledValue(lambda b: f"amount {b['args']['amount']} too big", (), None, False)  # type: ignore[arg-type]
    compiled = CompiledGuardrail(
        check("cap", "args.amount < 10"), expr.compile("args.amount < 10", decls), message
    )
    verdict = GuardrailSet([compiled]).evaluate("tool.input", {"tool": "t", "args": {"amount": 50}})
    assert verdict.action == "deny" and verdict.message == "amount 50 too big"


# --- observe mode and fail closed ----------------------------------------------------------------------


def test_observe_mode_records_without_enforcing() -> None:
    rules = GuardrailSet(
        [
            check("watch", "false", on="model.output", mode="observe"),
            rule(id="mask", on="model.output", regex="x+", action="redact", mode="observe"),
            check("broken", "output.nope > 1", on="model.output", mode="observe"),
        ]
    )
    verdict = rules.evaluate("model.output", {"output": "xx"})
    assert verdict.action == "allow" and verdict.value == "xx" and not verdict.redacted
    assert [(e.rule, e.outcome, e.mode, e.decision) for e in verdict.events] == [
        ("watch", "trip", "observe", "observed"),
        ("mask", "trip", "observe", "observed"),
        ("broken", "error", "observe", "observed"),
    ]


@pytest.mark.parametrize(
    "source, context",
    [
        ("args.missing == 1", {"args": {}}),  # no such key
        ("args.n / 0 == 1", {"args": {"n": 1}}),  # division by zero
        ("args.n + 1", {"args": {"n": 1}}),  # not a bool
        ("args.n.size() > 0", {"args": {"n": 1}}),  # no such overload
        ("args.n ==", {"args": {"n": 1}}),  # does not compile
    ],
)
def test_a_check_that_errors_denies(source: str, context: dict[str, Any]) -> None:
    verdict = GuardrailSet([check("r", source, action="warn")]).evaluate(
        "tool.input", {"tool": "t", **context}
    )
    assert verdict.action == "deny"
    event = verdict.events[0]
    assert event.outcome == "error" and event.action == "deny" and event.reason


def test_unconvertible_context_fails_closed() -> None:
    verdict = GuardrailSet([check("r", "true")]).evaluate(
        "tool.input", {"tool": "t", "args": {"x": object()}}
    )
    assert verdict.action == "deny" and verdict.events[0].outcome == "error"


def test_invalid_schema_at_run_time_fails_closed() -> None:
    good = rule(id="s", on="tool.input", schema={"type": "object"})
    bad = good.model_copy(update={"schema_": {"type": 12}})  # bypasses validation, as a corrupt graph would
    verdict = GuardrailSet([bad]).evaluate("tool.input", {"tool": "t", "args": {}})
    assert verdict.action == "deny" and verdict.events[0].outcome == "error"


def test_invalid_regex_at_run_time_fails_closed() -> None:
    good = rule(id="re", on="model.output", regex="ok", action="redact")
    bad = good.model_copy(update={"regex": "("})
    verdict = GuardrailSet([bad]).evaluate("model.output", {"output": "anything"})
    assert verdict.action == "deny" and "RE2" in verdict.events[0].reason


def test_unknown_hook_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown guardrail hook"):
        GuardrailSet().evaluate("tool.call", {})


# --- retry is bounded ---------------------------------------------------------------------------------


def test_retry_becomes_deny_after_max_retries() -> None:
    rules = GuardrailSet([check("fmt", "false", on="model.output", action="retry", max_retries=2)])
    ledger = RetryLedger()
    actions = [rules.evaluate("model.output", {"output": "x"}, ledger=ledger).action for _ in range(3)]
    assert actions == ["retry", "retry", "deny"]
    last = rules.evaluate("model.output", {"output": "x"}, ledger=ledger)
    assert "retries exhausted" in last.events[0].reason
    # a fresh ledger (the next step execution) starts again
    assert rules.evaluate("model.output", {"output": "x"}, ledger=RetryLedger()).action == "retry"


# --- levels ----------------------------------------------------------------------------------------------


def test_inner_levels_add_and_never_remove() -> None:
    workflow = GuardrailSet([check("no-delete", "tool != 'delete'", on="tool.select")])
    step = workflow.extend([check("only-small", "args.n < 10")], level="step")
    tool = step.extend([check("tool-rule", "args.n != 3", action="warn")], level="tool")
    assert [r.id for r in tool.rules] == ["no-delete", "only-small", "tool-rule"]
    assert [r.id for r in workflow.rules] == ["no-delete"]  # the outer set is unchanged
    assert tool.evaluate("tool.select", {"tool": "delete"}).rules == ("no-delete",)
    verdict = tool.evaluate("tool.input", {"tool": "t", "args": {"n": 3}})
    assert verdict.action == "warn" and verdict.events[0].level == "tool"
    assert tool.evaluate("tool.input", {"tool": "t", "args": {"n": 30}}).action == "deny"


def test_tools_and_steps_filters() -> None:
    rules = GuardrailSet(
        [
            check("mail", "false", tools=["send_*"]),
            check("in-pay", "false", steps=["pay"]),
        ]
    )
    assert rules.evaluate("tool.input", {"tool": "lookup", "args": {}}).action == "allow"
    assert rules.evaluate("tool.input", {"tool": "send_mail", "args": {}}).rules == ("mail",)
    assert rules.evaluate("tool.input", {"tool": "x", "args": {}}, step_ids=["outer", "pay"]).rules == (
        "in-pay",
    )


def test_payload_per_hook_and_explicit_payload() -> None:
    rules = GuardrailSet([rule(id="pw", on=hook, regex="password") for hook in ("run.input", "model.input")])
    assert rules.evaluate("run.input", {"input": {"q": "my password"}}).action == "deny"
    assert rules.evaluate("model.input", {"messages": [{"content": "password?"}]}).action == "deny"
    assert rules.evaluate("model.input", {"payload": "fine", "messages": "password"}).action == "allow"


# --- trace rules over history ---------------------------------------------------------------------------


def test_no_send_after_reading_a_secret() -> None:
    rules = GuardrailSet(
        [
            check(
                "no-exfiltration",
                "!history.exists(e, e.kind == 'tool.completed' && e.tool == 'read_secret')",
                tools=["send_*"],
                message="you read a secret in this run; sending is blocked",
            )
        ]
    )
    clean = [{"kind": "tool.completed", "tool": "lookup", "args": {}}]
    tainted = [*clean, {"kind": "tool.completed", "tool": "read_secret", "args": {"name": "db"}}]
    assert rules.evaluate("tool.input", {"tool": "send_mail", "args": {}, "history": clean}).action == "allow"
    assert rules.evaluate("tool.input", {"tool": "lookup", "args": {}, "history": tainted}).action == "allow"
    verdict = rules.evaluate("tool.input", {"tool": "send_mail", "args": {}, "history": tainted})
    assert verdict.action == "deny"
    assert verdict.message == "you read a secret in this run; sending is blocked"
    # without a history the rule errors, and so denies
    assert rules.evaluate("tool.input", {"tool": "send_mail", "args": {}}).action == "deny"


# --- budgets ---------------------------------------------------------------------------------------------


def run_agent_loop(rules: GuardrailSet, calls: list[tuple[str, dict[str, Any]]]) -> tuple[int, Verdict]:
    """A looping agent: evaluate before each call, record after it runs; return the stopped call's index."""
    for i, (tool, args) in enumerate(calls):
        verdict = rules.evaluate("tool.input", {"tool": tool, "args": args})
        if not verdict.allowed:
            return i, verdict
        rules.record_tool_call(tool, args)
    raise AssertionError("the budget never stopped the loop")


def test_budget_stops_a_looping_agent_on_identical_calls() -> None:
    rules = GuardrailSet([rule(id="loop", limits={"max_repeated_calls": 3})])
    calls = [("search", {"q": "a"}), ("search", {"q": "b"})] + [("search", {"q": "same"})] * 10
    index, verdict = run_agent_loop(rules, calls)
    assert index == 5  # three identical calls ran (2, 3, 4); the fourth in a row is stopped
    assert verdict.action == "deny" and verdict.rules == ("loop",)
    assert "max_repeated_calls 3" in verdict.message


def test_budget_total_and_per_tool_calls() -> None:
    rules = GuardrailSet([rule(id="total", limits={"max_tool_calls": 4})])
    index, verdict = run_agent_loop(rules, [("t", {"i": i}) for i in range(10)])
    assert index == 4 and "tool call 5 exceeds max_tool_calls 4" in verdict.events[0].reason

    rules = GuardrailSet([rule(id="per", limits={"max_calls_per_tool": 2}, action="escalate")])
    index, verdict = run_agent_loop(
        rules, [("a", {}), ("b", {}), ("a", {"x": 1}), ("b", {}), ("a", {"x": 2})]
    )
    assert index == 4 and verdict.action == "escalate"


def test_model_budgets_tokens_cost_and_calls() -> None:
    budget = Budget()
    rules = GuardrailSet(
        [
            rule(id="calls", limits={"max_model_calls": 3}),
            rule(id="tokens", limits={"max_tokens": 1000}, action="warn"),
            rule(id="cost", limits={"max_cost": 0.5}),
        ],
        budget=budget,
    )
    assert rules.evaluate("model.input", {}).action == "allow"
    rules.record_model_call(400, 100, 0.1)
    assert rules.evaluate("model.output", {"output": "x"}).action == "allow"
    rules.record_model_call(500, 100, 0.1)  # 1100 tokens: over
    out = rules.evaluate("model.output", {"output": "x"})
    assert out.action == "warn" and out.rules == ("tokens",)
    assert rules.evaluate("model.input", {}).action == "warn"
    rules.record_model_call(0, 0, 0.4)  # cost reaches 0.6, third call made
    verdict = rules.evaluate("model.input", {})
    assert verdict.action == "deny" and set(verdict.rules) == {"calls", "cost"}
    assert budget.usage()["tokens"] == 1100 and budget.usage()["model_calls"] == 3


def test_a_cost_budget_spent_exactly_is_not_exceeded() -> None:
    """0.1 + 0.2 is 0.30000000000000004 in floats: calls costing 0.1 and 0.2 spend a max_cost of 0.3
    exactly -- the answer is kept (not over the limit), and the next call is refused (reached)."""
    rules = GuardrailSet([rule(id="cost", limits={"max_cost": 0.3})])
    rules.record_model_call(10, 10, 0.1)
    rules.record_model_call(10, 10, 0.2)
    assert rules.evaluate("model.output", {"output": "x"}).action == "allow"
    verdict = rules.evaluate("model.input", {})
    assert verdict.action == "deny" and "reached max_cost 0.3" in (verdict.message or "")


def test_wall_time_budget_with_injected_clock() -> None:
    clock = FakeClock()
    rules = GuardrailSet([rule(id="time", limits={"timeout": "30s"})], budget=Budget(clock))
    assert rules.evaluate("tool.input", {"tool": "t", "args": {}}).action == "allow"
    clock.now += 31
    verdict = rules.evaluate("model.input", {})
    assert verdict.action == "deny" and "timeout 30s" in verdict.message


def test_budgets_per_level_and_usage_in_checks() -> None:
    run_budget, step_budget = Budget(), Budget()
    run = GuardrailSet([rule(id="run-cap", limits={"max_tool_calls": 3})], budget=run_budget)
    step = run.extend(
        [rule(id="step-cap", limits={"max_tool_calls": 1}), check("usage", "usage.tool_calls < 5")],
        level="step",
        budget=step_budget,
    )
    assert step.evaluate("tool.input", {"tool": "t", "args": {}}).action == "allow"
    step.record_tool_call("t", {})
    assert step.evaluate("tool.input", {"tool": "t", "args": {}}).rules == ("step-cap",)
    assert run_budget.tool_calls == step_budget.tool_calls == 1  # recorded at every level
    next_step = run.extend([], level="step")  # the next step execution: a fresh step budget
    assert next_step.evaluate("tool.input", {"tool": "t", "args": {}}).action == "allow"


def test_events_are_json_payloads() -> None:
    rules = GuardrailSet([check("r", "false", on="agent.output", action="warn")])
    payload = rules.evaluate("agent.output", {"output": 1}).events[0].to_event_payload()
    assert payload["rule"] == "r" and payload["hook"] == "agent.output"
    assert payload["outcome"] == "trip" and payload["action"] == "warn" and payload["mode"] == "enforce"
    canonical_json(payload)
