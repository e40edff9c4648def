"""Edges of the event store, on real SQLite files: values that JSON would change (keys that are not
strings), actors that are equal in Python but not in JSON, an in-memory store's verify, and
`charter wake` past a waiting run whose log cannot be read."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures.charter_cli import ENGINE, charter, describe

from interpreter.hashing import NotCanonicalizable, canonical_json
from interpreter.runtime import InputError
from interpreter.store import APPROVAL_REQUESTED, PayloadError, SQLiteEventStore


def _compile(tmp_path: Path, source: str):  # type: ignore[no-untyped-def]
    from dsl.frontend import compile_file

    path = tmp_path / "wf.yaml"
    path.write_text(source)
    graph, diagnostics = compile_file(str(path))
    assert graph is not None, diagnostics
    return graph


# -- keys that are not strings ------------------------------------------------------------------------
# json writes {2: .., 10: ..} as {"2": .., "10": ..} sorted as numbers; read back, the same object sorts
# as strings ("10" first): a log holding it would fail verify although nobody touched it.


@pytest.mark.parametrize(
    "value",
    [
        {2: "a", 10: "b"},
        {7: "one key"},
        {"outer": [{"ok": 1}, {True: "yes", False: "no"}]},
        ({None: 1},),
        {"x": {1.5: "a", 10.0: "b"}},
    ],
)
def test_canonical_json_refuses_keys_that_are_not_strings(value: object) -> None:
    with pytest.raises(NotCanonicalizable, match="keys must be strings"):
        canonical_json(value)


def test_the_store_refuses_keys_that_are_not_strings_and_its_log_still_verifies(
    store: SQLiteEventStore,
) -> None:
    run = store.create_run("wf", workflow_source="x")
    store.append(run.run_id, "run.started", "", {"workflow": "wf"})
    with pytest.raises(PayloadError, match="keys must be strings"):
        store.append(run.run_id, "step.completed", "count", {"attempt": 1, "output": {2: "two", 10: "ten"}})
    with pytest.raises(PayloadError, match="actor"):
        store.append(run.run_id, "approval.decided", "a", {"decision": "approved"}, {"sub": "u", "n": {1: 2}})
    with pytest.raises(PayloadError, match="run output"):
        store.set_status(run.run_id, "completed", output={2: "a", 10: "b"})
    with pytest.raises(PayloadError, match="run inputs"):
        store.create_run("wf", inputs={"counts": {2: 5, 10: 7}})
    assert [r.run_id for r in store.runs()] == [run.run_id]  # nothing of the refused run was written
    assert store.run(run.run_id).head_seq == 1
    # the same data with string keys is stored as given and verifies
    store.append(run.run_id, "step.completed", "count", {"attempt": 1, "output": {"2": "two", "10": "ten"}})
    assert store.verify(run.run_id).ok


@pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")
def test_a_run_never_logs_a_map_whose_keys_are_not_strings(tmp_path: Path, store: SQLiteEventStore) -> None:
    from interpreter import run_workflow

    graph = _compile(
        tmp_path,
        'charter: "1.0"\nname: counts\nvars: {m: null}\nsteps:\n'
        "  - id: s\n    set: {m: \"${{ {2: 'a', 10: 'b'} }}\"}\n"
        'output: {m: "${{ vars.m }}"}\n',
    )
    # inputs through the Python API: refused before the run exists
    with pytest.raises(InputError, match="the input is not JSON: object keys must be strings"):
        run_workflow(graph, {"counts": {2: 5, 10: 7}}, store=store)
    assert store.runs() == []
    # an expression's map with int keys is logged with string keys (as JSON writes them): it verifies
    result = run_workflow(graph, {}, store=store)
    assert result.status == "completed" and store.verify(result.run_id).ok, result


# -- the actor cache ------------------------------------------------------------------------------------


def test_actors_equal_in_python_but_not_in_json_are_logged_as_given(store: SQLiteEventStore) -> None:
    run = store.create_run("wf")
    shared = {"sub": "user:alice", "act": {"sub": "agent:triage"}}
    given = [
        {"sub": "user:alice", "claims": {"mfa": 1}},
        {"sub": "user:alice", "claims": {"mfa": True}},  # == the one before in Python
        {"sub": "user:alice", "claims": {"level": 2}},
        {"sub": "user:alice", "claims": {"level": 2.0}},
        {"sub": "user:alice", "act": {"sub": "agent:triage"}},
        shared,
    ]
    for actor in given:
        store.append(run.run_id, "approval.decided", "x", {"decision": "approved"}, actor)
    expected = [canonical_json(a) for a in given]
    shared["act"]["sub"] = "agent:other"  # the caller changes a dict it gave before, and gives it again
    store.append(run.run_id, "approval.decided", "x", {"decision": "approved"}, shared)
    expected.append(canonical_json(shared))
    assert [canonical_json(e.actor) for e in store.events(run.run_id)] == expected  # type-exact
    assert store.verify(run.run_id).ok


# -- verify -----------------------------------------------------------------------------------------------


def test_an_in_memory_store_is_verified_through_its_own_connection() -> None:
    with SQLiteEventStore(":memory:") as memory:
        run = memory.create_run("wf")
        memory.append(run.run_id, "vars.set", "", {"vars": {"a": 1}})
        assert memory.verify(run.run_id).ok and memory.verify(run.run_id).events_checked == 1


# -- charter wake --------------------------------------------------------------------------------------

EXPIRING = """charter: "1.0"
name: expiring
steps:
  - id: ok
    approval: {message: "ship it?", timeout: 10ms, on_timeout: approve}
