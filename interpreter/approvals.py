"""Human decisions on pending approvals: check who may decide, record it, resume the run."""

from __future__ import annotations

from interpreter import store as s
from interpreter.engine import compile_source, resume_run
from interpreter.records import build_records, request_expired
from interpreter.runtime import RunOptions, RunResult, RunSetupError


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
    """Record a person's decision on a pending approval, then resume the run."""
    options = options or RunOptions()
    row = store.run(run_id)
    events = list(store.events(run_id))
    records = build_records(events)
    pending = [p for p, r in records.items() if r.approval_requested and not r.approval_decided]
    rec = records.get(node_path)
    if rec is None or rec.approval_requested is None:
        raise RunSetupError(
            f"run {run_id} has no approval request at '{node_path}'"
            + (f"; pending: {', '.join(pending)}" if pending else "; nothing is pending")
        )
    if rec.approval_decided is not None:
        raise RunSetupError(
            f"the approval at '{node_path}' was already decided by {rec.approval_decided[0].get('by')}"
        )
    if row.status in s.TERMINAL_STATUSES:
        raise RunSetupError(f"run {run_id} is {row.status}; it no longer waits for a decision")
    requested = rec.approval_requested[0]
    if request_expired(requested):  # too late for a person: the timeout decides (spec §13.11)
        result = resume_run(run_id, store=store, options=options, reason="timeout")
        raise RunSetupError(
            f"the approval at '{node_path}' expired at {requested.get('expires_at')}: its timeout "
            f"decided, not {person}; run {run_id} is {result.status}"
        )
    approvers = requested.get("approvers") or []
    verified = _check_approver(approvers, person, options, row)
    decision = {"decision": "approved" if approved else "denied", "by": person, "reason": reason}
    earlier = store.decide(run_id, node_path, {**decision, "verified": verified}, actor={"sub": person})
    if earlier is not None:  # decided since the log was read above (another person, a timeout)
        raise RunSetupError(f"the approval at '{node_path}' was already decided by {earlier.get('by')}")
    try:
        return resume_run(run_id, store=store, options=options, reason="approval")
    except s.RunLeased as exc:  # the holder sees the decision when it lets the run go, and continues
        raise s.RunLeased(
            exc.holder,
            f"the decision was recorded; run {run_id} is being executed by another process "
            f"({exc.holder.describe()}), which continues with it",
        ) from None
    except RunSetupError as exc:  # e.g. a model key this environment lacks: the run stays waiting
        raise RunSetupError(
            f"the decision was recorded, but run {run_id} cannot continue here: {exc}; "
            f"continue it with `charter resume {run_id}` where it can"
        ) from None


def _check_approver(approvers: list[str], person: str, options: RunOptions, row: s.RunRecord) -> bool:
    """True when the person is known to be an approver. Raises when the person is not one, or when
    nothing (claims, a declared identity) says which roles they hold."""
    if person.startswith("role:"):
        raise RunSetupError(f"'{person}' names a role, not a person: approve --as NAME --claims FILE")
    if person.startswith("system:"):  # what the runtime decides as (`system:timeout`): not a person
        raise RunSetupError(f"'{person}' is a name the runtime decides as, not a person's")
    if not approvers or person in approvers:
        return True
    roles = {a[5:] for a in approvers if a.startswith("role:")}
    claimed = set((options.claims or {}).get("roles", []) or [])
    known_roles: set[str] | None = set(claimed) if options.claims else None
    try:
        graph_identities = compile_source(row.workflow_source or "", "<stored>").workflow.identities
    except RunSetupError:
        graph_identities = {}
    identity = graph_identities.get(person)
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
