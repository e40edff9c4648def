"""One tool call and its events: the protocol shared by `tool` steps and the tool calls of agents.

`tool.called` is written before the call (for a `write` tool it is committed first, so that recovery
knows the side effect may have happened), then `tool.failed` or `tool.completed`. The result is logged
as the `tool.output` rules leave it (a value they mask never reaches the log), with the refusal
(`withheld`) when they deny it, so that resume and replay decide as the run did.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from typing import Any

from interpreter import store as s
from interpreter.enforcement import CURRENT_CHAIN, EscalationRequired, withheld
from interpreter.loop import interrupted_by
from interpreter.redact import MASK, iter_texts
from interpreter.runtime import StepError
from interpreter.tools import call_tool


def cut_off() -> dict[str, Any]:
    """The error of a call cut off in flight: by a signal that stops the run, else by a timeout or a
    branch that won its join."""
    by = interrupted_by()
    why = f": the run was interrupted ({by})" if by else " (a timeout, or another branch won the join)"
    message = f"the call was cut off{why}"
    return {"type": "Cancelled", "code": "cancelled", "message": message, "retryable": False}


async def logged_call(
    ex: Any,
    name: str,
    args: dict[str, Any],
    *,
    path: str,
    ids: dict[str, Any],
    step_id: str,
    chain: Any,
    identity: str | None,
    scope: Any,
    actor: dict[str, Any] | None,
    screen: Callable[[Any], Any],
    child_path: str | None = None,
) -> Any:
    """Call tool `name` under `chain` and log it. `ids` are the fields every event of the call carries
    (tool, attempt, idempotency_key; for an agent's call also its number and the model's call id).
    `screen` applies the tool.output rules to the result and returns their verdict, whose `value` is the
    result as logged. Returns that verdict. Raises the call's StepError (its message masked like a
    result) or the rules' EscalationRequired, each after its event. A completed write is committed at
    once, whatever the step does next (its `output` may fail, a rule may deny it): never repeated."""
    tool = ex.graph.workflow.tools[name]
    try:
        if ex.masked_from is not None and any(MASK in text for text in iter_texts(args)):
            raise _masked_args(ex, name, step_id, path)
        called = {**ids, "args": args, "effect": tool.effect}
        if tool.python and (code := ex.python_tool(name, tool.python).code):
            called["code"] = code  # replay tells a changed tool from the recorded one
    except BaseException:
        # Refused before it was made: the budgets counted it when its check passed; it never ran and
        # the log has no `tool.called` of it, so it does not count (spec §11.4).
        ex.guard.release_tool_call(path, name)
        raise
    write = tool.effect == "write"
    if write:  # write-ahead: the intent is durable before the side effect
        ex.commit(s.NewEvent(s.TOOL_CALLED, path, called, actor))
    else:
        ex.emit(s.TOOL_CALLED, path, called, actor)
    t0 = time.perf_counter()
    token = CURRENT_CHAIN.set(chain)  # a child workflow started by this call narrows this chain
    try:
        result = await call_tool(
            ex, name, args, key=ids["idempotency_key"], scope=scope, path=path, child_path=child_path,
            identity=identity,
        )  # fmt: skip
    except StepError as err:
        err.step, err.node_path = step_id, path
        if write and err.code == "timeout":  # it may have acted: another attempt only if `on` asks (§12.4)
            err.retryable = False
        ex.guard.mask_tool_error(path, name, err)
        ex.emit(s.TOOL_FAILED, path, {**ids, "error": err.to_dict(), "duration_ms": _ms(t0)}, actor)
        raise
    except asyncio.CancelledError:  # cut off from outside: a timeout, or a sibling branch won the join
        ex.emit(s.TOOL_FAILED, path, {**ids, "error": cut_off(), "duration_ms": _ms(t0)}, actor)
        if write:
            ex.cut_writes.add(path)
        raise
    finally:
        CURRENT_CHAIN.reset(token)
    duration, escalation = _ms(t0), None
    try:
        verdict = screen(result)
    except EscalationRequired as esc:  # raised once the (screened) result is logged
        verdict, escalation = esc.verdict, esc
    if _reserved(verdict.value):  # the log could not hold it: the call failed, not the run
        err = StepError(
            "tool",
            f"tool '{name}' returned an object with the key {s.BLOB_REF_KEY!r}, which the event log "
            "reserves for its blob references",
            type="ToolError",
            retryable=False,
        )
        err.step, err.node_path = step_id, path
        err.final = True  # the call was made: `retry.on: [tool]` must not make it again
        ex.emit(s.TOOL_FAILED, path, {**ids, "error": err.to_dict(), "duration_ms": duration}, actor)
        if write:
            await ex.commit_write()  # its side effect happened: never repeated
        raise err
    completed = {**ids, "result": verdict.value, "duration_ms": duration}
    if refusal := withheld(verdict):
        completed["withheld"] = refusal
    ex.emit(s.TOOL_COMPLETED, path, completed, actor)
    if write:
        await ex.commit_write()  # a completed write is never repeated
    if escalation is not None:
        raise escalation
    return verdict


def _masked_args(ex: Any, name: str, step_id: str, path: str) -> StepError:
    """A call whose arguments hold a secret as the log kept it ([REDACTED]), read from a result this
    run reused after a crash, a pause or a fork: made, it would act on the mask, not the secret."""
    err = StepError(
        "policy",
        f"tool '{name}' was not called: its arguments hold {MASK}, a declared secret as the log keeps "
        f"it, from the result of '{ex.masked_from}' that this run reused from the log; run the workflow "
        f"again, or from that step: charter run FILE --from {shlex.quote(f'{ex.reused_from or ex.run_id}@{ex.masked_from}')}",
        type="MaskedSecret",
        retryable=False,
    )
    err.step, err.node_path = step_id, path
    return err


def _reserved(value: Any) -> bool:
    """A value the store refuses as a member of a payload: it would read as a blob reference."""
    return isinstance(value, dict) and s.BLOB_REF_KEY in value


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def replayed_call(ex: Any, path: str, attempt: int, call: Any, name: str, args: Any) -> dict[str, Any]:
    """Replay: the recorded `tool.completed` payload of `call` (a `records.ToolCall`, None when the
    run made no such call) stands in for calling tool `name`; its recorded failure is raised. Another
    tool, other arguments or a Python tool whose code changed since the run diverge here."""
    tool = ex.graph.workflow.tools[name]
    ex.checked += 1
    if call is None or call.called is None:
        ex.diverge(path, None, {"tool": name, "args": args}, "this tool call is not in the recorded run")
    if call.called.get("tool") != name:
        ex.diverge(path, call.called.get("tool"), name, "a different tool is called")
    args = ex.guard.mask(args)  # the recording holds secrets masked
    if call.called.get("args") != args:
        ex.diverge(path, call.called.get("args"), args, f"the arguments of tool '{name}' differ")
    recorded_code = call.called.get("code")
    if tool.python and recorded_code:
        current = ex.current_code(tool.python)
        if current is not None and current != recorded_code:
            ex.diverge(path, recorded_code, current, f"the code of tool '{name}' ({tool.python}) changed")
    if tool.workflow is not None:  # the child run it started spent from this run's budgets
        from interpreter.steps import count_recorded_child

        count_recorded_child(ex, path, str(call.called.get("idempotency_key")))
    if call.completed is not None:
        return call.completed
    failed = (call.failed or {}).get("error")
    if failed is None:
        ex.diverge(
            path, None, {"tool": name, "args": args}, "the recorded call has no result (interrupted run)"
        )
    if failed.get("code") != "cancelled":
        raise StepError.from_dict(failed)
    if call.called.get("effect") == "write":  # as the run's timeout decided: the write may have acted
        ex.cut_writes.add(path)
    await ex.cut_off(path, attempt)  # cut off by a timeout, or by a sibling that won the join: ends as it did
    raise AssertionError("unreachable: cut_off ends the call")
