"""When completions reach the disk: durability "full" and "normal", observed from inside the tools.

Each tool opens its own connection to the run's database (as another process would) and records which
steps it finds completed there. What a tool sees committed is what would survive a crash at that moment.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dsl.frontend import compile_file
from interpreter import RunOptions, decide_approval, resume_run, run_workflow
from interpreter.store import SQLiteEventStore, StoreError, StoreLockedError, open_store

MODULE = "durability_probe_tools"

TOOLS = '''
import json, sqlite3, threading

_gate = {}

def _committed(db):
    conn = sqlite3.connect(db, timeout=5)
    try:
        rows = conn.execute("SELECT node_path FROM events WHERE kind = 'step.completed'").fetchall()
    finally:
        conn.close()
    return sorted(r[0] for r in rows)

def probe(db, log, me, delay=0, fail_first=False):
    """Record the completed steps this call finds in the database before it acts."""
    import os, time
    time.sleep(delay)
    marker = f"{log}.{me}.failed"
    if fail_first and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("the first call fails")
    with open(log, "a") as f:
        f.write(json.dumps({"me": me, "committed": _committed(db)}) + "\\n")
    return me

def together(n, me):
    """Return only when `n` calls have arrived: the branches of a fan-out finish at once."""
    barrier = _gate.setdefault(n, threading.Barrier(n, timeout=20))
    barrier.wait()
    return me
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("durability")
    (d / f"{MODULE}.py").write_text(TOOLS)
    return d


def flow(workdir: Path, name: str, effect: str, steps: str) -> Any:
    path = workdir / f"{name}.yaml"
    header = f"""\
        charter: "1.0"
        name: {name}
        tools:
          probe: {{python: "{MODULE}:probe", effect: {effect}}}
          together: {{python: "{MODULE}:together", effect: read}}
        """
    path.write_text(textwrap.dedent(header) + textwrap.dedent(steps))
    graph, diags = compile_file(path)
    assert graph is not None, [str(d) for d in diags]
    return graph


def probe_steps(n: int, db: Path, log: Path) -> str:
    return "steps:\n" + "".join(
        f"  - {{id: s{k}, tool: probe, args: {{db: '{db}', log: '{log}', me: s{k}}}}}\n" for k in range(n)
    )


def seen(log: Path) -> dict[str, list[str]]:
    return {e["me"]: e["committed"] for e in map(json.loads, log.read_text().splitlines())}


@pytest.mark.parametrize(("durability", "effect"), [("full", "read"), ("full", "write"), ("normal", "write")])
def test_every_earlier_completion_is_committed_before_a_tool_acts(
    workdir: Path, tmp_path: Path, durability: str, effect: str
) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, f"probe-{durability}-{effect}", effect, probe_steps(6, db, log))
    with open_store(db, durability=durability) as store:  # type: ignore[arg-type]
        options = RunOptions(allow_modules=(MODULE,), durability=durability)  # type: ignore[arg-type]
        result = run_workflow(graph, {}, store=store, options=options)
    assert result.status == "completed", result.error
    assert seen(log) == {f"s{k}": [f"s{j}" for j in range(k)] for k in range(6)}


def test_a_branch_acts_on_a_variable_only_once_the_set_of_another_branch_is_committed(
    workdir: Path, tmp_path: Path
) -> None:
    """Branches do not wait for each other's completions, but `vars` is one per run: a call that may
    read a variable another branch set waits for that set's commit."""
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    steps = f"""\
        vars: {{x: 0}}
        steps:
          - id: fan
            parallel:
              branches:
                a:
                  - {{id: setx, set: {{x: 1}}}}
                b:
                  - {{id: use, tool: probe, args: {{db: '{db}', log: '{log}', me: "${{{{ string(vars.x) }}}}"}}}}
        """
    graph = flow(workdir, "vars-across-branches", "read", steps)
    with open_store(db, durability="full") as store:
        options = RunOptions(allow_modules=(MODULE,), durability="full")
        result = run_workflow(graph, {}, store=store, options=options)
    assert result.status == "completed", result.error
    assert seen(log) == {"1": ["fan/a/setx"]}  # it read x = 1, and the set that made it was on disk


class CountingStore(SQLiteEventStore):
    """Counts write transactions (each one fsync with durability "full")."""

    commits = 0

    def transaction(self):  # type: ignore[no-untyped-def]
        if self._tx is None:
            type(self).commits += 1
        return super().transaction()