output: {by: "${{ steps.ok.output.by }}"}
"""


@pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")
@pytest.mark.parametrize("damaged_kind", ["run.started", APPROVAL_REQUESTED])  # read by the resume, by wake
def test_wake_reports_a_run_whose_log_cannot_be_read_and_wakes_the_others(
    tmp_path: Path, db_path: Path, damaged_kind: str
) -> None:
    from interpreter import run_workflow

    graph = _compile(tmp_path, EXPIRING)
    with SQLiteEventStore(db_path) as store:
        healthy, damaged = (run_workflow(graph, {}, store=store).run_id for _ in range(2))
        expiries = [
            datetime.fromisoformat(e.payload["expires_at"])
            for run_id in (healthy, damaged)
            for e in store.events(run_id)
            if e.kind == APPROVAL_REQUESTED
        ]
    with sqlite3.connect(db_path) as raw:  # an event of the newer run edited by hand
        raw.execute(
            "UPDATE events SET payload = '{broken' WHERE run_id = ? AND kind = ?", (damaged, damaged_kind)
        )
    while datetime.now(UTC) <= max(expiries):  # both approvals expire after 10 ms
        time.sleep(0.01)
    proc = charter("wake", "--db", str(db_path), "--json", cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)  # one run could not be woken
    lines = {line["run_id"]: line for line in map(json.loads, proc.stdout.splitlines())}
    assert lines[damaged]["action"] == "error" and "valid JSON" in lines[damaged]["message"], lines
    assert (lines[healthy]["action"], lines[healthy]["status"]) == ("resumed", "completed"), lines
    with SQLiteEventStore(db_path) as store:
        assert store.run(healthy).status == "completed" and store.run(healthy).output == {
            "by": "system:timeout"
        }
        assert store.run(damaged).status == "waiting"


# -- reading back what was written by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [(' {"a": [1, 2.5]} ', {"a": [1, 2.5]}), ("[1]\n", [1]), ('"x"', "x"), ("NaN", None)],
)
def test_payloads_edited_by_hand_read_back_as_json_reads_them(
    tmp_path: Path, text: str, value: object
) -> None:
    """The store reads its own canonical text by a faster path; any other JSON a person put in a row
    (spaces, a newline) still reads as `json.loads` reads it, and what is not JSON names the event."""
    from interpreter.store import DamagedLog

    db = tmp_path / "c.db"
    with SQLiteEventStore(db) as store:
        run_id = store.create_run("w").run_id
        store.append(run_id, "step.started", "s", {"attempt": 1})
        store.append(run_id, "step.started", "t", {"attempt": 1})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET payload = ? WHERE run_id = ? AND seq = 1", (text, run_id))
        conn.execute("UPDATE events SET payload = ? WHERE run_id = ? AND seq = 2", ('{"a": 1', run_id))
    with SQLiteEventStore(db) as store:
        rows = store.events(run_id)
        first = next(rows).payload
        if value is None:
            assert first != first  # NaN, as json.loads reads it
        else:
            assert first == value
        with pytest.raises(DamagedLog, match="event seq 2's payload is not valid JSON"):
            next(rows)
        assert not store.verify(run_id).ok
