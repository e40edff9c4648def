"""`charter cancel`: a person ends a run that is not finished, and every unfinished run it started.

A waiting run (an approval nobody will give), or one whose process died and that nobody should
continue, is otherwise `waiting` or `running` for ever, and `charter wake` or a late approval could
still make its side effects. Cancelled, nothing continues it: `resume`, `approve` and `wake` refuse it.
"""

from __future__ import annotations

from interpreter import store as s
from interpreter.authz import AuthzError, person_name
from interpreter.engine import cancel_tree, require_intact
from interpreter.runtime import RunSetupError


def cancel(run_id: str, *, store: s.EventStore, person: str, reason: str | None = None) -> list[str]:
    """Cancel run `run_id` and the unfinished runs it started (at any depth), all or none; return their
    ids, the run first. Refused (RunSetupError) for a finished run, and for a child run whose parent
    waits for it (cancel the top-level run: a parent cannot go on without its child's outcome);
    `RunLeased` when a live process executes one of them (stop it first)."""
    try:
        person = person_name(person)
    except AuthzError as exc:
        raise RunSetupError(f"{exc}: cancel --as NAME") from None
    row = store.run(run_id)
    if row.status in s.TERMINAL_STATUSES:
        raise RunSetupError(f"run {run_id} is already {row.status}: nothing to cancel")
    if row.parent_run_id and store.run(row.parent_run_id).status not in s.TERMINAL_STATUSES:
        raise RunSetupError(
            f"run {run_id} is a child run of {row.parent_run_id}, which waits for it: cancel that run "
            f"(charter cancel {row.parent_run_id}), which cancels the runs it started"
        )
    require_intact(store, run_id, "cancelled")
    why = f"cancelled by {person}" + (f": {reason}" if reason else "")
    done = cancel_tree(store, run_id, why, {"sub": f"user:{person}"}, {"by": person}, all_or_nothing=True)
    if run_id not in done:  # it finished between the look above and the lease
        raise RunSetupError(f"run {run_id} is already {store.run(run_id).status}: nothing to cancel")
    return done
