"""Human decisions on pending approvals: find them (in a run or in the child runs it waits for), check
who may decide, record the decision, continue the run and every waiting run above it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from interpreter import store as s
from interpreter.authz import AuthzError, not_a_person, person_name
from interpreter.engine import compile_source, continue_run, require_intact
from interpreter.leases import holder_alive
from interpreter.loop import run_coroutine
from interpreter.records import build_records, last_pending, request_expired
from interpreter.runtime import RunOptions, RunResult, RunSetupError

Hop = tuple[str, str]  # (run id, node path of that run where a child run hangs)


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """An undecided approval request that a run waits for: in its own log, or in the log of a child run
    (at any depth) that it waits for. `run_id` and `node_path` are what `charter approve` takes; `via`
    leads from the run asked about down to that child: each run and the node where its child hangs."""

    run_id: str
    node_path: str
    via: tuple[Hop, ...] = ()
    message: Any = None
    approvers: tuple[str, ...] = ()

    def command(self) -> str:
        """The `charter approve` that decides it, up to `--as` (and `--claims` when a role decides)."""
        claims = " --claims FILE" if any(a.startswith("role:") for a in self.approvers) else ""
        return f"charter approve {shlex.quote(self.run_id)} {shlex.quote(self.node_path)} --as NAME{claims}"

    def route(self) -> str:
        """Where the child run hangs: 'kid' (a node of the run asked about), 'kid → C1 at inner' for a
        child of a child ('' for a request in the run asked about)."""
        return route(self.via)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "node_path": self.node_path,
            "via": [{"run_id": run, "node_path": node} for run, node in self.via],
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What `decide` did. The decision was recorded at `node_path` of run `run_id`; `lineage` leads
    from the top-level run down to that run (empty: it is the top-level run). `forwarded`: the run and
    node the caller named, when the request was found in a child run waiting there. `decided` is the
    outcome of the decided run, `result` that of the top-level run continued after it."""

    run_id: str
    node_path: str
    decision: str
    by: str
    lineage: tuple[Hop, ...]
    forwarded: Hop | None
    decided: RunResult
    result: RunResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "node_path": self.node_path,
            "decision": self.decision,
            "by": self.by,
            "via": [{"run_id": run, "node_path": node} for run, node in self.lineage],
            "status": self.decided.status,
        }


