"""A run named by a prefix of its id, as git takes a commit hash: every `charter` command that takes RUN
resolves a prefix no other run's id starts with (in any case) to the full id, which it then uses, prints
and records; a prefix several runs share is refused (exit 2) naming them, and one that no run has is
refused as an unknown run is (exit 2). Real `charter` processes and a real SQLite log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import FIXTURES, charter, child_env, describe, events, run_json, run_row

from interpreter.store import (
    MIN_RUN_ID_PREFIX,
    AmbiguousRunId,
    RunNotFound,
    SQLiteEventStore,
    StoreError,
    new_run_id,
)

FLOW = FIXTURES / "approval_flow.yaml"  # waits at `ok` for anyone's approval, then `pay`s input.amount
ENV = child_env(allow="tests.fixtures.conc_tools")
UNKNOWN = "7ZZZZZ"  # no ULID of this millennium starts with it (its first character is 0 to 7)


def _charter(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return charter(*args, "--db", str(db), env=ENV)


def _waiting_run(db: Path, amount: int) -> str:
    proc = _charter(db, "run", str(FLOW), "--input", json.dumps({"amount": amount}), "--json")
    assert proc.returncode == 3, describe(proc)
    return run_json(proc)["run_id"]


@dataclass
class Pair:
    """Two runs of one log whose ids share `shared` (the part of a ULID that says when it was made)."""

    db: Path
    mine: str  # amount 1
    other: str  # amount 2
    shared: str  # their common prefix, lower-cased: names both
    unique: str  # the shortest prefix of `mine` that `other` does not start with, lower-cased


def _pair(db: Path) -> Pair:
    mine, other = _waiting_run(db, 1), _waiting_run(db, 2)
    shared = os.path.commonprefix([mine, other])
    # runs made a second apart share their first characters (a ULID starts with its time in ms)
    assert len(shared) >= MIN_RUN_ID_PREFIX, (mine, other)
    return Pair(db, mine, other, shared.lower(), mine[: len(shared) + 1].lower())


def _snapshot(db: Path) -> list[Any]:
    """Every run row and event of the log: what a refused command must leave exactly as it was."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [
            conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall(),
            conn.execute("SELECT run_id, seq, hash FROM events ORDER BY run_id, seq").fetchall(),
        ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """`mine` approved and completed, `other` still waiting; the module's tests only read this log."""
    pair = _pair(tmp_path_factory.mktemp("prefix") / "runs.db")
    approved = _charter(pair.db, "approve", pair.mine, "ok", "--as", "alice")
    assert approved.returncode == 0, describe(approved)
    return pair


def _commands(run: str) -> dict[str, list[str]]:
    """Every command that takes RUN, named RUN by `run`."""
    return {
        "log": ["log", run, "--json"],
        "verify": ["verify", run],
        "replay": ["replay", run, "--json"],
        "explain": ["explain", run, "--json"],
        "resume": ["resume", run],
        "approve": ["approve", run, "ok", "--as", "alice"],
        "cancel": ["cancel", run],
        "run --from": ["run", str(FLOW), "--from", f"{run}@pay"],
    }


READING = ["log", "verify", "replay", "explain"]


# -- a unique prefix names the run ------------------------------------------------------------------


@pytest.mark.parametrize("command", READING)
def test_reading_commands_take_a_unique_prefix_in_any_case(finished: Pair, command: str) -> None:
    by_prefix = _charter(finished.db, *_commands(finished.unique)[command])
    by_id = _charter(finished.db, *_commands(finished.mine)[command])
    of_other = _charter(finished.db, *_commands(finished.other)[command])
    assert by_prefix.returncode == 0, describe(by_prefix)
    assert by_id.returncode == 0, describe(by_id)
    assert by_prefix.stdout == by_id.stdout  # the same run, shown as by its full id
    assert by_prefix.stdout != of_other.stdout  # ... and not the run that shares most of the prefix
    assert finished.mine in by_prefix.stdout or command == "log"  # verify, replay, explain name it


def test_log_by_prefix_shows_that_runs_events(finished: Pair) -> None:
    proc = _charter(finished.db, "log", finished.unique, "--json")
    assert proc.returncode == 0, describe(proc)
    shown = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["seq"], e["hash"]) for e in shown] == [
        (e["seq"], e["hash"]) for e in _all_events(finished.db, finished.mine)
    ]
    assert {e["run_id"] for e in shown} == {finished.mine}  # the full id the prefix named
    text = _charter(finished.db, "log", finished.unique)
    assert text.returncode == 0 and text.stdout.splitlines()[0] == f"run {finished.mine}", describe(text)


