"""The interpreter end to end through its Python API, with real SQLite files in tmp directories."""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.workflows import compiled

from interpreter import (
    InputError,
    RunOptions,
    decide_approval,
    fork_run,
    replay_run,
    resume_run,
    run_workflow,
)
from interpreter.runtime import RunSetupError
from interpreter.store import PayloadError, SQLiteEventStore, StoreLockedError, open_store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODULE = "h10_engine_tools"

TOOLS = '''
import asyncio, json, os, threading, time

_lock = threading.Lock()
_active = [0]

def _log(path, entry):
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\\n")

def echo(value, log=None):
    _log(log, {"echo": value})
    return value

def flaky(key, fails, log=None, idempotency_key=None):
    """Fails `fails` times for a given key (counted in the log file), then succeeds."""
    n = sum(1 for line in open(log) if json.loads(line).get("flaky") == key) if os.path.exists(log) else 0
    _log(log, {"flaky": key, "idempotency_key": idempotency_key})
    if n < fails:
        raise RuntimeError(f"flaky failure {n + 1}")
    return {"key": key, "calls": n + 1}

def hang(seconds=30):
    time.sleep(seconds)
    return "woke"

def charge(log, seconds):
    """A write that acts at once and answers late."""
    _log(log, {"charged": True})
    time.sleep(seconds)
    return "charged"

async def slow(value, seconds):
    await asyncio.sleep(seconds)
    return value

async def spin(value, turns):
    """Returns after `turns` turns of the event loop."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return value

def overlap(item, log):
    with _lock:
        _active[0] += 1
        now = _active[0]
    _log(log, {"active": now})
    time.sleep(0.05)
    with _lock:
        _active[0] -= 1
    return item * 2

def bad_result():
    return {"when": object()}

def blob_like():
    return {"$blob": "not a digest"}

def keep(**named):
    return named
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("engine")
    (d / f"{MODULE}.py").write_text(TOOLS)
    return d


def write_flow(workdir: Path, name: str, body: str) -> Path:
    path = workdir / f"{name}.yaml"
    header = f"""\
        charter: "1.0"
        name: {name}
        tools:
          echo: {{python: "{MODULE}:echo", effect: write}}
          flaky: {{python: "{MODULE}:flaky", effect: write}}
          hang: {{python: "{MODULE}:hang", effect: read}}
          slow: {{python: "{MODULE}:slow", effect: read}}
          spin: {{python: "{MODULE}:spin", effect: read}}
          overlap: {{python: "{MODULE}:overlap", effect: read}}
          bad_result: {{python: "{MODULE}:bad_result", effect: read}}
          blob_like: {{python: "{MODULE}:blob_like", effect: write}}
        """
    path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return path


OPTS = RunOptions(allow_modules=(MODULE, "examples.*"))
# Who decides an approval for role:finance must be known to hold it (approvals fail closed).
FINANCE = RunOptions(allow_modules=(MODULE, "examples.*"), claims={"roles": ["finance"]})


def kinds(store: Any, run_id: str) -> list[tuple[str, str]]:
    return [(e.node_path, e.kind) for e in store.events(run_id)]


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------------------------------
# examples


def test_tools_pipeline_example_runs_verifies_and_replays(store: Any) -> None:
    graph = compiled(EXAMPLES / "tools_pipeline.yaml")
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output["count"] == 4
    assert result.output["total"] == 360.5
    assert [line["source"] for line in result.output["lines"]] == ["quote", "quote", "list", "quote"]
    row = store.run(result.run_id)
    assert row.status == "completed" and row.output == result.output
    assert row.workflow_digest == graph.digest and row.workflow_source == graph.source
    assert row.interpreter_version
    events = kinds(store, result.run_id)
    assert ("priced[2]/body/price/body/quote", "step.failed") in events
    assert ("priced[2]/body/price/catch/fallback", "step.completed") in events
    assert store.verify(result.run_id).ok
    replay = replay_run(result.run_id, store=store, options=OPTS)
    assert replay.ok, replay.divergence
    assert replay.events_checked == len(events)


def test_approval_example_waits_then_approves(store: Any) -> None:
    graph = compiled(EXAMPLES / "approval.yaml")
    inputs = {
        "employee": "ann",
        "items": [{"category": "travel", "amount": 900}, {"category": "hotel", "amount": 300}],
    }
    first = run_workflow(graph, inputs, store=store, options=OPTS)
    assert first.status == "waiting" and first.pending == ["finance_ok"]
    assert store.run(first.run_id).status == "waiting"
    done = decide_approval(
        first.run_id, "finance_ok", store=store, person="bob", approved=True, reason="fine", options=FINANCE
    )
    assert done.status == "completed", done.error
    assert done.output == {"booking": "EXP-ANN-120000", "total": 1200.0}
    decided = [e for e in store.events(first.run_id) if e.kind == "approval.decided"]
    assert decided[0].actor == {"sub": "user:bob"}
    assert decided[0].payload["by"] == "bob" and decided[0].payload["reason"] == "fine"
    booked = [e for e in store.events(first.run_id) if e.kind == "tool.completed" and e.node_path == "book"]
    assert booked[0].payload["result"]["approved_by"] == "bob"
    assert store.verify(first.run_id).ok
    assert replay_run(first.run_id, store=store, options=OPTS).ok


def test_approval_denied_fails_with_code_denied(store: Any) -> None:
    graph = compiled(EXAMPLES / "approval.yaml")
    inputs = {"employee": "ann", "items": [{"category": "travel", "amount": 5000}]}
    first = run_workflow(graph, inputs, store=store, options=OPTS)
    result = decide_approval(
        first.run_id, "finance_ok", store=store, person="eve", approved=False, reason="no", options=FINANCE
    )
    assert result.status == "failed"
    assert result.error["code"] == "denied" and "eve" in result.error["message"]
    with pytest.raises(RunSetupError):
        decide_approval(first.run_id, "finance_ok", store=store, person="eve", approved=True)


def test_small_expense_skips_approval(store: Any) -> None:
    graph = compiled(EXAMPLES / "approval.yaml")
    result = run_workflow(
        graph, {"employee": "al", "items": [{"category": "food", "amount": 12.5}]}, store=store, options=OPTS
    )
    assert result.status == "completed"
    assert ("finance_ok", "step.skipped") in kinds(store, result.run_id)


def test_invalid_input_is_an_input_error(store: Any) -> None:
    with pytest.raises(InputError, match="input schema: 'employee' is a required property"):
        run_workflow(compiled(EXAMPLES / "approval.yaml"), {"items": []}, store=store, options=OPTS)


def test_disallowed_module_is_refused_before_running(store: Any, workdir: Path) -> None:
    flow = write_flow(workdir, "refused", "steps:\n  - {id: a, tool: echo, args: {value: 1}}\n")
    with pytest.raises(RunSetupError, match="not allowed"):
        run_workflow(compiled(flow), {}, store=store, options=RunOptions())
    assert store.runs() == []


# --------------------------------------------------------------------------------------------------
# control flow


def test_retry_until_success_records_attempts(store: Any, workdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    flow = write_flow(
        workdir,
        "retrying",
        f"""\
        steps:
          - id: f
            tool: flaky
            args: {{key: a, fails: 2, log: "{log}"}}
            retry: {{attempts: 3, backoff: {{initial: 10ms, max: 20ms}}}}
        output: {{calls: "${{{{ steps.f.output.calls }}}}"}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"calls": 3}
    events = kinds(store, result.run_id)
    assert events.count(("f", "step.retrying")) == 2
    keys = [line["idempotency_key"] for line in log_lines(log)]
    assert keys == [f"{result.run_id}/f/1", f"{result.run_id}/f/2", f"{result.run_id}/f/3"]


def test_a_retried_group_calls_its_tools_again_with_new_keys(
    store: Any, workdir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    flow = write_flow(
        workdir,
        "group_retry",
        f"""\
        steps:
          - id: group
            retry: {{attempts: 2, backoff: {{initial: 10ms}}}}
            steps:
              - {{id: first, tool: flaky, args: {{key: once, fails: 0, log: "{log}"}}}}
              - {{id: second, tool: flaky, args: {{key: twice, fails: 1, log: "{log}"}}}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    keys = [(line["flaky"], line["idempotency_key"]) for line in log_lines(log)]
    run = result.run_id
    assert keys == [
        ("once", f"{run}/group/body/first/1"),
        ("twice", f"{run}/group/body/second/1"),
        ("once", f"{run}/group/body/first/1+group@2"),  # a new call, not a duplicate of the first
        ("twice", f"{run}/group/body/second/1+group@2"),
    ]
    assert replay_run(run, store=store, options=OPTS).ok


def test_retry_on_filter_does_not_retry_other_errors(store: Any, workdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    flow = write_flow(
        workdir,
        "filtered",
        f"""\
        steps:
          - id: f
            tool: flaky
            args: {{key: b, fails: 5, log: "{log}"}}
            retry: {{attempts: 3, backoff: {{initial: 10ms}}, on: [timeout]}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed"
    assert result.error["code"] == "tool" and "flaky failure 1" in result.error["message"]
    assert len(log_lines(log)) == 1


def test_retry_on_listing_a_code_retries_it_even_when_not_retried_by_default(
    store: Any, workdir: Path
) -> None:
    # An expression error is not retried without `on` (another attempt cannot change it)...
    body = """\
        vars: {n: 0, v: 0}
        steps:
          - id: g
            retry: {attempts: 3, backoff: {initial: 1ms}ON}
            steps:
              - {id: inc, set: {n: "${{ vars.n + 1 }}"}}
              - {id: use, set: {v: "${{ vars.n == 1 ? {'a': 1}.b : 7 }}"}}
        output: {n: "${{ vars.n }}", v: "${{ vars.v }}"}
        """
    default = run_workflow(
        compiled(write_flow(workdir, "retry_default", body.replace("ON", ""))), {}, store=store, options=OPTS
    )
    assert (default.status, default.error["code"]) == ("failed", "expression")
    # ... but here it can (the group's first step changes what the second reads): `on` says to (§12.4).
    listed = write_flow(workdir, "retry_listed", body.replace("ON", ", on: [expression]"))
    result = run_workflow(compiled(listed), {}, store=store, options=OPTS)
    assert (result.status, result.output) == ("completed", {"n": 2, "v": 7})
    assert [e.payload["error"]["code"] for e in store.events(result.run_id) if e.kind == "step.retrying"] == [
        "expression"
    ]


def test_a_steps_own_output_and_a_guardrail_are_never_retried(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "never_retried",
        """\
        guardrails:
          - {id: no-x, on: tool.input, tools: [echo], check: "args.value != 'x'", action: deny}
        vars: {caught: false}
        steps:
          - id: t
            try:
              steps:
                - id: out
                  tool: echo
                  args: {value: 1}
                  output: "${{ result.missing }}"
                  retry: {attempts: 3, backoff: {initial: 1ms}, on: [expression]}
              catch: {steps: [{id: caught, set: {caught: true}}]}
          - id: denied
            tool: echo
            args: {value: x}
            retry: {attempts: 3, backoff: {initial: 1ms}, on: [guardrail]}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert (result.status, result.error["code"]) == ("failed", "guardrail")
    assert not [e for e in store.events(result.run_id) if e.kind == "step.retrying"]


def test_an_if_that_does_not_evaluate_fails_its_step_in_the_log_and_for_the_catch(
    store: Any, workdir: Path
) -> None:
    flow = write_flow(
        workdir,
        "if_error",
        """\
        steps:
          - id: t
            try:
              steps:
                - {id: s, if: "input.nope == 1", tool: echo, args: {value: 1}}
              catch:
                steps:
                  - id: c
                    tool: echo
                    args: {value: "${{ [error.step, steps.s.status] }}"}
        output: {caught: "${{ steps.t.output }}"}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert (result.status, result.output) == ("completed", {"caught": ["s", "failed"]})
    logged = [
        (e.kind, e.payload.get("error", {}).get("code"))
        for e in store.events(result.run_id)
        if e.node_path == "t/body/s"
    ]
    assert logged == [("step.started", None), ("step.failed", "expression")]
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_a_value_with_the_logs_reserved_key_fails_its_step_not_the_log(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "reserved_key",
        """\
        vars: {codes: []}
        steps:
          - id: t
            try:
              steps: [{id: call, tool: blob_like, retry: {attempts: 3, on: [tool], backoff: {initial: 1ms}}}]
              catch: {as: e, steps: [{id: c1, set: {codes: "${{ vars.codes + [e.code] }}"}}]}
          - id: u
            try:
              steps: [{id: out, tool: echo, args: {value: 1}, output: "${{ {'$blob': 'x'} }}"}]
              catch: {as: e, steps: [{id: c2, set: {codes: "${{ vars.codes + [e.code] }}"}}]}
        output: {codes: "${{ vars.codes }}"}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert (result.status, result.output) == ("completed", {"codes": ["tool", "expression"]})
    kinds = [e.kind for e in store.events(result.run_id) if e.node_path == "t/body/call"]
    assert kinds == ["step.started", "authz.decided", "tool.called", "tool.failed", "step.failed"]
    assert store.verify(result.run_id).ok
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_hanging_tool_is_cut_off_and_caught(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "hanging",
        """\
        steps:
          - id: guarded
            try:
              steps:
                - {id: h, tool: hang, args: {seconds: 30}, timeout: 200ms}
              catch:
                steps:
                  - {id: recover, tool: echo, args: {value: "${{ error.code + ':' + error.step }}"}}
        output: {result: "${{ steps.guarded.output }}"}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"result": "timeout:h"}
    failed = [e for e in store.events(result.run_id) if e.kind == "step.failed"]
    assert failed[0].payload["caught_by"] == "guarded"
    cut = next(e for e in store.events(result.run_id) if e.kind == "tool.failed")
    assert cut.payload["error"]["code"] == "cancelled"
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_run_timeout_fails_the_run(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "run_timeout",
        "timeout: 200ms\nsteps:\n  - {id: h, tool: slow, args: {value: 1, seconds: 30}}\n",
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout"
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_parallel_any_cancels_the_losers(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "race",
        """\
        steps:
          - id: race
            parallel:
              join: any
              branches:
                fast: [{id: quick, tool: slow, args: {value: fast, seconds: 0.01}}]
                slow: [{id: lazy, tool: slow, args: {value: slow, seconds: 30}}]
        output: {winner: "${{ steps.race.output.fast }}"}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"winner": "fast"}
    events = list(store.events(result.run_id))
    joined = next(e for e in events if e.kind == "parallel.joined")
    assert joined.payload["completed"] == ["fast"] and joined.payload["cancelled"] == ["slow"]
    cancelled = [e for e in events if e.kind == "step.skipped" and e.node_path.endswith("lazy")]
    assert cancelled and cancelled[0].payload["reason"] == "cancelled"
    assert replay_run(result.run_id, store=store, options=OPTS).ok


@pytest.mark.parametrize("turns", range(4))
def test_a_branch_that_finishes_as_the_join_is_met_is_not_a_loser(
    store: Any, workdir: Path, turns: int
) -> None:
    # b finishes `turns` turns of the event loop after a: when that is the turn in which a's win is
    # noticed, b has finished too (its step.completed is logged): completed, not cancelled.
    flow = write_flow(
        workdir,
        f"tie-{turns}",
        f"""\
        steps:
          - id: race
            parallel:
              join: any
              branches:
                a: [{{id: qa, tool: spin, args: {{value: a, turns: 0}}}}]
                b: [{{id: qb, tool: spin, args: {{value: b, turns: {turns}}}}}]
        output: {{race: "${{{{ steps.race.output }}}}"}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    events = list(store.events(result.run_id))
    joined = next(e for e in events if e.kind == "parallel.joined").payload
    b_done = any(e.kind == "step.completed" and e.node_path == "race/b/qb" for e in events)
    assert joined["completed"] == (["a", "b"] if b_done else ["a"])
    assert joined["cancelled"] == ([] if b_done else ["b"])
    assert result.output == {"race": {"a": "a", "b": "b" if b_done else None}}
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_parallel_all_runs_branches_concurrently(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "fan",
        """\
        steps:
          - id: fan
            parallel:
              branches:
                - [{id: a, tool: slow, args: {value: 1, seconds: 0.3}}]
                - [{id: b, tool: slow, args: {value: 2, seconds: 0.3}}]
                - [{id: c, tool: slow, args: {value: 3, seconds: 0.3}}]
        output: {all: "${{ steps.fan.output }}"}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.output == {"all": [1, 2, 3]}
    # Concurrency, without timing: every branch started before any completed.
    events = [
        (e.node_path, e.kind)
        for e in store.events(result.run_id)
        if e.node_path in ("fan/branch-0/a", "fan/branch-1/b", "fan/branch-2/c")
    ]
    started = [i for i, (_, kind) in enumerate(events) if kind == "step.started"]
    completed = [i for i, (_, kind) in enumerate(events) if kind == "step.completed"]
    assert len(started) == 3 and len(completed) == 3 and max(started) < min(completed)


def test_for_each_respects_the_concurrency_limit(store: Any, workdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "overlap.jsonl"
    flow = write_flow(
        workdir,
        "fanout",
        f"""\
        steps:
          - id: each
            for_each:
              in: "${{{{ [1, 2, 3, 4, 5, 6, 7, 8] }}}}"
              concurrency: 3
              steps:
                - {{id: o, tool: overlap, args: {{item: "${{{{ item }}}}", log: "{log}"}}}}
        output: {{doubled: "${{{{ steps.each.output }}}}"}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.output == {"doubled": [2, 4, 6, 8, 10, 12, 14, 16]}
    peak = max(line["active"] for line in log_lines(log))
    assert 1 < peak <= 3


def test_switch_if_set_and_fail(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "routing",
        """\
        vars: {seen: []}
        steps:
          - id: route
            switch:
              - when: input.n > 10
                steps: [{id: big, set: {seen: "${{ vars.seen + ['big'] }}"}}]
              - default: true
                steps: [{id: small, set: {seen: "${{ vars.seen + ['small'] }}"}}]
          - id: stop
            if: input.n < 0
            fail: {message: "negative: ${{ input.n }}", code: negative}
        output: {seen: "${{ vars.seen }}", stop: "${{ steps.stop.status }}"}
        """,
    )
    graph = compiled(flow)
    big = run_workflow(graph, {"n": 20}, store=store, options=OPTS)
    assert big.output == {"seen": ["big"], "stop": "skipped"}
    small = run_workflow(graph, {"n": 1}, store=store, options=OPTS)
    assert small.output == {"seen": ["small"], "stop": "skipped"}
    negative = run_workflow(graph, {"n": -1}, store=store, options=OPTS)
    assert negative.status == "failed"
    assert negative.error["code"] == "negative" and negative.error["message"] == "negative: -1"
    decision = next(e for e in store.events(big.run_id) if e.kind == "decision")
    assert decision.payload["chosen"] == "case-0"
    # an `if` that held is a decision too, written before the step starts, with what it read
    held = [(e.kind, e.payload) for e in store.events(negative.run_id) if e.node_path == "stop"][:2]
    assert held == [
        ("decision", {"step": "if", "expression": "input.n < 0", "values": {"input.n": -1}, "result": True,
                      "chosen": "run"}),
        ("step.started", {"step": "fail", "attempt": 1}),
    ]  # fmt: skip


def test_loop_until_exits_early_and_fails_when_exhausted(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "looping",
        """\
        steps:
          - id: count
            loop:
              max_iterations: 5
              until: steps.tick.output >= input.stop
              steps: [{id: tick, tool: echo, args: {value: "${{ index }}"}}]
        output: {last: "${{ steps.count.output }}"}
        """,
    )
    graph = compiled(flow)
    early = run_workflow(graph, {"stop": 2}, store=store, options=OPTS)
    assert early.status == "completed" and early.output == {"last": 2}
    exhausted = run_workflow(graph, {"stop": 99}, store=store, options=OPTS)
    assert exhausted.status == "failed" and exhausted.error["code"] == "loop_exhausted"
    iterations = [e for e in store.events(exhausted.run_id) if e.kind == "loop.iteration"]
    assert len(iterations) == 5
    # every evaluation of `until` is a decision: what it read, and whether the loop went on
    chose = [(e.payload["values"]["index"], e.payload["result"], e.payload["chosen"])
             for e in store.events(early.run_id) if e.kind == "decision"]  # fmt: skip
    assert chose == [(0, False, "repeat"), (1, False, "repeat"), (2, True, "exit")]
    last = [e.payload for e in store.events(exhausted.run_id) if e.kind == "decision"][-1]
    assert (last["values"]["index"], last["result"], last["chosen"]) == (4, False, None)


def test_a_value_json_cannot_hold_fails_where_it_is_evaluated(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "infinite-set",
        "vars: {n: 0}\nsteps:\n  - {id: a, set: {n: '${{ 1.0 / 0.0 }}'}}\n  - {id: b, set: {n: 2}}\n",
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "expression", result
    assert result.error["step"] == "a" and "no JSON form" in result.error["message"]
    assert store.verify(result.run_id).ok


class RefusesOutputs(SQLiteEventStore):
    """A store that cannot write a run's output (the file and its expressions give only JSON, so
    this is injected)."""

    @contextlib.contextmanager
    def transaction(self):  # type: ignore[no-untyped-def, override]
        with super().transaction() as tx:
            yield _Refusing(tx)


class _Refusing:
    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def append_many(self, run_id: str, events: Any) -> Any:
        events = list(events)
        if any(e.kind == "run.completed" for e in events):
            raise PayloadError("payload of run.completed at <run> is not JSON-serializable (injected)")
        return self._tx.append_many(run_id, events)


def test_an_output_that_cannot_be_written_fails_the_run_after_what_happened(
    tmp_path: Path, workdir: Path
) -> None:
    flow = write_flow(workdir, "unwritable-output", "vars: {n: 0}\nsteps:\n  - {id: a, set: {n: 1}}\n")
    with RefusesOutputs(tmp_path / "charter.db") as store:
        result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
        assert result.status == "failed" and result.error["code"] == "output", result
        assert [e.kind for e in store.events(result.run_id)] == [
            "run.started", "step.started", "vars.set", "step.completed", "run.failed"
        ]  # fmt: skip
        assert store.verify(result.run_id).ok


def test_unserialisable_result_is_a_step_error(store: Any, workdir: Path) -> None:
    flow = write_flow(workdir, "unserialisable", "steps:\n  - {id: b, tool: bad_result}\n")
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and "serialise" in result.error["message"]


def test_model_step_without_a_key_is_refused_before_the_run(
    store: Any, workdir: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    flow = write_flow(
        workdir,
        "agentic",
        """\
        models: {default: {provider: openai, model: gpt-4.1-mini}}
        steps:
          - id: think
            llm: {prompt: "hello"}
        """,
    )
    with pytest.raises(RunSetupError, match="model 'default': openai model: no API key: set OPENAI_API_KEY"):
        run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert store.runs() == []


# --------------------------------------------------------------------------------------------------
# resume, replay, fork


def test_resume_reuses_completed_work(store: Any, workdir: Path, tmp_path: Path) -> None:
    """A run that stopped in the middle (status running, half a log) continues without repeating."""
    log = tmp_path / "effects.jsonl"
    flow = write_flow(
        workdir,
        "resumable",
        f"""\
        steps:
          - {{id: one, tool: echo, args: {{value: 1, log: "{log}"}}}}
          - {{id: two, tool: echo, args: {{value: 2, log: "{log}"}}}}
          - {{id: three, tool: echo, args: {{value: 3, log: "{log}"}}}}
        output: {{sum: "${{{{ steps.one.output + steps.two.output + steps.three.output }}}}"}}
        """,
    )
    full = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert full.output == {"sum": 6}
    # Rebuild a crashed copy: the same run up to `two`'s completion, still "running".
    crashed = store.create_run(
        "resumable", workflow_source=flow.read_text(), inputs={}, principal="t", interpreter_version="x"
    )
    events = list(store.events(full.run_id))
    cut = next(e.seq for e in events if e.node_path == "two" and e.kind == "step.completed")
    store.append_many(
        crashed.run_id,
        [
            __import__("interpreter.store", fromlist=["NewEvent"]).NewEvent(
                e.kind, e.node_path, e.payload, e.actor
            )
            for e in events
            if e.seq <= cut
        ],
    )
    log.write_text("")
    result = resume_run(crashed.run_id, store=store, options=OPTS)
    assert result.status == "completed" and result.output == {"sum": 6}
    assert [line["echo"] for line in log_lines(log)] == [3]  # only the unfinished step ran
    assert store.verify(crashed.run_id).ok


def test_replay_detects_an_edited_workflow(store: Any, workdir: Path) -> None:
    body = """\
        steps:
          - {id: a, tool: echo, args: {value: 1}}
          - {id: b, tool: echo, args: {value: "${{ steps.a.output + 1 }}"}}
        output: {b: "${{ steps.b.output }}"}
        """
    flow = write_flow(workdir, "editable", body)
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert replay_run(result.run_id, store=store, options=OPTS).ok
    edited = write_flow(workdir, "editable_v2", body.replace("steps.a.output + 1", "steps.a.output + 2"))
    replay = replay_run(result.run_id, store=store, graph=compiled(edited), options=OPTS)
    assert not replay.ok
    assert replay.divergence.node_path == "b"
    assert replay.divergence.expected == {"value": 2} and replay.divergence.got == {"value": 3}


def test_replay_detects_edited_tool_code(store: Any, tmp_path: Path) -> None:
    module = tmp_path / "h10_edit_tools.py"
    module.write_text("def one():\n    return 1\n\ndef two():\n    return 2\n")
    flow = tmp_path / "code.yaml"
    flow.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: code
            tools:
              one: {python: "h10_edit_tools:one", effect: read}
              two: {python: "h10_edit_tools:two", effect: read}
            steps:
              - {id: first, tool: one}
              - {id: second, tool: two}
            """
        )
    )
    options = RunOptions(allow_modules=("h10_edit_tools",))
    result = run_workflow(compiled(flow), {}, store=store, options=options)
    assert result.status == "completed"
    module.write_text("def one():\n    return 1\n\ndef two():\n    return 2 + 0\n")
    replay = replay_run(result.run_id, store=store, options=options)
    assert not replay.ok and replay.divergence.node_path == "second"
    assert "code of tool 'two'" in replay.divergence.reason


def test_fork_reuses_results_before_the_node(store: Any, workdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "effects.jsonl"
    flow = write_flow(
        workdir,
        "forkable",
        f"""\
        steps:
          - {{id: one, tool: echo, args: {{value: 1, log: "{log}"}}}}
          - {{id: two, tool: echo, args: {{value: 2, log: "{log}"}}}}
          - {{id: three, tool: echo, args: {{value: 3, log: "{log}"}}}}
        output: {{values: "${{{{ [steps.one.output, steps.two.output, steps.three.output] }}}}"}}
        """,
    )
    original = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    log.write_text("")
    forked = fork_run(original.run_id, "two", store=store, options=OPTS)
    assert forked.run_id != original.run_id and forked.output == original.output
    assert [line["echo"] for line in log_lines(log)] == [2, 3]
    started = next(iter(store.events(forked.run_id)))
    assert started.payload["forked_from"] == {"run_id": original.run_id, "node_path": "two"}
    assert store.verify(forked.run_id).ok
    with pytest.raises(RunSetupError, match="did not run"):
        fork_run(original.run_id, "nope", store=store, options=OPTS)


def test_a_forks_copies_keep_the_attempt_and_mark_every_reused_step(
    store: Any, workdir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "effects.jsonl"
    flow = write_flow(
        workdir,
        "fork_copies",
        f"""\
        steps:
          - {{id: skipped, if: "false", tool: echo, args: {{value: 0}}}}
          - id: g
            steps:
              - id: f
                tool: flaky
                args: {{key: fc, fails: 2, log: "{log}"}}
                retry: {{attempts: 3, backoff: {{initial: 1ms}}}}
          - {{id: last, tool: echo, args: {{value: 1}}}}
        """,
    )
    original = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert original.status == "completed"
    forked = fork_run(original.run_id, "last", store=store, options=OPTS)
    copies = {
        e.node_path: e.payload for e in store.events(forked.run_id) if "reused_from" in (e.payload or {})
    }
    assert set(copies) == {"skipped", "g", "g/body/f"}
    assert all(p["reused_from"] == original.run_id for p in copies.values())
    assert (copies["g/body/f"]["attempt"], copies["g"]["attempt"]) == (3, 1)


def test_a_fork_that_pauses_keeps_what_it_reused_inside_a_group(store: Any, workdir: Path) -> None:
    """A fork reuses a finished group; continued after an approval, its steps still read the group's
    inner step (the fork's own log holds the reused descendants)."""
    flow = write_flow(
        workdir,
        "fork-then-pause",
        """        vars: {x: 0}
        steps:
          - id: g
            steps:
              - {id: c, set: {x: 5}}
          - {id: ok, approval: {message: go?}}
          - {id: use, set: {x: "${{ steps.c.output.x + 1 }}"}}
        output: {x: "${{ vars.x }}"}
        """,
    )
    original = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    forked = fork_run(original.run_id, "ok", store=store, options=OPTS)
    assert forked.status == "waiting" and forked.pending == ["ok"]
    done = decide_approval(forked.run_id, "ok", store=store, person="bob", approved=True, options=OPTS)
    assert done.status == "completed", done.error
    assert done.output == {"x": 6}
    reused = [e.node_path for e in store.events(forked.run_id) if (e.payload or {}).get("reused_from")]
    assert reused == ["g/body/c", "g"]
    assert store.verify(forked.run_id).ok


def test_concurrent_sets_keep_the_order_they_finished_in_through_resume_fork_and_replay(
    store: Any, workdir: Path
) -> None:
    """Items that `set` one variable finish out of list order (1, then 0; item 2 waits for a person
    first): resume, a fork and replay, which meet the items in list order, leave `vars` as the log
    has it (spec §13.8)."""
    flow = write_flow(
        workdir,
        "racing-sets",
        """        vars: {order: []}
        steps:
          - id: fe
            for_each:
              in: [0.3, 0.02, 0.01]
              concurrency: 3
              steps:
                - {id: nap, tool: slow, args: {value: "${{ index }}", seconds: "${{ item }}"}}
                - {id: gate, if: "index == 2", approval: {message: go}}
                - {id: acc, set: {order: "${{ vars.order + [index] }}"}}
        output: {order: "${{ vars.order }}"}
        """,
    )
    first = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert first.status == "waiting" and first.pending == ["fe[2]/body/gate"]
    done = decide_approval(
        first.run_id, "fe[2]/body/gate", store=store, person="bo", approved=True, options=OPTS
    )
    assert done.status == "completed" and done.output == {"order": [1, 0, 2]}, done
    replayed = replay_run(first.run_id, store=store, options=OPTS)
    assert replayed.ok, replayed.divergence
    forked = fork_run(first.run_id, "fe[2]/body/acc", store=store, options=OPTS)
    assert forked.status == "completed" and forked.output == {"order": [1, 0, 2]}, forked
    copied = [(e.node_path, e.payload) for e in store.events(forked.run_id) if e.kind == "vars.set"]
    assert copied == [  # each at its own step, as far as it still holds
        ("fe[0]/body/acc", {"vars": {"order": [1, 0]}}),
        ("fe[2]/body/acc", {"vars": {"order": [1, 0, 2]}}),
    ]
    assert replay_run(forked.run_id, store=store, options=OPTS).ok


def test_a_failed_item_or_branch_stops_its_siblings_from_starting_another_step(
    store: Any, workdir: Path
) -> None:
    """Item 1 fails in the turn of the event loop in which item 2's call returns: item 2 starts no
    further step (its `set` and its write would act after the step failed, spec §13.6); a parallel
    branch likewise once another branch failed or the join was met (§13.5)."""
    flow = write_flow(
        workdir,
        "fail-fast",
        """        vars: {after: []}
        steps:
          - id: fe
            for_each:
              in: [0, 1, 2]
              concurrency: 3
              steps:
                - {id: s, tool: spin, args: {value: "${{ item }}", turns: 3}}
                - {id: boom, if: "item == 1", fail: {code: boom, message: "item 1 failed"}}
                - {id: mark, set: {after: "${{ vars.after + [item] }}"}}
                - {id: wr, tool: echo, args: {value: "${{ item }}"}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "boom"
    started = {e.node_path for e in store.events(result.run_id) if e.kind in ("step.started", "vars.set")}
    assert "fe[0]/body/mark" in started  # item 0 finished its call first: it went on before the failure
    assert not {p for p in started if p.startswith("fe[2]/") and p != "fe[2]/body/s"}
    race = write_flow(
        workdir,
        "join-any-stops",
        """        steps:
          - id: p
            parallel:
              join: any
              branches:
                - [{id: a, tool: spin, args: {value: 1, turns: 3}}]
                - [{id: b, tool: spin, args: {value: 2, turns: 3}}, {id: b2, tool: echo, args: {value: b}}]
        """,
    )  # both calls return in one turn: branch 0 has then won, branch 1 must not go on to its write
    won = run_workflow(compiled(race), {}, store=store, options=OPTS)
    assert won.status == "completed", won
    started = [e.node_path for e in store.events(won.run_id) if e.kind == "step.started"]
    assert started == ["p", "p/branch-0/a", "p/branch-1/b"]


def test_a_workflow_tool_that_continues_its_waiting_child_is_one_call_for_budgets(
    store: Any, workdir: Path
) -> None:
    """Each call's child run waits for a person; continuing the call (same idempotency key, same child)
    logs `tool.called` again, but budgets count the call once (spec §11.4): two calls fit a limit of 2."""
    write_flow(
        workdir,
        "needs-ok",
        """        input: {type: object, properties: {n: {type: integer}}}
        steps:
          - {id: ok, approval: {message: "ok for ${{ input.n }}?"}}
        output: {n: "${{ input.n }}"}
        """,
    )
    parent = workdir / "two-oks.yaml"
    parent.write_text(
        textwrap.dedent(f"""\
        charter: "1.0"
        name: two-oks
        tools:
          kid: {{workflow: {workdir / "needs-ok.yaml"}, effect: write}}
        guardrails:
          - {{id: budget, limits: {{max_tool_calls: 2}}}}
        steps:
          - {{id: c1, tool: kid, args: {{n: 1}}}}
          - {{id: c2, tool: kid, args: {{n: 2}}}}
        output: {{n: "${{{{ [steps.c1.output.n, steps.c2.output.n] }}}}"}}
        """)
    )
    result = run_workflow(compiled(parent), {}, store=store, options=OPTS)
    for _ in range(2):
        assert result.status == "waiting", result.error
        (child,) = [r for r in store.runs() if r.status == "waiting" and r.parent_run_id == result.run_id]
        decide_approval(child.run_id, "ok", store=store, person="bo", approved=True, options=OPTS)
        result = store.run(result.run_id)
    assert result.status == "completed" and result.output == {"n": [1, 2]}, result.error
    called = [e.node_path for e in store.events(result.run_id) if e.kind == "tool.called"]
    assert called == ["c1", "c1", "c2", "c2"]  # each continued once


def test_replay_and_resume_of_decided_groups_reproduce_what_their_siblings_did(
    tmp_path: Path, workdir: Path
) -> None:
    """A sibling that went on after the group was decided (it ran before) runs again in replay and is
    reused on resume: the group's early end stops only steps the log has no outcome for."""
    join_any = write_flow(
        workdir,
        "decided-any",
        """        vars: {x: initial}
        steps:
          - id: p
            parallel:
              join: any
              branches:
                a: [{id: a1, tool: slow, args: {value: 1, seconds: 0.3}}]
                b:
                  - {id: b1, set: {x: set by b}}
                  - {id: b2, tool: slow, args: {value: 2, seconds: 0.01}}
                  - {id: b3, tool: slow, args: {value: 3, seconds: 5}}
          - {id: after, tool: echo, args: {value: after}}
        output: {x: "${{ vars.x }}"}
        """,
    )
    fail_fast = write_flow(
        workdir,
        "decided-each",
        """        steps:
          - id: fe
            for_each:
              in: [0.3, 0.01]
              concurrency: 2
              steps:
                - {id: s1, tool: slow, args: {value: "${{ item }}", seconds: "${{ item }}"}}
                - {id: s2, if: "item > 0.1", fail: {message: late failure}}
                - {id: s3, tool: slow, args: {value: 0, seconds: 0}}
        """,
    )

    class LockedAtJoin(SQLiteEventStore):  # every commit carrying the join meets a locked file
        block = True

        def append_many(self, run_id, events):  # type: ignore[no-untyped-def]
            events = list(events)
            if self.block and any(e.kind == "parallel.joined" for e in events):
                raise StoreLockedError(f"{self.path}: locked (injected)")
            return super().append_many(run_id, events)

    with LockedAtJoin(tmp_path / "charter.db") as store:
        with pytest.raises(StoreLockedError):  # at the write after the join: the run stops there
            run_workflow(compiled(join_any), {}, store=store, options=OPTS)
        store.block = False
        (stopped,) = store.runs()
        resumed = resume_run(stopped.run_id, store=store, options=OPTS)
        assert resumed.status == "completed" and resumed.output == {"x": "set by b"}, resumed
        assert replay_run(stopped.run_id, store=store, options=OPTS).ok
        failed = run_workflow(compiled(fail_fast), {}, store=store, options=OPTS)
        assert failed.status == "failed" and failed.error["message"] == "late failure"
        replayed = replay_run(failed.run_id, store=store, options=OPTS)
        assert replayed.ok, replayed.divergence


def test_a_write_whose_step_then_fails_is_not_repeated(tmp_path: Path, workdir: Path) -> None:
    """The call returned, then the step failed (its `output` does not evaluate) and a `try` caught it:
    the write's completion was committed at once all the same (waiting out a locked file)."""
    log = tmp_path / "writes.jsonl"
    flow = write_flow(
        workdir,
        "write-then-fail",
        f"""        steps:
          - id: g
            try:
              steps: [{{id: w, tool: echo, args: {{value: charge, log: "{log}"}}, output: "${{{{ result.nope }}}}"}}]
              catch:
                steps: []
        """,
    )

    class LockedOnce(SQLiteEventStore):
        block = True

        def append_many(self, run_id, events):  # type: ignore[no-untyped-def]
            events = list(events)
            if self.block and any(e.kind == "tool.completed" for e in events):
                self.block = False
                raise StoreLockedError(f"{self.path}: locked (injected)")
            return super().append_many(run_id, events)

    with LockedOnce(tmp_path / "charter.db") as store:
        result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
        assert result.status == "completed" and not store.block, result
    assert log.read_text().count("charge") == 1


def test_replay_of_a_retried_group_whose_set_reads_its_own_variable(tmp_path: Path, workdir: Path) -> None:
    """Each attempt's `set` read the variable as the attempt before left it; replay, which needs one
    attempt, evaluates the last one's `set` against the same values."""
    flow = write_flow(
        workdir,
        "retried-set",
        f"""        vars: {{n: 0}}
        steps:
          - id: g
            retry: {{attempts: 2, backoff: {{initial: 1ms}}}}
            steps:
              - {{id: inc, set: {{n: "${{{{ vars.n + 1 }}}}"}}}}
              - {{id: f, tool: flaky, args: {{key: k, fails: 1, log: "{tmp_path / "flaky.jsonl"}"}}}}
        output: {{n: "${{{{ vars.n }}}}"}}
        """,
    )
    with open_store(tmp_path / "charter.db") as store:
        result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
        assert result.status == "completed" and result.output == {"n": 2}, result
        replayed = replay_run(result.run_id, store=store, options=OPTS)
        assert replayed.ok, replayed.divergence


CHILDREN = {
    "fails": "- {id: boom, fail: {code: nope, message: child failed}}",
    "waits": "- {id: ok, approval: {message: please}}",
    "is-cut-off": "- {id: long, tool: slow, args: {value: 1, seconds: 30}}",  # by the step's timeout
}


@pytest.mark.parametrize("child", sorted(CHILDREN))
def test_a_run_with_a_child_that_failed_waits_or_was_cut_off_replays(
    store: Any, workdir: Path, child: str
) -> None:
    """Replay takes a workflow step's outcome from the log: a failure (caught here), a child still
    waiting for a person, or one cut off by a timeout is reproduced, not reported as a divergence."""
    write_flow(workdir, f"child-{child}", f"steps:\n  {CHILDREN[child]}\n")
    parent = write_flow(
        workdir,
        f"parent-of-{child}",
        f"""\
        vars: {{x: 0}}
        steps:
          - id: guard
            try:
              steps:
                - {{id: sub, timeout: 300ms, workflow: {{path: child-{child}.yaml}}}}
              catch:
                steps:
                  - {{id: handled, set: {{x: 1}}}}
        output: {{x: "${{{{ vars.x }}}}"}}
        """,
    )
    result = run_workflow(compiled(parent), {}, store=store, options=OPTS)
    assert result.status == ("waiting" if child == "waits" else "completed"), result.error
    replayed = replay_run(result.run_id, store=store, options=OPTS)
    assert replayed.ok, replayed.divergence


def test_a_for_each_item_waiting_for_a_person_keeps_its_slot(store: Any, workdir: Path) -> None:
    """concurrency 2 over 5 items that each need an approval: two are asked at a time, not all five."""
    flow = write_flow(
        workdir,
        "approve-each",
        """\
        steps:
          - id: each
            for_each:
              in: "${{ [1, 2, 3, 4, 5] }}"
              concurrency: 2
              steps:
                - {id: ok, approval: {message: "item ${{ item }}?"}}
        """,
    )
    waiting = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert waiting.status == "waiting" and waiting.pending == ["each[0]/body/ok", "each[1]/body/ok"]
    after = decide_approval(
        waiting.run_id, "each[0]/body/ok", store=store, person="bob", approved=True, options=OPTS
    )
    assert after.status == "waiting" and sorted(after.pending) == ["each[1]/body/ok", "each[2]/body/ok"]


@pytest.mark.parametrize("where", ["run", "group"])
def test_replay_tells_a_call_cut_by_a_join_from_one_cut_by_a_later_timeout(
    store: Any, workdir: Path, where: str
) -> None:
    """The race's loser was cancelled by the join; a later step timed out (the run's or a group's
    timeout). Replay must not blame the timeout for the loser (it ended the run at the race)."""
    steps = """\
        - id: race
          parallel:
            join: any
            branches:
              - [{id: quick, tool: slow, args: {value: 1, seconds: 0}}]
              - [{id: laggard, tool: slow, args: {value: 2, seconds: 30}}]
        - {id: after, tool: slow, args: {value: 3, seconds: 0}}
        - {id: tooslow, tool: slow, args: {value: 4, seconds: 30}}
    """
    if where == "run":
        body = "timeout: 1s\nsteps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    else:
        body = "steps:\n  - id: group\n    timeout: 1s\n    steps:\n" + textwrap.indent(
            textwrap.dedent(steps), "      "
        )
    flow = write_flow(workdir, f"race-then-timeout-{where}", body)
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout", result.error
    replayed = replay_run(result.run_id, store=store, options=OPTS)
    assert replayed.ok, replayed.divergence


def test_a_decision_after_the_approval_expired_is_refused_and_the_timeout_decides(
    store: Any, workdir: Path
) -> None:
    flow = write_flow(
        workdir,
        "late-approval",
        "steps:\n  - {id: gate, approval: {message: ok?, timeout: 200ms, on_timeout: deny}}\n",
    )
    waiting = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert waiting.status == "waiting"
    with pytest.raises(RunSetupError, match="'system:timeout' is a name the runtime decides as"):
        decide_approval(
            waiting.run_id, "gate", store=store, person="system:timeout", approved=True, options=OPTS
        )
    time.sleep(0.3)  # past the deadline
    with pytest.raises(RunSetupError, match="expired at .*: its timeout decided, not bob; run .* is failed"):
        decide_approval(waiting.run_id, "gate", store=store, person="bob", approved=True, options=OPTS)
    decided = [e.payload for e in store.events(waiting.run_id) if e.kind == "approval.decided"]
    assert [(d["decision"], d["by"]) for d in decided] == [("denied", "system:timeout")]


def test_a_workflow_without_output_returns_an_empty_mapping(store: Any, workdir: Path) -> None:
    flow = write_flow(workdir, "no-output", "steps:\n  - {id: a, set: {x: 1}}\nvars: {x: 0}\n")
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed" and result.output == {}  # spec §5: always a mapping


def test_child_workflow_is_a_linked_run(store: Any, workdir: Path) -> None:
    write_flow(
        workdir,
        "child",
        """\
        input: {type: object, properties: {x: {type: integer}}}
        steps:
          - {id: doubled, tool: echo, args: {value: "${{ input.x * 2 }}"}}
        output: {y: "${{ steps.doubled.output }}"}
        """,
    )
    parent = write_flow(
        workdir,
        "parent",
        """\
        steps:
          - id: call
            workflow: {path: child.yaml, input: {x: 21}}
        output: {answer: "${{ steps.call.output.y }}"}
        """,
    )
    result = run_workflow(compiled(parent), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"answer": 42}
    children = [r for r in store.runs() if r.parent_run_id == result.run_id]
    assert len(children) == 1 and children[0].parent_node == "call" and children[0].status == "completed"


RETRIED_CALL = """\
        steps:
          - id: call
            workflow: {path: flaky_child.yaml}
            retry: {attempts: 2, backoff: {initial: 1ms}}
        output: {calls: "${{ steps.call.output.calls }}"}
        """
RETRIED_GROUP = """\
        steps:
          - id: group
            retry: {attempts: 2, backoff: {initial: 1ms}}
            steps:
              - {id: call, workflow: {path: flaky_child.yaml}}
        output: {calls: "${{ steps.call.output.calls }}"}
        """


@pytest.mark.parametrize("body", [RETRIED_CALL, RETRIED_GROUP], ids=["retried-step", "retried-group"])
def test_retried_workflow_step_runs_a_new_child(store: Any, workdir: Path, tmp_path: Path, body: str) -> None:
    """A retry of the workflow step, or of a step around it, starts a new child run (found by the
    call's idempotency key), not the failed one again."""
    log = tmp_path / "flaky.jsonl"
    write_flow(
        workdir,
        "flaky_child",
        f"""\
        steps:
          - {{id: once, tool: flaky, args: {{key: child, fails: 1, log: "{log}"}}}}
        output: {{calls: "${{{{ steps.once.output.calls }}}}"}}
        """,
    )
    parent = write_flow(workdir, "retry_parent", body)
    result = run_workflow(compiled(parent), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"calls": 2}  # the second child called the tool a second time
    children = sorted(
        (r for r in store.runs() if r.parent_run_id == result.run_id), key=lambda r: r.created_at
    )
    assert [c.status for c in children] == ["failed", "completed"]
    keys = [line["idempotency_key"] for line in log_lines(log)]
    assert [key.split("/")[0] for key in keys] == [c.run_id for c in children]
    assert all("+" not in key for key in keys)  # a child's keys are its own, not its parent's attempts


def test_workflow_tool_runs_a_child(store: Any, workdir: Path) -> None:
    write_flow(
        workdir,
        "child_tool",
        """\
        input: {type: object}
        steps:
          - {id: shout, tool: echo, args: {value: "${{ input.word + '!' }}"}}
        output: {loud: "${{ steps.shout.output }}"}
        """,
    )
    parent = workdir / "tool_parent.yaml"
    parent.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: tool-parent
            tools:
              shout: {workflow: child_tool.yaml, effect: read}
            steps:
              - {id: s, tool: shout, args: {word: hey}}
            output: {said: "${{ steps.s.output.loud }}"}
            """
        )
    )
    result = run_workflow(compiled(parent), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"said": "hey!"}
    assert [r.parent_node for r in store.runs() if r.parent_run_id == result.run_id] == ["s"]


def test_parallel_first_n_and_continue_on_failure(store: Any, workdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    flow = write_flow(
        workdir,
        "first_n",
        f"""\
        steps:
          - id: two
            parallel:
              join: first-n
              n: 2
              branches:
                - [{{id: a, tool: slow, args: {{value: a, seconds: 0.01}}}}]
                - [{{id: b, tool: slow, args: {{value: b, seconds: 30}}}}]
                - [{{id: c, tool: slow, args: {{value: c, seconds: 0.02}}}}]
          - id: tolerant
            parallel:
              on_failure: continue
              branches:
                ok: [{{id: fine, tool: echo, args: {{value: 1}}}}]
                broken: [{{id: boom, tool: flaky, args: {{key: z, fails: 9, log: "{log}"}}}}]
        output: {{two: "${{{{ steps.two.output }}}}", tolerant: "${{{{ steps.tolerant.output }}}}"}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"two": ["a", None, "c"], "tolerant": {"ok": 1, "broken": None}}
    joins = [e.payload for e in store.events(result.run_id) if e.kind == "parallel.joined"]
    assert joins[0]["cancelled"] == ["branch-1"] and joins[1]["failed"] == ["broken"]
    assert replay_run(result.run_id, store=store, options=OPTS).ok
    from interpreter.explain import build_trace, format_text

    explained = format_text(build_trace(store, result.run_id))
    assert "two: join first-n: completed branch-0, branch-2; failed none; cancelled branch-1" in explained
    assert "tolerant: join all: completed ok; failed broken" in explained


def test_a_join_that_can_no_longer_be_satisfied_fails_with_code_parallel(
    store: Any, workdir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    flow = write_flow(
        workdir,
        "unsatisfiable",
        f"""\
        steps:
          - id: both
            parallel:
              join: first-n
              n: 2
              on_failure: continue
              branches:
                - [{{id: fine, tool: echo, args: {{value: 1}}}}]
                - [{{id: boom, tool: flaky, args: {{key: z, fails: 9, log: "{log}"}}}}]
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error is not None
    assert result.error["code"] == "parallel"  # what `retry: {on: [parallel]}` and `catch` match
    assert "only 1 of the 2 branches needed succeeded" in result.error["message"]
    assert result.error["details"]["first_error"]["code"] == "tool"


def test_an_unsatisfiable_join_is_retried_only_if_its_failure_is(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "unsatisfiable_for_good",
        """\
        steps:
          - id: both
            retry: {attempts: 3, backoff: {initial: 10ms}}
            parallel:
              join: first-n
              n: 2
              on_failure: continue
              branches:
                - [{id: fine, tool: echo, args: {value: 1}}]
                - [{id: invalid, tool: echo, args: {}}]
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "parallel"
    assert result.error["retryable"] is False  # invalid arguments stay invalid: no retry
    assert ("both", "step.retrying") not in kinds(store, result.run_id)


def test_replay_notices_a_removed_step(store: Any, workdir: Path) -> None:
    long = write_flow(
        workdir,
        "removable",
        """\
        steps:
          - {id: a, tool: echo, args: {value: 1}}
          - {id: extra, tool: echo, args: {value: 2}}
        output: {a: "${{ steps.a.output }}"}
        """,
    )
    short = write_flow(
        workdir,
        "removable_v2",
        """\
        steps:
          - {id: a, tool: echo, args: {value: 1}}
        output: {a: "${{ steps.a.output }}"}
        """,
    )
    result = run_workflow(compiled(long), {}, store=store, options=OPTS)
    replay = replay_run(result.run_id, store=store, graph=compiled(short), options=OPTS)
    assert not replay.ok and replay.divergence.node_path == "extra"


# --------------------------------------------------------------------------------------------------
# per-run resources, usage in the run's end event, MCP commands checked before a run


def _closing_tool_runner(
    monkeypatch: pytest.MonkeyPatch, closed: list[str], *, fail_first: bool = False
) -> None:
    """Wrap the tool runner so that every tool step registers a closer on its run."""
    from interpreter.steps import STEP_RUNNERS

    original = STEP_RUNNERS["tool"]

    async def runner(ex: Any, node: Any, scope: Any, path: str, attempt: int) -> Any:
        async def close() -> None:
            closed.append(path)
            if fail_first and len(closed) == 1:
                raise RuntimeError("closing failed")

        ex.closers.append(close)
        return await original(ex, node, scope, path, attempt)

    monkeypatch.setitem(STEP_RUNNERS, "tool", runner)


def test_run_closers_are_awaited_newest_first_when_the_run_ends(
    store: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(
        workdir,
        "closers",
        """\
        steps:
          - {id: a, tool: echo, args: {value: 1}}
          - {id: b, tool: echo, args: {value: 2}}
        output: {b: "${{ steps.b.output }}"}
        """,
    )
    closed: list[str] = []
    _closing_tool_runner(monkeypatch, closed, fail_first=True)
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "completed" and result.output == {"b": 2}  # a failing closer hides nothing
    assert closed == ["b", "a"]


def test_run_closers_are_awaited_when_the_run_fails(
    store: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(
        workdir,
        "closers_failing",
        """\
        steps:
          - {id: a, tool: echo, args: {value: 1}}
          - {id: boom, fail: {message: stop}}
        """,
    )
    closed: list[str] = []
    _closing_tool_runner(monkeypatch, closed)
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and closed == ["a"]


def test_run_end_events_carry_the_model_usage(store: Any, workdir: Path) -> None:
    from interpreter.agent import usage_of_events

    graph = compiled(EXAMPLES / "sequential.yaml")
    inputs = {"document": "ACME Corp sells Globex 1,250,000 EUR of parts until 2027-06-30."}
    result = run_workflow(graph, inputs, store=store, options=OPTS)
    assert result.status == "completed", result.error
    events = list(store.events(result.run_id))
    usage = events[-1].payload["usage"]
    assert events[-1].kind == "run.completed"
    assert usage == usage_of_events(events).to_dict() and usage["model_calls"] >= 3
    assert usage["tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0

    flow = write_flow(workdir, "usage_failing", "steps:\n  - {id: boom, fail: {message: stop}}\n")
    failed = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    end = list(store.events(failed.run_id))[-1]
    assert end.kind == "run.failed" and end.payload["usage"]["model_calls"] == 0
    assert end.payload["usage"]["tokens"] == 0


@pytest.mark.parametrize(
    "command", [["definitely-not-allowed-server"], ["python", "-m", "not_allowed_pkg.server"]]
)
def test_a_disallowed_mcp_command_is_a_setup_error_before_the_run(
    store: Any, workdir: Path, command: list[str]
) -> None:
    from interpreter.runtime import SetupPolicyError

    flow = workdir / "mcp_disallowed.yaml"
    flow.write_text(
        textwrap.dedent(
            f"""\
            charter: "1.0"
            name: mcp_disallowed
            tools:
              search: {{mcp: {{command: {json.dumps(command)}}}, effect: read}}
            steps:
              - {{id: s, tool: search, args: {{q: x}}}}
            """
        )
    )
    with pytest.raises(SetupPolicyError, match="is not allowed"):
        run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert list(store.runs()) == []


def test_a_forked_run_counts_only_its_own_model_calls(store: Any) -> None:
    from interpreter.agent import usage_of_events

    graph = compiled(EXAMPLES / "sequential.yaml")
    inputs = {"document": "ACME Corp sells Globex 1,250,000 EUR of parts until 2027-06-30."}
    first = run_workflow(graph, inputs, store=store, options=OPTS)
    forked = fork_run(first.run_id, "report", store=store, options=OPTS, graph=graph)
    assert forked.status == "completed", forked.error
    events = list(store.events(forked.run_id))
    assert events[-1].payload["usage"] == usage_of_events(events).to_dict()
    assert events[-1].payload["usage"]["model_calls"] == 1  # the report; the rest was reused


DURABILITY_TOOLS = '''
import sqlite3