def decide_approval(
    run_id: str,
    node_path: str,
    *,
    store: s.EventStore,
    person: str,
    approved: bool,
    reason: str | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Record a person's decision on a pending approval, then continue the run and every run above it
    that waits for it; return the outcome of the top-level run (see `decide`)."""
    return decide(
        run_id, node_path, store=store, person=person, approved=approved, reason=reason, options=options
    ).result


def decide(
    run_id: str,
    node_path: str,
    *,
    store: s.EventStore,
    person: str,
    approved: bool,
    reason: str | None = None,
    options: RunOptions | None = None,
) -> Decision:
    """Record a person's decision on the approval request at `node_path` of run `run_id`, continue that
    run and then each waiting run above it (a child run's parent, its parent...), and say what happened.

    When `node_path` is a node of the run where a child run (at any depth) waits, the decision goes to
    the one request pending in that child; with several, nothing is recorded and the error names each
    (`charter approve CHILD NODE`)."""
    options = options or RunOptions()
    try:
        person = person_name(person)  # `user:bob` is bob: in approvers lists, `by` and the actor alike
    except AuthzError as exc:
        raise RunSetupError(f"{exc}: approve --as NAME (--claims FILE gives the person's roles)") from None
    row = store.run(run_id)
    records = build_records(store.events(run_id))
    rec = records.get(node_path)
    forwarded: Hop | None = None
    if rec is None or rec.approval_requested is None:
        target = _forward(store, row, node_path)
        forwarded = (run_id, node_path)
        run_id, node_path = target.run_id, target.node_path
        row = store.run(run_id)
        records = build_records(store.events(run_id))
        rec = records[node_path]
    if rec.approval_requested is None:  # for the type checker: `_forward` found the request there
        raise RunSetupError(f"run {run_id} has no approval request at '{node_path}'")
    if rec.approval_decided is not None:
        raise RunSetupError(
            f"the approval at '{node_path}' was already decided by {rec.approval_decided[0].get('by')}"
        )
    if row.status in s.TERMINAL_STATUSES:
        raise RunSetupError(f"run {run_id} is {row.status}; it no longer waits for a decision")
    identities = _identities(row)
    _refuse_non_person(store, row, identities, person)  # before anything happens, the timeout's decision too
    requested = rec.approval_requested[0]
    if request_expired(requested):  # too late for a person: the timeout decides (spec §13.11)
        decided, top = _continue_up(store, run_id, options, "timeout", "the timeout decided")
        above = f"; its top-level run {top.run_id} is {top.status}" if top.run_id != run_id else ""
        raise RunSetupError(
            f"the approval at '{node_path}' expired at {requested.get('expires_at')}: its timeout "
            f"decided, not {person}; run {run_id} is {decided.status}{above}"
        )
    # A decision appended to a changed log would vouch for it; the runs above continue after it, and
    # the decided run's rules and grants are read from theirs.
    for above, _ in lineage(store, run_id):
        require_intact(store, above, "continued")
    require_intact(store, run_id, "decided")
    approvers = requested.get("approvers") or []
    verified = _check_approver(approvers, person, options, _identities(_declaring(store, row, requested)))
    decision = {"decision": "approved" if approved else "denied", "by": person, "reason": reason}
    earlier = store.decide(
        run_id,
        node_path,
        {**decision, "verified": verified},
        actor={"sub": person if person.startswith("user:") else f"user:{person}"},
    )
    if earlier is not None:  # decided since the log was read above (another person, a timeout)
        raise RunSetupError(f"the approval at '{node_path}' was already decided by {earlier.get('by')}")
    decided, top = _continue_up(
        store, run_id, options, "approval", "the decision was recorded", verified=True
    )
    return Decision(
        run_id,
        node_path,
        decision["decision"],
        person,
        lineage(store, run_id),
        forwarded,
        decided,
        top,
    )


# --------------------------------------------------------------------------------------------------
# Where a run waits


def pending_approvals(store: s.EventStore, run_id: str) -> list[PendingApproval]:
    """Every undecided approval request that the run waits for: its own (the nodes of its last
    `run.waiting`), and, for a node where a child run waits, the child's, down to any depth."""
    return list(_pending(store, store.run(run_id), (), set()))


def _pending(
    store: s.EventStore, row: s.RunRecord, via: tuple[Hop, ...], seen: set[str]
) -> Iterator[PendingApproval]:
    seen.add(row.run_id)
    events = list(store.events(row.run_id))
    records = build_records(events)
    listed = last_pending(events)
    if row.status != "waiting" or listed is None:  # e.g. stopped by a crash: its own log
        listed = [p for p, r in records.items() if r.approval_requested and not r.approval_decided]
    newest: dict[str, s.RunRecord] = {}  # the child run a node started last is the one it waits for
    if row.status == "waiting":
        for child in store.children(row.run_id):
            newest[child.parent_node or ""] = child
    done: set[str] = set()
    for path in listed:
        rec = records.get(path)
        if rec is not None and rec.approval_requested and not rec.approval_decided:
            if path not in done:
                done.add(path)
                requested = rec.approval_requested[0]
                approvers = requested.get("approvers") or []
                approvers = (
                    tuple(a for a in approvers if isinstance(a, str)) if isinstance(approvers, list) else ()
                )
                yield PendingApproval(row.run_id, path, via, requested.get("message"), approvers)
            continue
        for node, child in newest.items():
            if node in done or child.run_id in seen or child.status != "waiting":
                continue
            if node == path or _under(node, path):
                done.add(node)
                yield from _pending(store, child, (*via, (row.run_id, node)), seen)


def route(hops: tuple[Hop, ...]) -> str:
    """'kid' for one hop (the node of the first run), then 'C1 at inner' for each deeper one."""
    if not hops:
        return ""
    return " → ".join([hops[0][1], *(f"{run} at {node}" for run, node in hops[1:])])


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix + "/") or path.startswith(prefix + "[")


def lineage(store: s.EventStore, run_id: str) -> tuple[Hop, ...]:
    """The runs above `run_id`, from the top-level run down, each with the node where the next hangs."""
    hops: list[Hop] = []
    row = store.run(run_id)
    seen = {run_id}
    while row.parent_run_id and row.parent_run_id not in seen:
        hops.append((row.parent_run_id, row.parent_node or ""))
        seen.add(row.parent_run_id)
        row = store.run(row.parent_run_id)
    return tuple(reversed(hops))


def _forward(store: s.EventStore, row: s.RunRecord, node_path: str) -> PendingApproval:
    """The one request pending in a child run that waits at (or under) `node_path` of the run; else a
    RunSetupError that names what is pending, each with the `charter approve` that decides it."""
    run_id = row.run_id
    pending = pending_approvals(store, run_id)
    there = [p for p in pending if p.via and (p.via[0][1] == node_path or _under(p.via[0][1], node_path))]
    if len(there) == 1:
        return there[0]
    if there:
        raise RunSetupError(
            f"run {run_id} waits at '{node_path}' for {len(there)} approvals in child runs; decide each "
            "on its own: " + "; ".join(f"{p.command()} (child run of {p.route()})" for p in there)
        )
    if pending:
        listed = ", ".join(
            f"'{p.node_path}' ({p.command()})"
            if not p.via
            else f"'{p.node_path}' in child run {p.run_id} of step {p.route()} ({p.command()})"
            for p in pending
        )
        raise RunSetupError(f"run {run_id} has no approval request at '{node_path}'; pending: {listed}")
    if row.status == "waiting":
        raise RunSetupError(
            f"run {run_id} has no approval request at '{node_path}', and no request it waits for is "
            f"undecided: continue it with `charter resume {run_id}`"
        )
    raise RunSetupError(f"run {run_id} has no approval request at '{node_path}'; nothing is pending")


# --------------------------------------------------------------------------------------------------
# Continuing the decided run and the runs above it


def _continue_up(
    store: s.EventStore, run_id: str, options: RunOptions, reason: str, done: str, verified: bool = False
) -> tuple[RunResult, RunResult]:
    """Continue the run, then each parent that waits for it, up to the top-level run (a parent waits
    until its child finishes). Returns the run's outcome and the top-level run's. `verified`: the
    caller checked the logs of the run and of every run above it (see `continue_run`)."""
    try:
        decided = run_coroutine(continue_run(run_id, store, options, reason, verified=verified))
    except s.RunLeased as exc:  # the holder sees the decision when it lets the run go, and continues
        raise s.RunLeased(
            exc.holder,
            f"{done}; run {run_id} is being executed by another process "
            f"({exc.holder.describe()}), which continues with it",
        ) from None
    except RunSetupError as exc:  # e.g. a model key this environment lacks: the run stays waiting
        raise RunSetupError(
            f"{done}, but run {run_id} cannot continue here: {exc}; "
            f"continue it with `charter resume {run_id}` where it can"
        ) from None
    result, row = decided, store.run(run_id)
    while row.parent_run_id and result.status != "waiting":
        parent = store.run(row.parent_run_id)
        so_far = f"{done} and run {row.run_id} is {result.status}; its parent run {parent.run_id}"
        if parent.status != "waiting":
            held = store.lease(parent.run_id) if parent.status == "running" else None
            if held is not None and holder_alive(
                held.node, held.pid, held.proc_start, held.expires_at, s.utc_now(), held.owner
            ):
                raise s.RunLeased(
                    held,
                    f"{so_far} is being executed by another process ({held.describe()}), "
                    "which continues with it",
                )
            break  # it does not wait for this child (any more): the top-level run says where things are
        try:
            result = run_coroutine(continue_run(parent.run_id, store, options, reason, verified=verified))
        except s.RunLeased as exc:
            raise s.RunLeased(
                exc.holder,
                f"{so_far} is being executed by another process ({exc.holder.describe()}), "
                "which continues with it",
            ) from None
        except RunSetupError as exc:
            raise RunSetupError(
                f"{so_far} cannot continue here: {exc}; continue it with "
                f"`charter resume {parent.run_id}` where it can"
            ) from None
        row = parent
    if row.parent_run_id is None:
        return decided, result
    hops = lineage(store, row.run_id)
    return decided, result_of(store, hops[0][0] if hops else row.run_id)


def result_of(store: s.EventStore, run_id: str) -> RunResult:
    """The run's outcome as its row and log say (pending: the nodes of its last `run.waiting`)."""
    row = store.run(run_id)
    pending: list[str] = []
    if row.status == "waiting":
        pending = last_pending(store.events(run_id)) or []
    return RunResult(run_id, row.status, row.output, row.error, pending)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Who may decide


def _identities(row: s.RunRecord) -> dict[str, Any]:
    """The identities the run's workflow declares ({} when its stored source does not compile)."""
    try:
        return dict(compile_source(row.workflow_source or "", "<stored>").workflow.identities or {})
    except RunSetupError:
        return {}


def _declaring(store: s.EventStore, row: s.RunRecord, requested: dict[str, Any]) -> s.RunRecord:
    """The run whose workflow declared the rule that asked for this approval: an escalation of a rule a
    child inherited names its approvers in the parent's file, so the parent's identities say who holds
    their roles, not the child file's (which could otherwise make anyone an approver of it)."""
    data = requested.get("data") if isinstance(requested.get("data"), dict) else {}
    above = data.get("declared_above")
    for _ in range(above if isinstance(above, int) and not isinstance(above, bool) else 0):
        if not row.parent_run_id:
            break
        row = store.run(row.parent_run_id)
    return row


def _refuse_non_person(
    store: s.EventStore, row: s.RunRecord, identities: dict[str, Any], person: str
) -> None:
    """An approval is a person's decision (spec §13.11): refuse a name that the decided run's workflow,
    or the workflow of a run above it, declares as an agent or a service identity, whoever the
    approvers are (`[]` included), as `charter run --as` refuses an agent."""
    runs = [(row, identities)]
    for run_id, _node in lineage(store, row.run_id):
        above = store.run(run_id)
        runs.append((above, _identities(above)))
    for each, declared in runs:
        why = not_a_person(person, declared, each.workflow_name or "")
        if why is not None:
            raise RunSetupError(f"{why}; nothing was recorded")


def _check_approver(
    approvers: list[str], person: str, options: RunOptions, identities: dict[str, Any]
) -> bool:
    """True when the person is known to be an approver. Raises when the person is not one, or when
    nothing (claims, a declared identity) says which roles they hold."""
    if not approvers or person in approvers or f"user:{person}" in approvers:
        return True
    roles = {a[5:] for a in approvers if a.startswith("role:")}
    listed = (options.claims or {}).get("roles", [])
    if not isinstance(listed, list) or not all(isinstance(r, str) and r for r in listed):
        raise RunSetupError("claims 'roles' must be a list of non-empty strings")  # as `charter run` says
    claimed = set(listed)
    known_roles: set[str] | None = set(claimed) if options.claims else None
    identity = identities.get(person)
    if identity is not None:
        known_roles = (known_roles or set()) | set(identity.roles)
    if known_roles is not None and roles & known_roles:
        return True
    if known_roles is None and roles:
        # Fail closed: nothing says which roles the person holds (spec: such a decision MUST be refused).
        raise RunSetupError(
            f"cannot tell whether {person} holds {', '.join(sorted('role:' + r for r in roles))}: "
            f'give the person\'s roles with --claims FILE (e.g. {{"roles": ["{sorted(roles)[0]}"]}}) '
            "or declare them as an identity with roles in the workflow"
        )
    raise RunSetupError(f"{person} may not decide this approval; approvers: {', '.join(approvers)}")
