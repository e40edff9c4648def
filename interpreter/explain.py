"""`charter explain`: what sequence of decisions and actions occurred in a run, and why.

The trace is read from the event log only (nothing is re-run): each route taken with the condition and
the values of the variables it read, each skipped step with its `if`, each authorization decision with
the grant that allowed or the rule that stopped it, each guardrail that tripped, each tool call, each
model turn (prompt, answer, tool chosen, arguments), approvals with who and when, and the budgets used.
`format_text` renders one line per decision, indented by node depth; `build_trace` is the complete JSON.

`referenced_values` is also what the engine records in `decision` events: the values of the
variables (and field selections such as `steps.classify.output.intent`) an expression read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from interpreter import store as s
from interpreter.records import descendant_runs
from interpreter.spending import totals, within
from interpreter.timing import execution_time, segments, ts_seconds

ABSENT = "<absent>"
_TEXT_LIMIT = 160


# --- the values a condition read ------------------------------------------------------------------------


def _selections(node: Any, out: set[str]) -> None:
    from dsl.expr import ast

    if isinstance(node, ast.Select) and not node.test_only:
        chain: list[str] = []
        cur: Any = node
        while isinstance(cur, ast.Select):
            chain.append(cur.field)
            cur = cur.operand
        if isinstance(cur, ast.Ident):
            out.add(".".join([cur.name.lstrip("."), *reversed(chain)]))
            return
    if isinstance(node, ast.Ident):
        out.add(node.name.lstrip("."))
        return
    for value in vars(node).values() if hasattr(node, "__dict__") else _slots(node):
        for child in value if isinstance(value, tuple) else (value,):
            if isinstance(child, tuple):
                for item in child:
                    _selections(item, out)
            elif isinstance(child, ast.Expr):
                _selections(child, out)


def _slots(node: Any) -> list[Any]:
    names = [n for cls in type(node).__mro__ for n in getattr(cls, "__slots__", ())]
    return [getattr(node, n, None) for n in names]


def referenced_values(program: Any, bindings: Mapping[str, Any]) -> dict[str, Any]:
    """{"steps.classify.output.intent": "billing", "index": 2}: every variable path the expression reads
    that the bindings hold (comprehension variables are not bindings and are left out)."""
    found: set[str] = set()
    try:
        _selections(program.ast, found)
    except Exception:  # noqa: BLE001 - an unfamiliar tree: record no values rather than fail a run
        return {}
    out: dict[str, Any] = {}
    for path in sorted(found):
        root, *rest = path.split(".")
        if root not in bindings:
            continue
        value: Any = bindings[root]
        for part in rest:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                value = ABSENT
                break
        out[path] = _plain(value)
    return {k: v for k, v in out.items() if not any(k.startswith(o + ".") for o in out if o != k)}


def _plain(value: Any) -> Any:
    try:
        from dsl.expr import from_cel

        value = from_cel(value)
    except Exception:  # noqa: BLE001 - already plain
        pass
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)


# --- the trace ------------------------------------------------------------------------------------------


def _short(value: Any, limit: int = _TEXT_LIMIT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prompt_of(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else _short(content)
    return None


def _answer_of(response: Any) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The answer's text, the tool calls it chose, and those it made with its final answer (not run)."""
    if not isinstance(response, dict):
        return (response if isinstance(response, str) else None), [], []
    text = response.get("text") if isinstance(response.get("text"), str) else response.get("content")
    return (
        (text if isinstance(text, str) else None),
        _calls_of(response.get("tool_calls")),
        _calls_of(response.get("skipped_tool_calls")),
    )


def _told(messages: Any) -> list[dict[str, Any]]:
    """The errors and refusals this turn tells the model about its last tool calls (an unknown tool,
    arguments that are not JSON or break the schema, a guardrail or grant that said no, a failed call):
    why a call the model chose did not happen, as the model was told."""
    if not isinstance(messages, list):
        return []
    told: list[dict[str, Any]] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break  # only the results that answer the latest assistant turn
        if message.get("is_error"):
            told.append({"tool": message.get("name"), "message": message.get("content")})
    return told[::-1]