def _all_events(db: Path, run_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [
            dict(r) for r in conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        ]


def test_crockford_reading_of_a_prefix(finished: Pair) -> None:
    """I and L read as 1 and O as 0 (letters no run id has), so an id copied by eye still resolves."""
    prefix = finished.unique.replace("0", "o").replace("1", "l")
    assert prefix != finished.unique, "a ULID of this era starts with 0 and 1"
    proc = _charter(finished.db, "verify", prefix)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.startswith(f"run {finished.mine}: intact")


def test_approve_by_prefix_decides_that_run(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "runs.db")
    proc = _charter(pair.db, "approve", pair.unique, "ok", "--as", "alice", "--json")
    assert proc.returncode == 0, describe(proc)
    assert run_json(proc)["run_id"] == pair.mine
    assert run_json(proc)["output"] == {"paid": 1, "approved_by": "alice"}
    assert run_row(pair.db, pair.mine)["status"] == "completed"
    assert run_row(pair.db, pair.other)["status"] == "waiting"
    (decided,) = [e for e in events(pair.db, pair.mine) if e["kind"] == "approval.decided"]
    assert decided["payload"]["by"] == "alice"


def test_a_refusal_after_the_prefix_resolved_names_the_full_id_in_its_json(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "runs.db")
    proc = _charter(pair.db, "approve", pair.unique, "nowhere", "--as", "alice", "--json")
    assert proc.returncode == 2, describe(proc)
    doc = json.loads(proc.stdout)
    assert (doc["run_id"], doc["status"]) == (pair.mine, "refused")
    assert "Traceback" not in proc.stderr


def test_resume_by_prefix_continues_that_run(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "runs.db")
    proc = _charter(pair.db, "resume", pair.unique, "--json")
    assert proc.returncode == 3, describe(proc)  # still waiting for its approval
    assert run_json(proc)["run_id"] == pair.mine
    # the hint it prints is to paste: the full id
    assert f"charter approve {pair.mine} ok" in proc.stderr
    assert pair.unique not in proc.stderr


def test_cancel_by_prefix_cancels_that_run_only(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "runs.db")
    proc = _charter(pair.db, "cancel", pair.unique, "--as", "alice", "--reason", "test")
    assert proc.returncode == 0, describe(proc)
    assert f"cancelled run {pair.mine}" in proc.stderr
    assert run_row(pair.db, pair.mine)["status"] == "cancelled"
    assert run_row(pair.db, pair.other)["status"] == "waiting"
    (cancelled,) = [e for e in events(pair.db, pair.mine) if e["kind"] == "run.cancelled"]
    assert cancelled["payload"]["reason"] == "cancelled by alice: test"


def test_run_from_a_prefix_forks_that_run_and_records_its_full_id(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "runs.db")
    approved = _charter(pair.db, "approve", pair.mine, "ok", "--as", "alice")
    assert approved.returncode == 0, describe(approved)
    proc = _charter(pair.db, "run", str(FLOW), "--from", f"{pair.unique}@pay", "--json")
    assert proc.returncode == 0, describe(proc)
    fork = run_json(proc)
    assert fork["output"] == {"paid": 1, "approved_by": "alice"}  # mine's input and approval, not other's
    (started,) = [e for e in events(pair.db, fork["run_id"]) if e["kind"] == "run.started"]
    assert started["payload"]["forked_from"] == {"run_id": pair.mine, "node_path": "pay"}
    listed = _charter(pair.db, "runs")
    assert f"(forked from {pair.mine}@pay)" in listed.stdout


# -- a prefix several runs share, or none ---------------------------------------------------------


@pytest.mark.parametrize("command", list(_commands("RUN")))
def test_a_shared_prefix_is_refused_naming_the_runs(finished: Pair, command: str) -> None:
    before = _snapshot(finished.db)
    proc = _charter(finished.db, *_commands(finished.shared)[command])
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    assert f"run id '{finished.shared}' is ambiguous: 2 runs" in proc.stderr
    assert "give more of its characters" in proc.stderr
    lines = proc.stderr.splitlines()
    (mine,) = [line for line in lines if finished.mine in line]
    (other,) = [line for line in lines if finished.other in line]
    assert "completed" in mine and "approval-flow" in mine and "started 20" in mine
    assert "waiting" in other and "approval-flow" in other
    assert lines.index(other) < lines.index(mine), "newest first, as charter runs lists them"
    assert _snapshot(finished.db) == before  # nothing decided, resumed, cancelled or forked


@pytest.mark.parametrize("command", list(_commands("RUN")))
def test_a_prefix_no_run_has_is_refused_as_an_unknown_run(finished: Pair, command: str) -> None:
    before = _snapshot(finished.db)
    proc = _charter(finished.db, *_commands(UNKNOWN.lower())[command])
    unknown_id = _charter(finished.db, *_commands(UNKNOWN + "Z" * 20)[command])
    assert proc.returncode == unknown_id.returncode == 2, describe(proc)
    assert f"error: no run '{UNKNOWN.lower()}' in {finished.db}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(finished.db) == before


@pytest.mark.parametrize("command", ["log", "resume", "cancel"])
def test_a_prefix_shorter_than_the_minimum_is_refused(finished: Pair, command: str) -> None:
    short = finished.mine[: MIN_RUN_ID_PREFIX - 1]
    before = _snapshot(finished.db)
    proc = _charter(finished.db, *_commands(short)[command])
    assert proc.returncode == 2, describe(proc)
    assert f"run id '{short}' is too short: give at least {MIN_RUN_ID_PREFIX}" in proc.stderr
    assert _snapshot(finished.db) == before


def test_json_refusal_of_a_shared_prefix(finished: Pair) -> None:
    proc = _charter(finished.db, "resume", finished.shared, "--json")
    assert proc.returncode == 2, describe(proc)
    doc = json.loads(proc.stdout)
    assert (doc["run_id"], doc["status"], doc["output"]) == (finished.shared, "refused", None)
    assert doc["error"]["code"] == "invalid"
    assert finished.mine in doc["error"]["message"] and finished.other in doc["error"]["message"]


def test_runs_lists_full_ids_to_paste(finished: Pair) -> None:
    proc = _charter(finished.db, "runs")
    assert proc.returncode == 0, describe(proc)
    first_column = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert first_column == [finished.other, finished.mine]


# -- the store's resolve_run_id -----------------------------------------------------------------------


def _many(db: Path, count: int) -> tuple[str, list[str]]:
    """`count` runs whose ids share their first 20 characters, made through the store."""
    base = new_run_id()[:20]
    ids = [f"{base}{i:06d}" for i in range(count)]
    store = SQLiteEventStore(db)
    for i, run_id in enumerate(ids):
        store.create_run(f"flow-{i}", run_id=run_id)
    store.close()
    return base, ids


def test_many_matches_name_the_newest_five_and_count_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    base, ids = _many(db, 7)
    store = SQLiteEventStore(db, create=False)
    with pytest.raises(AmbiguousRunId) as caught:
        store.resolve_run_id(base[:12].lower())
    assert caught.value.count == 7
    assert [r.run_id for r in caught.value.matches] == ids[::-1][:5]
    assert all(r.status == "running" for r in caught.value.matches)
    assert store.resolve_run_id(ids[3].lower()) == ids[3]
    assert store.resolve_run_id(f"  {ids[3]}  ") == ids[3]
    store.close()
    proc = _charter(db, "log", base)
    assert proc.returncode == 2, describe(proc)
    assert "7 runs" in proc.stderr and "... and 2 more (charter runs lists them)" in proc.stderr
    assert [i for i in ids if i in proc.stderr] == ids[2:]


def test_an_id_as_stored_wins_over_a_longer_one_it_prefixes(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "runs.db")
    store.create_run("short", run_id="ABCDEF")
    store.create_run("long", run_id="ABCDEFG")
    store.create_run("other alphabet", run_id="run-1")
    assert store.resolve_run_id("ABCDEF") == "ABCDEF"
    assert store.resolve_run_id("run-1") == "run-1"
    assert store.resolve_run_id("abcdefg") == "ABCDEFG"
    with pytest.raises(AmbiguousRunId):
        store.resolve_run_id("abcdef")  # not as stored: a prefix of both
    with pytest.raises(RunNotFound):
        store.resolve_run_id("run-")  # not a ULID prefix, not an id
    with pytest.raises(StoreError, match="too short"):
        store.resolve_run_id("ABC")
    store.close()


def test_resolving_reads_the_primary_key_index_never_scans(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    base, ids = _many(db, 3)
    store = SQLiteEventStore(db, create=False)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    assert store.resolve_run_id(ids[1].lower()) == ids[1]
    with pytest.raises(AmbiguousRunId):
        store.resolve_run_id(base)
    store._conn.set_trace_callback(None)
    store.close()
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "runs" in s]
    assert len(reads) >= 4, statements  # exact, range (twice), the ambiguous runs
    with sqlite3.connect(db) as conn:
        for sql in reads:
            plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN" not in plan, (sql, plan)
            assert "sqlite_autoindex_runs_1" in plan, (sql, plan)
