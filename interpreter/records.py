"""What a run's log says happened to each node: the index that resume, fork and replay read.

The log holds deltas; folding it in order gives, per runtime node path, the step's final status and
output, its tool calls by attempt, its variable changes and its approval. Nothing else is needed to
continue or re-check a run.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from interpreter import store as s


@dataclass(slots=True)
class ToolCall:
    called: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None


@dataclass(slots=True)
class ModelCall:
    called: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None


@dataclass(slots=True)
class NodeRecord:
    seq: int = 0  # seq of the node's last step-level event (orders vars deltas)
    started: dict[str, Any] | None = None
    status: str | None = None  # completed | failed | skipped (None: started, unfinished or cancelled)
    output: Any = None
    error: dict[str, Any] | None = None
    skip: dict[str, Any] | None = None
    attempts_failed: int = 0
    attempt_errors: dict[int, dict[str, Any]] = field(default_factory=dict)  # how each failed attempt ended
    tools: dict[int, ToolCall] = field(default_factory=dict)
    vars_delta: dict[str, Any] | None = None
    vars_seq: int = 0
    # An approval's request and decision, each (payload, ts), in each attempt of its step (`retry.on:
    # [denied]` asks again), in the order they were asked.
    approval_attempts: dict[int, tuple[tuple[dict[str, Any], str], tuple[dict[str, Any], str] | None]] = (
        field(default_factory=dict)
    )
    iterations: set[int] = field(default_factory=set)
    models: dict[tuple[int, int], ModelCall] = field(default_factory=dict)  # (attempt, call) of agent/llm
    agent_tools: dict[tuple[int, int], ToolCall] = field(default_factory=dict)  # an agent's tool calls
    route: dict[str, Any] | None = None  # a switch's decision (which case it chose)
    joined: dict[str, Any] | None = None  # a parallel's join: its mode and which branches won
    reused: bool = False  # a fork took this outcome from the run it was forked from (`reused_from`)

    @property
    def approval_requested(self) -> tuple[dict[str, Any], str] | None:
        """The latest approval request (payload, ts), if any."""
        return next(reversed(self.approval_attempts.values()))[0] if self.approval_attempts else None

    @property
    def approval_decided(self) -> tuple[dict[str, Any], str] | None:
        """The decision (payload, ts) on the latest approval request, if one was made."""
        return next(reversed(self.approval_attempts.values()))[1] if self.approval_attempts else None


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix + "/") or path.startswith(prefix + "[")


class Records(dict[str, NodeRecord]):
    """`build_records`' result: a plain dict of node path -> record that also keeps an index of its
    paths in sorted order, so that `descendants` finds a subtree by bisection, in time proportional to
    its size, instead of scanning every record (resume reuses each node of a wide fan-out: a scan per
    node made it quadratic).

    The index is built on the first `descendants` call and then kept up to date by `[]=` and `del`
    (the only ways the interpreter changes records); the other mutators drop it, to be rebuilt.
    `order` remembers insertion order, which `descendants` keeps, like a scan of the dict would.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index: tuple[list[str], dict[str, int]] | None = None  # sorted paths, path -> order
        self._next = 0  # order of the next new path
        # Every `vars.set` as (seq, delta), those of retried attempts too (their nodes' records are
        # forgotten): the variables at any point of the run, for replay (`Execution.vars_before`).
        self.assignments: list[tuple[int, dict[str, Any]]] = []

    def __reduce__(self) -> Any:  # copy, deepcopy and pickle: rebuild from the items, not the index
        return (type(self), (dict(self),), {"assignments": self.assignments})

    def copy(self) -> Records:
        copied = type(self)(self)
        copied.assignments = list(self.assignments)
        return copied

    def __setitem__(self, key: str, value: NodeRecord) -> None:
        index = self._index
        if index is not None and key not in self:
            insort(index[0], key)
            index[1][key] = self._next
            self._next += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        index = self._index
        if index is not None:
            paths = index[0]
            del paths[bisect_left(paths, key)]
            del index[1][key]

    def _drop_index(self) -> None:
        self._index = None

    def pop(self, *args: Any) -> Any:
        self._drop_index()
        return super().pop(*args)

    def popitem(self) -> tuple[str, NodeRecord]:
        self._drop_index()
        return super().popitem()

    def clear(self) -> None:
        self._drop_index()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._drop_index()
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._drop_index()
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> Any:
        self._drop_index()
        return super().__ior__(other)

    def descendants(self, path: str) -> list[tuple[str, NodeRecord]]:
        if self._index is None:
            self._index = (sorted(self), {key: i for i, key in enumerate(self)})
            self._next = len(self)
        paths, order = self._index
        found: list[str] = []
        for prefix in (path + "/", path + "["):  # "/" < "[": two disjoint runs of the sorted paths
            end = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the least string above every `prefix...`
            found += paths[bisect_left(paths, prefix) : bisect_left(paths, end)]
        if len(found) > 1:
            found.sort(key=order.__getitem__)  # insertion order, as a scan of the dict gives
        return [(key, self[key]) for key in found]


