"""Run leases: one process executes a run at a time (spec/event-log.md, `run_leases`).

Real `charter` processes on a real SQLite file. A run is held in the middle of its execution by a gate
(tests/fixtures/lease_tools.py: a tool waits for a file before its side effect), so every race below is
set up by the test, never left to timing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fixtures.charter_cli import (
    ENGINE,
    FIXTURES,
    REPO,
    charter,
    charter_cmd,
    child_env,
    describe,
    events,
    run_json,
    run_row,
    run_rows,
)

from interpreter import store as s
from interpreter.leases import this_process

pytestmark = pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")

FLOW = FIXTURES / "lease_flow.yaml"
APPROVAL_FLOW = FIXTURES / "lease_approval_flow.yaml"
PARENT_FLOW = FIXTURES / "lease_parent_flow.yaml"
ALLOW = "tests.fixtures.lease_tools"
WAIT_LIMIT = 60.0  # seconds: a condition not reached by then is a bug, not a slow machine
EXIT_LEASED = 4
LINUX_PROC = Path("/proc/self/stat").exists()


class Lab:
    """A database, an effects file and a gate for one test."""

    def __init__(self, tmp: Path) -> None:
        self.db, self.effects, self.gate = tmp / "charter.db", tmp / "effects.txt", tmp / "gate"

    def env(self, gate_at: str = "") -> dict[str, str]:
        extra = {"LEASE_EFFECTS": str(self.effects), "LEASE_GATE": str(self.gate)}
        if gate_at:
            extra["LEASE_GATE_AT"] = gate_at
        return child_env(extra, allow=ALLOW)

    def start(self, *args: str, gate_at: str = "", sigint_ignored: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen(
            charter_cmd(*args, "--db", str(self.db)),
            cwd=REPO,
            env=self.env(gate_at),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # as a shell starts a background job (`charter run ... &` in a script)
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )

    def charter(self, *args: str, gate_at: str = "") -> subprocess.CompletedProcess[str]:
        return charter(*args, "--db", str(self.db), env=self.env(gate_at), timeout=WAIT_LIMIT)

    def reached(self) -> bool:
        return Path(str(self.gate) + ".reached").exists()

    def reset_gate(self) -> None:
        Path(str(self.gate) + ".reached").unlink(missing_ok=True)
        self.gate.unlink(missing_ok=True)

    def open_gate(self) -> None:
        self.gate.write_text("open", encoding="utf-8")

    def counts(self) -> Counter[str]:
        if not self.effects.exists():
            return Counter()
        return Counter(line.split("\t")[0] for line in self.effects.read_text().splitlines() if line)

    def lease_rows(self) -> list[dict[str, object]]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM run_leases")]
        finally:
            conn.close()


def _wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _interrupted_run(lab: Lab, at: str) -> str:
    """A `charter run` SIGKILLed while its tool `at` waits at the gate (before its side effect)."""
    proc = lab.start("run", str(FLOW), gate_at=at)
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, f"the run to reach step {at}")
        assert proc.poll() is None, proc.communicate()
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    lab.reset_gate()
    (run,) = run_rows(lab.db)
    assert run["status"] == "running"
    return str(run["run_id"])


def _assert_verified(lab: Lab, run_id: str) -> None:
    proc = lab.charter("verify", run_id)
    assert proc.returncode == 0, describe(proc)


def _assert_clean(proc: subprocess.CompletedProcess[str] | tuple[str, str]) -> None:
    text = proc.stderr if isinstance(proc, subprocess.CompletedProcess) else proc[1]
    assert "Traceback" not in text, text


# --------------------------------------------------------------------------------------------------
# resume against resume


def test_two_concurrent_resumes_execute_the_run_once(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    run_id = _interrupted_run(lab, at="b")
    assert lab.counts() == Counter({"a": 1})
    # Both start together; the one that gets the lease stops at c's gate until the other has given up.
    first = lab.start("resume", run_id, gate_at="c")
    second = lab.start("resume", run_id, gate_at="c")
    procs = [first, second]
    _wait_for(lambda: any(p.poll() is not None for p in procs), "one resume to be refused")
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    loser_out = loser.communicate()
    assert loser.returncode == EXIT_LEASED, loser_out
    assert f"run {run_id} is being executed by another process: pid {winner.pid}" in loser_out[1]
    _assert_clean(loser_out)
    _wait_for(lab.reached, "the resume that holds the lease to reach c")
    lab.open_gate()
    out, err = winner.communicate(timeout=WAIT_LIMIT)
    assert winner.returncode == 0, err
    _assert_clean((out, err))
    assert lab.counts() == Counter({"a": 1, "b": 1, "c": 1}), "a side effect ran twice"
    kinds = Counter(e["kind"] for e in events(lab.db, run_id))
    assert kinds["run.resumed"] == 1 and kinds["run.completed"] == 1
    assert run_row(lab.db, run_id)["status"] == "completed"
    assert lab.lease_rows() == [], "the lease must be released when the run ends"
    _assert_verified(lab, run_id)


@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_signal_still_gives_the_json_document_naming_the_run(tmp_path: Path, command: str) -> None:
    """With --json, stdout is never empty: a run stopped by a signal is reported as interrupted, with
    its id and how to continue it (spec §19.1)."""
    lab = Lab(tmp_path)
    args: tuple[str, ...] = ("run", str(FLOW))
    if command == "resume":  # a run whose process died at b, continued and interrupted again
        first = lab.start(*args, gate_at="b")
        _wait_for(lambda: lab.reached() or first.poll() is not None, "the run to reach step b")
        first.kill()
        first.communicate(timeout=WAIT_LIMIT)
        lab.reset_gate()  # the resume reaches b again
        args = ("resume", run_rows(lab.db)[0]["run_id"])
    proc = lab.start(*args, "--json", gate_at="b")
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, "the run to reach step b")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    (row,) = run_rows(lab.db)
    doc = json.loads(out)
    assert doc["run_id"] == row["run_id"] and doc["status"] == "interrupted" and doc["output"] is None
    assert doc["error"]["code"] == "interrupted"
    assert f"charter resume {row['run_id']} --db {lab.db}" in doc["error"]["message"]


@pytest.mark.parametrize(
    ("signum", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-background-job"],
)
def test_a_signal_stops_the_run_releases_its_lease_and_says_how_to_continue(
    tmp_path: Path, signum: int, sigint_ignored: bool
) -> None:
    lab = Lab(tmp_path)
    proc = lab.start("run", str(FLOW), gate_at="b", sigint_ignored=sigint_ignored)
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, "the run to reach step b")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)  # while b's tool is blocked in its thread: the process must not wait for it
        _, err = proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    (row,) = run_rows(lab.db)
    assert f"charter resume {row['run_id']} --db {lab.db}" in err and "Traceback" not in err, err
    assert row["status"] == "running" and lab.lease_rows() == []  # released: resume need not wait
    # The log says why the run stopped, and why the call in flight was cut off
    logged = events(lab.db, row["run_id"])
    name = signal.Signals(signum).name
    assert (logged[-1]["kind"], logged[-1]["payload"]) == ("run.interrupted", {"signal": name})
    (cut,) = [e for e in logged if e["kind"] == "tool.failed"]
    assert cut["payload"]["error"]["message"] == f"the call was cut off: the run was interrupted ({name})"
    assert (
        f"run interrupted by {name}; `charter resume` continues it"
        in lab.charter("explain", row["run_id"]).stdout
    )
    resumed = lab.charter("resume", row["run_id"])
    assert resumed.returncode == 0, describe(resumed)
    assert lab.counts() == Counter({"a": 1, "b": 1, "c": 1})
    assert lab.charter("verify", row["run_id"]).returncode == 0


def test_resume_right_after_sigkill_takes_the_dead_process_lease(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    proc = lab.start("run", str(FLOW), gate_at="b")
    try:
        _wait_for(lab.reached, "the run to reach b")
        proc.kill()  # not reaped yet: a zombie still has its PID
        (lease,) = lab.lease_rows()
        assert lease["pid"] == proc.pid
        resumed = lab.charter("resume", next(r["run_id"] for r in run_rows(lab.db)), "--json")
    finally:
        proc.kill()
        proc.communicate()
    assert resumed.returncode == 0, describe(resumed)
    assert run_json(resumed)["output"] == {"done": ["a", "b", "c"]}
    assert lab.counts() == Counter({"a": 1, "b": 1, "c": 1})
    assert lab.lease_rows() == []
    _assert_verified(lab, run_json(resumed)["run_id"])


# --------------------------------------------------------------------------------------------------
# a lease held by a live process, by a reused PID, by another host

HOLDER = """
import sys
from interpreter.store import SQLiteEventStore
store = SQLiteEventStore(sys.argv[1])
store.acquire_lease(sys.argv[2])
print("held", flush=True)
sys.stdin.read()  # hold the lease until the test closes stdin
"""


def _holder(lab: Lab, run_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lab.db), run_id],
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_live_holder_is_respected_and_its_death_frees_the_run(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    run_id = _interrupted_run(lab, at="b")
    holder = _holder(lab, run_id)
    try:
        before = len(events(lab.db, run_id))
        refused = lab.charter("resume", run_id)
        assert refused.returncode == EXIT_LEASED, describe(refused)
        assert f"pid {holder.pid} on {this_process().host}, since " in refused.stderr
        _assert_clean(refused)
        assert len(events(lab.db, run_id)) == before, "a refused resume must write nothing"
        assert lab.counts() == Counter({"a": 1})
    finally:
        holder.kill()
        holder.wait()
    resumed = lab.charter("resume", run_id)
    assert resumed.returncode == 0, describe(resumed)
    assert lab.counts() == Counter({"a": 1, "b": 1, "c": 1})
    _assert_verified(lab, run_id)


@pytest.mark.skipif(not LINUX_PROC, reason="process start times come from /proc")
def test_a_reused_pid_does_not_hold_the_lease(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    run_id = _interrupted_run(lab, at="b")
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        # The lease names a live PID, but a process that started at another time: the PID was reused.
        me = this_process()
        now = s.utc_now()
        with sqlite3.connect(lab.db) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO run_leases VALUES (?, 'x', ?, ?, ?, ?, ?, ?, '9999-01-01T00:00:00Z')",
                (run_id, me.host, me.node, other.pid, 1, now, now),
            )
        resumed = lab.charter("resume", run_id)
    finally:
        other.kill()
        other.wait()
    assert resumed.returncode == 0, describe(resumed)
    _assert_verified(lab, run_id)


@pytest.mark.parametrize("expired", [False, True])
def test_a_lease_of_another_host_holds_until_its_heartbeat_expires(tmp_path: Path, expired: bool) -> None:
    lab = Lab(tmp_path)
    run_id = _interrupted_run(lab, at="b")
    expires = "2000-01-01T00:00:00.000000Z" if expired else "9999-01-01T00:00:00.000000Z"
    with sqlite3.connect(lab.db) as conn:  # pid 1 exists here, but that host's pid 1 is another process
        conn.execute(
            "INSERT OR REPLACE INTO run_leases VALUES (?, 'x', 'far-away', 'far-away/boot/ns', 1, 5, "
            "'2000-01-01T00:00:00.000000Z', '2000-01-01T00:00:00.000000Z', ?)",
            (run_id, expires),
        )
    proc = lab.charter("resume", run_id)
    _assert_clean(proc)
    if expired:
        assert proc.returncode == 0, describe(proc)
        assert lab.counts() == Counter({"a": 1, "b": 1, "c": 1})
        _assert_verified(lab, run_id)
    else:
        assert proc.returncode == EXIT_LEASED, describe(proc)
        assert "pid 1 on far-away, since 2000-01-01T00:00:00.000000Z" in proc.stderr
        assert lab.counts() == Counter({"a": 1})


def test_a_run_whose_lease_was_taken_over_stops_without_writing(tmp_path: Path) -> None:
    """Fencing end to end: another host takes the lease while step b's call is in flight; the process
    finishes the call, finds the lease gone at its next commit, and stops (exit 4) without writing."""
    lab = Lab(tmp_path)
    proc = lab.start("run", str(FLOW), gate_at="b")
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, "the run to reach step b")
        assert proc.poll() is None, proc.communicate()
        (run,) = run_rows(lab.db)
        seen = len(events(lab.db, str(run["run_id"])))
        with sqlite3.connect(lab.db) as conn:
            conn.execute(
                "UPDATE run_leases SET owner = 'theirs', host = 'far-away', node = 'far-away/boot/ns'"
            )
        lab.open_gate()
        out = proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_clean(out)
    assert proc.returncode == EXIT_LEASED, out
    assert "took over its lease" in out[1]
    assert len(events(lab.db, str(run["run_id"]))) == seen, "nothing is written after the takeover"
    assert lab.counts() == Counter({"a": 1, "b": 1})  # b's call was in flight: the new holder repeats it
    _assert_verified(lab, str(run["run_id"]))


# --------------------------------------------------------------------------------------------------
# approve


def test_approve_while_the_run_executes_is_recorded_and_continued_by_the_holder(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    run = lab.start("run", str(APPROVAL_FLOW), "--json", gate_at="w")
    try:
        _wait_for(lab.reached, "branch `work` to reach its gate")
        (row,) = run_rows(lab.db)
        run_id = str(row["run_id"])
        _wait_for(
            lambda: any(e["kind"] == "approval.requested" for e in events(lab.db, run_id)),
            "the approval request",
        )
        approved = lab.charter("approve", run_id, "fan/ask/ok", "--as", "carol")
        assert approved.returncode == EXIT_LEASED, describe(approved)
        assert "the decision was recorded" in approved.stderr
        assert f"pid {run.pid}" in approved.stderr
        _assert_clean(approved)
        lab.open_gate()
        out, err = run.communicate(timeout=WAIT_LIMIT)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    # The run went on to wait, saw the decision that came in meanwhile and continued: nothing is lost.
    assert run.returncode == 0, err
    assert run_json(subprocess.CompletedProcess([], 0, out, err))["output"] == {
        "by": "carol",
        "after": "after",
    }
    assert lab.counts() == Counter({"w": 1, "after": 1})
    assert lab.lease_rows() == []
    _assert_verified(lab, run_id)


def test_approve_of_a_waiting_run_resumes_it_under_its_lease(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    first = lab.charter("run", str(APPROVAL_FLOW), "--json")
    assert first.returncode == 3, describe(first)
    run_id = run_json(first)["run_id"]
    assert lab.lease_rows() == [], "a waiting run holds no lease"
    approved = lab.charter("approve", run_id, "fan/ask/ok", "--as", "carol", "--json")
    assert approved.returncode == 0, describe(approved)
    assert run_json(approved)["output"] == {"by": "carol", "after": "after"}
    assert lab.lease_rows() == []
    _assert_verified(lab, run_id)


def _child_held_at_c(lab: Lab) -> tuple[str, str, subprocess.Popen[str]]:
    """PARENT_FLOW waiting for its child's approval, then a process approving the child and executing it:
    it holds the child's lease, stopped at `c`'s gate. Returns the parent, the child, that process."""
    first = lab.charter("run", str(PARENT_FLOW), "--json")
    assert first.returncode == 3, describe(first)
    parent = run_json(first)["run_id"]
    (child,) = [str(r["run_id"]) for r in run_rows(lab.db) if r["parent_run_id"] == parent]
    approving = lab.start("approve", child, "ok", "--as", "carol", "--json", gate_at="c")
    try:
        _wait_for(lambda: lab.reached() or approving.poll() is not None, "the child to reach `c`")
        assert approving.poll() is None, approving.communicate()
    except BaseException:
        approving.kill()
        approving.communicate()
        raise
    return parent, child, approving


def test_a_parent_resumed_while_another_process_executes_its_child_waits_for_it(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    parent, child, approving = _child_held_at_c(lab)  # process A
    resuming: subprocess.Popen[str] | None = None
    try:
        # Process B resumes the parent, reaches its `sub` step and says that it waits for A.
        resuming = lab.start("resume", parent, "--json")
        assert resuming.stderr is not None
        said = resuming.stderr.readline()
        while said and "⏸ sub: waiting" not in said:
            said = resuming.stderr.readline()
        assert f"child run {child} is executed by pid {approving.pid}" in said, said
        lab.open_gate()
        a_out, a_err = approving.communicate(timeout=WAIT_LIMIT)
        b_out, b_err = resuming.communicate(timeout=WAIT_LIMIT)
    finally:
        for proc in (approving, resuming):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    # The decision stands either way; `approve` exits 4 when B still held the parent (B continues it).
    assert approving.returncode in (0, EXIT_LEASED), a_err
    assert resuming.returncode == 0, b_err
    _assert_clean((a_out, a_err))
    _assert_clean((b_out, b_err))
    assert run_json(subprocess.CompletedProcess([], 0, b_out, b_err))["output"] == {
        "child": "c",
        "after": "after",
    }
    assert lab.counts() == Counter({"c": 1, "after": 1}), "the child's write ran once, in process A"
    assert lab.lease_rows() == []
    _assert_verified(lab, parent)
    _assert_verified(lab, child)


# --------------------------------------------------------------------------------------------------
# the store


def test_release_keeps_the_lease_when_a_pending_approval_was_decided_meanwhile(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        lease = store.acquire_lease(run_id)
        store.append(run_id, s.APPROVAL_REQUESTED, "ok", {"message": "?"})
        store.append(run_id, s.APPROVAL_DECIDED, "other", {"decision": "approved", "by": "x"})
        assert store.release_lease(lease, ["ok"]) is True, "nothing decided at `ok`"
        lease = store.acquire_lease(run_id)
        store.append(run_id, s.APPROVAL_DECIDED, "ok", {"decision": "approved", "by": "x"})
        assert store.release_lease(lease, ["ok"]) is False
        assert store.lease(run_id) == lease
        store.append(run_id, s.APPROVAL_REQUESTED, "ok", {"message": "again?"})  # a newer request
        assert store.release_lease(lease, ["ok"]) is True
        assert store.lease(run_id) is None


def test_release_keeps_the_lease_when_the_pending_child_run_finished(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        parent = store.create_run("p").run_id
        child = store.create_run("c", parent_run_id=parent, parent_node="sub", status="waiting").run_id
        lease = store.acquire_lease(parent)
        assert store.release_lease(lease, ["sub"]) is True
        lease = store.acquire_lease(parent)
        store.set_status(child, "completed", output=None)
        assert store.release_lease(lease, ["sub"]) is False


def test_a_lease_is_not_taken_twice_in_one_process(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        lease = store.acquire_lease(run_id)
        with pytest.raises(s.RunLeased, match=f"pid {os.getpid()}"):
            store.acquire_lease(run_id)
        assert store.renew_lease(lease)
        store.release_lease(lease)
        assert not store.renew_lease(lease), "a released lease is no longer ours"
        with pytest.raises(s.RunNotFound):
            store.acquire_lease("nope")


def test_a_live_holder_that_stopped_renewing_its_lease_loses_it(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        stale = store.acquire_lease(run_id)  # this process holds it, and never renews it
        with sqlite3.connect(tmp_path / "charter.db") as db:
            db.execute("UPDATE run_leases SET expires_at = '2000-01-01T00:00:00.000000Z'")
        with s.SQLiteEventStore(tmp_path / "charter.db") as other:
            taken = other.acquire_lease(run_id)
        assert taken.owner != stale.owner
        assert not store.renew_lease(stale)


def test_a_holder_whose_lease_was_taken_over_cannot_write_to_the_run(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        store.acquire_lease(run_id)
        store.append(run_id, s.STEP_STARTED, "a", {"step": "tool", "attempt": 1})
        with sqlite3.connect(tmp_path / "charter.db") as other:  # another host took the expired lease
            other.execute("UPDATE run_leases SET owner = 'theirs' WHERE run_id = ?", (run_id,))
        with pytest.raises(s.LeaseLost, match="took over its lease"):
            store.append(run_id, s.STEP_COMPLETED, "a", {"attempt": 1, "output": None})
        assert [e.kind for e in store.events(run_id)] == [s.STEP_STARTED]
        assert store.verify(run_id).ok
        with sqlite3.connect(tmp_path / "charter.db") as other:  # they finished with it and let it go
            other.execute("DELETE FROM run_leases WHERE run_id = ?", (run_id,))
        # The same store (a long-lived process: `charter wake --watch`) can take the run again.
        store.release_lease(store.acquire_lease(run_id))


def test_a_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "charter.db"
    with s.SQLiteEventStore(db) as store:
        run_id = store.create_run("w").run_id
        store.append(run_id, s.RUN_STARTED, "", {"workflow": "w"})
    with sqlite3.connect(db) as conn:  # what schema version 1 wrote
        conn.execute("DROP TABLE run_leases")
        conn.execute("PRAGMA user_version = 1")
    with s.SQLiteEventStore(db) as store:
        assert store.verify(run_id).ok
        store.release_lease(store.acquire_lease(run_id))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == s.SCHEMA_VERSION == 2


@pytest.mark.skipif(not LINUX_PROC, reason="process start times come from /proc")
def test_a_dead_process_that_had_this_pid_does_not_hold_the_lease(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        me, now = this_process(), s.utc_now()
        assert me.start is not None
        with sqlite3.connect(tmp_path / "charter.db") as conn:
            conn.execute(
                "INSERT INTO run_leases VALUES (?, 'x', ?, ?, ?, ?, ?, ?, '9999-01-01T00:00:00Z')",
                (run_id, me.host, me.node, me.pid, me.start - 1, now, now),
            )
        lease = store.acquire_lease(run_id)
        assert (lease.pid, lease.proc_start) == (me.pid, me.start)


def test_resuming_a_child_interrupted_with_its_parent_continues_the_parent_too(tmp_path: Path) -> None:
    """Ctrl-C while a child run executes leaves both runs `running`; `charter resume CHILD` (what
    `charter runs` suggests for the child) finishes the child, then its parent, and reports the parent."""
    lab = Lab(tmp_path)
    child = tmp_path / "child.yaml"
    child.write_text(
        'charter: "1.0"\nname: kid\ntools:\n  step: {python: "tests.fixtures.lease_tools:step", effect: write}\n'
        'steps:\n  - {id: c, tool: step, args: {name: c}}\noutput: {done: "${{ steps.c.output.done }}"}\n'
    )
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        PARENT_FLOW.read_text()
        .replace("lease_child_flow.yaml", "child.yaml")
        .replace("lease-parent-flow", "p")
    )
    proc = lab.start("run", str(parent), gate_at="c")
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, "the child to reach step c")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = {r["workflow_name"]: r for r in run_rows(lab.db)}
    assert rows["kid"]["status"] == rows["p"]["status"] == "running"
    lab.reset_gate()
    lab.open_gate()
    resumed = lab.charter("resume", rows["kid"]["run_id"], "--json")
    assert resumed.returncode == 0, describe(resumed)
    assert run_json(resumed)["run_id"] == rows["p"]["run_id"]
    assert run_json(resumed)["status"] == "completed"
    assert lab.counts() == Counter({"c": 1, "after": 1})


def test_charter_cancel_leaves_a_run_a_live_process_executes(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    proc = lab.start("run", str(FLOW), gate_at="b")
    try:
        _wait_for(lambda: lab.reached() or proc.poll() is not None, "the run to reach step b")
        (row,) = run_rows(lab.db)
        refused = lab.charter("cancel", row["run_id"])
        assert refused.returncode == EXIT_LEASED and "executed by another process" in refused.stderr, (
            describe(refused)
        )
        lab.open_gate()
        assert proc.wait(timeout=WAIT_LIMIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert run_row(lab.db, row["run_id"])["status"] == "completed"


def test_charter_cancel_cancels_nothing_while_a_live_process_executes_a_run_below(tmp_path: Path) -> None:
    """All or none: a child a live process executes is left to it, and so is the rest (exit 4)."""
    lab = Lab(tmp_path)
    parent, child, approving = _child_held_at_c(lab)
    try:
        refused = lab.charter("cancel", parent)
        assert refused.returncode == EXIT_LEASED and child in refused.stderr, describe(refused)
        assert {r["status"] for r in run_rows(lab.db)} == {"waiting", "running"}
        lab.open_gate()
        approving.communicate(timeout=WAIT_LIMIT)
    finally:
        if approving.poll() is None:
            approving.kill()
            approving.communicate()
    assert {r["status"] for r in run_rows(lab.db)} == {"completed"}
    assert lab.counts() == Counter({"c": 1, "after": 1})


PARENT_OF_A_TIMED_CHILD = """\
charter: "1.0"
name: parent
steps:
  - {id: kid, workflow: {path: kid.yaml, input: {}}}
