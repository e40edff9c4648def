"""A run's execution time, read from its log (spec §12.5): what the workflow `timeout` and the `timeout`
limit of a budget (§11.4) count across resumes.

A run executes in **segments**. A segment starts at `run.started` or `run.resumed` and ends at its
`run.waiting` (the run paused for a decision) or, when it has none, at its last event (the process
stopped: a crash, a kill). The time between two segments -- waiting for a person, lying crashed -- is
not execution time; work done in a segment counts up to the last event the log kept of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from interpreter import store as s

Segment = tuple[float, float]  # (start, end) in seconds since the epoch


def ts_seconds(ts: str) -> float | None:
    """An event's `ts` (ISO 8601, UTC) in seconds since the epoch; None when it is not a time."""
    try:
        return datetime.fromisoformat(ts).timestamp()
    except (TypeError, ValueError):
        return None


def segments(events: Iterable[Any]) -> list[Segment]:
    """The execution segments of a run's log, oldest first (see the module docstring)."""
    out: list[Segment] = []
    start: float | None = None
    end: float | None = None
    paused = False
    for event in events:
        at = ts_seconds(event.ts)
        if at is None:
            continue
        if event.kind in (s.RUN_STARTED, s.RUN_RESUMED):
            if start is not None and end is not None:
                out.append((start, end))
            start, end, paused = at, at, False
        elif start is not None and not paused:
            end = at  # events after run.waiting (a decision, a lease) belong to no segment
            paused = event.kind == s.RUN_WAITING
    if start is not None and end is not None:
        out.append((start, end))
    return out


def execution_time(spans: Iterable[Segment], since: float | None = None) -> float:
    """Seconds of execution in `spans`, counting only what lies after `since` (e.g. a step's start)."""
    total = 0.0
    for start, end in spans:
        if since is not None:
            start = max(start, since)
        total += max(0.0, end - start)
    return total


def began_at(event: Any) -> float:
    """When what an event records began: its `ts` is when it was committed (with group commit, possibly
    long after), so an event with a `duration_ms` (a finished step or call) began that long before."""
    at = ts_seconds(event.ts)
    if at is None:
        return float("inf")
    payload = event.payload if isinstance(event.payload, dict) else {}
    duration = payload.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        at -= duration / 1000
    return at