def completed(db, idempotency_key=None):
    """The steps whose completion another connection can read when this call starts."""
    run_id = idempotency_key.split("/")[0]
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT node_path FROM events WHERE run_id = ? AND kind = 'step.completed' ORDER BY seq", (run_id,)
        ).fetchall()
    return [r[0] for r in rows]
'''


def test_full_durability_commits_each_completion_before_the_next_step_starts(tmp_path: Path) -> None:
    (tmp_path / "h17_durability_tools.py").write_text(DURABILITY_TOOLS)
    db = tmp_path / "full.db"
    flow = tmp_path / "durable.yaml"
    flow.write_text(
        textwrap.dedent(
            f"""\
            charter: "1.0"
            name: durable
            tools:
              completed: {{python: "h17_durability_tools:completed", effect: read}}
            steps:
              - {{id: a, tool: completed, args: {{db: "{db}"}}}}
              - {{id: b, tool: completed, args: {{db: "{db}"}}}}
              - {{id: c, tool: completed, args: {{db: "{db}"}}}}
            output: {{b: "${{{{ steps.b.output }}}}", c: "${{{{ steps.c.output }}}}"}}
            """
        )
    )
    options = RunOptions(allow_modules=("h17_durability_tools",), durability="full")
    st = open_store(db, durability="full")
    try:
        result = run_workflow(compiled(flow), {}, store=st, options=options)
    finally:
        st.close()
    assert result.status == "completed", result.error
    assert result.output == {"b": ["a"], "c": ["a", "b"]}  # read-only steps too: no group commit


def test_workflow_budget_halts_the_run_through_try_catch(store: Any, workdir: Path) -> None:
    flow = write_flow(
        workdir,
        "budgeted",
        """\
        vars: {caught: false}
        guardrails:
          - {id: calls, limits: {max_tool_calls: 2}}
        steps:
          - id: guarded
            try:
              steps:
                - id: spin
                  loop:
                    max_iterations: 5
                    steps: [{id: call, tool: echo, args: {value: "${{ index }}"}}]
              catch:
                steps: [{id: swallow, set: {caught: true}}]
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "guardrail"
    calls = [e for e in store.events(result.run_id) if e.kind == "tool.completed"]
    assert len(calls) == 2
    assert not [e for e in store.events(result.run_id) if e.node_path.endswith("swallow")]


def test_runs_in_one_task_leave_nothing_behind_in_its_context(tmp_path: Path) -> None:
    """A caller that runs workflow after workflow in one task (a server, a parent) does not collect one
    context entry, holding a commit future and its loop, per run."""
    import asyncio
    import contextvars

    from interpreter.engine import start_run

    wf = tmp_path / "tiny.yaml"
    wf.write_text('charter: "1.0"\nname: tiny\nvars: {x: null}\nsteps:\n  - {id: a, set: {x: 1}}\n')
    graph = compiled(wf)

    async def main() -> list[int]:
        sizes = []
        with open_store(tmp_path / "c.db", durability="full") as store:
            for _ in range(20):
                result = await start_run(graph, {}, store, RunOptions(durability="full"))
                assert result.status == "completed", result.error
                sizes.append(len(contextvars.copy_context()))
        return sizes

    sizes = asyncio.run(main())
    assert sizes[-1] == sizes[0], sizes


@pytest.mark.parametrize(
    ("given", "failed_at", "place", "expression", "problem"),
    [
        ({"x": 5}, "route", ":17:15:", "size(input.x) > 2", "size(int)"),  # a switch case's condition
        ({"x": [1, 2, 3]}, "route/case-0/half", ":19:46:", "input.x / 2", "_/_(list, int)"),  # nested
        ({"w": "abc"}, "calc", ":21:65:", "input.w + 1", "_+_(string, int)"),  # a template in a string
        ({"z": True}, "check", ":23:17:", "input.z > 5", "_>_(bool, int)"),  # an `if` after the fields
    ],
)
def test_runtime_expression_errors_name_the_file_position_and_the_expression(
    store: Any, workdir: Path, given: Any, failed_at: str, place: str, expression: str, problem: str
) -> None:
    """A `dyn` value of the wrong type is found at run time: the message places it in the file (the
    operator that failed), quotes the expression, and the step's error in the log says the same."""
    flow = write_flow(
        workdir,
        "dyn_types",
        """\
        input: {type: object, properties: {x: {}, w: {}, z: {}}}
        vars: {y: null, note: null}
        steps:
          - id: route
            switch:
              - when: size(input.x) > 2
                steps:
                  - {id: half, set: {y: "${{ input.x / 2 }}"}}
          - id: calc
            set: {note: "we add input.w + 1 here", y: "sum: ${{ input.w + 1 }}"}
          - id: check
            if: input.z > 5
            set: {y: 1}
        """,
    )
    inputs = {"x": [1], "w": 1, "z": 1, **given}
    result = run_workflow(compiled(flow), inputs, store=store, options=OPTS)
    assert result.status == "failed" and result.error["node_path"] == failed_at
    message, at = result.error["message"], result.error["details"]["at"]
    assert f"{at}:" == f"{flow}{place}", at
    assert f"`{expression}`" in message and f"no such overload: {problem}" in message
    failed = [e for e in store.events(result.run_id) if e.kind == "step.failed" and e.node_path == failed_at]
    assert failed[0].payload["error"]["details"]["at"] == at
    # The place is not in the message, which replay compares: the same file from elsewhere reproduces.
    moved = workdir / "moved" / "dyn_types.yaml"
    moved.parent.mkdir(exist_ok=True)
    moved.write_text(flow.read_text())
    assert replay_run(result.run_id, store=store, graph=compiled(moved), options=OPTS).ok


def test_a_value_cel_cannot_hand_over_is_placed_at_its_field(store: Any, workdir: Path) -> None:
    """An initial `vars` value that evaluates but has no JSON form (a double inf) fails the run with the
    place of the field, as an expression error inside it would."""
    flow = write_flow(
        workdir,
        "inf_vars",
        """\
        vars: {x: "${{ 1.0 / 0.0 }}"}
        steps:
          - {id: a, set: {x: 1}}
        """,
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "expression"
    assert "inf has no JSON form" in result.error["message"]
    line = flow.read_text().splitlines().index('vars: {x: "${{ 1.0 / 0.0 }}"}') + 1
    assert result.error["details"]["at"] == f"{flow}:{line}:1"


def test_an_approval_retried_on_denied_asks_again_each_attempt(store: Any, workdir: Path) -> None:
    """`retry.on: [denied]` on an approval step: a denial ends that attempt and the next one asks the
    person again (it does not reuse the denial); resume and replay find each attempt's own decision."""
    flow = write_flow(
        workdir,
        "ask_again",
        """\
        steps:
          - id: ok
            approval: {message: "ship it?"}
            retry: {attempts: 3, on: [denied], backoff: {initial: 1ms}}
          - {id: after, tool: echo, args: {value: "${{ steps.ok.output.by }}"}}
        output: {by: "${{ steps.after.output }}"}
        """,
    )
    first = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert first.status == "waiting" and first.pending == ["ok"]
    denied = decide_approval(first.run_id, "ok", store=store, person="ann", approved=False, options=OPTS)
    assert denied.status == "waiting" and denied.pending == ["ok"]  # asked again, not denied again
    approved = decide_approval(first.run_id, "ok", store=store, person="bob", approved=True, options=OPTS)
    assert approved.status == "completed" and approved.output == {"by": "bob"}, approved.error
    requests = [e.payload for e in store.events(first.run_id) if e.kind == "approval.requested"]
    assert [r["attempt"] for r in requests] == [1, 2]
    assert replay_run(first.run_id, store=store, options=OPTS).ok

    again = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    for person in ("ann", "eve"):
        waiting = decide_approval(
            again.run_id, "ok", store=store, person=person, approved=False, options=OPTS
        )
        assert waiting.status == "waiting"
    last = decide_approval(again.run_id, "ok", store=store, person="joe", approved=False, options=OPTS)
    assert last.status == "failed" and last.error["code"] == "denied" and "joe" in last.error["message"]
    assert replay_run(again.run_id, store=store, options=OPTS).ok


@pytest.mark.parametrize(
    ("timeouts", "on", "calls"),
    [
        ("tool", None, 1),  # the tool's own timeout
        ("step", None, 1),  # the step's timeout cut the call off
        ("group", None, 1),  # the timeout of a group step around it cut the call off
        ("child", None, 1),  # the timeout of a `workflow` step cut off the call its child run made
        ("tool", "[timeout]", 3),  # asked for: each attempt calls again (with its own key)
        ("step", "[timeout]", 3),
        ("group", "[timeout]", 3),
        ("child", "[timeout]", 3),
    ],
)
def test_a_write_call_that_timed_out_is_retried_only_when_on_lists_timeout(
    store: Any, workdir: Path, tmp_path: Path, timeouts: str, on: str | None, calls: int
) -> None:
    """A timed-out write may have acted (the server charged, then answered late): `retry` without `on`
    does not make it again with a new idempotency key; `on: [timeout]` does, as the author asked."""
    tool_timeout = ", timeout: 50ms" if timeouts == "tool" else ""
    step_timeout = ", timeout: 50ms" if timeouts == "step" else ""
    retry_on = f", on: {on}" if on else ""
    retry = f"retry: {{attempts: 3, backoff: {{initial: 1ms}}{retry_on}}}"
    call = f'{{id: pay, tool: charge, args: {{log: "${{{{ input.log }}}}", seconds: 1}}{step_timeout}'
    if timeouts == "group":
        steps = f"  - id: checkout\n    timeout: 50ms\n    {retry}\n    steps:\n      - {call}}}"
    elif timeouts == "child":  # the call is made by a child run; the parent's step times out
        tools = f'tools:\n  charge: {{python: "{MODULE}:charge", effect: write}}\n'
        child = f'charter: "1.0"\nname: charge-child\n{tools}steps:\n  - {call}}}\n'
        (workdir / "charge_child.yaml").write_text(child)
        steps = (
            "  - {id: checkout, workflow: {path: charge_child.yaml, "
            f'input: {{log: "${{{{ input.log }}}}"}}}}, timeout: 50ms, {retry}}}'
        )
    else:
        steps = f"  - {call}, {retry}}}"
    flow = workdir / f"charge_{timeouts}_{calls}.yaml"
    flow.write_text(
        f'''charter: "1.0"
