"""Crash recovery with real processes: `charter run` is SIGKILLed at 34 points, `charter resume` finishes.

Every scenario runs tests/fixtures/crash_flow.yaml in a child process with its own database and effects
file, kills it (when the n-th event of a kind is committed, after a random delay, or while a tool hangs
right after its side effect), then resumes it in a new process. The output must equal an uninterrupted
run's; a tool whose completion was committed before the kill must not run again; a tool that was in flight
may run twice, no more; `charter verify` must pass. Eight scenarios run with `--durability full` (the
resume continues with it). Scenarios run six at a time to keep the file fast.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import (
    ENGINE,
    FIXTURES,
    REPO,
    charter,
    charter_cmd,
    child_env,
    connect,
    describe,
    events,
    run_row,
    run_rows,
)

from interpreter.store import SQLiteEventStore, VerifyResult

pytestmark = pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")

FLOW = FIXTURES / "crash_flow.yaml"
ALLOW = "tests.fixtures.crash_tools"
KILL_DEADLINE = 20.0  # seconds: a child that reaches no kill point by then is a bug, not a slow machine


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str = ""  # kill once `occurrence` events of this kind are committed
    occurrence: int = 1
    delay: float | None = None  # kill this fraction of an uninterrupted run's duration after run.started
    hang_at: str = ""  # the tool `work(name=hang_at)` hangs after its side effect; kill then
    durability: str = "normal"  # of `charter run`; the resume continues with the run's own


EVENT_POINTS = [
    ("run.started", 1),
    ("step.started", 1),
    ("step.started", 4),
    ("step.started", 12),
    ("tool.called", 1),
    ("tool.called", 6),
    ("tool.called", 14),
    ("tool.completed", 2),
    ("tool.completed", 9),
    ("step.completed", 3),
    ("step.completed", 10),
    ("vars.set", 1),
    ("decision", 1),
    ("decision", 2),
    ("loop.iteration", 2),
    ("loop.iteration", 7),
    ("parallel.joined", 1),
    ("step.skipped", 1),
]
_rng = random.Random(20261126)
SCENARIOS = (
    [Scenario(f"{kind}#{n}", kind=kind, occurrence=n) for kind, n in EVENT_POINTS]
    + [Scenario(f"delay-{i}", delay=round(_rng.uniform(0.02, 0.98), 3)) for i in range(5)]
    + [Scenario(f"hang-{name}", hang_at=name) for name in ("b", "l1", "item3")]
    + [
        Scenario(f"full-{kind}#{n}", kind=kind, occurrence=n, durability="full")
        for kind, n in [("step.completed", 3), ("tool.called", 6), ("tool.completed", 9), ("decision", 2)]
    ]
    + [
        Scenario(f"full-delay-{i}", delay=round(_rng.uniform(0.05, 0.95), 3), durability="full")
        for i in range(3)
    ]
    + [Scenario("full-hang-item3", hang_at="item3", durability="full")]
)


@dataclass
class Outcome:
    scenario: Scenario
    killed: bool = False
    run_id: str | None = None
    completed_at_kill: set[str] = field(default_factory=set)  # node paths with tool.completed
    in_flight_at_kill: set[str] = field(default_factory=set)  # tool.called without tool.completed
    kinds_at_kill: Counter[str] = field(default_factory=Counter)
    resume: subprocess.CompletedProcess[str] | None = None
    verify: VerifyResult | None = None
    db: Path | None = None
    effects: Counter[str] = field(default_factory=Counter)  # node path -> side effects
    effect_lines: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""


def _key_path(run_id: str, key: str) -> str:
    """The node path inside an idempotency key "<run_id>/<node_path>/<attempt>"."""
    assert key.startswith(run_id + "/"), f"idempotency key {key!r} does not start with the run id {run_id}"
    return key[len(run_id) + 1 : key.rindex("/")]


def _effect_lines(path: Path, run_id: str) -> list[tuple[str, str]]:
    """(tool name argument, node path) of every side effect, in order."""
    if not path.exists():
        return []
    lines = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(name, _key_path(run_id, key)) for name, key in lines]


def _effects(path: Path, run_id: str) -> Counter[str]:
    return Counter(node for _, node in _effect_lines(path, run_id))


def _count(db: Path, kind: str) -> int:
    if not db.exists():
        return 0
    try:
        with connect(db) as conn:
            return conn.execute("SELECT count(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0]
    except sqlite3.Error:  # schema not created yet
        return 0


def _should_kill(s: Scenario, clock: dict[str, float], db: Path, effects: Path) -> bool:
    if s.delay is not None:
        # measured from the run's start, not the process's: start-up time varies with the machine's load
        if "run" not in clock:
            if _count(db, "run.started"):
                clock["run"] = time.monotonic()
            return False
        return time.monotonic() - clock["run"] >= s.delay * clock["duration"]
    if s.hang_at:
        return effects.exists() and f"{s.hang_at}\t" in effects.read_text(encoding="utf-8")
    return _count(db, s.kind) >= s.occurrence


def _snapshot(out: Outcome, db: Path) -> None:
    """What the log held when the process died: committed is final, nothing more will be written."""
    rows = run_rows(db) if db.exists() else []
    if not rows:
        return
    out.run_id = rows[0]["run_id"]
    evs = events(db, out.run_id)
    out.kinds_at_kill = Counter(e["kind"] for e in evs)
    called = {e["node_path"] for e in evs if e["kind"] == "tool.called"}
    out.completed_at_kill = {e["node_path"] for e in evs if e["kind"] == "tool.completed"}
    out.in_flight_at_kill = called - out.completed_at_kill


def _play(s: Scenario, work: Path, duration: float) -> Outcome:
    out = Outcome(s)
    work.mkdir(parents=True)
    db, effects = work / "charter.db", work / "effects.txt"
    env = child_env({"CRASH_EFFECTS": str(effects)}, allow=ALLOW)
    child_run_env = dict(env, CRASH_HANG_AT=s.hang_at) if s.hang_at else env
    proc = subprocess.Popen(
        charter_cmd("run", str(FLOW), "--db", str(db), "--durability", s.durability),
        cwd=REPO,
        env=child_run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = time.monotonic()
    clock = {"duration": duration}
    try:
        while proc.poll() is None:
            if _should_kill(s, clock, db, effects):
                proc.kill()
                out.killed = True
                break
            if time.monotonic() - started > KILL_DEADLINE:
                proc.kill()
                out.error = f"no kill point reached in {KILL_DEADLINE}s"
                break
            time.sleep(0.002)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not out.killed and not out.error and proc.returncode != 0:
        out.error = f"the run exited {proc.returncode} before the kill point: {stderr.decode()[-2000:]}"
    _snapshot(out, db)
    if out.error or out.run_id is None:
        return out
    if out.killed:
        out.resume = charter("resume", out.run_id, "--db", str(db), env=env, timeout=60)
    with SQLiteEventStore(db) as store:  # `charter verify` itself: tests/test_tampering.py
        out.verify = store.verify(out.run_id)
    out.db = db
    out.effect_lines = _effect_lines(effects, out.run_id)
    out.effects = Counter(node for _, node in out.effect_lines)
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run: its output, its side effects and the events it writes."""
    work = tmp_path_factory.mktemp("baseline")
    db, effects = work / "charter.db", work / "effects.txt"
    env = child_env({"CRASH_EFFECTS": str(effects)}, allow=ALLOW)
    proc = charter("run", str(FLOW), "--db", str(db), env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    (row,) = run_rows(db)
    assert row["status"] == "completed", row
    evs = events(db, row["run_id"])
    return {
        "run_id": row["run_id"],
        "output": json.loads(row["output"]),
        "stdout": proc.stdout,
        "effects": _effects(effects, row["run_id"]),
        "kinds": Counter(e["kind"] for e in evs),
        "duration": _seconds(evs[-1]["ts"]) - _seconds(evs[0]["ts"]),
    }


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def outcomes(baseline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("crash")
    playable = [s for s in SCENARIOS if not s.kind or baseline["kinds"][s.kind] >= s.occurrence]
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {
            s.name: pool.submit(_play, s, root / s.name.replace("#", "-"), baseline["duration"])
            for s in playable
        }
        return {name: f.result() for name, f in futures.items()}


def test_baseline_run_is_deterministic_and_complete(baseline: dict[str, Any]) -> None:
    out = baseline["output"]
    assert out["total"] == 4
    assert [e["value"] for e in out["each"]] == [2, 4, 6, 8, 10, 12]
    assert out["final"]["count"] == 6
    assert json.loads(baseline["stdout"]) == out, "`charter run` must print the output JSON on stdout"
    # one side effect per tool call: 15 calls, each exactly once
    assert len(baseline["effects"]) == 15, baseline["effects"]
    assert set(baseline["effects"].values()) == {1}
    for kind in ("vars.set", "decision", "loop.iteration", "parallel.joined", "step.skipped"):
        assert baseline["kinds"][kind] >= 1, f"an uninterrupted run records no {kind} event"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_killed_run_resumes_to_the_same_result(
    scenario: Scenario, outcomes: dict[str, Outcome], baseline: dict[str, Any]
) -> None:
    if scenario.name not in outcomes:
        pytest.skip(f"an uninterrupted run has fewer than {scenario.occurrence} {scenario.kind} events")
    out = outcomes[scenario.name]
    assert not out.error, out.error
    assert out.run_id is not None, "the run row was never created (killed during start-up)"
    if out.resume is not None:
        assert out.resume.returncode == 0, describe(out.resume)
        assert json.loads(out.resume.stdout) == baseline["output"], "resume must print the run's output"
    assert out.db is not None
    db_row = run_row(out.db, out.run_id)
    assert db_row["status"] == "completed"
    assert json.loads(db_row["output"]) == baseline["output"]
    assert out.verify is not None and out.verify.ok, f"verify failed: {out.verify}"

    # side effects: the same calls as an uninterrupted run; committed ones exactly once, in-flight ones <= 2
    assert set(out.effects) == set(baseline["effects"]), "the resumed run made different tool calls"
    for path in out.completed_at_kill:
        assert out.effects[path] == 1, (
            f"{path} had completed before the kill but ran {out.effects[path]} times"
        )
    for path, n in out.effects.items():
        assert 1 <= n <= 2, f"{path} ran {n} times"
        if n == 2:
            assert path in out.in_flight_at_kill, f"{path} ran twice though no call of it was in flight"
    if scenario.hang_at:
        (hung,) = {node for name, node in out.effect_lines if name == scenario.hang_at}
        assert out.effects[hung] == 2, f"the hung call {hung} must run again on resume: {out.effects}"


def test_resumed_logs_say_they_were_resumed(outcomes: dict[str, Outcome]) -> None:
    for out in outcomes.values():
        if not out.killed or out.run_id is None or out.kinds_at_kill["run.completed"]:
            continue
        assert out.db is not None
        evs = events(out.db, out.run_id)
        kinds = [e["kind"] for e in evs]
        assert kinds.count("run.completed") == 1, (out.scenario.name, kinds)
        assert kinds[-1] == "run.completed", (out.scenario.name, kinds[-5:])
        assert "run.resumed" in kinds, f"{out.scenario.name}: no run.resumed event after the resume"


def test_enough_distinct_kill_points(outcomes: dict[str, Outcome]) -> None:
    killed = [o for o in outcomes.values() if o.killed and o.run_id and not o.kinds_at_kill["run.completed"]]
    assert len(killed) >= 20, f"only {len(killed)} scenarios killed a run before it completed"
    assert len({o.kinds_at_kill.total() for o in killed}) >= 10, (
        "kills landed at too few distinct log positions"
    )


def _kill_when(cmd: list[str], env: dict[str, str], db: Path, kind: str, count: int) -> int:
    """Start `cmd`, SIGKILL it once the log holds `count` events of `kind`; its exit status."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_DEADLINE
    while proc.poll() is None and time.monotonic() < deadline:
        if _count(db, kind) >= count:
            proc.kill()
            break
        time.sleep(0.002)
    else:
        proc.kill()
    return proc.wait(timeout=30)


def test_a_resume_killed_in_turn_is_resumed_again(tmp_path: Path, baseline: dict[str, Any]) -> None:
    db, effects = tmp_path / "charter.db", tmp_path / "effects.txt"
    env = child_env({"CRASH_EFFECTS": str(effects)}, allow=ALLOW)
    assert _kill_when(charter_cmd("run", str(FLOW), "--db", str(db)), env, db, "tool.completed", 3) == -9
    (row,) = run_rows(db)
    run_id = row["run_id"]
    resume = charter_cmd("resume", run_id, "--db", str(db))
    assert _kill_when(resume, env, db, "tool.completed", 9) == -9, "the first resume finished before the kill"
    assert run_row(db, run_id)["status"] != "completed"
    final = charter("resume", run_id, "--db", str(db), env=env, timeout=60)
    assert final.returncode == 0, describe(final)
    assert json.loads(run_row(db, run_id)["output"]) == baseline["output"]
    got = _effects(effects, run_id)
    assert set(got) == set(baseline["effects"])
    assert all(1 <= n <= 2 for n in got.values()), got
    kinds = [e["kind"] for e in events(db, run_id)]
    assert kinds.count("run.resumed") == 2 and kinds.count("run.completed") == 1
    with SQLiteEventStore(db) as store:
        assert store.verify(run_id).ok
