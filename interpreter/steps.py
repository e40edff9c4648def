"""Step runners, one per step kind, in a registry the agents feature extends (`register_step_runner`).

A runner is `async (execution, node, scope, path, attempt) -> natural result`. The engine around it
handles `if`, `retry`, `timeout`, the `output` mapping and the step's events; a runner only emits
the events of what happens inside (tool calls, decisions, iterations, variable changes).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dsl.model import parse_duration
from interpreter import store as s
from interpreter.enforcement import (
    CURRENT_CHAIN,
    EscalationKeys,
    as_recorded,
    enforce_tool_input,
    enforce_tool_output,
    guardrail_error,
)
from interpreter.engine import Execution, Scope
from interpreter.hashing import sha256_hex
from interpreter.records import descendant_runs, request_expired
from interpreter.redact import MASK
from interpreter.runtime import HALTS, StepError, Suspend, idempotency_key, kind_of
from interpreter.tool_calls import logged_call, replayed_call
from interpreter.tools import validate_args

StepRunner = Callable[[Execution, Any, Scope, str, int], Awaitable[Any]]
STEP_RUNNERS: dict[str, StepRunner] = {}


def register_step_runner(kind: str, runner: StepRunner) -> None:
    """Install (or replace) the runner of a step kind."""
    STEP_RUNNERS[kind] = runner


def runner(kind: str) -> Callable[[StepRunner], StepRunner]:
    def register(fn: StepRunner) -> StepRunner:
        register_step_runner(kind, fn)
        return fn

    return register


def _text(value: Any) -> str:
    from dsl.templates import to_text

    return value if isinstance(value, str) else to_text(value)


# --------------------------------------------------------------------------------------------------
# tool


@runner("tool")
async def run_tool(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    name = node.step.tool
    args = ex.evaluate(node.values.get("args"), scope, f"step '{node.id}': args", at=node.where) or {}
    key = idempotency_key(ex.run_id, path, attempt)
    validate_args(name, ex.tool_schema(name), args, ex.schema_cache)
    if s.BLOB_REF_KEY in args:  # the log could not hold the call: it is not made (replay decides alike)
        raise StepError(
            "tool",
            f"tool '{name}' was not called: the argument name {s.BLOB_REF_KEY!r} is reserved by the event "
            "log for its blob references",
            type="ToolError",
            retryable=False,
        )
    # Enforcement (issue 6): tool.select rules, authorization under the step's identity (none: the
    # workflow itself), then the tool.input rules; a redacted argument is what the tool and the log receive.
    chain = ex.guard.chain_for(node.step.identity)
    keys = EscalationKeys(path)
    args = enforce_tool_input(
        ex.guard, chain, name, args, path, node=node, bindings=ex.bindings(scope), keys=keys
    )
    if ex.replaying:
        completed = await replayed_call(ex, path, attempt, _call(ex, path, attempt), name, args)
        return _guard_output(ex, chain, name, args, completed, path, node, keys)
    reused = _completed_call(ex, path, attempt)
    if reused is not None:  # called before an escalation at tool.output: a completed call is not repeated
        return _guard_output(ex, chain, name, args, reused, path, node, keys)
    verdict = await logged_call(
        ex,
        name,
        args,
        path=path,
        ids={"tool": name, "attempt": attempt, "idempotency_key": key},
        step_id=node.id,
        chain=chain,
        identity=node.step.identity,
        scope=scope,
        actor=ex.guard.actor_of(chain),
        screen=lambda result: enforce_tool_output(
            ex.guard, chain, name, args, result, path, node=node, keys=keys
        ),
    )
    if not verdict.allowed:
        raise guardrail_error(
            verdict.message or "refused by a guardrail", details={"rules": list(verdict.rules)}
        )
    return verdict.value


def _guard_output(
    ex: Execution,
    chain: Any,
    name: str,
    args: Any,
    completed: Any,
    path: str,
    node: Any,
    keys: EscalationKeys,
) -> Any:
    """The tool.output rules on a logged result (resume, replay): decided no weaker than the run did."""
    result = completed.get("result")
    verdict = enforce_tool_output(ex.guard, chain, name, args, result, path, node=node, keys=keys)
    verdict = as_recorded(verdict, completed)
    if not verdict.allowed:
        raise guardrail_error(
            verdict.message or "refused by a guardrail", details={"rules": list(verdict.rules)}
        )
    return verdict.value


def _call(ex: Execution, path: str, attempt: int) -> Any:
    rec = ex.records.get(path) if not ex.write_reused else None
    return rec.tools.get(attempt) if rec is not None else None


def _completed_call(ex: Execution, path: str, attempt: int) -> dict[str, Any] | None:
    call = _call(ex, path, attempt)
    return call.completed if call is not None and call.completed is not None else None


# --------------------------------------------------------------------------------------------------
# set, fail, steps


@runner("set")
async def run_set(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    rec = ex.records.get(path) if ex.replaying else None
    if rec is not None and rec.vars_delta is not None:
        # Replay: the `vars` this set read then (concurrent branches may finish in another order now).
        now, ex.vars = ex.vars, ex.vars_before(rec.vars_seq)
        try:
            delta = ex.evaluate(node.values["set"], scope, f"step '{node.id}': set", at=node.where)
        finally:
            ex.vars = now
        ex.assign(delta, rec.vars_seq)
        return delta
    delta = ex.evaluate(node.values["set"], scope, f"step '{node.id}': set", at=node.where)
    ex.assign(delta)
    ex.emit(s.VARS_SET, path, {"vars": delta})
    return delta


@runner("fail")
async def run_fail(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    spec = node.step.fail
    message = _text(
        ex.evaluate(node.values.get("message"), scope, f"step '{node.id}': message", at=node.where)
    )
    raise StepError(spec.code, message, type="Failure")


@runner("steps")
async def run_steps(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    return await ex.exec_block(node.blocks[0], scope)


# --------------------------------------------------------------------------------------------------
# switch, try


@runner("switch")
async def run_switch(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    from interpreter.explain import referenced_values

    rejected: list[dict[str, Any]] = []  # the cases tried before the one chosen, and what they read
    for block in node.blocks:
        if block.when is None or ex.condition(block.when, scope, f"step '{node.id}': when", node.where):
            _same_route(ex, path, block)
            values = referenced_values(block.when, ex.bindings(scope)) if block.when is not None else {}
            ex.emit(
                s.DECISION,
                path,
                {
                    "step": "switch",
                    "expression": block.when.source if block.when is not None else "default",
                    "values": values,
                    "result": True,
                    "chosen": block.label,
                    "rejected": rejected,
                },
            )
            return await ex.exec_block(block, scope)
        values = referenced_values(block.when, ex.bindings(scope))
        rejected.append({"case": block.label, "expression": block.when.source, "values": values})
    _same_route(ex, path, None)
    ex.emit(
        s.DECISION,
        path,
        {
            "step": "switch",
            "expression": "",
            "values": {},
            "result": False,
            "chosen": None,
            "rejected": rejected,
        },
    )
    return None


def _same_route(ex: Execution, path: str, block: Any) -> None:
    """Replay: a switch that now chooses another case (`block`, None for none) diverges here, at the
    decision, rather than at the first step of the case it took instead."""
    if not ex.replaying:
        return
    rec = ex.records.get(path)
    chosen = block.label if block is not None else None
    if rec is None or rec.route is None or rec.route.get("chosen") == chosen:
        return
    recorded = rec.route.get("chosen")
    now = _case(chosen, block.when.source if block is not None and block.when is not None else None)
    then = _case(recorded, rec.route.get("expression"))
    ex.diverge(path, recorded, chosen, f"the switch now chooses {now}; the run chose {then}")


def _case(label: str | None, expression: str | None) -> str:
    if label is None:
        return "no case"
    return f"{label} (`{expression}`)" if expression and expression != "default" else label


@runner("try")
async def run_try(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    body = next(b for b in node.blocks if b.label == "body")
    catch = next((b for b in node.blocks if b.label == "catch"), None)
    inner = Scope(scope.steps, scope.locals, scope.static, scope.runtime, path)
    try:
        return await ex.exec_block(body, inner)
    except StepError as err:
        if catch is None or err.halts_run:
            raise
        name = node.step.try_.catch.as_
        handler = Scope(
            scope.steps, {**scope.locals, name: err.binding()}, scope.static, scope.runtime, scope.catcher
        )
        return await ex.exec_block(catch, handler)


# --------------------------------------------------------------------------------------------------
# parallel, for_each, loop


async def _cancel(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _same_join(ex: Execution, path: str, spec: Any, need: int) -> None:
    """Replay: all recorded branch results arrive at once, so which branches win a join can only be
    what the recording says. An edited join that needs another number of winners than the recording
    has (`first-n` with another `n`, `any` made `all`) cannot be reproduced from it."""
    rec = ex.records.get(path)
    joined = rec.joined if rec is not None else None
    if not joined:
        return
    recorded = (joined.get("join"), joined.get("n"))
    now = (spec.join.replace("-", "_"), spec.n)
    if recorded != now and len(joined.get("completed") or ()) != need:
        ex.diverge(
            path,
            {"join": recorded[0], "n": recorded[1], "completed": joined.get("completed")},
            {"join": now[0], "n": now[1]},
            f"the join of parallel '{path}' changed: the recording does not say which branches it would keep",
        )


class _Arrivals:
    """Tasks in the order they finish, in batches. One done-callback per task: a loop over
    `asyncio.wait(pending, FIRST_COMPLETED)` registers on every pending task at each round, which is
    quadratic in the width of a fan-out."""

    def __init__(self, tasks: Iterable[asyncio.Future[Any]]) -> None:
        self._done: list[asyncio.Future[Any]] = []
        self._wake: asyncio.Future[None] | None = None
        for task in tasks:
            task.add_done_callback(self._arrived)

    def _arrived(self, task: asyncio.Future[Any]) -> None:
        self._done.append(task)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def next(self) -> list[asyncio.Future[Any]]:
        """The tasks finished since the last call; waits for one if there is none."""
        while not self._done:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        done, self._done = self._done, []
        return done


@runner("parallel")
async def run_parallel(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    """Branches run as tasks. join all: every branch (with on_failure continue, a failed branch counts
    as finished with output null); any / first-n: the first 1 / n successes, the others are cancelled.
    on_failure fail: the first failure cancels the rest and fails the step."""
    spec = node.step.parallel
    blocks = node.blocks
    join_all = spec.join == "all"
    need = len(blocks) if join_all else 1 if spec.join == "any" else int(spec.n)
    tolerant = spec.on_failure == "continue"
    if ex.replaying:
        _same_join(ex, path, spec, need)
    decided, successes = asyncio.Event(), [0]

    async def branch(block: Any) -> Any:
        HALTS.set((*HALTS.get(), decided))  # the branch's own context (a task's copy)
        try:
            out = await ex.exec_block(block, scope)
        except StepError:
            if not tolerant:
                decided.set()  # the step fails: no other branch starts another step
            raise
        successes[0] += 1
        if not join_all and successes[0] >= need:
            decided.set()  # the join is met: the losers start nothing more
        return out

    tasks = {asyncio.ensure_future(branch(block)): i for i, block in enumerate(blocks)}
    outputs: list[Any] = [None] * len(blocks)
    done_ok: list[int] = []
    failed: list[int] = []
    waiting: list[int] = []  # branches suspended for a person (or a child run that waits for one)
    suspended: list[str] = []
    first_error: StepError | None = None
    pending = set(tasks)
    arrivals = _Arrivals(tasks)

    def satisfied() -> bool:
        return len(done_ok) + (len(failed) if join_all and tolerant else 0) >= need

    def take(task: asyncio.Future[Any]) -> None:
        nonlocal first_error
        pending.discard(task)
        i = tasks[task]
        exc = task.exception()
        if exc is None:
            outputs[i] = task.result()
            done_ok.append(i)
        elif isinstance(exc, Suspend):
            suspended.extend(exc.pending)
            waiting.append(i)
        elif isinstance(exc, StepError):
            failed.append(i)
            first_error = first_error or exc
        else:
            raise exc

    try:
        while pending and not satisfied():
            for task in await arrivals.next():
                take(task)
            if first_error is not None and not tolerant:
                break
            if not join_all and len(done_ok) + len(pending) < need and not suspended:
                break  # too many failures: the join can no longer be met
        # A branch that finished in the turn that ended the join (its done-callback has not run yet)
        # finished: it is not one of the losers to cancel.
        for task in [t for t in pending if t.done()]:
            take(task)
    finally:
        cancelled = [tasks[t] for t in pending]
        await _cancel(pending)
    labels = [b.label for b in blocks]
    if (cancelled or suspended) and (
        satisfied() or (first_error is not None and not tolerant) or not suspended
    ):
        # Decided: a child run of a branch cut off or still waiting for a person is waited for no more;
        # a branch that waited is cut off as a running one is.
        ex.abandon_children(path, f"no longer waits for it: parallel '{path}' is decided")
        cancelled += waiting
    ex.emit(
        s.PARALLEL_JOINED,
        path,
        {
            "join": spec.join.replace("-", "_"),
            "n": spec.n,
            "completed": [labels[i] for i in sorted(done_ok)],
            "failed": [labels[i] for i in sorted(failed)],
            "cancelled": [labels[i] for i in sorted(cancelled)],
        },
    )
    if not satisfied():
        if first_error is not None and not tolerant:
            raise first_error
        if suspended:
            raise Suspend(suspended)
        raise StepError(
            "parallel",
            f"only {len(done_ok)} of the {need} branches needed succeeded"
            + (f"; first failure: {first_error.message}" if first_error else ""),
            details={"first_error": first_error.to_dict()} if first_error else None,
            retryable=first_error.retryable if first_error else True,
        )
    if isinstance(spec.branches, dict):
        return dict(zip(spec.branches.keys(), outputs, strict=True))
    return outputs


@runner("for_each")
async def run_for_each(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    spec = node.step.for_each
    items = ex.evaluate(node.values["in"], scope, f"step '{node.id}': in", at=node.where)
    if not isinstance(items, list):
        raise StepError(
            "expression",
            f"step '{node.id}': `in` must be a list, got {kind_of(items)}",
            retryable=False,
        )
    body = node.blocks[0]
    rec = ex.records.get(path)
    seen = rec.iterations if rec is not None and not ex.write_reused else set()
    results: list[Any] = [None] * len(items)
    done = [0]

    failing = asyncio.Event()  # an item failed: no item starts, nor does a running one start another step

    async def one(i: int, item: Any) -> None:
        if failing.is_set() and i not in seen:  # made before another item failed, starts after it
            return  # (one the log says started -- replay -- runs as it did)
        inner = scope.iteration(node, path, i, {spec.as_: item, spec.index_as: i})
        if i not in seen:
            ex.emit(s.LOOP_ITERATION, path, {"index": i, "item": item})
        try:
            results[i] = await ex.exec_block(body, inner)
        except Suspend:
            raise
        except BaseException:
            failing.set()
            raise
        done[0] += 1
        ex.notify("item", path, "for_each", (done[0], len(items)))

    if spec.concurrency == 1 or len(items) <= 1:
        for i, item in enumerate(items):
            await one(i, item)
        return results
    # `concurrency` workers take the items in order: as many tasks alive as run at once. Each item
    # runs in the context the step started in, as a branch would: it follows what came before the
    # step, not the items a worker ran before it (durability "full" waits only for what it follows).
    queue = iter(enumerate(items))
    suspended: list[str] = []
    start = contextvars.copy_context()

    start.run(HALTS.set, (*HALTS.get(), failing))

    async def worker() -> None:
        for i, item in queue:
            try:
                await asyncio.create_task(one(i, item), context=start.copy())
            except Suspend as sus:  # waits for a person: it keeps its slot, the other workers go on
                suspended.extend(sus.pending)
                return

    workers = {asyncio.ensure_future(worker()) for _ in range(min(spec.concurrency, len(items)))}
    try:
        await asyncio.gather(*workers)  # the first error ends the step (the finally stops the rest)
    except StepError:
        # A child run of an item cut off or waiting for a person is waited for no more (cancelled
        # once the step's failure is in the log).
        ex.abandon_children(path, f"no longer waits for it: for_each '{path}' failed")
        raise
    finally:
        await _cancel({w for w in workers if not w.done()})
    if suspended:
        raise Suspend(suspended)
    return results


@runner("loop")
async def run_loop(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    from interpreter.explain import referenced_values

    spec = node.step.loop
    until = node.conditions.get("until")
    body = node.blocks[0]
    rec = ex.records.get(path)
    seen = rec.iterations if rec is not None and not ex.write_reused else set()
    out = None
    for i in range(spec.max_iterations):
        inner = scope.iteration(node, path, i, {"index": i})
        if i not in seen:
            ex.emit(s.LOOP_ITERATION, path, {"index": i})
        out = await ex.exec_block(body, inner)
        if until is None:
            continue
        done = ex.condition(until, inner, f"step '{node.id}': until", node.where)
        if done or i + 1 not in seen:  # a resumed loop logged its earlier `until`s
            last = i + 1 == spec.max_iterations
            ex.emit(
                s.DECISION,
                path,
                {
                    "step": "loop",
                    "expression": until.source,
                    "values": {"index": i, **referenced_values(until, ex.bindings(inner))},
                    "result": done,
                    "chosen": "exit" if done else None if last else "repeat",
                },
            )
        if done:
            return out
    if until is not None:  # the bound is a safety net: a half-finished loop is a failure (spec §13.7)
        raise StepError(
            "loop_exhausted",
            f"loop '{node.id}': `until` was still false after {spec.max_iterations} iterations",
            retryable=False,
        )
    return out


# --------------------------------------------------------------------------------------------------
# approval, workflow, agent, llm


def _decided_at(ex: Execution, path: str) -> str:
    """When the decision that stands at `path` was logged: the step's `at`, as replay will read it.
    Usually the run's last event (the one just written); else an earlier person's, found in the log."""
    for after in (ex.store.run(ex.run_id).head_seq - 1, 0):
        events = ex.store.events(ex.run_id, after)
        decided = [e.ts for e in events if e.kind == s.APPROVAL_DECIDED and e.node_path == path]
        if decided:
            return decided[-1]
    return s.utc_now()


@runner("approval")
async def run_approval(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    spec = node.step.approval
    rec = ex.records.get(path)
    # This attempt's request: a retried approval (`retry.on: [denied]`) asks the person again.
    requested, decision_at = (
        rec.approval_attempts.get(attempt, (None, None)) if rec is not None else (None, None)
    )
    if requested is not None and decision_at is None:
        if request_expired(requested[0]) and not ex.replaying:
            decision = "approved" if spec.on_timeout == "approve" else "denied"
            payload = {"decision": decision, "by": "system:timeout", "reason": "the approval timed out"}
            decided = ex.decide(path, payload, {"sub": "system:timeout"})
            decision_at = (decided, _decided_at(ex, path))
            rec.approval_attempts[attempt] = (requested, decision_at)  # type: ignore[union-attr]
        else:
            raise Suspend([path])
    if decision_at is not None:
        decided, at = decision_at
        ex.checked += ex.replaying
        if decided.get("decision") != "approved":
            why = f": {decided['reason']}" if decided.get("reason") else ""
            raise StepError(
                "denied", f"denied by {decided.get('by')}{why}", type="ApprovalDenied", retryable=False
            )
        return {"approved": True, "by": decided.get("by"), "reason": decided.get("reason"), "at": at}
    if ex.replaying:
        ex.diverge(path, None, "approval requested", "this approval is not in the recorded run")
    message = _text(
        ex.evaluate(node.values.get("message"), scope, f"step '{node.id}': message", at=node.where)
    )
    payload: dict[str, Any] = {
        "message": message, "approvers": list(spec.approvers), "data": None, "attempt": attempt,
    }  # fmt: skip
    if spec.timeout:
        at = datetime.now(UTC) + timedelta(seconds=parse_duration(spec.timeout))
        payload["expires_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as every time in the log
    ex.commit(s.NewEvent(s.APPROVAL_REQUESTED, path, payload))
    ex.notify("waiting", path, "approval", message)
    raise Suspend([path])


@runner("workflow")
async def run_workflow_step(ex: Execution, node: Any, scope: Scope, path: str, attempt: int) -> Any:
    inputs = ex.evaluate(node.values.get("input"), scope, f"step '{node.id}': input", at=node.where) or {}
    if ex.replaying:  # the child's recorded outcome stands in for it, as a tool's result does
        key = idempotency_key(ex.run_id, path, attempt)
        _same_child(ex, path, node.step.workflow.path, inputs, key)
        count_recorded_child(ex, path, key)
        rec = ex.records.get(path)
        error = rec.attempt_errors.get(attempt) if rec is not None else None
        if error:
            raise StepError.from_dict(error)
        if rec is None or rec.status is None:
            children = ex.store.children(ex.run_id, path)
            if children and children[-1].status == "waiting":
                raise Suspend([path])  # the child still waits for a person
            await ex.cut_off(path, attempt)  # cut off by a timeout or a join, as the recording was
        return rec.output if rec is not None else None
    return await child_run(
        ex, path, node.step.workflow.path, inputs, idempotency_key(ex.run_id, path, attempt)
    )


async def child_run(ex: Execution, path: str, relative: str, inputs: Any, key: str) -> Any:
    """Run another workflow file as a child run linked to this one (or continue the one this call,
    named by its idempotency `key`, already started: after a crash or an approval), and return its
    output. A retry, of the step or of a step around it, has another key: it starts a new child."""
    try:
        return await _child_outcome(ex, path, relative, inputs, key)
    except asyncio.CancelledError:
        # Cut off by a timeout or a join: a write the child (or a run under it) was making may have
        # acted, as one of this run's own would have (§12.4: not retried unless `on` lists timeout).
        child_id = _existing_child(ex, path, key)
        if child_id is not None and _cut_write(ex.store, child_id):
            ex.cut_writes.add(path)
        raise


def _cut_write(store: s.EventStore, run_id: str) -> bool:
    """Whether the run, or a run under it, has a write call that did not complete and was not refused:
    one in flight when it was cut off (its `tool.called` is committed before the call)."""
    runs = [run_id, *(child.run_id for child, _ in descendant_runs(store, run_id))]
    for one in runs:
        open_writes: set[Any] = set()
        for event in store.events(one, kinds=(s.TOOL_CALLED, s.TOOL_COMPLETED, s.TOOL_FAILED)):
            payload = event.payload if isinstance(event.payload, dict) else {}
            error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
            if event.kind == s.TOOL_CALLED:
                if payload.get("effect") == "write":
                    open_writes.add(payload.get("idempotency_key"))
            elif event.kind == s.TOOL_COMPLETED or error.get("code") not in ("cancelled", "timeout"):
                open_writes.discard(payload.get("idempotency_key"))
        if open_writes:
            return True
    return False


async def _child_outcome(ex: Execution, path: str, relative: str, inputs: Any, key: str) -> Any:
    from interpreter.engine import continue_run, start_run

    child_id = _existing_child(ex, path, key)
    ex.commit()  # the parent's events so far precede anything the child does
    if child_id is not None:
        # Another process may be executing the child (`charter resume CHILD`): wait for its result.
        def held(by: Any) -> None:
            ex.notify("held", path, "workflow", f"child run {child_id} is executed by {by.describe()}")

        result = await continue_run(
            child_id, ex.store, ex.options, "manual", wait=held, parent=(ex.guard, path)
        )
    else:
        base = Path(ex.file).parent if ex.file else Path.cwd()
        target = (base / relative).resolve()
        from dsl import diagnostics
        from dsl.frontend import compile_file

        graph, diags = compile_file(target)
        errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
        if graph is None or errors:
            raise StepError(
                "workflow",
                f"workflow {relative} does not compile: {diagnostics.format_text(errors or diags)}",
                retryable=False,
            )
        try:
            chain = CURRENT_CHAIN.get() or ex.guard.base_chain
            result = await start_run(
                graph,
                inputs,
                ex.store,
                _as_parent(ex),
                parent=(ex.run_id, path),
                parent_key=key,
                parent_chain=chain if chain.links else None,
                outer=ex.guard.outer_for_child(chain),
                inherited=ex.guard.rules_for_child(path),
            )
        except (s.StoreLockedError, s.LeaseLost):
            raise  # the log, not the child, is the problem: the parent stops resumable too
        except Exception as exc:  # noqa: BLE001 - bad child input, policy, secrets
            raise StepError("workflow", f"workflow {relative}: {exc}", retryable=False) from None
    if result.status == "waiting":
        raise Suspend([path])
    if result.status != "completed":
        error = result.error or {}
        message = f"child run {result.run_id} failed: {error.get('message', result.status)}"
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
        ancestors = details.get("halts_ancestors") or 0
        if ancestors > 0:  # a workflow budget of this run (or above), spent in the child: halts this run
            halted = {**details, "halts_run": True, "halts_ancestors": ancestors - 1, "run_id": result.run_id}
            raise guardrail_error(message, details=halted)
        raise StepError("workflow", message, details={"run_id": result.run_id})
    return result.output


def _as_parent(ex: Execution) -> Any:
    """The options a child run starts with: the parent's principal and claims, as its log records them,
    not those of the process that continues the parent (`charter approve --as bob --claims ...`, resume,
    wake), which would make the child act for the approver with the approver's roles."""
    import dataclasses

    from interpreter.engine import _run_started

    claims = _run_started(ex.store, ex.run_id).get("claims")
    return dataclasses.replace(
        ex.options, principal=ex.principal, claims=claims if isinstance(claims, dict) else None
    )