def build_records(events: Iterable[s.Event]) -> Records:
    """Fold events into one record per node path (insertion order: first appearance)."""
    records = Records()
    for event in events:
        kind, path, payload = event.kind, event.node_path, event.payload
        if not path or kind.startswith("run."):
            continue
        rec = records.get(path)
        if rec is None:
            rec = records[path] = NodeRecord()
        payload = payload if isinstance(payload, dict) else {}
        if kind == s.STEP_STARTED:
            if rec.started is None:
                rec.started = payload
        elif kind == s.STEP_COMPLETED:
            rec.status, rec.output, rec.error, rec.seq = "completed", payload.get("output"), None, event.seq
            rec.reused = payload.get("reused_from") is not None
        elif kind == s.STEP_FAILED:
            rec.status, rec.error, rec.seq = "failed", payload.get("error"), event.seq
            rec.reused = payload.get("reused_from") is not None
            rec.attempt_errors[int(payload.get("attempt", 1))] = payload.get("error") or {}
        elif kind == s.STEP_SKIPPED:
            if payload.get("reason") != "cancelled":  # a cancelled step did not finish: it may run again
                rec.status, rec.skip, rec.seq = "skipped", payload, event.seq
        elif kind == s.STEP_RETRYING:
            rec.attempts_failed = int(payload.get("attempt", rec.attempts_failed + 1))
            rec.attempt_errors[rec.attempts_failed] = payload.get("error") or {}
            rec.status = None
            _forget_descendants(records, path)  # the next attempt runs the children again
        elif kind in (s.MODEL_CALLED, s.MODEL_COMPLETED):
            key = (int(payload.get("attempt", 1)), int(payload.get("call", 1)))
            model_call = rec.models.setdefault(key, ModelCall())
            if kind == s.MODEL_CALLED:
                model_call.called, model_call.completed = payload, None
            else:
                model_call.completed = payload
        elif kind in (s.TOOL_CALLED, s.TOOL_COMPLETED, s.TOOL_FAILED):
            attempt = int(payload.get("attempt", 1))
            if "call" in payload:  # a tool call an agent made: numbered within the attempt
                call = rec.agent_tools.setdefault((attempt, int(payload["call"])), ToolCall())
            else:
                call = rec.tools.setdefault(attempt, ToolCall())
            if kind == s.TOOL_CALLED:
                call.called, call.completed, call.failed = payload, None, None
            elif kind == s.TOOL_COMPLETED:
                call.completed = payload
            else:
                call.failed = payload
        elif kind == s.VARS_SET:
            delta = payload.get("vars")
            if isinstance(delta, dict):
                rec.vars_delta = {**(rec.vars_delta or {}), **delta}
                rec.vars_seq = event.seq
                records.assignments.append((event.seq, delta))
        elif kind == s.PARALLEL_JOINED:
            rec.joined = payload
        elif kind == s.APPROVAL_REQUESTED:
            attempt = _attempt(payload)
            rec.approval_attempts.pop(attempt, None)  # asked again: the latest, so last in order
            rec.approval_attempts[attempt] = ((payload, event.ts), None)
        elif kind == s.APPROVAL_DECIDED:
            requested = rec.approval_requested
            if requested is not None:
                rec.approval_attempts[_attempt(requested[0])] = (requested, (payload, event.ts))
        elif kind == s.DECISION and payload.get("step") == "switch":
            rec.route = payload
        elif kind == s.LOOP_ITERATION and isinstance(payload.get("index"), int):
            rec.iterations.add(payload["index"])
    return records


