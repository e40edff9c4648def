"""Waking runs whose approvals timed out (`charter wake`).

A waiting run only applies an approval's timeout (`on_timeout` of an `approval` step, deny for an
escalation) when a process continues it. `wake_due` finds the waiting runs that wait on at least one
request whose `expires_at` has passed and resumes each one, so that the timeout takes effect without a
person running `charter resume`. A run that another process holds (the store refuses the resume) is
reported and left to that process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from interpreter import store as s
from interpreter.records import build_records, last_pending, request_expired
from interpreter.runtime import RunOptions

WAKE_REASON = "timeout"  # the `run.resumed` reason of a run woken because an approval expired
# All that says whether a run waits on an expired request: read instead of its whole log, every look.
_WAITING_KINDS = (s.RUN_WAITING, s.APPROVAL_REQUESTED, s.APPROVAL_DECIDED)


@dataclass(frozen=True, slots=True)
class Woken:
    """What waking one run did: `action` is `resumed` (then `status` is the run's new status),
    `skipped` (another process holds the run, or it no longer waits) or `error` (it could not be
    resumed; `message` says why). `top`: for a child run, the top-level run above it and its status
    after the wake (a parent that waited for the child continues with it)."""

    run_id: str
    workflow: str
    expired: tuple[str, ...]
    action: str
    status: str | None = None
    message: str | None = None
    top: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "expired": list(self.expired),
            "action": self.action,
            "status": self.status,
            "message": self.message,
            "top": None if self.top is None else {"run_id": self.top[0], "status": self.top[1]},
        }


def expired_requests(events: Iterable[s.Event], now: datetime) -> list[str]:
    """The node paths the run waits on (its last `run.waiting`) whose undecided request has expired."""
    events = list(events)
    records = build_records(events)
    out = []
    for path in last_pending(events) or []:
        rec = records.get(path)
        if rec is not None and rec.approval_requested and not rec.approval_decided:
            if request_expired(rec.approval_requested[0], now):
                out.append(path)
    return out


def due_runs(
    store: s.EventStore, now: datetime | None = None
) -> list[tuple[s.RunRecord, list[str] | s.StoreError]]:
    """The waiting runs with at least one expired request, oldest first, with those requests' paths.
    A run whose log cannot be read (damaged JSON, a missing blob) comes with that error instead: one
    such run must not keep wake from the others."""
    now = now or datetime.now(UTC)
    out: list[tuple[s.RunRecord, list[str] | s.StoreError]] = []
    for row in reversed(store.runs(limit=1_000_000, status="waiting")):
        try:
            paths = expired_requests(store.events(row.run_id, kinds=_WAITING_KINDS), now)
        except s.StoreLockedError:  # the whole file, not this run: the next look tries again
            raise
        except s.StoreError as exc:
            out.append((row, exc))
            continue
        if paths:
            out.append((row, paths))
    return out


def wake_due(
    store: s.EventStore,
    options: RunOptions,
    *,
    now: datetime | None = None,
    report: Callable[[Woken], None] | None = None,
) -> list[Woken]:
    """Resume every waiting run whose approval timed out (the timeout's decision is taken then)."""
    done: list[Woken] = []
    for row, paths in due_runs(store, now):
        if isinstance(paths, s.StoreError):  # its log cannot be read: an error for it, the others go on
            woken = Woken(row.run_id, row.workflow_name, (), action="error", message=str(paths))
        else:
            woken = _wake(store, options, row, paths)
        done.append(woken)
        if report is not None:
            report(woken)
    return done


def _wake(store: s.EventStore, options: RunOptions, row: s.RunRecord, paths: list[str]) -> Woken:
    from interpreter.approvals import lineage
    from interpreter.engine import resume_run
    from interpreter.policy import PolicyError
    from interpreter.runtime import RunSetupError

    base = {"run_id": row.run_id, "workflow": row.workflow_name, "expired": tuple(paths)}
    try:
        if store.run(row.run_id).status != "waiting":  # another process got there first
            return Woken(**base, action="skipped", message="no longer waiting")
        result = resume_run(row.run_id, store=store, options=options, reason=WAKE_REASON)
        message = (result.error or {}).get("message") if result.status == "failed" else None
        hops = lineage(store, row.run_id)
        top = (hops[0][0], store.run(hops[0][0]).status) if hops else None
        return Woken(**base, action="resumed", status=result.status, message=message, top=top)
    except (s.DamagedLog, s.BlobNotFound) as exc:  # its log cannot be read: nobody can continue it
        return Woken(**base, action="error", message=str(exc))
    except s.StoreError as exc:  # e.g. held by a live process, or the database stayed locked
        return Woken(**base, action="skipped", message=str(exc))
    except (RunSetupError, PolicyError) as exc:  # e.g. a secret or an allowed module is missing here
        return Woken(**base, action="error", message=str(exc))
