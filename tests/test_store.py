"""The event store against real SQLite files: chain, tampering, blobs, processes, locks, durability."""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interpreter import store as s
from interpreter.hashing import canonical_json, event_hash, event_hash_from_parts, genesis_hash, sha256_hex
from interpreter.store import (
    BlobNotFound,
    EventStore,
    NewEvent,
    PayloadError,
    RunNotFound,
    SQLiteEventStore,
    StoreError,
    StoreLockedError,
    event_kinds,
    new_run_id,
    open_store,
    resolve_db_path,
)

REPO = Path(__file__).resolve().parents[1]
ALICE_VIA_AGENT = {"sub": "user:alice", "act": {"sub": "agent:triage", "act": {"sub": "service:charter"}}}


def _run_with_events(store: SQLiteEventStore, n: int = 5) -> str:
    run = store.create_run(
        "demo", workflow_source="steps: []\n", inputs={"q": "héllo"}, principal="user:alice"
    )
    store.append(run.run_id, "run.started", "", {"inputs": {"q": "héllo"}}, ALICE_VIA_AGENT)
    for i in range(2, n + 1):
        store.append(run.run_id, "step.completed", f"step-{i}", {"output": i, "attempt": 1})
    return run.run_id


def _raw(db_path: Path) -> sqlite3.Connection:
    """A connection that bypasses the store, as a person editing the file by hand would."""
    return sqlite3.connect(db_path, isolation_level=None)


# -- chain integrity --------------------------------------------------------------------------------


def test_chain_links_every_event_to_the_previous_one(store: SQLiteEventStore) -> None:
    run_id = _run_with_events(store, 6)
    run = store.run(run_id)
    events = list(store.events(run_id))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    genesis = genesis_hash(
        {
            "run_id": run_id,
            "parent_run_id": None,
            "parent_node": None,
            "workflow_name": "demo",
            "workflow_digest": sha256_hex("steps: []\n"),
            "inputs": {"q": "héllo"},
            "principal": "user:alice",
            "interpreter_version": "",
            "created_at": run.created_at,
        }
    )
    assert events[0].prev_hash == genesis
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    for e in events:  # the stored hash is the documented reference definition
        assert e.hash == event_hash(
            run_id=e.run_id,
            seq=e.seq,
            ts=e.ts,
            node_path=e.node_path,
            kind=e.kind,
            actor=e.actor,
            payload=e.payload,
            prev_hash=e.prev_hash,
        )
    assert (run.head_seq, run.head_hash) == (6, events[-1].hash)
    assert events[0].actor == ALICE_VIA_AGENT
    assert events[0].ts.endswith("Z") and len(events[0].ts) == len("2026-01-01T00:00:00.000000Z")
    assert store.verify(run_id).ok
    assert store.verify(run_id).events_checked == 6


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(payload=json_values, node_path=st.text(max_size=20), actor=st.none() | st.just(ALICE_VIA_AGENT))
def test_fast_hash_equals_reference_hash(payload: object, node_path: str, actor: object) -> None:
    fields = dict(
        run_id="01ABC", seq=7, ts="2026-01-01T00:00:00.000001Z", node_path=node_path, kind="vars.set"
    )
    fast = event_hash_from_parts(
        **fields, actor_json=canonical_json(actor), payload_json=canonical_json(payload), prev_hash="0" * 64
    )
    assert fast == event_hash(**fields, actor=actor, payload=payload, prev_hash="0" * 64)
    # and the stored text round-trips to the same hash, which is what verify relies on
    reparsed = json.loads(canonical_json(payload))
    assert event_hash(**fields, actor=actor, payload=reparsed, prev_hash="0" * 64) == fast


def test_canonical_json_form() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"], "c": {"z": None, "y": 1.5}}) == (
        '{"a":[1,"é"],"b":1,"c":{"y":1.5,"z":null}}'
    )


# -- tampering --------------------------------------------------------------------------------------