"""
KID_TIMES_OUT = """\
charter: "1.0"
name: kid
steps:
  - id: ok
    approval: {message: go on?, timeout: 1s, on_timeout: approve}
"""


def test_resuming_a_child_whose_top_level_run_another_process_executes_exits_4(tmp_path: Path) -> None:
    """The child completes; its top-level run is executed by a live process elsewhere (a lease taken on
    another machine): nothing failed, another process is in the way -- exit 4, not 1."""
    (tmp_path / "wf.yaml").write_text(PARENT_OF_A_TIMED_CHILD)
    (tmp_path / "kid.yaml").write_text(KID_TIMES_OUT)
    db = tmp_path / "c.db"
    waiting = charter("run", "wf.yaml", "--db", str(db), "--json", cwd=tmp_path)
    assert waiting.returncode == 3, describe(waiting)
    top = json.loads(waiting.stdout)["run_id"]
    conn = sqlite3.connect(db)
    (kid,) = conn.execute("SELECT run_id FROM runs WHERE parent_run_id = ?", (top,)).fetchone()
    far = "2099-01-01T00:00:00.000000Z"
    conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (top,))
    conn.execute(
        "INSERT INTO run_leases VALUES (?, 'token', 'elsewhere', 'elsewhere/boot/ns', 4242, 1, ?, ?, ?)",
        (top, far, far, far),
    )
    conn.commit()
    conn.close()
    time.sleep(1.2)  # the child's approval expires: resuming it decides it (on_timeout: approve)
    proc = charter("resume", kid, "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 4, describe(proc)
    assert f"run {top} is executed by pid 4242 on elsewhere" in proc.stderr, describe(proc)


GATE = """\
charter: "1.0"
name: gate
steps:
  - {id: ok, approval: {message: "go on?"}}
