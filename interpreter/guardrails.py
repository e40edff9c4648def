"""Guardrail evaluation: rules at hook points, budgets, strictest-wins verdicts. Pure, synchronous, no I/O.

A `GuardrailSet` is built from workflow-level rules and `extend`ed with step-level and tool-level rules
(inner levels add rules, never remove outer ones). `evaluate(hook, context)` runs every applicable rule
and returns a `Verdict`; the engine acts on it and writes its `events` to the log.

Exactly what each check means
-----------------------------
A rule applies at `hook` when its `on` is that hook (budgets: see below), its `tools` globs (if any)
match `context["tool"]` (a rule with `tools` never applies where there is no tool), and its `steps` (if
any) include one of the `step_ids` the caller passes (the ids of the enclosing steps).

The **payload** of a hook is `context["payload"]` when given, else the context variable named by
`PAYLOAD_OF[hook]` (run.input: input, model.input: messages, model.output: output, tool.select: tool,
tool.input: args, tool.output: result, agent.output: output).

- `check` (CEL): the rule passes when the expression yields `true`, trips on `false`; anything else
  (an error, a non-bool) is an error. Variables: tool, args, result, output, identity, principal, usage,
  history, input, vars, run from the context (missing ones are null); `usage` defaults to the rule's own
  budget usage (see `Budget.usage`). `history` is the caller's list of prior events
  ({kind, tool, args, ...}) for trace rules.
- `regex` (RE2): searched in every string of the payload at any depth, and in numbers' JSON text (object
  keys, booleans and null are not searched); a non-empty match is a violation; with action `redact`
  every match is replaced by `[REDACTED:<rule id>]` (see interpreter/redact.py).
- `schema` (JSON Schema 2020-12): the payload must be valid; an invalid payload trips.
- `limits` (budgets, no `on`): checked before work is spent, against the rule's level's `Budget`:
  at `tool.input` max_tool_calls, max_calls_per_tool and max_repeated_calls count the pending call
  (with a limit of N the (N+1)-th call trips); at `model.input` max_model_calls counts the pending call
  and max_tokens / max_cost trip once the used amount has reached the limit; at `model.output` tokens or
  cost *over* the limit trip; `timeout` (wall time since the budget started) trips at tool.input and
  model.input. A call is counted as soon as its check passes, before it is made, in the same
  synchronous step as the check (`RunGuard.check` reserves it): calls that start together cannot all
  pass one check, and a call counts whatever its outcome. Tokens and cost are added after the answer
  (`add_model_usage`); `record_tool_call` / `record_model_call` count a call that was made at once
  (restoring a log, tests).

Reasons never quote the payload (it may hold the very secret a rule protects).

Actions, failure and observe mode
---------------------------------
Strictest wins: deny > escalate > retry > redact > warn > allow. A check that errors (a CEL error, an
invalid regex or schema at run time, anything) acts as `deny` with the error as reason (fail closed).
A `retry` rule that has already asked `max_retries` times (default 2) in the current `RetryLedger`
becomes `deny`. Rules in `mode: observe` never change the verdict, errors included; their trips are
still events. Redaction is applied even when the final action is stricter, so the masked value is what
reaches the log. Every trip or error yields a `GuardrailEvent`; passing rules yield nothing.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dsl import expr, model
from dsl.graph import GUARDRAIL_SCOPE
from interpreter.hashing import NotCanonicalizable, canonical_json, sha256_hex
from interpreter.redact import PatternError, compile_pattern, count_matches, mask_matches
from interpreter.runtime import kind_of

HOOKS: tuple[str, ...] = model.HOOKS
PAYLOAD_OF: Mapping[str, str] = {
    "run.input": "input",
    "model.input": "messages",
    "model.output": "output",
    "tool.select": "tool",
    "tool.input": "args",
    "tool.output": "result",
    "agent.output": "output",
}
SCOPE = GUARDRAIL_SCOPE  # the names the compiler declares for `check` and `message`
ACTION_RANK: Mapping[str, int] = {"allow": 0, "warn": 1, "redact": 2, "retry": 3, "escalate": 4, "deny": 5}
DEFAULT_MAX_RETRIES = 2
View = Callable[[], Mapping[str, Any]]  # what a rule reads of the run that declared it (`_Entry.declared`)


# --- budgets -------------------------------------------------------------------------------------------


class Budget:
    """Counts what a scope (the run, one step execution, one tool's calls) has spent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.tool_calls = 0
        self.calls_per_tool: dict[str, int] = {}
        self.model_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self._last_call: tuple[str, str] | None = None
        self.repeated_calls = 0  # length of the current run of identical consecutive calls

    def record_tool_call(self, tool: str, args: Any) -> None:
        key = (tool, _digest(args))
        self.repeated_calls = self.repeated_calls + 1 if key == self._last_call else 1
        self._last_call = key
        self.tool_calls += 1
        self.calls_per_tool[tool] = self.calls_per_tool.get(tool, 0) + 1

    def tool_call_state(self) -> tuple[tuple[str, str] | None, int]:
        """What `record_tool_call` changes besides the counts, for `undo_tool_call`."""
        return self._last_call, self.repeated_calls

    def undo_tool_call(self, tool: str, before: tuple[tuple[str, str] | None, int]) -> None:
        """Take back a call counted at its check that was not made after all (`before`: the
        `tool_call_state()` before it was counted). The run of identical calls is put back only when no
        other call was counted since (another would have moved it on; the counts are exact either way)."""
        self.tool_calls -= 1
        left = self.calls_per_tool.get(tool, 1) - 1
        if left > 0:
            self.calls_per_tool[tool] = left
        else:
            self.calls_per_tool.pop(tool, None)
        if self.repeated_calls == (before[1] + 1 if before[0] == self._last_call else 1):
            self._last_call, self.repeated_calls = before

    def record_model_call(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        self.model_calls += 1
        self.add_model_usage(input_tokens, output_tokens, cost)

    def add_model_usage(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        """The tokens and cost of a model call already counted (when its check passed)."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        # Rounded below a millionth of a cent: float sums drift (0.1 + 0.2 is 0.30000000000000004),
        # and a budget of 0.3 spent by calls of 0.1 and 0.2 must not count as exceeded.
        self.cost = round(self.cost + cost, 12)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def elapsed(self) -> float:
        return self._clock() - self.started

    def usage(self) -> dict[str, Any]:
        """What `usage` holds in CEL checks and what `charter explain` reports."""
        return {
            "tool_calls": self.tool_calls,
            "calls_per_tool": dict(self.calls_per_tool),
            "model_calls": self.model_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens": self.tokens,
            "cost": self.cost,
            "elapsed_s": self.elapsed(),
            "repeated_calls": self.repeated_calls,
        }

    def exceeded(
        self, limits: model.Limits, hook: str, tool: str | None = None, args: Any = None
    ) -> str | None:
        """Why `limits` are exceeded at `hook` (see the module docstring), or None."""
        if hook == "tool.input" and tool is not None:
            return self._tool_exceeded(limits, tool, args) or self._time_exceeded(limits)
        if hook == "model.input":
            return self._model_exceeded(limits) or self._time_exceeded(limits)
        if hook == "model.output":
            if limits.max_tokens is not None and self.tokens > limits.max_tokens:
                return f"tokens used {self.tokens} exceed max_tokens {limits.max_tokens}"
            if limits.max_cost is not None and self.cost > limits.max_cost:
                return f"cost {self.cost:g} exceeds max_cost {limits.max_cost:g}"
        return None

    def _tool_exceeded(self, limits: model.Limits, tool: str, args: Any) -> str | None:
        if limits.max_tool_calls is not None and self.tool_calls + 1 > limits.max_tool_calls:
            return f"tool call {self.tool_calls + 1} exceeds max_tool_calls {limits.max_tool_calls}"
        per_tool = self.calls_per_tool.get(tool, 0) + 1
        if limits.max_calls_per_tool is not None and per_tool > limits.max_calls_per_tool:
            return f"call {per_tool} of tool '{tool}' exceeds max_calls_per_tool {limits.max_calls_per_tool}"
        if limits.max_repeated_calls is not None and (tool, _digest(args)) == self._last_call:
            streak = self.repeated_calls + 1
            if streak > limits.max_repeated_calls:
                return (
                    f"identical call {streak} in a row of tool '{tool}' exceeds max_repeated_calls "
                    f"{limits.max_repeated_calls}"
                )
        return None

    def _model_exceeded(self, limits: model.Limits) -> str | None:
        if limits.max_model_calls is not None and self.model_calls + 1 > limits.max_model_calls:
            return f"model call {self.model_calls + 1} exceeds max_model_calls {limits.max_model_calls}"
        if limits.max_tokens is not None and self.tokens >= limits.max_tokens:
            return f"tokens used {self.tokens} reached max_tokens {limits.max_tokens}"
        if limits.max_cost is not None and self.cost >= limits.max_cost:
            return f"cost {self.cost:g} reached max_cost {limits.max_cost:g}"
        return None

    def _time_exceeded(self, limits: model.Limits) -> str | None:
        if limits.timeout is None:
            return None
        allowed = model.parse_duration(limits.timeout)
        elapsed = self.elapsed()
        return f"wall time {elapsed:.3f}s exceeds timeout {limits.timeout}" if elapsed > allowed else None


def _digest(args: Any) -> str:
    try:
        return sha256_hex(canonical_json(args))
    except NotCanonicalizable:
        return sha256_hex(repr(args))


class RetryLedger:
    """How many times each rule has asked for a retry in one scope (the agent loop keeps one per step
    execution); beyond the rule's `max_retries` a retry becomes a deny."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def bump(self, rule_id: str) -> int:
        self.counts[rule_id] = self.counts.get(rule_id, 0) + 1
        return self.counts[rule_id]


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailEvent:
    """One evaluation that matters (a trip or an error), for a `guardrail.evaluated` event."""

    rule: str
    hook: str
    outcome: str  # "trip" | "error"
    action: str  # what the rule does: deny | escalate | retry | redact | warn (errors: deny)
    mode: str  # "enforce" | "observe"
    reason: str
    level: str  # "workflow" | "step" | "tool" (or what the caller named the layer)

    @property
    def decision(self) -> str:
        """What it did: the action when enforced, "observed" in observe mode."""
        return self.action if self.mode == "enforce" else "observed"

    def to_event_payload(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "hook": self.hook,
            "outcome": self.outcome,
            "action": self.action,
            "mode": self.mode,
            "decision": self.decision,
            "reason": self.reason,
            "detail": {"reason": self.reason, "level": self.level},
        }


@dataclass(frozen=True)
class Verdict:
    action: str  # allow | deny | escalate | retry | redact | warn
    rules: tuple[str, ...] = ()  # ids of the enforced rules that chose `action`
    message: str | None = None  # feedback for the model (retry/deny) and approvers (escalate)
    value: Any = None  # the payload, masked when `redacted`
    redacted: bool = False
    events: tuple[GuardrailEvent, ...] = ()
    escalation: Mapping[str, Any] | None = None  # {rule, approvers, timeout_s, message} with escalate
    # (level, generation) of the budgets among the rules that chose `action`: generation 0 is this run's
    # rule, 1 its parent's (inherited by a child run), 2 the grandparent's...
    budgets: tuple[tuple[str, int], ...] = ()

    @property
    def allowed(self) -> bool:
        """May the work go on (possibly with the redacted value)?"""
        return self.action in ("allow", "warn", "redact")

    @property
    def redacted_value(self) -> Any:
        return self.value


# --- rules ---------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    rule: model.Guardrail
    level: str
    budget: Budget
    check: Any = None  # compiled CEL Program
    message: Any = None  # CompiledValue | None
    regex: Any = None
    validator: Any = None
    setup_error: str | None = None  # fails closed at every evaluation
    generation: int = 0  # 0: this run's rule; n: inherited from the run n levels up (`for_child`)
    # An inherited rule reads the `principal`, `input`, `vars` and `run` of the run that declared it,
    # not the child's (a child file may describe the principal otherwise, or set a variable a parent's
    # rule reads, for its own rules only). None: the evaluating run's own.
    declared: View | None = None


def _prepare(item: Any, level: str, budget: Budget) -> _Entry:
    if isinstance(item, model.Guardrail):
        rule, check, message = item, None, None
    else:  # dsl.graph.CompiledGuardrail (duck-typed: .guardrail, .check, .message)
        rule, check, message = item.guardrail, item.check, getattr(item, "message", None)
    entry = _Entry(rule, level, budget, check, message)
    try:
        if rule.check is not None and entry.check is None:
            entry.check = expr.compile(rule.check)
        if rule.regex is not None:
            entry.regex = compile_pattern(rule.regex)
        if rule.schema_ is not None:
            from interpreter import schemas

            entry.validator = schemas.compiled(rule.schema_, check=True)
    except (expr.ExpressionError, PatternError) as exc:
        entry.setup_error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a rule that cannot be set up denies, it never crashes
        entry.setup_error = f"{type(exc).__name__}: {exc}"
    return entry


class GuardrailSet:
    """Rules of nested levels with their budgets. Immutable in its rules; budgets and the default
    retry ledger are the mutable state."""

    def __init__(
        self,
        rules: Iterable[Any] = (),
        *,
        level: str = "workflow",
        budget: Budget | None = None,
        ledger: RetryLedger | None = None,
        _entries: Sequence[_Entry] = (),
    ) -> None:
        budget = budget or Budget()
        self._entries: tuple[_Entry, ...] = (*_entries, *(_prepare(r, level, budget) for r in rules))
        self._budgets: tuple[Budget, ...] = (budget,)  # `extend` puts the outer levels' budgets first
        self.budget = budget  # this (innermost) level's budget
        self.ledger = ledger or RetryLedger()

    def extend(
        self,
        rules: Iterable[Any],
        *,
        level: str,
        budget: Budget | None = None,
        ledger: RetryLedger | None = None,
        declared: View | None = None,
        generation: int = 0,
    ) -> GuardrailSet:
        """A set with `rules` added as an inner level (step, tool); the outer rules all stay. Give the
        budget that level counts in (a tool's budget must live as long as the run); a fresh one
        otherwise. The new set has a fresh retry ledger unless one is given. Rules a run above declared
        (a tool's, inherited by a child run) give their `generation` and what they read of that run."""
        new = GuardrailSet(rules, level=level, budget=budget, ledger=ledger, _entries=self._entries)
        if declared is not None or generation:
            added = new._entries[len(self._entries) :]
            new._entries = (
                *self._entries,
                *(replace(e, generation=generation, declared=declared) for e in added),
            )
        new._budgets = tuple(dict.fromkeys([*self._budgets, new.budget]))
        return new

    def for_child(self, declared: View | None = None) -> GuardrailSet:
        """These rules as a child run inherits them: the same budgets (the child's calls count in
        them), one generation further up, and a fresh retry ledger. `declared` (None: not pinned) is
        what this run's own rules keep reading in the child: this run's principal as it knows it, and
        its input, vars and run, whatever the child's file declares or sets."""
        new = GuardrailSet(
            _entries=[
                replace(
                    e,
                    generation=e.generation + 1,
                    declared=declared if e.declared is None else e.declared,
                )
                for e in self._entries
            ]
        )
        new._budgets, new.budget = self._budgets, self.budget
        return new

    @property
    def rules(self) -> tuple[model.Guardrail, ...]:
        return tuple(e.rule for e in self._entries)

    @property
    def budgets(self) -> tuple[Budget, ...]:
        return self._budgets

    def record_tool_call(self, tool: str, args: Any) -> None:
        """Count a tool call that ran, in every level's budget."""
        for budget in self._budgets:
            budget.record_tool_call(tool, args)

    def record_model_call(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        for budget in self._budgets:
            budget.record_model_call(input_tokens, output_tokens, cost)

    def add_model_usage(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        """The tokens and cost of a model call counted at its check, in every level's budget."""
        for budget in self._budgets:
            budget.add_model_usage(input_tokens, output_tokens, cost)

    # -- evaluation --

    def evaluate(
        self,
        hook: str,
        context: Mapping[str, Any],
        *,
        step_ids: Iterable[str] = (),
        ledger: RetryLedger | None = None,
    ) -> Verdict:
        if hook not in HOOKS:
            raise ValueError(f"unknown guardrail hook {hook!r} (one of {', '.join(HOOKS)})")
        ledger = ledger or self.ledger
        steps = set(step_ids)
        payload = context["payload"] if "payload" in context else context.get(PAYLOAD_OF[hook])
        value, redacted = payload, False
        events: list[GuardrailEvent] = []
        tripped: list[tuple[str, _Entry, str]] = []  # (action, entry, reason) of enforced trips
        applicable = [e for e in self._entries if _applies(e.rule, hook, context.get("tool"), steps)]
        # A check's error may quote the payload (CEL: "cannot convert string to double: '...'"): what the
        # enforced redact rules of this hook mask never comes back through a reason or a message.
        redactors = [
            (e.regex, f"[REDACTED:{e.rule.id}]")
            for e in applicable
            if e.rule.action == "redact" and e.rule.mode == "enforce" and e.regex is not None
        ]
        for entry in applicable:
            outcome, reason = _run_check(entry, hook, payload, context)
            if outcome == "pass":
                continue
            reason = _scrub(reason, redactors)
            action = entry.rule.action if outcome == "trip" else "deny"
            if entry.rule.mode == "enforce" and action == "retry":
                limit = entry.rule.max_retries or DEFAULT_MAX_RETRIES
                if ledger.bump(entry.rule.id) > limit:
                    action, reason = "deny", f"{reason}; retries exhausted ({limit})"
            events.append(
                GuardrailEvent(entry.rule.id, hook, outcome, action, entry.rule.mode, reason, entry.level)
            )
            if entry.rule.mode != "enforce":
                continue
            if action == "redact" and entry.regex is not None:
                value, n = mask_matches(value, entry.regex, f"[REDACTED:{entry.rule.id}]")
                redacted = redacted or n > 0
            tripped.append((action, entry, reason))
        return _verdict(tripped, value, redacted, events, context, redactors)

    def mask_only(
        self, hook: str, payload: Any, *, tool: str | None = None, step_ids: Iterable[str] = ()
    ) -> tuple[Any, list[GuardrailEvent]]:
        """`payload` with the matches of every enforced `redact` regex rule at `hook` masked, and an event
        per rule that masked something. No other rule runs and no budget or ledger moves: this masks a
        value before it is logged ahead of the hook itself (the arguments inside a model's answer)."""
        steps = set(step_ids)
        value: Any = payload
        events: list[GuardrailEvent] = []
        for entry in self._entries:
            rule = entry.rule
            if rule.action != "redact" or rule.mode != "enforce" or entry.regex is None:
                continue
            if rule.limits is not None or not _applies(rule, hook, tool, steps):
                continue
            value, n = mask_matches(value, entry.regex, f"[REDACTED:{rule.id}]")
            if n:
                reason = f"{n} match(es) of the rule's pattern masked before the log"
                events.append(GuardrailEvent(rule.id, hook, "trip", "redact", "enforce", reason, entry.level))
        return value, events


def _scrub(text: str, redactors: Sequence[tuple[Any, str]]) -> str:
    """`text` (a reason, a message) with the matches of the hook's enforced redact rules masked."""
    for regex, mask in redactors:
        text = mask_matches(text, regex, mask)[0]
    return text


def _applies(rule: model.Guardrail, hook: str, tool: Any, steps: set[str]) -> bool:
    if rule.limits is None and rule.on != hook:
        return False
    if rule.tools is not None:
        if not isinstance(tool, str) or not any(fnmatch.fnmatchcase(tool, g) for g in rule.tools):
            return False
    return rule.steps is None or bool(steps.intersection(rule.steps))


def _bindings(entry: _Entry, context: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: context.get(name) for name in SCOPE}
    if entry.declared is not None:
        out.update(entry.declared())
    if out["usage"] is None:
        out["usage"] = entry.budget.usage()
    return out


def _run_check(entry: _Entry, hook: str, payload: Any, context: Mapping[str, Any]) -> tuple[str, str]:
    """("pass" | "trip" | "error", reason). Never raises."""
    if entry.setup_error is not None:
        return "error", entry.setup_error
    rule = entry.rule
    try:
        if rule.limits is not None:
            why = entry.budget.exceeded(rule.limits, hook, context.get("tool"), context.get("args"))
            return ("trip", f"budget exceeded: {why}") if why else ("pass", "")
        if entry.check is not None:
            bindings = {k: expr.to_cel(v) for k, v in _bindings(entry, context).items()}
            result = entry.check.evaluate(bindings)
            if result is True:
                return "pass", ""
            if result is False:
                return "trip", f"check is false: {rule.check}"
            return "error", f"check yielded {kind_of(result)}, not bool: {rule.check}"
        if entry.regex is not None:
            n = count_matches(payload, entry.regex)
            return ("trip", f"{n} match(es) of the rule's pattern") if n else ("pass", "")
        if entry.validator is not None:
            return _schema_check(entry.validator, payload)
        return "error", "rule has no check"
    except expr.EvaluationError as exc:
        return "error", f"check error: {exc}"
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        return "error", f"check error: {type(exc).__name__}: {exc}"


def _schema_check(validator: Any, payload: Any) -> tuple[str, str]:
    from interpreter import schemas

    problems = schemas.errors(validator, payload)
    if not problems:
        return "pass", ""
    # reasons never quote the payload: the failing schema rule is named instead
    return "trip", schemas.describe(problems, "payload does not match the schema", quote_values=False)


def _message(
    entry: _Entry, reason: str, context: Mapping[str, Any], redactors: Sequence[tuple[Any, str]] = ()
) -> str:
    """The rule's `message` (a template rendered from the context has the hook's redact rules applied,
    as the payload it may quote has), else a default naming the rule and its (scrubbed) reason."""
    default = f"guardrail '{entry.rule.id}' tripped: {entry.rule.description or reason}"
    raw = entry.rule.message
    try:
        if entry.message is not None and not getattr(entry.message, "constant", False):
            rendered = entry.message.evaluate(_bindings(entry, context))
            text = _scrub(rendered if isinstance(rendered, str) else canonical_json(rendered), redactors)
        elif entry.message is not None:
            text = entry.message.evaluate(_bindings(entry, context))
        elif isinstance(raw, str) and "${{" not in raw:
            text = raw
        else:
            return default
    except Exception:  # noqa: BLE001 - a message that fails to render must not hide the decision
        return default
    if isinstance(text, str):
        return text
    try:
        return canonical_json(text)
    except NotCanonicalizable:
        return default


def _verdict(
    tripped: list[tuple[str, _Entry, str]],
    value: Any,
    redacted: bool,
    events: list[GuardrailEvent],
    context: Mapping[str, Any],
    redactors: Sequence[tuple[Any, str]] = (),
) -> Verdict:
    if not tripped:
        return Verdict("allow", value=value, redacted=redacted, events=tuple(events))
    action = max((a for a, _, _ in tripped), key=ACTION_RANK.__getitem__)
    chosen = [(e, r) for a, e, r in tripped if a == action]
    messages = list(dict.fromkeys(_message(e, r, context, redactors) for e, r in chosen))
    escalation = None
    if action == "escalate":
        entry, _ = chosen[0]
        spec = entry.rule.escalation
        escalation = {
            "rule": entry.rule.id,
            "approvers": list(spec.approvers) if spec else [],
            "timeout_s": model.parse_duration(spec.timeout) if spec and spec.timeout else None,
            "message": messages[0],
            "generation": entry.generation,  # whose file names the approvers: this run's, or one above
        }
    return Verdict(
        action,
        rules=tuple(e.rule.id for e, _ in chosen),
        message="\n".join(messages),
        value=value,
        redacted=redacted,
        events=tuple(events),
        escalation=escalation,
        budgets=tuple((e.level, e.generation) for e, _ in chosen if e.rule.limits is not None),
    )


__all__ = [
    "ACTION_RANK",
    "HOOKS",
    "PAYLOAD_OF",
    "Budget",
    "GuardrailEvent",
    "GuardrailSet",
    "RetryLedger",
    "Verdict",
]
