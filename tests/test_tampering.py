"""Tampering with the log by hand (sqlite3): `charter verify` exits 1 and names the first bad seq."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from fixtures.charter_cli import ENGINE, FIXTURES, charter, child_env, describe, run_json

from interpreter.hashing import canonical_json, event_hash

pytestmark = pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")

ENV = child_env(allow="tests.fixtures.*")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, int]:
    """A finished run of the crash flow (~80 events): run id, the database bytes, the event count."""
    db = tmp_path_factory.mktemp("pristine") / "c.db"
    proc = charter("run", str(FIXTURES / "crash_flow.yaml"), "--db", str(db), "--json", env=ENV)
    assert proc.returncode == 0, describe(proc)
    run_id = run_json(proc)["run_id"]
    with sqlite3.connect(db) as conn:  # fold the WAL into the file so that copying the file copies the run
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (count,) = conn.execute("SELECT count(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    assert count >= 20
    return run_id, db.read_bytes(), count


@pytest.fixture
def copy(pristine: tuple[str, bytes, int], tmp_path: Path) -> tuple[str, Path, int]:
    run_id, data, count = pristine
    db = tmp_path / "c.db"
    db.write_bytes(data)
    return run_id, db, count


def _verify(run_id: str, db: Path):
    return charter("verify", run_id, "--db", str(db), env=ENV)


def _names_seq(text: str, seq: int) -> bool:
    return re.search(rf"(?<![\w.]){seq}(?![\w.])", text) is not None


def _assert_broken_at(run_id: str, db: Path, seq: int) -> None:
    proc = _verify(run_id, db)
    assert proc.returncode == 1, describe(proc)
    assert _names_seq(proc.stdout + proc.stderr, seq), f"verify must name seq {seq}\n" + describe(proc)
    assert "Traceback" not in proc.stderr


def _sql(db: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)


def test_untouched_run_verifies(copy: tuple[str, Path, int]) -> None:
    run_id, db, _ = copy
    proc = _verify(run_id, db)
    assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize("column", ["payload", "node_path", "kind", "ts"])
def test_edited_event_is_named(copy: tuple[str, Path, int], column: str) -> None:
    run_id, db, _ = copy
    with sqlite3.connect(db) as conn:
        seq, value = conn.execute(
            f"SELECT seq, {column} FROM events WHERE run_id = ? AND kind = 'tool.completed' ORDER BY seq LIMIT 1 OFFSET 2",
            (run_id,),
        ).fetchone()
    new = {
        "payload": lambda v: v.replace('"value":', '"value":1'),
        "node_path": lambda v: v + "x",
        "kind": lambda v: "tool.failed",
        "ts": lambda v: v.replace(v[-8:-1], "0000000"),
    }[column](value)
    assert new != value
    _sql(db, f"UPDATE events SET {column} = ? WHERE run_id = ? AND seq = ?", new, run_id, seq)
    _assert_broken_at(run_id, db, seq)


def test_edited_event_with_recomputed_hash_is_named(copy: tuple[str, Path, int]) -> None:
    run_id, db, count = copy
    seq = count // 2
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT ts, node_path, kind, actor, payload, prev_hash FROM events WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        ).fetchone()
        ts, node_path, kind, actor, payload, prev_hash = row
        forged = {"forged": True}
        new_hash = event_hash(
            run_id=run_id, seq=seq, ts=ts, node_path=node_path, kind=kind,
            actor=json.loads(actor) if actor else None, payload=forged, prev_hash=prev_hash,
        )  # fmt: skip
        conn.execute(
            "UPDATE events SET payload = ?, hash = ? WHERE run_id = ? AND seq = ?",
            (canonical_json(forged), new_hash, run_id, seq),
        )
    _assert_broken_at(run_id, db, seq)


def test_deleted_event_is_named(copy: tuple[str, Path, int]) -> None:
    run_id, db, count = copy
    _sql(db, "DELETE FROM events WHERE run_id = ? AND seq = ?", run_id, 7)
    _assert_broken_at(run_id, db, 7)


def test_truncation_is_named(copy: tuple[str, Path, int]) -> None:
    run_id, db, count = copy
    _sql(db, "DELETE FROM events WHERE run_id = ? AND seq > ?", run_id, count - 3)
    _assert_broken_at(run_id, db, count - 2)


def test_appended_row_with_a_correct_hash_is_named(copy: tuple[str, Path, int]) -> None:
    run_id, db, count = copy
    with sqlite3.connect(db) as conn:
        ts, prev = conn.execute(
            "SELECT ts, hash FROM events WHERE run_id = ? AND seq = ?", (run_id, count)
        ).fetchone()
        payload = {"output": {"forged": True}}
        seq = count + 1
        h = event_hash(
            run_id=run_id, seq=seq, ts=ts, node_path="", kind="run.completed",
            actor=None, payload=payload, prev_hash=prev,
        )  # fmt: skip
        conn.execute(
            "INSERT INTO events (run_id, seq, ts, node_path, kind, actor, payload, prev_hash, hash)"
            " VALUES (?, ?, ?, '', 'run.completed', NULL, ?, ?, ?)",
            (run_id, seq, ts, canonical_json(payload), prev, h),
        )
    _assert_broken_at(run_id, db, count + 1)


def test_replaced_last_event_is_named(copy: tuple[str, Path, int]) -> None:
    run_id, db, count = copy
    with sqlite3.connect(db) as conn:
        ts, prev = conn.execute(
            "SELECT ts, prev_hash FROM events WHERE run_id = ? AND seq = ?", (run_id, count)
        ).fetchone()
        payload = {"output": {"forged": True}}
        h = event_hash(
            run_id=run_id, seq=count, ts=ts, node_path="", kind="run.completed",
            actor=None, payload=payload, prev_hash=prev,
        )  # fmt: skip
        conn.execute(
            "UPDATE events SET payload = ?, hash = ? WHERE run_id = ? AND seq = ?",
            (canonical_json(payload), h, run_id, count),
        )
    _assert_broken_at(run_id, db, count)


def test_edited_run_inputs_are_named_as_seq_0(copy: tuple[str, Path, int]) -> None:
    run_id, db, _ = copy
    _sql(db, "UPDATE runs SET inputs = ? WHERE run_id = ?", canonical_json({"items": [9]}), run_id)
    _assert_broken_at(run_id, db, 0)


def test_run_row_too_damaged_to_check_is_reported_not_a_traceback(copy: tuple[str, Path, int]) -> None:
    run_id, db, _ = copy
    _sql(db, "UPDATE runs SET inputs = '{not json' WHERE run_id = ?", run_id)
    proc = _verify(run_id, db)
    assert proc.returncode == 1, describe(proc)
    assert "cannot be verified: column inputs is not valid JSON" in proc.stdout, describe(proc)
    assert "Traceback" not in proc.stderr


_RUN_ROW = ("UPDATE runs SET inputs = '{not json' WHERE run_id = ?", "column inputs is not valid JSON")
_EVENT = (
    "UPDATE events SET payload = '[1,' WHERE run_id = ? AND seq = 3",
    "event seq 3's payload is not valid JSON",
)


@pytest.mark.parametrize(
    ("command", "damage"),
    [(c, _RUN_ROW) for c in ("log", "explain", "replay", "resume")]
    + [
        (c, _EVENT) for c in ("log", "explain", "replay")
    ],  # `runs` (and `resume` of a finished run) read none
)
def test_json_that_no_longer_decodes_is_named_by_every_reader(
    copy: tuple[str, Path, int], command: str, damage: tuple[str, str]
) -> None:
    run_id, db, _ = copy
    sql, named = damage
    _sql(db, sql, run_id)
    args = [command] if command == "runs" else [command, run_id]
    proc = charter(*args, "--db", str(db), env=ENV)
    assert proc.returncode == 2, describe(proc)
    assert f"run {run_id}: {named}" in proc.stderr, describe(proc)
    assert "Traceback" not in proc.stderr


def test_a_damaged_run_row_does_not_hide_the_other_runs(copy: tuple[str, Path, int]) -> None:
    run_id, db, _ = copy
    _sql(db, "UPDATE runs SET inputs = '{not json' WHERE run_id = ?", run_id)
    proc = charter("runs", "--json", "--db", str(db), env=ENV)
    assert proc.returncode == 0, describe(proc)
    assert run_id in proc.stdout


@pytest.mark.parametrize(
    "forgery",
    ["status = 'failed'", "output = '{\"total\":-1}'", "status = 'running'"],
    ids=["status", "output", "reopened"],
)
def test_a_forged_run_outcome_is_named_as_seq_0(copy: tuple[str, Path, int], forgery: str) -> None:
    """The run row's status and output must be those of the event that ended the run (the chain
    covers that one): `charter runs` and `resume` read the row."""
    run_id, db, _ = copy
    _sql(db, f"UPDATE runs SET {forgery} WHERE run_id = ?", run_id)
    _assert_broken_at(run_id, db, 0)


def test_unknown_run_is_a_clear_error(copy: tuple[str, Path, int]) -> None:
    _, db, _ = copy
    proc = _verify("01NOSUCHRUN0000000000000000", db)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "new_data",
    ["CAST(replace(data, 'line 7 ', 'line 8 ') AS BLOB)", "replace(data, 'line 7 ', 'line 8 ')"],
    ids=["bytes", "stored-as-text"],  # SQL's replace() returns TEXT: a hand edit may change the type too
)
def test_altered_blob_is_named_at_the_first_event_using_it(tmp_path: Path, new_data: str) -> None:
    db = tmp_path / "c.db"
    text = "".join(f"line {i} of a long report\n" for i in range(600))
    proc = charter(
        "run", str(FIXTURES / "big_flow.yaml"), "--db", str(db), "--json", "--input", json.dumps({"text": text}),
        env=ENV,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    run_id = run_json(proc)["run_id"]
    assert run_json(proc)["output"] == {"size": len(text)}
    with sqlite3.connect(db) as conn:
        refs = conn.execute(
            "SELECT seq, payload FROM events WHERE run_id = ? AND kind = 'tool.completed'", (run_id,)
        ).fetchall()
        (seq, payload), *_ = refs
        digest = json.loads(payload)["result"]["$blob"]  # the result was moved to the blob table
        (first,) = conn.execute(
            "SELECT min(seq) FROM events WHERE run_id = ? AND instr(payload, ?) > 0", (run_id, digest)
        ).fetchone()
        conn.execute(f"UPDATE blobs SET data = {new_data} WHERE sha256 = ?", (digest,))
    _assert_broken_at(run_id, db, first)


def _spec_verifier(tmp_path: Path) -> Path:
    """The "Verifying without Charter" program of spec/event-log.md §6, as a reader would copy it."""
    text = (Path(__file__).resolve().parents[1] / "spec" / "event-log.md").read_text(encoding="utf-8")
    section = text[text.index("Verifying without Charter") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    script = tmp_path / "verify_by_hand.py"
    script.write_text(code[: code.index("```")], encoding="utf-8")
    return script


def test_the_specs_own_verifier_passes_a_run_and_names_a_missing_blob(tmp_path: Path) -> None:
    import subprocess
    import sys

    from interpreter.store import NewEvent, SQLiteEventStore

    db = tmp_path / "c.db"
    with SQLiteEventStore(db) as store:
        run_id = store.create_run("by-hand", inputs={"q": 1}).run_id
        big = {"text": "x" * (store.blob_threshold + 10)}
        store.append_many(
            run_id, [NewEvent("step.started", "s", {"attempt": 1}), NewEvent("step.completed", "s", big)]
        )
    script = _spec_verifier(tmp_path)

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(db), run_id], capture_output=True, text=True)

    ok = verify()
    assert ok.returncode == 0 and ok.stdout.strip() == "ok 2 events", ok.stderr
    _sql(db, "DELETE FROM blobs")
    missing = verify()
    assert missing.returncode == 1 and "AssertionError: blob of seq 2 missing" in missing.stderr, (
        missing.stderr
    )


def test_replay_of_an_edited_log_warns_that_the_log_fails_verification(copy: tuple[str, Path, int]) -> None:
    run_id, db, _ = copy
    with sqlite3.connect(db) as conn:
        (seq, payload) = conn.execute(
            "SELECT seq, payload FROM events WHERE run_id = ? AND kind = 'step.completed' ORDER BY seq LIMIT 1",
            (run_id,),
        ).fetchone()
        edited = {**json.loads(payload), "output": "forged"}
        conn.execute(
            "UPDATE events SET payload = ? WHERE run_id = ? AND seq = ?", (json.dumps(edited), run_id, seq)
        )
    proc = charter("replay", run_id, "--db", str(db), "--json", env=ENV)
    assert proc.returncode == 1, describe(proc)
    assert json.loads(proc.stdout)["log_intact"] is False
    assert f"WARNING: this run's log fails verification at seq {seq}" in proc.stderr