output: {done: true}
"""


def test_a_decision_recorded_while_resume_reads_the_log_is_read_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`approve` records its decision without the lease, so it can land between a resume reading the log
    and writing `run.resumed`. The resume then reads it too: `after_seq` is the event just before its
    `run.resumed`, and the log never says the run waits for an approval already decided."""
    import threading

    from dsl.frontend import compile_file
    from interpreter import RunOptions, engine, resume_run, run_workflow
    from interpreter.approvals import decide_approval

    flow = tmp_path / "gate.yaml"
    flow.write_text(GATE)
    graph, _ = compile_file(flow)
    db = tmp_path / "c.db"
    with s.SQLiteEventStore(db) as store:
        waiting = run_workflow(graph, {}, store=store, options=RunOptions())
        assert waiting.status == "waiting"
        real, raced = engine.restore_spent, []

        def restore_then_race(*args, **kwargs):  # type: ignore[no-untyped-def]
            real(*args, **kwargs)
            if not raced:  # the first read of the log only: a person approves right then
                raced.append(True)

                def approve() -> None:
                    with s.SQLiteEventStore(db) as other:
                        try:
                            decide_approval(waiting.run_id, "ok", store=other, person="bob", approved=True)
                        except s.RunLeased:  # recorded; the resume holding the lease continues with it
                            pass
                        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
                            raced.append(exc)

                thread = threading.Thread(target=approve)
                thread.start()
                thread.join()

        monkeypatch.setattr(engine, "restore_spent", restore_then_race)
        result = resume_run(waiting.run_id, store=store)
        logged = list(store.events(waiting.run_id))
    assert raced == [True] and result.status == "completed", (raced, result)
    kinds = [e.kind for e in logged]
    resumed = [e for e in logged if e.kind == "run.resumed"]
    assert resumed[0].payload["after_seq"] == resumed[0].seq - 1
    decided = kinds.index("approval.decided")
    assert "run.waiting" not in kinds[decided:], kinds