def test_edited_payload_is_detected_at_its_seq(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute(
        "UPDATE events SET payload = ? WHERE run_id = ? AND seq = 3", ('{"attempt":1,"output":999}', run_id)
    )
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "modified" in result.reason


@pytest.mark.parametrize("column, value", [("kind", "step.failed"), ("node_path", "x"), ("ts", "2020")])
def test_edited_metadata_is_detected(store: SQLiteEventStore, db_path: Path, column: str, value: str) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute(f"UPDATE events SET {column} = ? WHERE run_id = ? AND seq = 2", (value, run_id))
    assert store.verify(run_id).first_bad_seq == 2


@pytest.mark.parametrize(
    "column, value",
    [
        ("run_id", "01OTHERRUN"),
        ("seq", 99),
        ("ts", "2026-01-01T00:00:00.000000Z"),
        ("node_path", "elsewhere"),
        ("kind", "vars.set"),
        ("actor", '{"sub":"user:mallory"}'),
        ("payload", "null"),
        ("prev_hash", "0" * 64),
        ("hash", "f" * 64),
    ],
)
def test_any_column_edited_is_detected_at_its_seq(
    store: SQLiteEventStore, db_path: Path, column: str, value: object
) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute(f"UPDATE events SET {column} = ? WHERE run_id = ? AND seq = 3", (value, run_id))
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 3), result.reason


def test_edited_actor_is_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute(
        "UPDATE events SET actor = ? WHERE run_id = ? AND seq = 1", ('{"sub":"user:mallory"}', run_id)
    )
    assert store.verify(run_id).first_bad_seq == 1