name: charge
input: {{type: object, properties: {{log: {{type: string}}}}}}
tools:
  charge: {{python: "{MODULE}:charge", effect: write{tool_timeout}}}
steps:
{steps}
'''
    )
    log = tmp_path / "charges.log"
    result = run_workflow(compiled(flow), {"log": str(log)}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout", result.error
    assert len(log_lines(log)) == calls
    assert replay_run(result.run_id, store=store, options=OPTS).ok  # replay decides as the run did


def test_a_tool_argument_named_like_the_logs_reserved_key_fails_its_step_not_the_run(
    store: Any, workdir: Path
) -> None:
    """`$blob` as an argument name: the call cannot be logged, so it is not made; the step fails with
    code `tool` (a `catch` sees it) instead of the whole run failing at the log."""
    flow = workdir / "reserved_arg.yaml"
    flow.write_text(
        f'''charter: "1.0"
name: reserved-arg
vars: {{code: null}}
tools:
  keep: {{python: "{MODULE}:keep", effect: write}}
steps:
  - id: t
    try:
      steps: [{{id: call, tool: keep, args: {{"$blob": x, other: 1}}}}]
      catch: {{as: e, steps: [{{id: c, set: {{code: "${{{{ e.code }}}}"}}}}]}}
output: {{code: "${{{{ vars.code }}}}"}}
'''
    )
    result = run_workflow(compiled(flow), {}, store=store, options=OPTS)
    assert (result.status, result.output) == ("completed", {"code": "tool"}), result.error
    kinds = [e.kind for e in store.events(result.run_id) if e.node_path == "t/body/call"]
    assert "tool.called" not in kinds and kinds[-1] == "step.failed"
    assert store.verify(result.run_id).ok
    assert replay_run(result.run_id, store=store, options=OPTS).ok


def test_a_run_its_caller_cancels_says_so_in_its_log(store: Any, workdir: Path) -> None:
    """An application that runs workflows with the async API and cancels one (a shutdown, a request
    that went away): the log ends with `run.interrupted` without a signal, and the run stays resumable."""
    import asyncio

    from interpreter.engine import start_run

    flow = workdir / "cancelled.yaml"
    flow.write_text(
        f'charter: "1.0"\nname: cancelled\ntools:\n  hang: {{python: "{MODULE}:hang", effect: read}}\n'
        "steps:\n  - {id: wait, tool: hang, args: {seconds: 2}}\n"
    )

    async def cancel_it() -> None:
        task = asyncio.create_task(start_run(compiled(flow), {}, store, OPTS))
        await asyncio.sleep(0.5)  # the call (2 s) is in flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    (row,) = store.runs()
    logged = list(store.events(row.run_id))
    assert row.status == "running"
    assert (logged[-1].kind, logged[-1].payload) == ("run.interrupted", {"signal": None})
    (cut,) = [e for e in logged if e.kind == "tool.failed"]
    assert "another branch won the join" in cut.payload["error"]["message"]
    assert store.verify(row.run_id).ok
    resumed = resume_run(row.run_id, store=store, options=OPTS)
    assert resumed.status == "completed", resumed.error
    assert replay_run(row.run_id, store=store, options=OPTS).ok


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (["docs-server"], True),  # the program of that name on PATH, as the allowance means
        (["./tools/docs-server"], False),  # another program that happens to have the name
        (["/tmp/elsewhere/docs-server"], False),
    ],
)
def test_an_mcp_program_is_allowed_as_written_not_by_its_name_alone(
    command: list[str], allowed: bool
) -> None:
    """`--allow-module docs-server` allows that program, not a file of the same name the workflow's
    author put beside the workflow: a shared file must not run code the user did not allow."""
    from interpreter.policy import ModulePolicy, PolicyError, build_policy
    from interpreter.tools import mcp_command

    policy: ModulePolicy = build_policy(("docs-server",), None)
    if allowed:
        assert mcp_command(command, policy, "search") == (command, None)
    else:
        with pytest.raises(PolicyError, match=f"allow it with --allow-module {command[0]}"):
            mcp_command(command, policy, "search")
        assert mcp_command(command, build_policy((command[0],), None), "search") == (command, None)