def count_recorded_child(ex: Execution, path: str, key: str) -> None:
    """Replay: what the recorded child run (and the runs it started) spent counts in this run's budgets,
    as it did live while the child ran: a later call the budget refused is refused again."""
    child_id = _existing_child(ex, path, key)
    if child_id is None:
        return
    ex.guard.restore_child(ex.store.events(child_id), path)
    for grandchild, _ in descendant_runs(ex.store, child_id):
        ex.guard.restore_child(ex.store.events(grandchild.run_id), path)


def _same_child(ex: Execution, path: str, relative: str, inputs: Any, key: str) -> None:
    """Replay: the child run the recording made here had this input and this workflow file, as a
    tool call had its arguments and code: otherwise its recorded outcome does not stand for it."""
    child_id = _existing_child(ex, path, key)
    if child_id is None:  # it never started (its input was refused): the step's recorded error says so
        return
    row = ex.store.run(child_id)
    if not _same_input(row.inputs, inputs):
        ex.diverge(path, row.inputs, inputs, f"the input of child workflow {relative} differs")
    base = Path(ex.file).parent if ex.file else Path.cwd()
    try:
        source = (base / relative).resolve().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # the child's own replay reports a file it cannot read
        return
    if row.workflow_source is not None and _content(source) != _content(row.workflow_source):
        ex.diverge(path, row.workflow_digest, sha256_hex(source), f"child workflow {relative} changed")