def test_fan_out_completions_that_finish_together_share_commits(workdir: Path, tmp_path: Path) -> None:
    n = 24
    branches = "".join(
        f"        b{k}:\n          - {{id: t{k}, tool: together, args: {{n: {n}, me: {k}}}}}\n"
        for k in range(n)
    )
    graph = flow(workdir, "fan", "read", f"steps:\n  - id: fan\n    parallel:\n      branches:\n{branches}")
    store = CountingStore(tmp_path / "charter.db", durability="full")
    try:
        before = CountingStore.commits
        options = RunOptions(allow_modules=(MODULE,), durability="full")
        result = run_workflow(graph, {}, store=store, options=options)
        commits = CountingStore.commits - before
        assert result.status == "completed", result.error
        events = list(store.events(result.run_id))
        assert store.verify(result.run_id).ok
    finally:
        store.close()
    completed = [e for e in events if e.kind == "step.completed" and e.node_path.startswith("fan/")]
    assert len(completed) == n
    # Without grouping: one commit per branch plus the run's own. The branches finish together, so
    # their completions share a few commits.
    assert commits < n // 2, commits


class FailsOnce(SQLiteEventStore):
    """The commit that carries `carries`'s completion fails once (e.g. the database was locked)."""

    carries = ""
    failed = False

    def append_many(self, run_id, events):  # type: ignore[no-untyped-def]
        events = list(events)
        carries = any(e.kind == "step.completed" and e.node_path == self.carries for e in events)
        if carries and not self.failed:
            self.failed = True
            raise StoreError("database is locked (injected)")
        return super().append_many(run_id, events)


def run_failing_once(graph: Any, db: Path, carries: str) -> None:
    store = FailsOnce(db, durability="full")
    store.carries = carries
    try:
        options = RunOptions(allow_modules=(MODULE,), durability="full")
        result = run_workflow(graph, {}, store=store, options=options)
        assert store.failed
        assert store.verify(result.run_id).ok
    finally:
        store.close()
    assert result.status == "completed", result.error


def test_a_failed_commit_is_tried_again_by_the_call_waiting_for_it(workdir: Path, tmp_path: Path) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, "fails-once-waiting", "read", probe_steps(2, db, log))
    run_failing_once(graph, db, carries="s0")
    assert seen(log)["s1"] == ["s0"]


def test_a_failed_commit_is_tried_again_before_the_next_dependent_call(workdir: Path, tmp_path: Path) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(
        workdir,
        "fails-once-later",
        "read",
        f"""\
        steps:
          - id: fan
            parallel:
              branches:
                # a's completion is committed while nothing waits for it: that commit fails
                a: [{{id: first, tool: probe, args: {{db: '{db}', log: '{log}', me: first}}}}]
                b: [{{id: slow, tool: probe, args: {{db: '{db}', log: '{log}', me: slow, delay: 0.3}}}}]
          - {{id: after, tool: probe, args: {{db: '{db}', log: '{log}', me: after}}}}
        """,
    )
    run_failing_once(graph, db, carries="fan/a/first")
    assert "fan/a/first" not in seen(log)["slow"]  # nothing of b depends on a: nothing retried it yet
    assert {"fan/a/first", "fan/b/slow", "fan"} <= set(seen(log)["after"])


def test_a_run_started_with_full_durability_is_continued_with_it(workdir: Path, tmp_path: Path) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    steps = probe_steps(2, db, log).replace("steps:\n", "")
    after = "".join(
        f"  - {{id: t{k}, tool: probe, args: {{db: '{db}', log: '{log}', me: t{k}}}}}\n" for k in range(3)
    )
    graph = flow(
        workdir,
        "full-then-approve",
        "read",
        f"steps:\n{steps}  - id: gate\n    approval: {{message: go on?}}\n{after}",
    )
    options = RunOptions(allow_modules=(MODULE,), durability="full")
    with open_store(db, durability="full") as store:
        waiting = run_workflow(graph, {}, store=store, options=options)
    assert waiting.status == "waiting", waiting.error
    with open_store(db) as store:  # continued by someone who did not ask for "full"
        result = decide_approval(
            waiting.run_id, "gate", store=store, person="ana", approved=True,
            options=RunOptions(allow_modules=(MODULE,)),
        )  # fmt: skip
        started = next(e.payload for e in store.events(result.run_id) if e.kind == "run.started")
    assert result.status == "completed", result.error
    assert started["durability"] == "full"
    before = ["gate", "s0", "s1"]
    assert seen(log)["t2"] == sorted([*before, "t0", "t1"])


class LockedOnce(SQLiteEventStore):
    """The commit of `s1`'s `kind` event finds the database locked by another process for too long."""

    failed = False
    kind = "step.completed"

    def append_many(self, run_id, events):  # type: ignore[no-untyped-def]
        events = list(events)
        if not self.failed and any(e.kind == self.kind and e.node_path == "s1" for e in events):
            self.failed = True
            raise StoreLockedError(f"{self.path}: the database is locked by another connection (injected)")
        return super().append_many(run_id, events)


