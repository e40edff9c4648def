"""Replay: re-execute a recorded run offline and report the first place it no longer matches.

No tool is called and nothing is written: recorded tool results stand in for the calls (a tool whose
source changed since the recording is a divergence), every step's outcome is compared with the log,
and a recorded step that no longer runs is reported too.
"""

from __future__ import annotations

import os
from typing import Any

from interpreter import store as s
from interpreter.engine import Execution, _file_of, compile_source
from interpreter.loop import run_coroutine
from interpreter.policy import build_policy
from interpreter.records import build_records
from interpreter.redact import MASK
from interpreter.runtime import Diverged, Divergence, ReplayResult, RunOptions


def replay_run(
    run_id: str, *, store: s.EventStore, graph: Any = None, options: RunOptions | None = None
) -> ReplayResult:
    """Re-execute a recorded run offline (no tool is called) and report the first divergence."""
    return run_coroutine(_replay(run_id, store, graph, options or RunOptions()))


async def _replay(run_id: str, store: s.EventStore, graph: Any, options: RunOptions) -> ReplayResult:
    row = store.run(run_id)
    events = list(store.events(run_id))
    started = next((e.payload for e in events if e.kind == s.RUN_STARTED), None) or {}
    file = started.get("file")
    if graph is None:
        graph = compile_source(row.workflow_source or "", file or "<stored>")
    else:
        file = _file_of(graph) or file
    records = build_records(events)
    execution = Execution(
        store,
        graph,
        run_id,
        row.inputs,
        options=RunOptions(allow_modules=options.allow_modules),
        principal=row.principal or "unknown",
        started_at=row.created_at,
        file=file,
        policy=build_policy(options.allow_modules, file),
        # Without the key, a secret replays as the mask the log holds in its place: what the run
        # computed from it was recorded masked, so it compares equal (replay needs no credential).
        secrets={name: os.environ.get(name) or MASK for name in graph.workflow.secrets},
        mode="replay",
        records=records,
    )
    try:
        result = await execution.execute()
    except Diverged as exc:
        return ReplayResult(run_id, False, exc.divergence, execution.checked)
    missing = next(
        (p for p, r in records.items() if r.status is not None and p not in execution.visited), None
    )
    if missing is not None and result.status != "waiting":
        rec = records[missing]
        expected = {"status": rec.status, "output": rec.output}
        reason = "the step ran in the recorded run but not now"
        return ReplayResult(run_id, False, Divergence(missing, expected, None, reason), execution.checked)
    recorded = (row.status, row.output if row.status == "completed" else None)
    got = (result.status, result.output if result.status == "completed" else None)
    if row.status in ("completed", "failed", "waiting") and recorded != got:
        reason = "the run's output differs" if row.status == result.status else "the run ended differently"
        return ReplayResult(
            run_id,
            False,
            Divergence(
                "",
                {"status": recorded[0], "output": recorded[1]},
                {"status": got[0], "output": got[1]},
                reason,
            ),
            execution.checked,
        )
    return ReplayResult(run_id, True, None, len(events))