def _same_input(recorded: Any, now: Any) -> bool:
    """Whether a child run's recorded input is `now`: a text the child's `run.input` rules masked
    (`[REDACTED...]`) stands for whatever it masked."""
    if isinstance(recorded, str) and MASK[:-1] in recorded:
        return isinstance(now, str)
    if isinstance(recorded, dict) and isinstance(now, dict):
        return recorded.keys() == now.keys() and all(_same_input(v, now[k]) for k, v in recorded.items())
    if isinstance(recorded, list) and isinstance(now, list):
        return len(recorded) == len(now) and all(map(_same_input, recorded, now))
    return bool(recorded == now)


@functools.lru_cache(maxsize=64)  # a for_each of child runs compares the same two texts at every item
def _content(source: str) -> Any:
    """What a workflow file says, without its comments and layout (which change nothing it does)."""
    import yaml

    try:
        return yaml.safe_load(source)
    except yaml.YAMLError:
        return source


def _existing_child(ex: Execution, path: str, key: str) -> str | None:
    """The child run this call started (its `run.started` names the call's key), if any."""
    for child in ex.store.children(ex.run_id, path):
        started = next(iter(ex.store.events(child.run_id)), None)
        if (
            started is not None
            and isinstance(started.payload, dict)
            and started.payload.get("parent_key") == key
        ):
            return child.run_id
    return None


from interpreter.agent import run_agent, run_llm  # noqa: E402 - the agents feature (issue 5)

register_step_runner("agent", run_agent)
register_step_runner("llm", run_llm)