def test_a_locked_log_stops_the_run_resumable_instead_of_failing_it(workdir: Path, tmp_path: Path) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, "locked-once", "write", probe_steps(3, db, log))
    options = RunOptions(allow_modules=(MODULE,))
    store = LockedOnce(db)
    store.kind = "tool.called"  # a write's intent is committed before the call: the call is not made
    try:
        with pytest.raises(StoreLockedError):
            run_workflow(graph, {}, store=store, options=options)
        (run,) = store.runs()
        assert run.status == "running"  # not "failed": nothing is wrong with the run itself
        assert store.lease(run.run_id) is None  # released: resume needs no wait for it to expire
    finally:
        store.close()
    with open_store(db) as store:
        result = resume_run(run.run_id, store=store, options=options)
        assert result.status == "completed", result.error
        assert store.verify(run.run_id).ok
    calls = [e["me"] for e in map(json.loads, log.read_text().splitlines())]
    assert calls == ["s0", "s1", "s2"]


class LockedToTheEnd(LockedOnce):
    """Still locked when the stopped run gives its lease up: the lease row stays behind."""

    kind = "tool.called"

    def release_lease(self, lease, pending=()):  # type: ignore[no-untyped-def]
        raise StoreLockedError(f"{self.path}: the database is locked by another connection (injected)")


def test_a_lease_left_behind_by_a_locked_log_does_not_bar_this_process(workdir: Path, tmp_path: Path) -> None:
    """A long-lived process (`charter wake --watch`, a library host) continues a run it stopped itself
    without waiting for the lease row it could not delete to expire."""
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, "locked-lease", "write", probe_steps(2, db, log))
    options = RunOptions(allow_modules=(MODULE,))
    with LockedToTheEnd(db) as store:
        with pytest.raises(StoreLockedError):
            run_workflow(graph, {}, store=store, options=options)
        (run,) = store.runs()
        assert store.lease(run.run_id) is not None  # left behind, naming this process
    with open_store(db) as store:
        result = resume_run(run.run_id, store=store, options=options)
        assert result.status == "completed", result.error


def test_a_completed_write_waits_out_a_locked_log_rather_than_be_repeated(
    workdir: Path, tmp_path: Path
) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, "locked-write", "write", probe_steps(3, db, log))  # write: committed at once
    with LockedOnce(db) as store:
        store.kind = "tool.completed"
        result = run_workflow(graph, {}, store=store, options=RunOptions(allow_modules=(MODULE,)))
        assert store.failed and result.status == "completed", result.error
        assert store.verify(result.run_id).ok
    assert [e["me"] for e in map(json.loads, log.read_text().splitlines())] == ["s0", "s1", "s2"]


def test_a_run_asking_for_full_durability_gets_fsynced_commits_from_a_library_caller(
    workdir: Path, tmp_path: Path
) -> None:
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    graph = flow(workdir, "full-from-library", "read", probe_steps(1, db, log))
    with SQLiteEventStore(db) as store:  # opened with the default ("normal")
        result = run_workflow(
            graph, {}, store=store, options=RunOptions(allow_modules=(MODULE,), durability="full")
        )
        assert result.status == "completed", result.error
        assert store.durability == "full"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


class ReleaseWatch(SQLiteEventStore):
    """Records any commit to a run made after this store released that run's lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released: set[str] = set()
        self.late: list[tuple[str, list[str]]] = []

    def release_lease(self, lease, pending=()):  # type: ignore[no-untyped-def]
        done = super().release_lease(lease, pending)
        if done:
            self.released.add(lease.run_id)
        return done

    def append_many(self, run_id, events):  # type: ignore[no-untyped-def]
        events = list(events)
        if run_id in self.released:
            self.late.append((run_id, [e.kind for e in events]))
        return super().append_many(run_id, events)


def test_a_cut_off_child_run_writes_nothing_after_giving_up_its_lease(workdir: Path, tmp_path: Path) -> None:
    """A child run cancelled by its parent's timeout writes what it buffered while it holds its lease,
    not from a group-commit timer after the release (another process may hold the lease by then)."""
    db, log = tmp_path / "charter.db", tmp_path / "seen.jsonl"
    flow(workdir, "busy-child", "read", """\
        vars: {n: 0}
        steps:
          - id: spin
            loop:
              max_iterations: 100000
              steps:
                - {id: inc, set: {n: "${{ vars.n + 1 }}"}}
                - {id: t, tool: together, args: {n: 1, me: x}}
        """)  # fmt: skip
    parent = flow(workdir, "cutting-parent", "read", f"""\
        steps:
          - id: g
            try:
              steps: [{{id: sub, timeout: 200ms, workflow: {{path: {workdir / 'busy-child.yaml'}}}}}]
              catch:
                steps: [{{id: caught, tool: probe, args: {{db: '{db}', log: '{log}', me: caught}}}}]
        """)  # fmt: skip
    for _ in range(3):  # each cut lands at another point of the child's group-commit window
        with ReleaseWatch(db) as store:
            result = run_workflow(parent, {}, store=store, options=RunOptions(allow_modules=(MODULE,)))
            assert result.status == "completed", result.error
            assert store.late == []
            child = next(r for r in store.runs() if r.parent_run_id == result.run_id)
            kinds = [e.kind for e in store.events(child.run_id)]
            assert kinds[-2:] == [
                "step.skipped",
                "run.cancelled",
            ]  # the cut is logged, then the parent's end of it