def _calls_of(calls: Any) -> list[dict[str, Any]]:
    return [
        {"tool": c.get("name"), "arguments": c.get("arguments")} for c in calls or [] if isinstance(c, dict)
    ]


def _entry(event: s.Event) -> dict[str, Any] | None:  # noqa: C901 - one branch per event kind
    p = event.payload if isinstance(event.payload, dict) else {}
    kind = event.kind
    base: dict[str, Any] = {"seq": event.seq, "ts": event.ts, "node_path": event.node_path, "kind": kind}
    if event.actor:
        base["actor"] = event.actor
    if kind == s.RUN_STARTED:
        return {**base, "what": "run", "workflow": p.get("workflow"), "file": p.get("file"),
                "claims": p.get("claims"), "forked_from": p.get("forked_from")}  # fmt: skip
    if kind == s.DECISION:
        return {**base, "what": "route", "step": p.get("step"), "expression": p.get("expression"),
                "values": p.get("values") or {}, "result": p.get("result"), "chosen": p.get("chosen"),
                "rejected": p.get("rejected") or []}  # fmt: skip
    if kind == s.STEP_SKIPPED:
        return {**base, "what": "skip", "reason": p.get("reason"), "expression": p.get("expression"),
                "values": p.get("values") or {}, "reused_from": p.get("reused_from")}  # fmt: skip
    if kind == s.STEP_COMPLETED and p.get("reused_from") is not None:
        # a fork's copy of a step the run it was forked from finished: its result was taken, not made
        # again, and the trace must not read as if this run had done that work
        return {**base, "what": "reused", "output": p.get("output"), "reused_from": p.get("reused_from")}
    if kind == s.AUTHZ_DECIDED:
        return {**base, "what": "authz", **{k: p.get(k) for k in (
            "tool", "decision", "grant", "reason", "principal", "actor_chain", "action", "resource",
            "args_digest", "grants")}}  # fmt: skip
    if kind == s.GUARDRAIL_EVALUATED:
        return {**base, "what": "guardrail", **{k: p.get(k) for k in (
            "rule", "hook", "outcome", "action", "mode", "decision", "reason", "verdict")}}  # fmt: skip
    if kind == s.TOOL_CALLED:
        return {**base, "what": "tool.call", "tool": p.get("tool"), "args": p.get("args"),
                "attempt": p.get("attempt"), "effect": p.get("effect")}  # fmt: skip
    if kind == s.TOOL_COMPLETED:
        return {**base, "what": "tool.result", "tool": p.get("tool"), "result": p.get("result")}
    if kind == s.TOOL_FAILED:
        return {**base, "what": "tool.error", "tool": p.get("tool"), "error": p.get("error")}
    if kind == s.MODEL_CALLED:
        return {**base, "what": "model.prompt", "model": p.get("model") or p.get("model_name"), "turn": p.get("turn", p.get("call")),
                "prompt": _prompt_of(p.get("messages")), "messages": p.get("messages"),
                "tools": p.get("tools"), "told": _told(p.get("messages"))}  # fmt: skip
    if kind == s.MODEL_COMPLETED:
        text, chosen, skipped = _answer_of(p.get("response"))
        return {**base, "what": "model.answer", "model": p.get("model") or p.get("model_name"), "turn": p.get("turn", p.get("call")),
                "answer": text, "tool_calls": chosen, "skipped_tool_calls": skipped, "usage": p.get("usage"),
                "cost": p.get("cost")}  # fmt: skip
    if kind == s.APPROVAL_REQUESTED:
        return {**base, "what": "approval.request", "message": p.get("message"),
                "approvers": p.get("approvers"), "data": p.get("data"), "expires_at": p.get("expires_at")}  # fmt: skip
    if kind == s.APPROVAL_DECIDED:
        return {**base, "what": "approval", "decision": p.get("decision"), "by": p.get("by"),
                "reason": p.get("reason"), "verified": p.get("verified"), "at": event.ts}  # fmt: skip
    if kind == s.STEP_FAILED:
        return {**base, "what": "failure", "error": p.get("error"), "caught_by": p.get("caught_by"),
                "reused_from": p.get("reused_from")}  # fmt: skip
    if kind == s.STEP_RETRYING:
        return {**base, "what": "retry", "attempt": p.get("attempt"), "error": p.get("error")}
    if kind == s.PARALLEL_JOINED:
        return {**base, "what": "join", **{k: p.get(k) for k in ("join", "completed", "failed", "cancelled")}}
    if kind in (s.RUN_COMPLETED, s.RUN_FAILED, s.RUN_WAITING, s.RUN_CANCELLED):
        return {**base, "what": "end", "status": kind.split(".", 1)[1], "output": p.get("output"),
                "error": p.get("error"), "pending": p.get("pending")}  # fmt: skip
    if kind == s.RUN_RESUMED:
        return {**base, "what": "resume", "reason": p.get("reason")}
    if kind == s.RUN_INTERRUPTED:
        return {**base, "what": "interrupted", "signal": p.get("signal")}
    return None