def _attempt(request: dict[str, Any]) -> int:
    """The attempt of the approval step that made a request (1: a request without one, made before
    requests said which)."""
    attempt = request.get("attempt", 1)
    return attempt if type(attempt) is int else 1


def _forget_descendants(records: dict[str, NodeRecord], path: str) -> None:
    for key, _ in descendants(records, path):
        del records[key]


def descendants(records: dict[str, NodeRecord], path: str) -> list[tuple[str, NodeRecord]]:
    """The records strictly under `path` (`path/...` or `path[...`), in the dict's order. Indexed for a
    `Records` (what `build_records` returns); a scan of any other dict."""
    if isinstance(records, Records):
        return records.descendants(path)
    return [(k, r) for k, r in records.items() if _under(k, path)]


def request_expired(request: Any, now: datetime | None = None) -> bool:
    """Whether an `approval.requested` payload's `expires_at` has passed (at `now`, default: now)."""
    expires = request.get("expires_at") if isinstance(request, dict) else None
    if not isinstance(expires, str):
        return False
    try:
        return (now or datetime.now(UTC)) >= datetime.fromisoformat(expires)
    except ValueError:
        return False


def once_per_call(events: Iterable[s.Event]) -> Iterator[s.Event]:
    """The events, but each call's `tool.called` and `model.called` only once: a call made again under
    its idempotency key (in flight at a crash, or a workflow tool continuing its waiting child run) is
    the same call, and budgets count it once (spec §11.4). A model call has no key: the same call is the
    same (node path, attempt, call number) until a `step.retrying` of that step or of one around it
    starts its children anew (their attempt numbers start again at 1)."""
    seen: set[str] = set()
    models: set[tuple[str, Any, Any]] = set()
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else None
        if event.kind == s.TOOL_CALLED and payload is not None:
            key = payload.get("idempotency_key")
            if isinstance(key, str):
                if key in seen:
                    continue
                seen.add(key)
        elif event.kind == s.MODEL_CALLED and payload is not None:
            call = (event.node_path, payload.get("attempt", 1), payload.get("call", 1))
            if call in models:
                continue
            models.add(call)
        elif event.kind == s.STEP_RETRYING and models:
            path = event.node_path
            models = {m for m in models if not (m[0] == path or _under(m[0], path))}
        yield event


def last_pending(events: Iterable[s.Event]) -> list[str] | None:
    """The node paths the run's last `run.waiting` waits on; None when it never waited."""
    waiting = next((e for e in reversed(list(events)) if e.kind == s.RUN_WAITING), None)
    listed = (
        waiting.payload.get("pending") if waiting is not None and isinstance(waiting.payload, dict) else None
    )
    return [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else None


def descendant_runs(store: s.EventStore, run_id: str, at: str | None = None) -> Iterator[tuple[Any, str]]:
    """Every run started under `run_id`, at any depth, with the node path of `run_id` its branch of
    runs started at (a grandchild counts where its parent's run started, as the budgets count it)."""
    for child in store.children(run_id):
        where = at if at is not None else (child.parent_node or "")
        yield child, where
        yield from descendant_runs(store, child.run_id, where)


def enclosing(path: str) -> list[str]:
    """`path` and the paths of the steps around it, innermost first: "a/b[2]/c" -> a/b[2]/c, a/b[2],
    a/b (the for_each the iteration belongs to), a."""
    out: list[str] = []
    parts = path.split("/")
    for i in range(len(parts), 0, -1):
        prefix = "/".join(parts[:i])
        out.append(prefix)
        if prefix.endswith("]"):
            out.append(prefix[: prefix.rindex("[")])
    return out
