"""What a run spent, read from its log: the one reading of calls, tokens and cost that resume and replay
restore into budgets (`RunGuard.restore`, `RunGuard.restore_child`) and `charter explain` reports, so
that what explain says a budget counted is what a continued or replayed run enforces (spec §11.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from interpreter import store as s
from interpreter.guardrails import Budget
from interpreter.records import enclosing, once_per_call

_SPENDING = frozenset({s.TOOL_CALLED, s.MODEL_CALLED, s.MODEL_COMPLETED})
# Whether a run goes on, by its last run event (`run.cancelled`: a child its parent gave up on).
_ENDS = {s.RUN_COMPLETED: True, s.RUN_FAILED: True, s.RUN_CANCELLED: True, s.RUN_WAITING: False,
         s.RUN_RESUMED: False, s.RUN_INTERRUPTED: False}  # fmt: skip


def within(path: str, outer: str) -> bool:
    """Whether `path` is `outer` or a node path inside it (`outer/...`, or `outer[i]...`)."""
    return path == outer or path.startswith(outer + "/") or path.startswith(outer + "[")


def spent(events: Iterable[s.Event], continued: Mapping[str, Any] | None = None) -> Iterator[s.Event]:
    """The events that spent from a budget: each call's `tool.called` and `model.called` once, whatever
    its outcome (`once_per_call`: a call made again under its key is the same call), and each answer's
    `model.completed` (its tokens and cost). `continued`: the records of a run about to be continued,
    whose calls that it will meet again are left out, since it counts them when it meets them."""
    events = list(events)
    again = _met_again(events, continued) if continued is not None else set()
    return (e for e in once_per_call(events) if e.kind in _SPENDING and e.seq not in again)


def charge(budget: Budget, event: s.Event) -> None:
    """Count one event of `spent` in `budget`, as the live check (a call) or answer (its usage) did."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    if event.kind == s.TOOL_CALLED:
        budget.record_tool_call(str(payload.get("tool")), payload.get("args"))
    elif event.kind == s.MODEL_CALLED:
        budget.record_model_call()
    else:
        budget.add_model_usage(*model_usage(payload))


def totals(events: Iterable[s.Event], node: str | None = None) -> dict[str, Any]:
    """What one run's log says it spent (within `node` only, when given: `events` are still the whole
    log, whose `step.retrying` events decide which model calls are the same), as budgets count it."""
    budget = Budget()
    for event in spent(events):
        if node is None or within(event.node_path, node):
            charge(budget, event)
    usage = budget.usage()
    del usage["elapsed_s"], usage["repeated_calls"]  # time is the caller's; a streak is no total
    return usage


def ended(events: Iterable[s.Event]) -> bool:
    """Whether the run completed, failed or was cancelled (nothing continues it), by its last run event."""
    return next((_ENDS[e.kind] for e in reversed(list(events)) if e.kind in _ENDS), False)


def finished_around(path: str, records: Mapping[str, Any]) -> bool:
    """Whether the step at `path`, or one around it, finished: a continued run does not enter it again."""
    return any((rec := records.get(p)) is not None and rec.status is not None for p in enclosing(path))


def model_usage(payload: Mapping[str, Any]) -> tuple[int, int, float]:
    """The tokens and cost a `model.completed` payload records."""
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        float(payload.get("cost") or 0.0),
    )


def _met_again(events: list[s.Event], records: Mapping[str, Any]) -> set[int]:
    """The seqs of the logged calls (and answers) that a continued run will meet again, and count then
    as it meets them: those of a step that has not finished, in its current attempt, inside steps that
    have not finished either (it runs again, reusing a logged answer or result, or making again a call
    that was cut off, under the same key). Every other logged call is done with and counts from the
    log: a finished step's, an earlier attempt's (a `step.retrying` of its step or of one around it
    came after it), or one cut off in a step that will not run again (the loser of a join that was
    met), so that a crash neither counts a call twice nor forgets one (spec §11.4)."""
    again: set[int] = set()
    retried: set[str] = set()  # steps with a `step.retrying` later in the log
    for event in reversed(events):
        if event.kind == s.STEP_RETRYING:
            retried.add(event.node_path)
        elif event.kind in _SPENDING:
            around = enclosing(event.node_path)
            if not any(p in retried for p in around) and not finished_around(event.node_path, records):
                again.add(event.seq)
    return again