def _call_list(calls: Any) -> str:
    return "; ".join(f"{c['tool']}({_short(c.get('arguments'), 60)})" for c in calls or [])


def _in_node(path: str, node: str | None) -> bool:
    return node is None or within(path, node)


def _add(total: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Add the counts of `more` (a `spending.totals`) into `total`."""
    for key in ("tool_calls", "model_calls", "input_tokens", "output_tokens", "tokens", "cost"):
        total[key] += more[key]
    for tool, n in more["calls_per_tool"].items():
        total["calls_per_tool"][tool] = total["calls_per_tool"].get(tool, 0) + n


def budgets_used(
    events: Iterable[s.Event], spans: list[tuple[float, float]] | None = None, node: str | None = None
) -> dict[str, Any]:
    """What the run spent (within `node` only, when given: `events` are still the whole run's),
    counted from its own log (the same quantities guardrail budgets limit); `build_trace` adds what its
    child runs spent, which its budgets count too."""
    events = list(events)
    spent = totals(events, node)
    own = events if node is None else [e for e in events if _in_node(e.node_path, node)]
    # execution time, as budgets and timeouts count it: waits for people and time between a crash and
    # its resume do not count (spec §12.5). `spans`: the whole run's, when `events` are a node's only.
    elapsed = None
    times = [t for t in (ts_seconds(e.ts) for e in own) if t is not None]
    if times:
        lo, hi = min(times), max(times)
        clipped = [(max(a, lo), min(b, hi)) for a, b in (segments(events) if spans is None else spans)]
        elapsed = execution_time(c for c in clipped if c[1] > c[0])
    return {**spent, "elapsed_s": elapsed}


def _with_child_spending(
    store: s.EventStore, run_id: str, node: str | None, own: dict[str, Any]
) -> dict[str, Any]:
    """`own` plus what the run's child runs (at any depth; under `node` only, when given) spent, with
    that part also on its own under `in_child_runs`. A budget counts the whole run with its child runs
    (spec §11.4: enforcement restores them so on resume), and `explain` must report what the budget
    counted, not a smaller number next to a "tool call 4 exceeds max_tool_calls 3" it cannot explain.
    Each run's spending is read as `RunGuard.restore_child` reads it (`spending.spent`)."""
    below = totals(())
    runs: list[str] = []
    unreadable: list[str] = []
    for child, at in descendant_runs(store, run_id):
        if not _in_node(at, node):
            continue
        try:
            spent = totals(store.events(child.run_id))
        except s.StoreError:  # a damaged child log: say it was left out rather than fail the whole trace
            unreadable.append(child.run_id)
            continue
        _add(below, spent)
        runs.append(child.run_id)
    total = {**own, "calls_per_tool": dict(own["calls_per_tool"])}
    _add(total, below)
    return {**total, "in_child_runs": {**below, "runs": runs, "unreadable": unreadable}}


def forked_from(store: s.EventStore, run_id: str) -> dict[str, Any] | None:
    """`{"run_id", "node_path"}` when the run is a fork (`charter run --from RUN@NODE`), from its
    `run.started`; None otherwise, or when that event cannot be read (a damaged log is reported by the
    commands that read the run, not by a listing)."""
    try:
        return _fork_of(store.events(run_id, kinds=(s.RUN_STARTED,)))
    except s.StoreError:
        return None


def _fork_of(events: Iterable[s.Event]) -> dict[str, Any] | None:
    """The `forked_from` of the run's `run.started` among `events`, when it is a well-formed one."""
    started = next((e for e in events if e.kind == s.RUN_STARTED), None)
    payload = started.payload if started is not None and isinstance(started.payload, dict) else {}
    fork = payload.get("forked_from")
    return fork if isinstance(fork, dict) and isinstance(fork.get("run_id"), str) else None


def build_trace(store: s.EventStore, run_id: str, node: str | None = None) -> dict[str, Any]:
    """The complete decision trace of a run (optionally only `node` and what ran inside it)."""
    row = store.run(run_id)
    events = list(store.events(run_id))
    entries = [e for e in (_entry(ev) for ev in events if _in_node(ev.node_path, node)) if e is not None]
    entries = _with_children(entries, events, store.children(run_id), node)
    if node is not None:
        entries = [e for e in entries if e["node_path"]]  # run-level lines only without --node
        # the node's own outcome: what `--node` asks about first
        # (a fork's reused copy of it is this "done" line, marked reused, rather than two lines)
        entries = [e for e in entries if not (e["what"] == "reused" and e["node_path"] == node)]
        entries += [
            {"seq": ev.seq, "ts": ev.ts, "node_path": node, "kind": ev.kind, "what": "done",
             "output": (ev.payload or {}).get("output"), "reused_from": (ev.payload or {}).get("reused_from")}
            for ev in events if ev.kind == s.STEP_COMPLETED and ev.node_path == node
        ]  # fmt: skip
        entries.sort(key=lambda e: e["seq"])
    from interpreter.audit import audit_authz

    return {
        "run_id": run_id,
        "workflow": row.workflow_name,
        "principal": row.principal,
        "status": row.status,
        "node": node,
        "error": row.error,
        "trace": entries,
        "forked_from": _fork_of(events),
        "budgets": _with_child_spending(
            store,
            run_id,
            node,
            budgets_used(events, segments(events), node),
        ),
        "audit": audit_authz(events),
        "integrity": _integrity(store, run_id),
    }


def _with_children(
    entries: list[dict[str, Any]], events: list[s.Event], children: list[Any], node: str | None
) -> list[dict[str, Any]]:
    """A line for each child run (a `workflow` step or tool), placed after the last event its parent
    logged before the child was created."""
    for child in children:
        at = child.parent_node or ""
        if not _in_node(at, node):
            continue
        seq = max((ev.seq for ev in events if ev.ts <= child.created_at), default=0)
        entries.append({"seq": seq, "ts": child.created_at, "node_path": at, "kind": "run.child", "what": "child",
                        "run_id": child.run_id, "workflow": child.workflow_name, "status": child.status})  # fmt: skip
    entries.sort(key=lambda e: e["seq"])  # stable: a child comes after the event it follows
    return entries


def _integrity(store: s.EventStore, run_id: str) -> dict[str, Any]:
    """Whether the log this trace is read from is intact (`charter verify`): an explanation built from
    an edited or truncated log must say so, not tell its story as if it were the run's."""
    result = store.verify(run_id)
    if result.ok:
        return {"intact": True}
    return {"intact": False, "first_bad_seq": result.first_bad_seq, "reason": result.reason}


# --- text -----------------------------------------------------------------------------------------------


def _who(entry: Mapping[str, Any]) -> str:
    chain = entry.get("actor_chain") or []
    return " > ".join(chain) if chain else str(entry.get("principal") or "?")


def _values(values: Any) -> str:
    if not isinstance(values, Mapping):
        return ""
    return ", ".join(
        f"{k}={_short(json.dumps(v, ensure_ascii=False, sort_keys=True), 60)}" for k, v in values.items()
    )


def _reused(e: Mapping[str, Any]) -> str:
    """A fork's copy of an outcome says so: the step did not run in this run."""
    return f" (reused from run {e['reused_from']}, not run again)" if e.get("reused_from") else ""


def _spending(b: Mapping[str, Any]) -> str:
    per = ", ".join(f"{k} {v}" for k, v in sorted(b["calls_per_tool"].items()))
    return (
        f"{b['tool_calls']} tool call(s){' (' + per + ')' if per else ''}, "
        f"{b['model_calls']} model call(s), {b['tokens']} tokens, cost {b['cost']:g}"
    )


def _line(e: Mapping[str, Any]) -> str | None:  # noqa: C901 - one branch per entry kind
    what = e["what"]
    if what == "run":
        claims = f" claims {_short(e['claims'], 80)}" if e.get("claims") else ""
        actor = (e.get("actor") or {}).get("sub", "?")
        fork = e.get("forked_from") if isinstance(e.get("forked_from"), Mapping) else None
        forked = f"; forked from {fork.get('run_id')} at {fork.get('node_path')}" if fork else ""
        return f"run of {e.get('workflow')} as {actor}{claims}{forked}"
    if what == "route":
        values = _values(e.get("values"))
        result = json.dumps(e.get("result"))  # as CEL writes it: true, false, null
        if e.get("expression"):
            text = (
                f"{e.get('step')}: `{e.get('expression')}` -> {result}; chose {e.get('chosen') or 'nothing'}"
            )
        else:  # a switch where no case held and there is no default
            text = f"{e.get('step')}: no case held; chose {e.get('chosen') or 'nothing'}"
        text += f" [{values}]" if values else ""
        for case in e.get("rejected") or []:
            text += f"; not {case.get('case')} [{_values(case.get('values'))}]"
        return text
    if what == "skip":
        reused = _reused(e)
        if e.get("reason") != "condition":
            return f"skipped ({e.get('reason')}){reused}"
        values = _values(e.get("values"))
        return f"skipped: if `{e.get('expression')}` is false" + (f" [{values}]" if values else "") + reused
    if what == "reused":
        return f"reused from run {e.get('reused_from')}, not run again: = {_short(e.get('output'), 100)}"
    if what == "authz":
        verb = "ALLOW" if e.get("decision") == "allow" else "DENY"
        tail = f": {e.get('reason')}" if verb == "DENY" else ""
        parties = [g for g in e.get("grants") or [] if isinstance(g, dict)]
        by = (
            ", ".join(f"{g.get('grant')} ({g.get('sub')})" for g in parties)
            if len(parties) > 1
            else e.get("grant")
        )
        return f"authz {verb} {e.get('tool')} for {_who(e)} by {by}{tail}"
    if what == "guardrail":
        final = e.get("verdict")
        after = f"; verdict {final}" if final and final != e.get("decision") else ""
        return (f"guardrail {e.get('rule')} at {e.get('hook')}: {e.get('outcome')} -> {e.get('decision')}"
                f" ({e.get('reason')}){after}")  # fmt: skip
    if what == "tool.call":
        return f"call {e.get('tool')}({_short(e.get('args'), 100)})"
    if what == "tool.result":
        return f"  = {_short(e.get('result'), 100)}"
    if what == "tool.error":
        return f"  ! {e.get('tool')}: {(e.get('error') or {}).get('message')}"
    if what == "model.prompt":
        told = "".join(
            f"; told: {c.get('tool')}: {_short(c.get('message') or '', 100)}" for c in e.get("told") or []
        )
        return (
            f"model {e.get('model')} turn {e.get('turn')}: prompt {_short(e.get('prompt') or '', 100)}{told}"
        )
    if what == "done":
        return f"completed{_reused(e)} = {_short(e.get('output'), 100)}"
    if what == "child":
        return f"child run {e.get('run_id')} ({e.get('workflow')}): {e.get('status')} (charter explain {e.get('run_id')})"
    if what == "model.answer":
        chosen, skipped = _call_list(e.get("tool_calls")), _call_list(e.get("skipped_tool_calls"))
        said = _short(e["answer"], 100) if e.get("answer") else ""
        return (
            "  answer: "
            + said
            + (f" -> chose {chosen}" if chosen else "")
            + (f" (also asked for {skipped}, not run: the answer was final)" if skipped else "")
        )
    if what == "approval.request":
        approvers = ", ".join(e.get("approvers") or []) or "anyone"
        return f"approval requested from {approvers}: {_short(e.get('message') or '', 100)}"
    if what == "approval":
        verified = "" if e.get("verified") in (None, True) else " (unverified)"
        why = f": {e.get('reason')}" if e.get("reason") else ""
        return f"approval {e.get('decision')} by {e.get('by')}{verified} at {e.get('at')}{why}"
    if what == "failure":
        err = e.get("error") or {}
        caught = f" (caught by {e['caught_by']})" if e.get("caught_by") else ""
        return f"FAILED [{err.get('code')}] {err.get('message')}{caught}{_reused(e)}"
    if what == "retry":
        return f"retry after attempt {e.get('attempt')}: {(e.get('error') or {}).get('message')}"
    if what == "join":

        def names(key: str) -> str:
            return ", ".join(map(str, e.get(key) or [])) or "none"

        join = str(e.get("join") or "").replace("_", "-")  # as the file writes it: first-n
        done = f"join {join}: completed {names('completed')}; failed {names('failed')}"
        return done + (f"; cancelled {names('cancelled')}" if e.get("cancelled") else "")
    if what == "end":
        if e["status"] in ("failed", "cancelled"):
            return f"run {e['status']}: {(e.get('error') or {}).get('message')}"
        if e["status"] == "waiting":
            return f"run waiting for approval at {', '.join(e.get('pending') or [])}"
        return f"run completed: {_short(e.get('output'), 120)}"
    if what == "resume":
        return f"resumed ({e.get('reason')})"
    if what == "interrupted":
        by = f"by {e['signal']}" if e.get("signal") else "(its caller cancelled it)"
        return f"run interrupted {by}; `charter resume` continues it"
    return None


def format_text(trace: Mapping[str, Any]) -> str:
    """One line per decision, indented by node depth."""
    head = f"run {trace['run_id']} ({trace['workflow']}) principal {trace['principal']}: {trace['status']}"
    lines = [head + (f" — node {trace['node']}" if trace.get("node") else "")]
    integrity = trace.get("integrity") or {"intact": True}
    if not integrity["intact"]:
        at = f" at seq {integrity['first_bad_seq']}" if integrity.get("first_bad_seq") is not None else ""
        lines.append(
            f"WARNING: this run's log fails verification{at}: {integrity['reason']}; "
            "what follows may not be what happened (see: charter verify)"
        )
    fork = trace.get("forked_from")
    if fork:
        lines.append(
            f"forked from run {fork.get('run_id')} at {fork.get('node_path')}: what had finished there "
            f"before {fork.get('node_path')} is reused, not run again (marked reused below; "
            f"charter explain {fork.get('run_id')})"
        )
    for entry in trace["trace"]:
        text = _line(entry)
        if text is None:
            continue
        path = entry["node_path"]
        depth = path.count("/") + 1 if path else 0
        where = f"{path}: " if path else ""
        lines.append(f"{entry['seq']:>5} {'  ' * depth}{where}{text}")
    b = trace["budgets"]
    text = (
        "budgets used: "
        + _spending(b)
        + (f", {b['elapsed_s']:.3f}s" if b.get("elapsed_s") is not None else "")
    )
    below = b.get("in_child_runs") or {}
    if below.get("runs") or below.get("unreadable"):
        # the total is what the budgets counted (spec §11.4); this says how much of it the children spent
        text += f"; of which in {len(below.get('runs') or [])} child run(s): {_spending(below)}"
        if below.get("unreadable"):
            text += f" (not counted: the log of {', '.join(below['unreadable'])} could not be read)"
    lines.append(text)
    problems = trace.get("audit") or []
    lines.append(
        "audit: every tool call was authorized first" if not problems else "audit: " + "; ".join(problems)
    )
    return "\n".join(lines)


__all__ = ["ABSENT", "budgets_used", "build_trace", "format_text", "referenced_values"]