def test_edited_and_rehashed_row_is_detected_at_its_seq(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    raw = _raw(db_path)
    ts, prev = raw.execute(
        "SELECT ts, prev_hash FROM events WHERE run_id = ? AND seq = 3", (run_id,)
    ).fetchone()
    forged = {"output": 999, "attempt": 1}
    new_hash = event_hash(
        run_id=run_id, seq=3, ts=ts, node_path="step-3", kind="step.completed", actor=None, payload=forged,
        prev_hash=prev,
    )  # fmt: skip
    raw.execute(
        "UPDATE events SET payload = ?, hash = ? WHERE run_id = ? AND seq = 3",
        (canonical_json(forged), new_hash, run_id),
    )
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "rewritten" in result.reason


def test_a_run_that_commits_while_it_is_verified_is_not_reported_as_tampered(
    store: SQLiteEventStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _run_with_events(store)
    # more events than one page of reads: a reader paging through them would meet the later commits
    store.append_many(
        run_id, [NewEvent("step.completed", f"p{i}", {"output": i, "attempt": 1}) for i in range(2500)]
    )
    check_row = store._check_row
    live = SQLiteEventStore(db_path)  # another writer (a live run in another process)

    def commit_then_check(row, *args):  # type: ignore[no-untyped-def]
        if row[1] % 1000 == 1:  # the live run commits while verify is half-way through the events
            live.append(run_id, "step.completed", "later", {"output": 0, "attempt": 1})
        return check_row(row, *args)

    monkeypatch.setattr(store, "_check_row", commit_then_check)
    result = store.verify(run_id)
    assert result.ok and result.events_checked == 2505, result  # the events as they were when it began
    monkeypatch.undo()
    assert store.verify(run_id).events_checked == 2508
    live.close()
    # a row appended by hand stays beyond the checkpoint however often it is read
    raw = _raw(db_path)
    raw.execute(
        "INSERT INTO events SELECT run_id, seq + 1, ts, node_path, kind, actor, payload, hash, hash "
        "FROM events WHERE run_id = ? AND seq = 2508",
        (run_id,),
    )
    assert (store.verify(run_id).ok, store.verify(run_id).first_bad_seq) == (False, 2509)


def test_deleted_middle_row_is_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute("DELETE FROM events WHERE run_id = ? AND seq = 2", (run_id,))
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "missing" in result.reason


def test_deleted_and_renumbered_rows_are_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    raw = _raw(db_path)
    raw.execute("DELETE FROM events WHERE run_id = ? AND seq = 2", (run_id,))
    for seq in (3, 4, 5):
        raw.execute("UPDATE events SET seq = ? WHERE run_id = ? AND seq = ?", (seq - 1, run_id, seq))
    raw.execute("UPDATE runs SET head_seq = 4 WHERE run_id = ?", (run_id,))
    assert store.verify(run_id).first_bad_seq == 2


def test_truncation_is_detected_by_the_checkpoint(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute("DELETE FROM events WHERE run_id = ? AND seq >= 4", (run_id,))
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "truncated" in result.reason


def test_row_appended_by_hand_is_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    last = list(store.events(run_id))[-1]
    forged = dict(
        run_id=run_id, seq=6, ts="2026-01-01T00:00:00.000000Z", node_path="x", kind="vars.set", actor=None
    )
    digest = event_hash(**forged, payload={"a": 1}, prev_hash=last.hash)
    _raw(db_path).execute(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
        (run_id, 6, forged["ts"], "x", "vars.set", '{"a":1}', last.hash, digest),
    )
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert "checkpoint" in result.reason


def test_last_row_replaced_is_detected_by_head_hash(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    raw = _raw(db_path)
    ts, prev = raw.execute(
        "SELECT ts, prev_hash FROM events WHERE run_id = ? AND seq = 5", (run_id,)
    ).fetchone()
    digest = event_hash(
        run_id=run_id, seq=5, ts=ts, node_path="step-5", kind="step.completed", actor=None, payload=0,
        prev_hash=prev,
    )  # fmt: skip
    raw.execute("UPDATE events SET payload = '0', hash = ? WHERE run_id = ? AND seq = 5", (digest, run_id))
    assert store.verify(run_id).first_bad_seq == 5


def test_edited_run_row_breaks_the_genesis(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute("UPDATE runs SET inputs = ? WHERE run_id = ?", ('{"q":"other"}', run_id))
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 0)


def test_edited_workflow_source_is_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    _raw(db_path).execute("UPDATE runs SET workflow_source = 'evil' WHERE run_id = ?", (run_id,))
    assert store.verify(run_id).first_bad_seq == 0


def test_tampered_and_missing_blobs_are_detected(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store)
    store.append(run_id, "tool.completed", "big", {"text": "x" * 10_000})
    raw = _raw(db_path)
    (digest,) = raw.execute("SELECT sha256 FROM blobs").fetchone()
    raw.execute("UPDATE blobs SET data = ? WHERE sha256 = ?", (b'{"text":"y"}', digest))
    result = store.verify(run_id)
    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert "blob" in result.reason
    raw.execute("DELETE FROM blobs")
    result = store.verify(run_id)
    assert (result.first_bad_seq, "missing" in result.reason) == (6, True)


# -- blobs ------------------------------------------------------------------------------------------


def _stored_payloads(db_path: Path, run_id: str) -> list[str]:
    rows = _raw(db_path).execute("SELECT payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
    return [r[0] for r in rows]


def test_large_members_go_to_the_blob_table(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = _run_with_events(store, 1)
    big = {"tool": "search", "duration_ms": 1.5, "result": {"text": "ünïcode " * 1000}}
    store.append(run_id, "tool.completed", "a", big)
    store.append(run_id, "tool.completed", "b", big)  # same content: one blob
    store.append(run_id, "tool.completed", "c", {"text": "small"})
    stored = _stored_payloads(db_path, run_id)
    digest = sha256_hex(canonical_json(big["result"]))
    # the small members stay in the row, queryable with SQL; the large one is a reference
    assert json.loads(stored[1]) == {"tool": "search", "duration_ms": 1.5, "result": {"$blob": digest}}
    assert stored[1] == stored[2]
    assert stored[3] == '{"text":"small"}'
    raw = _raw(db_path)
    assert raw.execute("SELECT count(*), size FROM blobs").fetchone() == (
        1,
        len(canonical_json(big["result"]).encode()),
    )
    assert raw.execute(
        "SELECT json_extract(payload, '$.tool') FROM events WHERE run_id = ? AND seq = 2", (run_id,)
    ).fetchone() == ("search",)
    assert [e.payload for e in store.events(run_id)][1:] == [big, big, {"text": "small"}]
    assert json.loads(store.get_blob(digest)) == big["result"]
    assert store.verify(run_id).ok


@pytest.mark.parametrize(
    "payload",
    [["x" * 100] * 100, {f"k{i}": "v" * 60 for i in range(100)}],
    ids=["list", "many-small-members"],
)
def test_large_payload_without_a_large_member_is_one_blob(
    store: SQLiteEventStore, db_path: Path, payload: object
) -> None:
    run_id = _run_with_events(store, 1)
    store.append(run_id, "vars.set", "a", payload)
    digest = sha256_hex(canonical_json(payload))
    assert _stored_payloads(db_path, run_id)[1] == '{"$blob":"' + digest + '"}'
    assert list(store.events(run_id))[1].payload == payload
    assert store.verify(run_id).ok


def test_put_and_get_blob(store: SQLiteEventStore) -> None:
    digest = store.put_blob(b"\x00binary\xff", "application/octet-stream")
    assert digest == sha256_hex(b"\x00binary\xff")
    assert store.get_blob(digest) == b"\x00binary\xff"
    assert store.put_blob(b"\x00binary\xff") == digest
    with pytest.raises(BlobNotFound):
        store.get_blob("0" * 64)


def test_blob_reference_key_is_reserved(store: SQLiteEventStore) -> None:
    run_id = _run_with_events(store, 1)
    with pytest.raises(PayloadError, match=r"\$blob"):
        store.append(run_id, "vars.set", "x", {"$blob": "0" * 64})
    with pytest.raises(PayloadError, match=r"\$blob"):
        store.append(run_id, "vars.set", "x", {"vars": {"$blob": "0" * 64}})
    store.append(run_id, "vars.set", "x", {"vars": {"a": {"$blob": "deeper is fine"}}})
    assert list(store.events(run_id))[-1].payload == {"vars": {"a": {"$blob": "deeper is fine"}}}
    assert store.verify(run_id).ok


# -- concurrency ------------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from interpreter.store import SQLiteEventStore, NewEvent
path, run_id, n, name, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
with SQLiteEventStore(path, busy_timeout=30) as store:
    (barrier / f"ready-{name}").touch()
    while not (barrier / "go").exists():  # start both writers at the same moment
        time.sleep(0.001)
    for i in range(n):
        if i == n // 2:  # meet halfway, so that a descheduled writer cannot let the other finish alone
            (barrier / f"half-{name}").touch()
            deadline = time.monotonic() + 30
            while len(list(barrier.glob("half-*"))) < int(sys.argv[6]) and time.monotonic() < deadline:
                time.sleep(0.001)
        if i % 10 == 0:
            store.append_many(run_id, [NewEvent("vars.set", f"b{i}", {"i": i}), NewEvent("vars.set", "b", None)])
        else:
            store.append(run_id, "step.completed", f"s{i}", {"pid": name, "i": i})
"""


def _spawn_writers(db_path: Path, run_ids: list[str], n: int) -> None:
    barrier = db_path.parent / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_path, run_id, str(n), str(k), barrier, str(len(run_ids))],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, run_id in enumerate(run_ids)
    ]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.005)
    (barrier / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


def test_two_processes_write_two_runs_at_once(store: SQLiteEventStore, db_path: Path) -> None:
    runs = [store.create_run("a").run_id, store.create_run("b").run_id]
    _spawn_writers(db_path, runs, 1000)
    for run_id in runs:
        assert store.verify(run_id).ok
        assert store.run(run_id).head_seq == 1100


def test_two_processes_on_one_run_never_fork_the_chain(store: SQLiteEventStore, db_path: Path) -> None:
    run_id = store.create_run("shared").run_id
    _spawn_writers(db_path, [run_id, run_id], 1000)
    events = list(store.events(run_id))
    assert [e.seq for e in events] == list(range(1, 2201))
    writers = [e.payload["pid"] for e in events if e.kind == "step.completed"]
    assert sorted(set(writers)) == ["0", "1"]
    assert sum(a != b for a, b in zip(writers, writers[1:], strict=False)) > 1  # they really interleaved
    assert store.verify(run_id).ok


def test_threads_share_one_store(store: SQLiteEventStore) -> None:
    run_id = store.create_run("threads").run_id

    def work(k: int) -> None:
        for i in range(100):
            store.append(run_id, "vars.set", f"t{k}", {"i": i})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.run(run_id).head_seq == 400
    assert store.verify(run_id).ok


def test_locked_database_raises_store_locked_error(db_path: Path) -> None:
    with SQLiteEventStore(db_path, busy_timeout=0.05) as store:
        run_id = _run_with_events(store, 2)
        holder = _raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreLockedError, match="locked") as info:
                store.append(run_id, "vars.set", "x", {"a": 1})
            assert isinstance(info.value, StoreError)
            assert not isinstance(info.value, sqlite3.Error)
            assert len(list(store.events(run_id))) == 2  # WAL: readers are not blocked
        finally:
            holder.execute("ROLLBACK")
        store.append(run_id, "vars.set", "x", {"a": 1})  # the store is usable again
        assert store.verify(run_id).ok


# -- transactions -----------------------------------------------------------------------------------


def test_transaction_commits_together_or_not_at_all(store: SQLiteEventStore) -> None:
    run_id = _run_with_events(store, 2)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.append(run_id, "step.completed", "a", {"x": 1})
            tx.set_status(run_id, "completed", output={"x": 1})
            raise RuntimeError("crash before commit")
    run = store.run(run_id)
    assert (run.head_seq, run.status, run.output) == (2, "running", None)
    with store.transaction() as tx:
        child = tx.create_run("child", parent_run_id=run_id, parent_node="call")
        tx.append(child.run_id, "run.started", "", {})
        tx.append(run_id, "step.started", "call", {"child_run_id": child.run_id})
        store.append(run_id, "vars.set", "call", {"joined": True})  # nested use joins the transaction
        tx.append(run_id, "run.completed", "", {"output": {"x": 1}})  # verify: the row agrees with it
        tx.set_status(run_id, "completed", output={"x": 1})
    run = store.run(run_id)
    assert (run.head_seq, run.status, run.output) == (5, "completed", {"x": 1})
    assert store.run(child.run_id).parent_run_id == run_id
    assert store.verify(run_id).ok and store.verify(child.run_id).ok


def test_append_many_is_atomic(store: SQLiteEventStore) -> None:
    run_id = _run_with_events(store, 1)
    with pytest.raises(PayloadError):
        store.append_many(run_id, [NewEvent("vars.set", "a", {"x": 1}), NewEvent("vars.set", "b", {1, 2})])
    assert store.run(run_id).head_seq == 1
    events = store.append_many(run_id, [NewEvent("vars.set", "a", {"x": i}) for i in range(3)])
    assert [e.seq for e in events] == [2, 3, 4]


def test_events_after_seq_and_paging(store: SQLiteEventStore) -> None:
    run_id = store.create_run("long").run_id
    store.append_many(run_id, [NewEvent("loop.iteration", "l", {"i": i}) for i in range(4500)])
    assert [e.seq for e in store.events(run_id)] == list(range(1, 4501))
    assert [e.payload["i"] for e in store.events(run_id, after_seq=4497)] == [4497, 4498, 4499]
    assert store.verify(run_id).events_checked == 4500


def test_events_of_some_kinds_page_in_order_and_resolve_blobs(store: SQLiteEventStore) -> None:
    run_id = store.create_run("kinds").run_id
    big = "x" * (store.blob_threshold + 1)
    store.append_many(
        run_id,
        [NewEvent("loop.iteration", "l", {"i": i}) for i in range(2500)]
        + [NewEvent("approval.requested", "gate", {"message": big})]
        + [NewEvent("loop.iteration", "l", {"i": i}) for i in range(2500)]
        + [NewEvent("run.waiting", "", {"pending": ["gate"]})],
    )
    picked = list(store.events(run_id, kinds=("run.waiting", "approval.requested")))
    assert [(e.seq, e.kind) for e in picked] == [(2501, "approval.requested"), (5002, "run.waiting")]
    assert picked[0].payload == {"message": big}
    loops = [e.seq for e in store.events(run_id, kinds=("loop.iteration",))]  # pages of 2,000
    assert loops == [*range(1, 2501), *range(2502, 5002)]
    assert len(list(store.events(run_id, after_seq=4000, kinds=("loop.iteration",)))) == 1001
    assert list(store.events(run_id, kinds=())) == []


# -- configuration, reopening, errors ---------------------------------------------------------------


@pytest.mark.parametrize("durability, level", [("normal", 1), ("full", 2)])
def test_durability_sets_the_synchronous_pragma(db_path: Path, durability: str, level: int) -> None:
    with SQLiteEventStore(db_path, durability=durability) as store:  # type: ignore[arg-type]
        conn = store._conn
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_invalid_durability_is_a_clear_error(db_path: Path) -> None:
    with pytest.raises(StoreError, match="durability"):
        SQLiteEventStore(db_path, durability="sometimes")  # type: ignore[arg-type]


def test_reopening_preserves_everything(db_path: Path) -> None:
    with SQLiteEventStore(db_path) as store:
        run_id = _run_with_events(store)
        store.append(run_id, "tool.completed", "big", {"blob": "z" * 5000})
        store.set_status(run_id, "waiting", error={"message": "needs approval"})
        before_run, before_events = store.run(run_id), list(store.events(run_id))
    with SQLiteEventStore(db_path, durability="full") as store:
        assert store.run(run_id) == before_run
        assert list(store.events(run_id)) == before_events
        assert store.verify(run_id).ok
        assert store.append(run_id, "run.resumed", "", {}).seq == 7
        assert store.verify(run_id).ok


def test_runs_are_listed_newest_first(store: SQLiteEventStore) -> None:
    ids = [store.create_run(f"wf{i}").run_id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    store.set_status(ids[1], "failed", error={"message": "boom"})
    assert [r.run_id for r in store.runs()] == ids[::-1]
    assert [r.run_id for r in store.runs(limit=2)] == ids[:2:-1]
    assert [r.run_id for r in store.runs(status="failed")] == [ids[1]]
    assert store.run(ids[1]).error == {"message": "boom"}


def test_clear_errors_for_bad_input(store: SQLiteEventStore, tmp_path: Path) -> None:
    run_id = _run_with_events(store, 1)
    with pytest.raises(RunNotFound):
        store.append("nope", "vars.set", "", {})
    with pytest.raises(RunNotFound):
        list(store.events("nope"))
    with pytest.raises(RunNotFound):
        store.create_run("child", parent_run_id="nope")
    with pytest.raises(StoreError, match="unknown event kind"):
        store.append(run_id, "step.exploded", "", {})
    with pytest.raises(PayloadError, match="not JSON"):
        store.append(run_id, "vars.set", "", {"x": math.nan})
    with pytest.raises(PayloadError, match="actor"):
        store.append(run_id, "vars.set", "", {}, {"name": "no sub"})
    with pytest.raises(StoreError, match="status"):
        store.set_status(run_id, "exploded")
    with pytest.raises(StoreError, match="digest"):
        store.create_run("x", workflow_source="a", workflow_digest="b")
    assert store.run(run_id).head_seq == 1 and store.verify(run_id).ok
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        SQLiteEventStore(not_a_db)


def test_newer_schema_is_refused(db_path: Path) -> None:
    SQLiteEventStore(db_path).close()
    _raw(db_path).execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema 99"):
        SQLiteEventStore(db_path)


def test_interface_and_helpers(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "approval.decided" in event_kinds()  # the whole list: see the spec test below
    assert len(new_run_id()) == 26
    monkeypatch.setenv("CHARTER_DB", str(db_path))
    assert resolve_db_path() == db_path and resolve_db_path("x.db") == Path("x.db")
    store = open_store()
    try:
        assert isinstance(store, EventStore)
    finally:
        store.close()
    with pytest.raises(StoreError, match="closed"):
        store.run("x")
    with pytest.raises(StoreError, match="PostgreSQL"):
        open_store("postgresql://localhost/charter")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_store_inherited_through_fork_refuses_to_work(store: SQLiteEventStore) -> None:
    run_id = _run_with_events(store, 1)
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's connection
        try:
            store.append(run_id, "vars.set", "", {})
        except StoreError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.verify(run_id).ok and store.run(run_id).head_seq == 1


def test_an_approval_is_decided_once_per_request(tmp_path: Path) -> None:
    with s.SQLiteEventStore(tmp_path / "charter.db") as store:
        run_id = store.create_run("w").run_id
        store.append(run_id, s.APPROVAL_REQUESTED, "ok", {"message": "ship it?"})
        first = {"decision": "approved", "by": "ana"}
        assert store.decide(run_id, "ok", first, {"sub": "ana"}) is None
        late = {"decision": "denied", "by": "system:timeout"}
        assert store.decide(run_id, "ok", late, {"sub": "system:timeout"}) == first
        store.append(run_id, s.APPROVAL_REQUESTED, "ok", {"message": "and again?"})  # asked again
        assert store.decide(run_id, "ok", late, {"sub": "system:timeout"}) is None
        decided = [e.payload for e in store.events(run_id) if e.kind == s.APPROVAL_DECIDED]
        assert decided == [first, late]
        assert store.verify(run_id).ok


def test_the_event_log_spec_documents_exactly_the_kinds_the_store_accepts() -> None:
    """spec/event-log.md §5 is where people querying the log learn the kinds: one row per kind, no more."""
    spec = (REPO / "spec" / "event-log.md").read_text(encoding="utf-8")
    section = spec.split("## 5. Event kinds", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+(?:\.[a-z_]+)?)` \|", section, flags=re.MULTILINE))
    assert documented == set(event_kinds())
