"""The interpreter: runs an ExecutionGraph on asyncio and records every transition in the event log.

One `Execution` drives one run. Its modes:
- live: steps run. A step's events are buffered and committed with its completion, in one
  transaction. With durability "full" the completions of one turn of the event loop share a commit
  (fsynced) that every tool or model call waits for; with "normal", completions of side-effect-free
  work are group-committed within a 5 ms window, and every side effect is a barrier (see
  `Execution.settle`). `records` (from the run's own log on resume, or from another run's log before
  a fork point) lets finished nodes be reused.
- replay: nothing is written and no tool is called; recorded tool results stand in for the calls and
  every step's outcome is compared with the recording. The first difference stops the replay.

Step kinds are implemented in `interpreter.steps` (a registry keyed by kind).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import dataclasses
import getpass
import math
import os
import random
import re
import shlex
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl import __version__
from dsl.expr import ExpressionError
from dsl.model import parse_duration
from interpreter import store as s
from interpreter.enforcement import EscalationRequired, RunGuard, approvals_from_records, policy_error
from interpreter.hashing import NotCanonicalizable, canonical_json
from interpreter.leases import given_up
from interpreter.loop import interrupted_by, run_coroutine
from interpreter.policy import ModulePolicy, PolicyError, build_policy
from interpreter.records import NodeRecord, build_records, descendant_runs, descendants, enclosing
from interpreter.redact import MASK, iter_texts
from interpreter.runtime import (
    HALTS,
    OUTER_ATTEMPTS,
    Diverged,
    Divergence,
    InputError,
    ProgressEvent,
    ReplayCutOff,
    RunOptions,
    RunResult,
    RunSetupError,
    SetupPolicyError,
    StepError,
    Suspend,
    error_text,
)
from interpreter.spending import within
from interpreter.tools import PythonTarget, PythonTool, check_mcp_commands, code_digest, resolve_python

INTERPRETER_VERSION = __version__
NewEvent = s.NewEvent
GROUP_WINDOW = 0.005  # seconds a side-effect-free completion may wait for a group commit
GROUP_EVENTS = 512
_PARENT = {"sub": "system:parent"}  # the actor of a child run's cancellation by its parent
_ITERATION = re.compile(r"\[\d+\]")
INPUT_GATE = "run.input"  # node path of run.input guardrail events and of their escalation


def static_path(runtime_path: str) -> str:
    """ "priced[3]/body/price" -> "priced/body/price"."""
    return _ITERATION.sub("", runtime_path)


@dataclass(slots=True)
class Scope:
    """Where a node runs: the `steps` map it sees, local bindings (item, index, error), how its static
    path maps to its runtime path, and the nearest enclosing `try` (for `caught_by`)."""

    steps: dict[str, Any]
    locals: dict[str, Any]
    static: str
    runtime: str
    catcher: str | None

    def path(self, node: Any) -> str:
        if self.static == self.runtime:
            return node.path
        return self.runtime + node.path[len(self.static) :]

    def iteration(self, node: Any, runtime_path: str, index: int, bound: dict[str, Any]) -> Scope:
        return Scope(
            dict(self.steps), {**self.locals, **bound}, node.path, f"{runtime_path}[{index}]", self.catcher
        )


def _expression_error(
    exc: Exception, what: str, graph: Any = None, at: tuple[str | int, ...] | None = None
) -> StepError:
    """A run-time expression error, placed in the file (`at`: the step or field it is written in)."""
    place, message = None, f"{what}: {exc}"
    if at is not None and isinstance(exc, ExpressionError) and exc.source:
        place = graph.locate(at, exc.source, exc.offset)
        if place is not None:
            message = f"{what}: `{exc.source.strip()}`: {exc.message}"
    elif at is not None and graph is not None:  # a value CEL cannot hand over (a double inf): its field
        place = graph.locate(at, None)
    details = {"at": place} if place is not None else None
    return StepError("expression", message, type="ExpressionError", retryable=False, details=details)


class Execution:
    def __init__(
        self,
        store: s.EventStore,
        graph: Any,
        run_id: str,
        inputs: Any,
        *,
        options: RunOptions,
        principal: str,
        started_at: str,
        file: str | None,
        policy: ModulePolicy,
        secrets: dict[str, str],
        mode: str = "live",
        records: dict[str, NodeRecord] | None = None,
        write_reused: bool = False,
        reused_from: str | None = None,
        guard: RunGuard | None = None,
        python_tools: dict[str, PythonTool] | None = None,
    ) -> None:
        self.store = store
        self.graph = graph
        self.run_id = run_id
        self.input = inputs
        self.options = options
        self.progress = options.progress
        self.principal = principal
        self.file = file
        self.policy = policy
        self.secrets = secrets
        self.mode = mode
        self.replaying = mode == "replay"
        self.records = records or {}
        self.write_reused = write_reused
        self.reused_from = reused_from
        self.run_info = {"id": run_id, "principal": principal, "started_at": started_at}
        self.vars: dict[str, Any] = {}
        self.initial_vars: dict[str, Any] = {}
        self.assigned: dict[str, float] = {}  # variable -> seq of the assignment `vars` holds (`assign`)
        self.var_history: tuple[list[int], list[dict[str, Any]]] | None = None  # replay: `vars_before`
        self.buffer: list[s.NewEvent] = []
        self.group = options.durability != "full"
        self.timer: asyncio.TimerHandle | None = None
        # durability "full": completions settled in one turn of the event loop share one commit at its
        # end (`_commit_turn`); this future is that commit. An effect waits (`durable`) for the commit
        # of the last completion in its own task's past (`after`): a branch task inherits its parent's
        # at creation, so sibling branches never wait for each other, and a join's own completion
        # (settled after all its branches) covers them all for what follows.
        self.turn_commit: asyncio.Future[None] | None = None
        self.after: contextvars.ContextVar[asyncio.Future[None] | None] = contextvars.ContextVar(
            f"charter-after-{run_id}", default=None
        )
        # `vars` is one per run, so any branch may read what another set: every call waits for the
        # commit of the latest `set` too, wherever it ran.
        self.vars_after: asyncio.Future[None] | None = None
        self.code_digests: dict[str, str | None] = {}
        # The first reused step whose recorded result holds a masked secret: no tool is called with
        # that mask in its arguments (`tool_calls.logged_call`).
        self.masked_from: str | None = None
        # Enforcement (issue 6): the principal comes from RunOptions (--as/--claims) or the run's log,
        # never from model output or tool results.
        if guard is None:  # replay: the principal's claims and parent chain as the log recorded them
            started = _run_started(store, run_id) if self.replaying else {"claims": options.claims}
            guard = _guard_for(
                store, run_id, graph, started, principal, secrets, self.records, replayed=run_id
            )
        self.guard = guard
        self.guard.state = lambda: {"input": self.input, "vars": self.vars, "run": self.run_info}
        self.guard.attach(self.emit)
        self.guard.decide = self.decide  # type: ignore[method-assign]
        self.input_gate: Any = None  # the run.input verdict (or escalation) found before the run was created
        self.actor = self.guard.run_actor()
        self.python_tools: dict[str, PythonTool] = dict(python_tools or {})
        self.unloadable: set[str] = set()  # replay: python tools whose module cannot be loaded here
        self.schema_cache: dict[str, Any] = {}
        self.http_client: Any = None
        # Per-run resources (MCP sessions, model providers) register an async close here; `execute`
        # awaits each one (last registered first) when the run ends, whatever its outcome.
        self.closers: list[Callable[[], Awaitable[Any]]] = []
        # Child runs given up on (`abandon_children`), cancelled after the next commit.
        self.abandoned: list[tuple[str | None, str]] = []
        # Node paths of write calls a timeout or a join cut off in flight (`_timed_out`).
        self.cut_writes: set[str] = set()
        self.checked = 0
        self.visited: set[str] = set()  # replay: nodes whose outcome was compared
        from interpreter.steps import STEP_RUNNERS

        self.runners = STEP_RUNNERS

    # -- events

    def emit(self, kind: str, path: str, payload: Any, actor: dict[str, Any] | None = None) -> None:
        if not self.replaying:
            self.buffer.append(NewEvent(kind, path, payload, actor))

    def commit(self, *events: s.NewEvent) -> None:
        """Write the buffered events and these in one transaction, now."""
        if self.replaying:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch = self.buffer
        self.buffer = []
        batch.extend(events)
        if batch:
            try:
                self.store.append_many(self.run_id, self._masked(batch))
            except BaseException:
                self.buffer = batch + self.buffer  # nothing was written: keep the events for the next try
                raise
        turn, self.turn_commit = self.turn_commit, None
        if turn is not None and not turn.done():  # this commit carried the turn's completions
            turn.set_result(None)
        if self.abandoned:
            self._cancel_abandoned()

    def _commit_turn(self, turn: asyncio.Future[None]) -> None:
        if turn is not self.turn_commit or turn.done():  # an earlier commit carried it
            return
        try:
            self.commit()
        except BaseException as exc:  # noqa: BLE001 - raised by `durable` in the step that waits
            turn.set_exception(exc)  # stays the turn: the next `durable` tries the commit again
            turn.exception()  # retrieved: nobody may be waiting

    async def durable(self) -> None:
        """Wait for the commit of the completions this call follows, and of the latest `set` (durability
        "full"): called before every tool and model call, so nothing acts on the world before the steps
        it follows are logged."""
        for turn in (self.after.get(), self.vars_after):
            if turn is None:
                continue
            if not turn.done():
                # Unlike awaiting it, waiting never cancels the commit nor raises its error.
                await asyncio.wait((turn,))
            if turn.exception() is not None:  # it failed (e.g. locked too long): no call before it succeeds
                self.commit()

    async def commit_write(self) -> None:
        """Commit a completed `write` call now, waiting out a database that another process keeps
        locked: the side effect happened, and a log without its completion would make resume repeat it
        (spec §1.1). Only losing the lease (another process took the run) stops it."""
        delay = 0.05
        while True:
            try:
                self.commit()
                return
            except s.StoreLockedError:  # `commit` kept the events in the buffer
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def settle(self, *events: s.NewEvent) -> None:
        """Record a step's completion.

        durability "full": committed (and fsynced) at the end of the event loop's turn, together with
        the other completions of that turn (the branches of a fan-out that finish together), and
        before anything acts on the world (`durable`). "normal": group commit -- completions of
        side-effect-free work wait at most GROUP_WINDOW seconds (or GROUP_EVENTS events) so that one
        commit carries many steps. The log stays a consistent prefix of the execution, and every
        barrier commits first: a `write` tool's call, an approval, a child run, a retry, the run's end.
        A `write` call's `tool.completed` is committed at once (`commit_write`). A crash
        loses at most the window's read-only work, which resume runs again.
        """
        if self.replaying:
            return
        if not self.group:
            self.buffer.extend(events)
            if self.turn_commit is None:
                loop = asyncio.get_running_loop()
                self.turn_commit = loop.create_future()
                loop.call_soon(self._commit_turn, self.turn_commit)
            self.after.set(self.turn_commit)
            return
        self.buffer.extend(events)
        if len(self.buffer) >= GROUP_EVENTS:
            self.commit()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(GROUP_WINDOW, self._flush_window)

    def _masked(self, batch: list[s.NewEvent]) -> list[s.NewEvent]:
        """Secrets never reach the log in clear: every payload is masked before it is written."""
        if not self.guard.secret_values:  # nothing to mask: no secret of this run or its parents
            return batch
        guard = self.guard
        return [NewEvent(e.kind, e.node_path, guard.mask(e.payload), e.actor) for e in batch]

    def escalate(self, esc: EscalationRequired) -> None:
        """An `escalate` guardrail: a durable approval request at `esc.key`; the run waits."""
        if not esc.requested and not self.replaying:
            payload = esc.request_payload()
            self.commit(NewEvent(s.APPROVAL_REQUESTED, esc.key, payload))
            self.guard.approvals[esc.key] = (payload, None)
        self.notify("waiting", esc.key, "guardrail", esc.verdict.message)
        raise Suspend([esc.key])

    def decide(self, path: str, payload: dict[str, Any], actor: dict[str, Any]) -> Any:
        """Record the system's decision on a pending approval (a timeout) unless a person decided it
        since the log was read: the decision that stands."""
        if self.replaying:
            return payload
        self.commit()
        earlier = self.store.decide(self.run_id, path, self.guard.mask(payload), actor)
        return payload if earlier is None else earlier

    def _flush_window(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.buffer:
            try:
                self.commit()
            except s.StoreError:
                pass  # e.g. locked for longer than busy_timeout: the next commit carries the events

    def notify(self, kind: str, path: str, step_kind: str = "", detail: Any = None) -> None:
        if self.progress is None:
            return
        if isinstance(detail, str | dict | list):  # messages: a secret never reaches the terminal either
            detail = self.guard.mask(detail)
        try:
            self.progress(ProgressEvent(kind, path, step_kind, detail))
        except Exception:  # noqa: BLE001 - e.g. a closed pipe: a display must never end the run
            self.progress = None

    # -- expressions

    def bindings(self, scope: Scope, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        b = {
            "input": self.input,
            "vars": self.vars,
            "run": self.run_info,
            "secrets": self.secrets,
            "steps": scope.steps,
        }
        if scope.locals:
            b.update(scope.locals)
        if extra:
            b.update(extra)
        return b

    def evaluate(
        self,
        compiled: Any,
        scope: Scope,
        what: str,
        extra: Mapping[str, Any] | None = None,
        at: tuple[str | int, ...] | None = None,
    ) -> Any:
        """The value of a compiled field; `at` (where it is written: its step's `where`) places an
        error in the file."""
        if compiled is None:
            return None
        if compiled.constant:
            return compiled.evaluate({})
        from dsl.expr import from_cel

        try:
            return from_cel(compiled.evaluate(self.bindings(scope, extra)))
        except Exception as exc:  # noqa: BLE001 - EvaluationError, or a value CEL cannot hold
            raise _expression_error(exc, what, self.graph, at) from None

    def condition(
        self, program: Any, scope: Scope, what: str, at: tuple[str | int, ...] | None = None
    ) -> bool:
        try:
            value = program.evaluate(self.bindings(scope))
        except Exception as exc:  # noqa: BLE001
            raise _expression_error(exc, what, self.graph, at) from None
        if type(value) is not bool:
            raise StepError(
                "expression", f"{what}: `{program.source}` gave {value!r}, not a bool", type="ExpressionError"
            )
        return value

    # -- divergence (replay)

    def diverge(self, path: str, expected: Any, got: Any, reason: str) -> None:
        raise Diverged(Divergence(path, self.guard.mask(expected), self.guard.mask(got), reason))

    # -- tools

    def python_tool(self, name: str, target: str) -> PythonTool:
        tool = self.python_tools.get(name)
        if tool is None:
            try:
                tool = self.python_tools[name] = resolve_python(name, target, self.policy)
            except PolicyError as exc:
                raise StepError("policy", str(exc), type="PolicyError", retryable=False) from None
        return tool

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's argument schema: its `args`, else a python tool's from its type hints (loaded when
        the run started; replay loads it here -- nothing is called -- so that arguments the run refused
        are refused again, and goes without when its module cannot be imported here)."""
        tool = self.graph.workflow.tools[name]
        if tool.args is not None or not tool.python:
            return tool.args
        loaded = self.python_tools.get(name)
        if loaded is None and self.replaying and name not in self.unloadable:
            try:
                loaded = self.python_tool(name, tool.python)
            except StepError:
                self.unloadable.add(name)  # tried once: every later call of it goes without, too
        return loaded.schema if loaded is not None else None

    def current_code(self, target: str) -> str | None:
        if target not in self.code_digests:
            self.code_digests[target] = self._code(target)
        return self.code_digests[target]

    def _code(self, target: str) -> str | None:
        module = PythonTarget.parse(target).module
        allowance = self.policy.allowance_for(module)
        roots = self.policy.import_roots(allowance) if allowance else list(self.policy.roots)
        return code_digest(target, roots)

    async def http(self) -> Any:
        if self.http_client is None:
            import httpx

            self.http_client = httpx.AsyncClient()
        return self.http_client

    # -- nodes

    async def exec_block(self, block: Any, scope: Scope) -> Any:
        out = None
        for node in block.nodes:
            out = await self.exec_node(node, scope)
        return out

    async def exec_node(self, node: Any, scope: Scope) -> Any:
        path = scope.path(node)
        rec = self.records.get(path)
        halts = HALTS.get()
        if halts and (rec is None or rec.status is None) and any(halt.is_set() for halt in halts):
            await asyncio.Future()  # the group this runs in was decided: start nothing, wait to be cancelled
        if rec is not None and rec.status is not None and (not self.replaying or rec.reused):
            return self.reuse(node, scope, path, rec)  # replay too: a fork's reused steps did not run
        if node.condition is not None and not self._holds(node, scope, path, rec):
            return self.skip(node, scope, path, rec)
        step = node.step
        retry = step.retry
        attempts = retry.attempts if retry is not None else 1
        attempt = rec.attempts_failed + 1 if rec is not None and not self.replaying else 1
        if rec is None or rec.started is None or self.write_reused:
            if node.condition is not None:  # why the step ran: what its `if` read
                self.emit(s.DECISION, path, {
                    "step": "if", "expression": node.condition.source, "result": True, "chosen": "run",
                    "values": _condition_values(node.condition, self.bindings(scope))})  # fmt: skip
            self.emit(s.STEP_STARTED, path, {"step": node.kind, "attempt": attempt})
        self.notify("started", path, node.kind)
        runner = self.runners.get(node.kind)
        if runner is None:
            raise StepError("unsupported", f"step kind '{node.kind}' has no runner", retryable=False)
        timeout = parse_duration(step.timeout) if step.timeout else None
        t0 = time.perf_counter()
        while True:
            try:
                result = await self._attempt(runner, node, scope, path, attempt, timeout)
                output = self._output(node, scope, result)
                break
            except EscalationRequired as esc:
                self.escalate(esc)
            except StepError as err:
                if err.step is None:
                    err.step, err.node_path = node.id, path
                if attempt < attempts and self._retries(retry, err):
                    delay = self._delay(retry, attempt)
                    self.commit(
                        NewEvent(
                            s.STEP_RETRYING,
                            path,
                            {"attempt": attempt, "error": err.to_dict(), "delay_ms": delay * 1000},
                        )
                    )
                    self.notify("retrying", path, node.kind, error_text(err.to_dict()))
                    self._forget_under(path)
                    attempt += 1
                    if not self.replaying:
                        await asyncio.sleep(delay)
                    continue
                self.fail(node, scope, path, rec, err, attempt, t0)
                raise
            except asyncio.CancelledError:
                self.emit(s.STEP_SKIPPED, path, {"reason": "cancelled"})
                self.notify("cancelled", path, node.kind)
                raise
        scope.steps[node.id] = {"output": output, "status": "completed", "error": None}
        if self.replaying:
            self.check(path, rec, "completed", output)
        elif rec is None or rec.status != "completed":
            completed = NewEvent(
                s.STEP_COMPLETED,
                path,
                {"attempt": attempt, "output": output, "duration_ms": (time.perf_counter() - t0) * 1000},
            )
            self.settle(completed)
            if node.kind == "set":
                self.vars_after = self.after.get()
        self.notify("completed", path, node.kind, time.perf_counter() - t0)
        return output

    async def _attempt(
        self, runner: Any, node: Any, scope: Scope, path: str, attempt: int, timeout: float | None
    ) -> Any:
        outer = OUTER_ATTEMPTS.set((*OUTER_ATTEMPTS.get(), (path, attempt))) if attempt > 1 else None
        if self.cut_writes:  # what an earlier attempt cut off does not decide this attempt's timeout
            self.cut_writes -= {p for p in self.cut_writes if within(p, path)}
        try:
            if timeout is None:
                return await runner(self, node, scope, path, attempt)
            async with asyncio.timeout(timeout):
                return await runner(self, node, scope, path, attempt)
        except TimeoutError:
            if timeout is None:  # not this step's timeout: someone else's error
                raise
            self.abandon_children(path, f"cut its step '{path}' off ({node.step.timeout} timeout)")
            raise self._timed_out(node, path) from None
        except ReplayCutOff as cut:
            if cut.at != path:
                raise
            raise self._timed_out(node, path) from None
        finally:
            if outer is not None:
                OUTER_ATTEMPTS.reset(outer)

    def _timed_out(self, node: Any, path: str) -> StepError:
        """The step's timeout. One that cut off a write call in the step (its own, or a step's inside
        it) is not retried unless `retry.on` lists `timeout`: the call may have acted, and another
        attempt has another idempotency key (§12.4)."""
        err = StepError("timeout", f"step '{node.id}' timed out after {node.step.timeout}")
        cut = {p for p in self.cut_writes if within(p, path)}
        self.cut_writes -= cut
        err.retryable = not cut
        return err

    @staticmethod
    def _retries(retry: Any, err: StepError) -> bool:
        """Spec §12.4: a code listed in `on` is retried; without `on`, every error the runtime deems
        worth another attempt. Never: a guardrail's or the grants' refusal (the same call would be
        refused again, §11.3), a spent workflow budget, a step's own `output` (§12.3)."""
        if err.final or err.halts_run or err.code in ("guardrail", "unauthorized"):
            return False
        return err.retryable if retry.on is None else bool(err.kinds() & set(retry.on))

    def _holds(self, node: Any, scope: Scope, path: str, rec: NodeRecord | None) -> bool:
        """The step's `if`. One that does not evaluate fails the step (spec §12.3): logged, seen by a
        `catch` as that step's failure."""
        try:
            return self.condition(node.condition, scope, f"step '{node.id}': if", node.where)
        except StepError as err:
            err.step, err.node_path = node.id, path
            if rec is None or rec.started is None:
                self.emit(s.STEP_STARTED, path, {"step": node.kind, "attempt": 1})
            self.fail(node, scope, path, rec, err, 1, time.perf_counter())
            raise

    def _output(self, node: Any, scope: Scope, result: Any) -> Any:
        """The step's `output` mapping applied to its natural result (the result itself without one)."""
        if "output" not in node.values:
            return result
        try:
            output = self.evaluate(
                node.values["output"], scope, f"step '{node.id}': output", {"result": result}, node.where
            )
        except StepError as err:
            err.final = True  # another attempt would repeat the work to fail the same way (§12.3)
            raise
        if isinstance(output, dict) and s.BLOB_REF_KEY in output:  # the log could not hold it
            err = StepError(
                "expression",
                f"step '{node.id}': output: an object with the key {s.BLOB_REF_KEY!r}, which the event "
                "log reserves for its blob references",
                type="ExpressionError",
            )
            err.final = True
            raise err
        return output

    @staticmethod
    def _delay(retry: Any, attempt: int) -> float:
        backoff = retry.backoff
        delay = min(
            parse_duration(backoff.max), parse_duration(backoff.initial) * backoff.multiplier ** (attempt - 1)
        )
        return random.uniform(0, delay) if retry.jitter else delay

    def _forget_under(self, path: str) -> None:
        if self.records and not self.replaying:
            for key, _ in descendants(self.records, path):
                del self.records[key]

    def skip(self, node: Any, scope: Scope, path: str, rec: NodeRecord | None) -> None:
        scope.steps[node.id] = {"output": None, "status": "skipped", "error": None}
        if self.replaying:
            self.check(path, rec, "skipped", None)
        else:
            self.emit(
                s.STEP_SKIPPED,
                path,
                {
                    "reason": "condition",
                    "expression": node.condition.source,
                    "value": False,
                    "values": _condition_values(node.condition, self.bindings(scope)),
                },
            )
        self.notify("skipped", path, node.kind)
        return None

    def fail(
        self,
        node: Any,
        scope: Scope,
        path: str,
        rec: NodeRecord | None,
        err: StepError,
        attempt: int,
        t0: float,
    ) -> None:
        scope.steps[node.id] = {"output": None, "status": "failed", "error": err.binding()}
        if self.replaying:
            self.check(path, rec, "failed", err.to_dict())
        else:
            self.commit(
                NewEvent(
                    s.STEP_FAILED,
                    path,
                    {
                        "attempt": attempt,
                        "error": err.to_dict(),
                        "duration_ms": (time.perf_counter() - t0) * 1000,
                        # a spent workflow budget halts the run: no `try` around the step handles it
                        "caught_by": None if err.halts_run else scope.catcher,
                    },
                )
            )
        self.notify("failed", path, node.kind, error_text(err.to_dict()))

    def check(self, path: str, rec: NodeRecord | None, status: str, value: Any) -> None:
        """Replay: compare a node's outcome with the recording."""
        value = self.guard.mask(value)  # the recording holds secrets masked
        self.checked += 1
        self.visited.add(path)
        if rec is None or rec.status is None:
            why = (
                "the recorded run never got to this step"
                if rec is None
                else "the step did not finish in the recorded run"
            )
            self.diverge(path, None, {"status": status, "output": value}, why)
        assert rec is not None
        if rec.status != status:
            expected = rec.output if rec.status == "completed" else rec.error
            self.diverge(
                path,
                {"status": rec.status, "value": expected},
                {"status": status, "value": value},
                f"the step {rec.status} in the recorded run but {status} now",
            )
        if status == "completed" and rec.output != value:
            self.diverge(path, rec.output, value, "the step's output differs")
        if status == "failed" and isinstance(rec.error, dict):
            expected = {k: rec.error.get(k) for k in ("code", "message")}
            got = {k: value.get(k) for k in ("code", "message")}
            if expected != got:
                self.diverge(path, expected, got, "the step failed differently")

    def assign(self, delta: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
        """Apply a `set` to `vars`; returns what changed. A recorded assignment (`seq`: its `vars.set`
        event's) changes only variables that no later recorded assignment has set already: the steps of
        concurrent branches, reused in whatever order, leave `vars` as the log has it (spec §13.8).
        An assignment made now (`seq` None) comes after everything recorded."""
        if seq is not None:
            delta = {k: v for k, v in delta.items() if seq > self.assigned.get(k, 0)}
        if delta:
            self.vars = {**self.vars, **delta}
            at = math.inf if seq is None else seq
            for name in delta:
                self.assigned[name] = at
        return delta

    def vars_before(self, seq: int) -> dict[str, Any]:
        """Replay: `vars` as the recorded run had them just before event `seq` -- what a `set` recorded
        there read, whatever order concurrent branches finish in now."""
        if self.var_history is None:
            seqs, states, state = [], [], self.initial_vars
            for at, delta in sorted(getattr(self.records, "assignments", ()), key=lambda a: a[0]):
                state = {**state, **delta}
                seqs.append(at)
                states.append(state)
            self.var_history = (seqs, states)
        seqs, states = self.var_history
        i = bisect.bisect_left(seqs, seq)
        return states[i - 1] if i else self.initial_vars

    def reuse(self, node: Any, scope: Scope, path: str, rec: NodeRecord) -> Any:
        """A node the log says finished: restore its effects on `steps` and `vars`, do not run it."""
        children = descendants(self.records, path)
        if self.replaying:  # a fork's reused step: what the log says of it is what replay reproduces
            self.visited.update([path, *(p for p, _ in children)])
        if rec.status == "skipped":
            scope.steps[node.id] = {"output": None, "status": "skipped", "error": None}
            if self.write_reused:
                self.emit(s.STEP_SKIPPED, path, {**(rec.skip or {}), "reused_from": self.reused_from})
            return None
        if self.write_reused:  # the fork's own log holds them too: its resume finds `steps.X` inside
            self._write_reused(children)
        for child_path, child in children:
            if child.status is not None and "[" not in child_path[len(path) :]:
                child_id = child_path.rsplit("/", 1)[-1]
                scope.steps[child_id] = _binding(child)
        assignments = [(r.vars_seq, p, r.vars_delta) for p, r in [(path, rec), *children] if r.vars_delta]
        if self.masked_from is None and self.guard.secret_values and not self.replaying:
            reused = [rec.output, *(c.output for _, c in children), *(d for _, _, d in assignments)]
            if any(MASK in text for text in iter_texts(reused)):
                self.masked_from = path
        for seq, at, delta in sorted(assignments, key=lambda a: a[0]):
            applied = self.assign(delta, seq)
            if applied and self.write_reused:
                self.emit(s.VARS_SET, at, {"vars": applied})
        scope.steps[node.id] = _binding(rec)
        if rec.status == "failed":
            err = StepError.from_dict(rec.error or {})
            if self.write_reused:
                self.commit(
                    NewEvent(
                        s.STEP_FAILED,
                        path,
                        {
                            "attempt": rec.attempts_failed + 1,
                            "error": rec.error,
                            "duration_ms": 0.0,
                            "caught_by": scope.catcher,
                            "reused_from": self.reused_from,
                        },
                    )
                )
            raise err
        if self.write_reused:
            self.settle(
                NewEvent(
                    s.STEP_COMPLETED,
                    path,
                    {
                        "attempt": rec.attempts_failed + 1,  # the attempt that gave it, as recorded
                        "output": rec.output,
                        "duration_ms": 0.0,
                        "reused_from": self.reused_from,
                    },
                )
            )
        self.notify("reused", path, node.kind)
        return rec.output

    async def cut_off(self, path: str, attempt: int) -> None:
        """Replay of attempt `attempt` of a call at `path` that the recorded run cut off (its tool.failed
        says `cancelled`, or its model call has no answer): end it as it ended then, at once. A timeout
        (this step's, an enclosing step's, the run's) raises `ReplayCutOff` for that step. A step around
        it that completed (a join whose winner was another branch) means it was cancelled from inside:
        the call waits to be cancelled when the replay reaches that point."""
        attempts = {**dict(OUTER_ATTEMPTS.get()), path: attempt}  # the attempts being replayed
        for candidate in enclosing(path):
            rec = self.records.get(candidate)
            if rec is None:
                continue
            ended = rec.attempt_errors.get(attempts.get(candidate, 1))
            if ended is not None and ended.get("code") == "timeout" and ended.get("node_path") == candidate:
                raise ReplayCutOff(candidate)
            if candidate != path and rec.status == "completed":
                break
        else:
            row = self.store.run(self.run_id)
            error = row.error or {}
            if error.get("code") == "timeout" and not error.get("node_path"):
                raise ReplayCutOff("")
            if row.status == "running":  # the recording stops here (a crash): nothing says how it ended
                self.diverge(
                    path, None, None, "the recorded call has no result (the run was interrupted there)"
                )
            if row.status == "cancelled":  # its parent cancelled it here: the recording ends, as the replay
                raise Suspend([path])
        await asyncio.Future()

    def _write_reused(self, children: list[tuple[str, NodeRecord]]) -> None:
        """Copy the outcomes of a reused node's descendants into this run's log (a fork's)."""
        for child_path, child in children:
            reused = {
                "attempt": child.attempts_failed + 1,
                "duration_ms": 0.0,
                "reused_from": self.reused_from,
            }
            if child.status == "completed":
                self.emit(s.STEP_COMPLETED, child_path, {**reused, "output": child.output})
            elif child.status == "failed":
                self.emit(s.STEP_FAILED, child_path, {**reused, "error": child.error})
            elif child.status == "skipped":
                self.emit(s.STEP_SKIPPED, child_path, {**(child.skip or {}), "reused_from": self.reused_from})

    # -- the run

    async def execute(self) -> RunResult:
        root = Scope({}, {}, "", "", None)
        graph = self.graph
        # The run's top-level steps run in the caller's task: what they set in `after` goes when it ends.
        after = self.after.set(None)
        outer = OUTER_ATTEMPTS.set(())  # a child run's keys are its own, not its parent's attempts
        self.notify("run", "", "", self.run_id)
        try:
            try:
                initial = (
                    self.evaluate(graph.vars, root, "workflow vars", at=("vars",))
                    if graph.vars is not None
                    else None
                )
                self.vars = self.initial_vars = dict(initial or {})
                self.gate_input()
                async with asyncio.timeout(self.time_left()):
                    await self.exec_block(graph.root, root)
                output = (
                    self.evaluate(graph.output, root, "workflow output", at=("output",))
                    if graph.output is not None
                    else {}
                )
            except (TimeoutError, ReplayCutOff):
                raise StepError(  # nothing inside the run can retry or catch it (spec §12.5)
                    "timeout", f"the run timed out after {graph.workflow.timeout}", retryable=False
                ) from None
        except Suspend as sus:
            return self.finish("waiting", None, None, sus.pending)
        except StepError as err:
            return self.finish("failed", None, err.to_dict(), None)
        except Diverged:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            # Cut off (Ctrl-C, a parent's timeout or join): what happened until now is true, and is
            # written while this process still holds the run's lease -- not by a timer after it. The
            # log says why the run stopped unless its parent's log does (its timeout, its join).
            by = interrupted_by()
            if not self.replaying and (by or self.store.run(self.run_id).parent_run_id is None):
                self.emit(s.RUN_INTERRUPTED, "", {"signal": by})
            self._flush_window()
            raise
        except RunSetupError:  # a child run that cannot continue here: neither run fails for it
            raise
        except (s.StoreLockedError, s.LeaseLost):
            # The log could not be written now (another process kept it locked, or took the run over):
            # the run stops where its log ends, still resumable, rather than failing for good.
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still leave the run in a clear state
            error = {
                "type": "InternalError",
                "code": "internal",
                "message": f"{type(exc).__name__}: {exc}",
                "retryable": False,
            }
            return self.finish("failed", None, error, None)
        finally:
            self.after.reset(after)
            OUTER_ATTEMPTS.reset(outer)
            await self.close()
        return self.finish("completed", output, None, None)

    def time_left(self) -> float | None:
        """What remains of the workflow `timeout`: the run's execution time so far, earlier segments
        included (the run budget's clock, restored from the log on resume), is spent (spec §12.5)."""
        timeout = self.graph.workflow.timeout
        if not timeout:
            return None
        left = parse_duration(timeout) - self.guard.run_budget.elapsed()
        if left <= 0:
            raise StepError(
                "timeout", f"the run timed out: its {timeout} of execution time ran out before this resume"
            )
        return left

    async def close(self) -> None:
        """Close what the run opened: the closers (newest first), then the HTTP client. A failing
        close must not hide the run's outcome."""
        closers, self.closers = self.closers, []
        if self.http_client is not None:
            closers.insert(0, self.http_client.aclose)
            self.http_client = None
        for closer in reversed(closers):
            try:
                await closer()
            except Exception:  # noqa: BLE001, S110 - the run's outcome is what matters
                pass

    def usage(self) -> dict[str, Any]:
        """The run's model usage (calls, tokens, cost, latency) for its end event. A fork's records are
        another run's: only its own live calls count."""
        from types import SimpleNamespace

        from interpreter.agent import usage_of

        if self.reused_from is not None:
            live = SimpleNamespace(
                records={}, replaying=False, agent_runtime=getattr(self, "agent_runtime", None)
            )
            return usage_of(live)
        return usage_of(self)

    def gate_input(self) -> None:
        """run.input rules complete before the first step: deny fails the run, escalate waits."""
        gate = self.input_gate
        if gate is None and INPUT_GATE in self.guard.approvals:  # resumed: settle the pending escalation
            try:
                gate = self.guard.check("run.input", {"input": self.input}, INPUT_GATE)
            except EscalationRequired as esc:
                gate = esc
        if isinstance(gate, EscalationRequired):
            self.escalate(gate)
        if gate is not None and not gate.allowed:
            raise policy_error(
                f"the run input was refused: {gate.message}", details={"rules": list(gate.rules)}
            )

    def _waiting_for(self, pending: list[str] | None) -> str:
        """`escalation` when every pending request is a guardrail's, else `approval`."""
        requests = [self.guard.approvals.get(path, (None, None))[0] for path in pending or ()]
        escalations = [r for r in requests if isinstance(r, dict) and "guardrail" in (r.get("data") or {})]
        return "escalation" if requests and len(escalations) == len(requests) else "approval"

    def finish(
        self, status: str, output: Any, error: dict[str, Any] | None, pending: list[str] | None
    ) -> RunResult:
        if not self.replaying:
            if status == "completed":
                event = NewEvent(s.RUN_COMPLETED, "", {"output": output, "usage": self.usage()})
            elif status == "failed":
                event = NewEvent(s.RUN_FAILED, "", {"error": error, "usage": self.usage()})
            else:
                event = NewEvent(
                    s.RUN_WAITING, "", {"reason": self._waiting_for(pending), "pending": pending}
                )
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            batch, self.buffer = self._masked([*self.buffer, event]), []
            output, error = self.guard.mask(output), self.guard.mask(error)
            try:
                with self.store.transaction() as tx:
                    tx.append_many(self.run_id, batch)
                    if status == "completed":
                        tx.set_status(self.run_id, status, output=output, error=None)
                    elif status == "failed":
                        tx.set_status(self.run_id, status, error=error)
                    else:
                        tx.set_status(self.run_id, status)
            except s.PayloadError as exc:
                return self._unwritable(batch[:-1], exc)
            if status != "waiting":
                self.abandon_children(None, status)
            if self.abandoned:
                self._cancel_abandoned()
        self.notify(status, "", "", pending or error)
        return RunResult(self.run_id, status, output, error, list(pending or []))  # type: ignore[arg-type]

    def abandon_children(self, under: str | None, why: str) -> None:
        """This run no longer waits for the unfinished child runs it started at or under node `under`
        (None: anywhere) -- a timeout cut the step off, its branch lost the join or was cut off by a
        failure, the run ended (`why`). They are cancelled, with the runs they started, once the
        decision that gave them up is in this run's log (the next commit): left waiting, an approval
        or `charter wake` would continue one and make its side effects for nobody."""
        if not self.replaying:
            self.abandoned.append((under, why))

    def _cancel_abandoned(self) -> None:
        given_up, self.abandoned = self.abandoned, []
        try:
            self._cancel_given_up(given_up)
        except s.StoreError:  # e.g. locked for longer than busy_timeout: the next commit tries again
            self.abandoned = given_up + self.abandoned

    def _cancel_given_up(self, given_up: list[tuple[str | None, str]]) -> None:
        for child in self.store.children(self.run_id):
            at = child.parent_node or ""
            why = next((why for under, why in given_up if under is None or within(at, under)), None)
            if why is not None and child.status not in s.TERMINAL_STATUSES:
                cause = {"parent_run_id": self.run_id, "parent_node": at}
                cancel_tree(self.store, child.run_id, f"its parent run {self.run_id} {why}", _PARENT, cause)

    def _unwritable(self, before: list[s.NewEvent], exc: s.PayloadError) -> RunResult:
        """The run's outcome cannot be written (an output JSON cannot hold): the run fails with code
        `output`, after what happened before it, unless that is what cannot be written."""
        error = {"type": "OutputError", "code": "output", "message": str(exc), "retryable": False}
        failed = NewEvent(s.RUN_FAILED, "", {"error": error, "usage": self.usage()})
        for events in ([*before, failed], [failed]):
            try:
                with self.store.transaction() as tx:
                    tx.append_many(self.run_id, events)
                    tx.set_status(self.run_id, "failed", error=error)
                break
            except s.PayloadError:
                if len(events) == 1:
                    raise
        return RunResult(self.run_id, "failed", None, error)


def cancel_tree(
    store: s.EventStore,
    run_id: str,
    reason: str,
    actor: dict[str, Any],
    cause: dict[str, Any] | None = None,
    *,
    all_or_nothing: bool = False,
) -> list[str]:
    """End run `run_id` and every unfinished run it started as `cancelled` (`run.cancelled`: `reason`
    and `cause`, e.g. the parent that gave it up; the runs below it name their parent), in one
    transaction; return the ids cancelled. A run a live process executes is left to it -- with
    `all_or_nothing`, nothing is cancelled then (`RunLeased` names it)."""
    runs = [store.run(run_id), *(run for run, _ in descendant_runs(store, run_id))]
    leases: list[s.Lease] = []
    try:
        for run in runs:
            if run.status in s.TERMINAL_STATUSES:
                continue
            try:
                leases.append(store.acquire_lease(run.run_id))
            except s.RunLeased:
                if all_or_nothing:
                    raise
        done: list[str] = []
        with store.transaction() as tx:
            for run in runs:
                if run.run_id not in {lease.run_id for lease in leases}:
                    continue
                if run.run_id == run_id:
                    why, because = reason, cause or {}
                else:
                    why = f"its parent run {run.parent_run_id} was cancelled: {reason}"
                    because = {
                        **(cause or {}),
                        "parent_run_id": run.parent_run_id,
                        "parent_node": run.parent_node,
                    }
                error = {"type": "Cancelled", "code": "cancelled", "message": why, "retryable": False}
                tx.append(run.run_id, s.RUN_CANCELLED, "", {"reason": why, **because, "error": error}, actor)
                tx.set_status(run.run_id, "cancelled", error=error)
                done.append(run.run_id)
        return done
    finally:
        for lease in leases:
            store.release_lease(lease)


def _condition_values(program: Any, bindings: dict[str, Any]) -> dict[str, Any]:
    from interpreter.explain import referenced_values

    return referenced_values(program, bindings)


def _binding(rec: NodeRecord) -> dict[str, Any]:
    if rec.status == "failed":
        err = StepError.from_dict(rec.error or {})
        return {"output": None, "status": "failed", "error": err.binding()}
    return {"output": rec.output if rec.status == "completed" else None, "status": rec.status, "error": None}


# --------------------------------------------------------------------------------------------------
# Setting a run up


def check_inputs(graph: Any, inputs: Any) -> None:
    schema = graph.workflow.input
    if schema is None:
        return
    from interpreter import schemas

    problems = schemas.errors(schema, inputs)
    if problems:
        raise InputError(
            schemas.describe(problems, "the run input does not match the workflow's input schema")
        )


def resolve_secrets(graph: Any) -> dict[str, str]:
    missing = [name for name in graph.workflow.secrets if not os.environ.get(name)]
    if missing:  # an empty value is no value: masking it would mask nothing (spec §9)
        raise RunSetupError(f"secret(s) not set (or empty) in the environment: {', '.join(missing)}")
    return {name: os.environ[name] for name in graph.workflow.secrets}


async def _prepare(
    graph: Any, options: RunOptions, file: str | None
) -> tuple[ModulePolicy, dict[str, str], dict[str, PythonTool], dict[str, str]]:
    """What a run needs before its first step, checked before anything is written for it: every module
    and server command allowed, every python tool loaded, every secret set, every model a step uses
    buildable. Each problem is a RunSetupError (the CLI's exit 2): a run being continued stays
    resumable, instead of failing for good at the step that needs what is missing. Returns the policy,
    the secrets, the python tools and what the guard masks: the secrets and the models' API keys."""
    policy = build_policy(options.allow_modules, file)
    preflight(graph, policy)
    python_tools = load_python_tools(graph, policy)
    secrets = resolve_secrets(graph)
    from interpreter.agent import check_models  # agents load only for runs that have them

    keys = await check_models(graph, options.model_overrides, secrets, file)
    return policy, secrets, python_tools, {**keys, **secrets}


def preflight(graph: Any, policy: ModulePolicy) -> None:
    """Every python tool's module and every stdio MCP server's command must be allowed before anything
    runs (nothing is imported or started here)."""
    problems = []
    for name, tool in graph.workflow.tools.items():
        if tool.python:
            try:
                policy.check(PythonTarget.parse(tool.python).module, name)
            except PolicyError as exc:
                problems.append(f"{_where(graph, 'tools', name, 'python')}: {exc}")
    try:
        check_mcp_commands(graph, policy)
    except PolicyError as exc:
        problems.append(str(exc))
    if problems:  # all of them at once: a user fixes the file (or the allow list) in one go
        raise SetupPolicyError("\n".join(problems))


def load_python_tools(graph: Any, policy: ModulePolicy) -> dict[str, PythonTool]:
    """Import every python tool before a run starts or continues (after `preflight` allowed all their
    modules): a wrong module or function name is refused with its place in the file, not found by the
    step (or the agent) that first calls it, halfway through."""
    loaded, problems = {}, []
    for name, tool in graph.workflow.tools.items():
        if tool.python:
            try:
                loaded[name] = resolve_python(name, tool.python, policy)
            except StepError as exc:
                problems.append(f"{_where(graph, 'tools', name, 'python')}: {exc.message}")
    if problems:
        raise RunSetupError("\n".join(problems))
    return loaded


def _where(graph: Any, *path: str) -> str:
    """`file:line:col` of a field of the workflow file, for setup errors found after it compiled."""
    from dsl.loader import load_text

    doc, _ = load_text(graph.source, graph.file)
    line, column = doc.position(path) if doc is not None else (1, 1)
    return f"{graph.file}:{line}:{column}"


_GRAPHS: dict[tuple[str, str | None], Any] = {}  # (source digest, file) -> graph; graphs are immutable
_GRAPH_CACHE_SIZE = 32


def remember_graph(graph: Any, file: str | None) -> None:
    """Keep a compiled graph for resume/replay/fork in this process (the same source compiles the same)."""
    if len(_GRAPHS) >= _GRAPH_CACHE_SIZE:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[(graph.digest, file)] = graph


def compile_source(source: str, file: str) -> Any:
    """Compile a workflow from its text (the source stored in a run row)."""
    from interpreter.hashing import sha256_hex

    cached = _GRAPHS.get((sha256_hex(source), file))
    if cached is not None:
        return cached
    graph = _compile_source(source, file)
    remember_graph(graph, file)
    return graph


def _compile_source(source: str, file: str) -> Any:
    from dsl import diagnostics
    from dsl.compiler import compile_workflow
    from dsl.loader import load_text
    from dsl.validate import validate

    doc, diags = load_text(source, file)
    workflow = None
    if doc is not None and not any(d.severity == diagnostics.Severity.ERROR for d in diags):
        workflow, more = validate(doc)
        diags += more
    graph = None
    if workflow is not None and not any(d.severity == diagnostics.Severity.ERROR for d in diags):
        graph, more = compile_workflow(workflow, doc)
        diags += more
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    if graph is None or errors:
        raise RunSetupError("the workflow does not compile:\n" + diagnostics.format_text(errors or diags))
    return graph


def _principal(options: RunOptions) -> str:
    """Whom the run acts for: `--as NAME` (`user:NAME` names the same person), else the OS user."""
    if options.principal:
        from interpreter.authz import AuthzError, person_name

        try:
            return person_name(options.principal)
        except AuthzError as exc:
            raise RunSetupError(f"--as: {exc}") from None
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name on this host
        return "unknown"


def _file_of(graph: Any) -> str | None:
    file = getattr(graph, "file", None)
    if not file or file.startswith("<"):
        return None
    return str(Path(file).resolve())


def _run_started(store: s.EventStore, run_id: str) -> dict[str, Any]:
    for event in store.events(run_id):
        if event.kind == s.RUN_STARTED:
            return event.payload if isinstance(event.payload, dict) else {}
        break
    return {}


async def start_run(
    graph: Any,
    inputs: Any,
    store: s.EventStore,
    options: RunOptions,
    *,
    parent: tuple[str, str] | None = None,
    parent_key: str | None = None,
    forked_from: dict[str, str] | None = None,
    records: dict[str, NodeRecord] | None = None,
    parent_chain: Any = None,
    outer: tuple[Any, ...] = (),
    inherited: Any = None,
) -> RunResult:
    """Create a run row and its run.started event, then execute it."""
    check_inputs(graph, inputs)
    if options.durability == "full":  # what the engine assumes of its commits must be what they do
        store.set_durability("full")
    file = _file_of(graph)
    remember_graph(graph, file or "<stored>")
    policy, secrets, python_tools, masked = await _prepare(graph, options, file)
    principal = _principal(options)
    name = graph.workflow.name
    guard = RunGuard(
        graph,
        principal=principal,
        claims=options.claims,
        secrets=masked,
        parent_chain=parent_chain,
        outer=outer,
        inherited=inherited,
    )
    try:
        canonical_json(inputs)  # before comparing: a NaN is unequal to itself, and no secret
    except NotCanonicalizable as exc:
        raise InputError(f"the input is not JSON: {exc}") from None
    if guard.mask(inputs) != inputs:
        # The log keeps a run's input, and a resumed, replayed or forked run reads it back from there:
        # a secret in it would be either in clear in the log or [REDACTED] for what runs later.
        raise InputError(
            "the input holds the value of a declared secret: pass it with `secrets:` (the workflow, or a "
            "child workflow, declares it and reads it from the environment), not as input"
        )
    gate, inputs = _input_gate(guard, inputs)
    with store.transaction() as tx:
        row = tx.create_run(
            name,
            workflow_source=graph.source,
            inputs=inputs,
            principal=principal,
            interpreter_version=INTERPRETER_VERSION,
            parent_run_id=parent[0] if parent else None,
            parent_node=parent[1] if parent else None,
        )
        started = {
            "workflow": name,
            "forked_from": forked_from,
            "file": file,
            "durability": options.durability,
        }
        if options.model_overrides:  # continuing the run keeps them (`--model` on resume wins)
            started["models"] = dict(options.model_overrides)
        if parent_key is not None:
            started["parent_key"] = parent_key  # which call of the parent this child belongs to
        started.update(_identity_record(options, parent_chain))
        tx.append(row.run_id, s.RUN_STARTED, "", guard.mask(started), guard.run_actor())
        lease = tx.acquire_lease(row.run_id)  # leased from its first moment: nobody else resumes it

    def execute() -> Awaitable[RunResult]:  # built under the lease: a failure here releases it too
        execution = Execution(
            store,
            graph,
            row.run_id,
            inputs,
            options=options,
            principal=principal,
            started_at=row.created_at,
            file=file,
            policy=policy,
            secrets=secrets,
            records=records,
            write_reused=records is not None,
            reused_from=forked_from["run_id"] if forked_from else None,
            guard=guard,
            python_tools=python_tools,
        )
        execution.input_gate = gate
        return execution.execute()

    return await _leased(store, lease, execute, options)


def _input_gate(guard: RunGuard, inputs: Any) -> tuple[Any, Any]:
    """run.input rules, before the run row exists: a redacted input is what the log and the steps see."""
    try:
        verdict = guard.check("run.input", {"input": inputs}, INPUT_GATE)
    except EscalationRequired as esc:
        return esc, inputs
    if verdict.redacted:
        inputs = verdict.value
    return (verdict if verdict.action != "allow" else None), inputs


def _identity_record(options: RunOptions, parent_chain: Any) -> dict[str, Any]:
    """What resume needs to rebuild the principal: its claims, and a child run's parent chain."""
    from interpreter.enforcement import chain_to_json

    out: dict[str, Any] = {}
    if options.claims is not None:
        from interpreter.enforcement import claims_without_credentials

        out["claims"] = claims_without_credentials(options.claims)
    if parent_chain is not None:
        out["parent_chain"] = chain_to_json(parent_chain)
    return out


def _guard_for(
    store: s.EventStore,
    run_id: str,
    graph: Any,
    started: dict[str, Any],
    principal: str,
    secrets: dict[str, str],
    records: Any,
    parent: tuple[RunGuard, str] | None = None,
    replayed: str | None = None,
    verified: bool = False,
) -> RunGuard:
    """The guard of a continued (or replayed) run: principal, claims and parent chain from the log,
    never from the options of whoever resumes it (an approver's claims are not the principal's). A
    child run is bound by its parent's rules and grants: the live parent's (`parent`: its guard and the
    call's path, when the parent continues it), else a parent guard rebuilt from the log, with what the
    parent and its runs spent -- except the `replayed` run and those it started, whose replayed calls
    count as they are met again. `verified`: the caller checked the logs of the runs above."""
    from interpreter.enforcement import chain_from_json

    claims = started.get("claims") if isinstance(started.get("claims"), dict) else None
    parent_chain = chain_from_json(started.get("parent_chain"), claims)
    row = store.run(run_id)
    if parent is None and row.parent_run_id:
        up = store.run(row.parent_run_id)
        # Continued: the parent's rules, grants and budgets are read from a sound log.
        if replayed is None and not verified:
            require_intact(store, up.run_id, "continued")
        up_events = list(store.events(up.run_id))
        up_started = next((e.payload for e in up_events if e.kind == s.RUN_STARTED), None) or {}
        # Its file's folder, for the tool declarations a child's are compared with (workflow paths)
        up_graph = compile_source(up.workflow_source or "", up_started.get("file") or "<stored>")
        up_secrets = {n: os.environ.get(n, "") for n in up_graph.workflow.secrets}  # for masking
        up_records = build_records(up_events)
        up_guard = _guard_for(  # with the grandparent's rules: read up the chain
            store, up.run_id, up_graph, up_started, up.principal or principal, up_secrets, up_records,
            replayed=replayed, verified=verified,
        )  # fmt: skip
        up_guard.state = _state_from_log(up_graph, up, up_records, up_secrets)
        restore_spent(up_guard, store, up.run_id, up_events, up_records, leave_out=replayed)
        parent = (up_guard, row.parent_node or "")
    guard = RunGuard(
        graph,
        principal=principal,
        claims=claims,
        secrets=secrets,
        parent_chain=parent_chain,
        approvals=approvals_from_records(records),
        inherited=parent[0].rules_for_child(parent[1]) if parent is not None else None,
    )
    if parent is not None and parent_chain is not None:  # its ancestors' grants still bound it
        guard.outer = parent[0].outer_for_child(parent_chain)
    return guard


def _state_from_log(
    graph: Any, row: s.RunRecord, records: Any, secrets: Mapping[str, str]
) -> Callable[[], dict[str, Any]]:
    """The `input`, `vars` and `run` of a run above that does not execute here (it waits for the child
    being continued), as its grants and rules read them: its initial vars with every `set` its log
    records applied, in order."""
    from dsl.expr import from_cel

    run = {"id": row.run_id, "principal": row.principal, "started_at": row.created_at}
    variables: dict[str, Any] = {}
    if graph.vars is not None:
        scope = {"input": row.inputs, "vars": {}, "run": run, "secrets": dict(secrets), "steps": {}}
        with contextlib.suppress(Exception):  # it failed when the run started: no step ran after it
            variables = dict(from_cel(graph.vars.evaluate(scope)) or {})
    for _, delta in sorted(records.assignments, key=lambda assignment: assignment[0]):
        variables.update(delta)
    state = {"input": row.inputs, "vars": variables, "run": run}
    return lambda: state


def restore_spent(
    guard: RunGuard,
    store: s.EventStore,
    run_id: str,
    events: list[Any],
    records: Any,
    leave_out: str | None = None,
) -> None:
    """A continued run's budgets: what its own log and every run it started (at any depth) spent, but
    for the run `leave_out` and the runs it started."""
    guard.restore(events, records)
    left_out = {leave_out}
    for child, at in descendant_runs(store, run_id):  # parents come before the runs they started
        if child.run_id in left_out or child.parent_run_id in left_out:
            left_out.add(child.run_id)
            continue
        guard.restore_child(store.events(child.run_id), at)


async def continue_run(
    run_id: str,
    store: s.EventStore,
    options: RunOptions,
    reason: str,
    *,
    wait: Callable[[s.Lease], None] | None = None,
    parent: tuple[RunGuard, str] | None = None,
    verified: bool = False,
) -> RunResult:
    """Continue a run under its lease. `RunLeased` when another live process executes it; with `wait`
    (a parent continuing its child run), wait until that process lets it go instead, after calling
    `wait` once with the holder's lease. `parent`: the live guard of the parent continuing this child
    and the path of its call (the child's calls count in the parent's budgets as they happen).
    `verified`: the caller has just checked the log with `require_intact` (and appended to it only
    through the store), so it is not read through a second time."""
    row = store.run(run_id)
    if row.status in s.TERMINAL_STATUSES:  # finished for good: no lease needed to say so
        return RunResult(run_id, row.status, row.output, row.error)  # type: ignore[arg-type]
    lease = await _acquire(store, run_id, wait)
    return await _leased(
        store, lease, lambda: _continue(run_id, store, options, reason, parent, verified), options
    )


def require_intact(store: s.EventStore, run_id: str, doing: str) -> None:
    """Refuse to act on a log that fails `verify`: a result or a decision changed by hand would be
    taken as what happened (an edited `approval.decided` would let a denied step run)."""
    check = store.verify(run_id)
    if not check.ok:
        at = f" at seq {check.first_bad_seq}" if check.first_bad_seq is not None else ""
        raise s.DamagedLog(
            run_id,
            f"its log fails verification{at} ({check.reason}), so it is not {doing} (charter verify {run_id})",
        )


async def _continue(
    run_id: str,
    store: s.EventStore,
    options: RunOptions,
    reason: str,
    parent: tuple[RunGuard, str] | None = None,
    verified: bool = False,
) -> RunResult:
    row = store.run(run_id)  # read again under the lease: the previous holder may have finished it
    if row.status in s.TERMINAL_STATUSES:
        return RunResult(run_id, row.status, row.output, row.error)  # type: ignore[arg-type]
    if not verified:
        require_intact(store, run_id, "continued")
    events = list(store.events(run_id))
    started = next((e.payload for e in events if e.kind == s.RUN_STARTED), None) or {}
    models = started.get("models")
    if isinstance(models, dict) and models:  # the models it was started with, unless told otherwise now
        options = dataclasses.replace(options, model_overrides={**models, **options.model_overrides})
    if started.get("durability") == "full" and options.durability != "full":
        # A run keeps the durability it was started with: continuing it never weakens it.
        options = dataclasses.replace(options, durability="full")
        store.set_durability("full")
    file = started.get("file")
    graph = compile_source(row.workflow_source or "", file or "<stored>")
    policy, secrets, python_tools, masked = await _prepare(graph, options, file)
    principal = row.principal or _principal(options)
    while True:
        records = build_records(events)
        guard = _guard_for(
            store, run_id, graph, started, principal, masked, records, parent, verified=verified
        )
        restore_spent(guard, store, run_id, events, records)
        read = events[-1].seq if events else 0
        with store.transaction() as tx:  # both or neither: a run marked running has its resume logged
            # Under the lease only a decision (`approve`, `decide`) is appended by another process: one
            # recorded since the log was read is read too, before anything is written from that view.
            if tx.head_seq(run_id) == read:
                resumed = {
                    "reason": reason,
                    "after_seq": read,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
                tx.append(run_id, s.RUN_RESUMED, "", resumed)
                tx.set_status(run_id, "running")
                break
        events += store.events(run_id, after_seq=read)
    execution = Execution(
        store,
        graph,
        run_id,
        row.inputs,
        options=options,
        principal=principal,
        started_at=row.created_at,
        file=file,
        policy=policy,
        secrets=secrets,
        records=records,
        guard=guard,
        python_tools=python_tools,
    )
    return await execution.execute()


# --------------------------------------------------------------------------------------------------
# Leases: one process executes a run at a time (spec/event-log.md, `run_leases`)

LEASE_POLL_SECONDS = 0.2  # how often a parent waiting for its child run's lease looks again
MAX_RECONTINUES = 10  # a safety bound: each one needs a decision or child result that arrived meanwhile


async def _acquire(store: s.EventStore, run_id: str, wait: Callable[[s.Lease], None] | None) -> s.Lease:
    told = False
    while True:
        try:
            return store.acquire_lease(run_id)
        except s.RunLeased as held:
            if wait is None:
                raise
            if not told:
                wait(held.holder)
                told = True
        await asyncio.sleep(LEASE_POLL_SECONDS)


async def _leased(
    store: s.EventStore, lease: s.Lease, execute: Callable[[], Awaitable[RunResult]], options: RunOptions
) -> RunResult:
    """Execute a run while holding its lease, renewed by a heartbeat; give it up when the execution ends.

    A run that ends waiting keeps its lease when what it waits for was resolved while it ran (an
    approval decided, a child run finished): whoever resolved it found the lease taken and left the run
    to this process, which continues it (the check and the release are one transaction, so nothing is
    lost between them)."""
    lost = asyncio.Event()
    heartbeat = asyncio.create_task(_heartbeat(store, lease, lost, asyncio.current_task()))
    released = False
    try:
        result = await execute()
        for _ in range(MAX_RECONTINUES):
            if result.status != "waiting" or store.release_lease(lease, result.pending):
                released = result.status == "waiting"
                break
            result = await _continue(lease.run_id, store, options, "approval")
        return result
    except asyncio.CancelledError:
        if lost.is_set():
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the cancel was ours: a parent's timeout must not see it
            raise s.LeaseLost(
                f"run {lease.run_id}: another process took over its lease while this one executed it "
                "(no heartbeat for too long); this process stopped"
            ) from None
        raise
    finally:
        heartbeat.cancel()
        if not released and not lost.is_set():
            with contextlib.suppress(s.StoreError):  # e.g. the store was closed: the lease goes stale
                store.release_lease(lease)
        given_up(lease.owner)  # the row may remain (a locked file): this process executes the run no more


async def _heartbeat(store: s.EventStore, lease: s.Lease, lost: asyncio.Event, run: Any) -> None:
    """Renew the lease every HEARTBEAT_SECONDS (one small write: nothing per step). A lease that is no
    longer ours stops the execution: another process executes the run now."""
    from interpreter.leases import HEARTBEAT_SECONDS

    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            if store.renew_lease(lease):
                continue
        except s.StoreError:
            continue  # locked for longer than busy_timeout: the next beat tries again
        lost.set()
        run.cancel()
        return


# --------------------------------------------------------------------------------------------------
# Public API (sync wrappers around the asyncio core)


def run_workflow(
    graph: Any, inputs: Any, *, store: s.EventStore, options: RunOptions | None = None
) -> RunResult:
    """Run a compiled workflow to completion, failure or a pause for approval."""
    return run_coroutine(start_run(graph, inputs, store, options or RunOptions()))


def resume_run(
    run_id: str, *, store: s.EventStore, options: RunOptions | None = None, reason: str | None = None
) -> RunResult:
    """Continue an interrupted or waiting run from its log; finished work is reused, not repeated."""
    row = store.run(run_id)
    why = reason or ("recovery" if row.status == "running" else "manual")
    result = run_coroutine(continue_run(run_id, store, options or RunOptions(), why))
    _resume_parent(store, run_id, result, options or RunOptions(), why)
    return result


def _resume_parent(
    store: s.EventStore, run_id: str, result: RunResult, options: RunOptions, why: str
) -> None:
    """A child run that finished lets its parent continue (for the reason the child did): a parent
    waiting for it, or one interrupted while it ran the child (no live process holds its lease)."""
    if result.status == "waiting":
        return
    row = store.run(run_id)
    if row.parent_run_id and store.run(row.parent_run_id).status in ("waiting", "running"):
        with contextlib.suppress(s.RunLeased):  # its holder sees this child finished and continues it
            resume_run(row.parent_run_id, store=store, options=options, reason=why)


def _same_workflow(graph: Any, row: s.RunRecord, node_path: str) -> None:
    """A fork runs an edit of the run's own workflow from one of its steps: another workflow (another
    `name`), or one without that step (its static path: `each[2]/body/ok` is `each/body/ok`), would run
    on the run's input and results as if it were the one recorded."""
    from dsl.diagnostics import closest

    at, name = shlex.quote(f"{row.run_id}@{node_path}"), graph.workflow.name
    if row.workflow_name != name:
        raise RunSetupError(
            f"--from {at}: run {row.run_id} is of workflow '{row.workflow_name}', but {graph.file} is "
            f"workflow '{name}'; a fork runs an edit of the run's own workflow (same name): give the file "
            f"of '{row.workflow_name}'"
        )
    static = static_path(node_path)
    paths = [node.path for node in graph.nodes()]
    if static not in paths:
        guess = closest(static, paths)
        hint = f"; did you mean '{guess}'?" if guess else f"; its steps: {', '.join(paths[:20]) or 'none'}"
        what = f"'{node_path}' (the step '{static}')" if static != node_path else f"'{node_path}'"
        raise RunSetupError(f"--from {at}: {graph.file} (workflow '{name}') has no step {what}{hint}")


def fork_run(
    run_id: str,
    node_path: str,
    *,
    store: s.EventStore,
    options: RunOptions | None = None,
    graph: Any = None,
) -> RunResult:
    """A new run with the same input that reuses `run_id`'s results recorded before `node_path` started."""
    row = store.run(run_id)
    require_intact(store, run_id, "forked")
    if graph is not None:
        _same_workflow(graph, row, node_path)
    events = list(store.events(run_id))
    fork_seq = next(
        (
            e.seq
            for e in events
            if e.node_path == node_path
            or e.node_path.startswith(node_path + "/")
            or e.node_path.startswith(node_path + "[")
        ),
        None,
    )
    if fork_seq is None:
        paths = sorted({e.node_path for e in events if e.kind == s.STEP_STARTED})
        raise RunSetupError(
            f"node '{node_path}' did not run in run {run_id}; nodes that ran: {', '.join(paths[:20])}"
        )
    if graph is None:
        started = _run_started(store, run_id)
        graph = compile_source(row.workflow_source or "", started.get("file") or "<stored>")
    records = build_records(e for e in events if e.seq < fork_seq)
    forked = {"run_id": run_id, "node_path": node_path}
    return run_coroutine(
        start_run(graph, row.inputs, store, options or RunOptions(), forked_from=forked, records=records)
    )
