"""Opening the event log (spec/event-log.md §2): a file is checked before anything is written to it.

Every command but `run` and `wake` only reads an existing log: a file that is not one (empty, not
SQLite, another application's database, a newer schema) is refused with exit 2 and left byte for byte
as it was (no Charter tables, no user_version, no switch to WAL). `run` and `wake` refuse a database
whose names Charter's tables would collide with, or that is too new, before they change it.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from interpreter.store import (
    RUN_STARTED,
    SCHEMA_VERSION,
    SQLiteEventStore,
    StoreError,
    open_store,
)
from tests.fixtures.charter_cli import REPO, charter, child_env, describe

READ_COMMANDS = (("runs",), ("log", "X"), ("verify", "X"), ("explain", "X"), ("replay", "X"))


def _sqlite(path: Path, *sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in sql:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _foreign(path: Path) -> None:  # another application's database, in the default (rollback) mode
    _sqlite(path, "CREATE TABLE foo (x)", "INSERT INTO foo VALUES (1)")


def _foreign_newer(path: Path) -> None:
    _sqlite(path, "CREATE TABLE foo (x)", "PRAGMA user_version = 7")


def _own_runs_table(path: Path) -> None:
    _sqlite(path, "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO runs VALUES (1, 'a')")


def _runs_view(path: Path) -> None:
    _sqlite(path, "CREATE VIEW runs AS SELECT 1 AS run_id")


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _empty_database(path: Path) -> None:  # a valid SQLite file with nothing in it
    _sqlite(path, "CREATE TABLE t (x)", "DROP TABLE t")


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"name,amount\nalice,3\n" * 50)


def _half_a_log(path: Path) -> None:  # Charter's blobs table, and nothing else of its schema
    _sqlite(path, "CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size INTEGER, media_type TEXT, data BLOB)")


def _charter_log(path: Path) -> str:
    """A real Charter log with one run; the store leaves it checkpointed (no -wal file) on close."""
    with SQLiteEventStore(path) as store:
        run_id = store.create_run("w").run_id
        store.append(run_id, RUN_STARTED, "", {"workflow": "w"})
    return run_id


def _newer_log(path: Path) -> None:
    """A log of a newer Charter, taken out of WAL mode: refusing it must not switch it back first."""
    _charter_log(path)
    _sqlite(path, "PRAGMA journal_mode = DELETE", f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


NOT_LOGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "foreign": (_foreign, "it has none of Charter's tables (it has foo)"),
    "foreign-newer": (_foreign_newer, "its user_version is 7 and it has none of Charter's tables"),
    "own-runs-table": (_own_runs_table, "its table 'runs' is not Charter's (it has no column run_id"),
    "runs-view": (_runs_view, "'runs' is a view"),
    "empty-file": (_empty_file, "the file is empty"),
    "empty-database": (_empty_database, "the database has no tables"),
    "not-sqlite": (_not_sqlite, "not a SQLite database"),
    "half-a-log": (_half_a_log, "it has blobs but no runs, events table"),
}


def _state(path: Path) -> tuple[str, list[str]]:
    """The file's bytes (digest) and the folder's files: a -wal or -shm left behind is a change too."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def _refused(proc_stderr: str, db: Path, why: str) -> None:
    assert "Traceback" not in proc_stderr, proc_stderr
    assert proc_stderr.startswith("error: "), proc_stderr
    assert str(db) in proc_stderr and why in proc_stderr, proc_stderr


# -- reading commands (real `charter` processes) -----------------------------------------------------


@pytest.mark.parametrize("name", NOT_LOGS)
def test_charter_runs_refuses_a_file_that_is_not_a_log_and_leaves_it_as_it_was(
    tmp_path: Path, name: str
) -> None:
    make, why = NOT_LOGS[name]
    db = tmp_path / f"{name}.db"
    make(db)
    before = _state(db)
    proc = charter("runs", "--db", str(db))
    assert proc.returncode == 2, describe(proc)
    _refused(proc.stderr, db, "not a Charter event log: " + why)
    assert _state(db) == before


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_no_reading_command_writes_charter_tables_into_another_database(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = tmp_path / "app.db"
    _foreign(db)
    before = _state(db)
    proc = charter(*command, "--db", str(db))
    assert proc.returncode == 2, describe(proc)
    _refused(proc.stderr, db, "not a Charter event log")
    assert _state(db) == before
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        assert tables == ["foo"] and conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()
    assert _journal_mode(db) == "delete"


@pytest.mark.parametrize("command", READ_COMMANDS[1:2], ids=lambda c: c[0])
def test_a_table_named_runs_that_is_not_charters_is_an_error_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = tmp_path / "g.db"
    _own_runs_table(db)
    before = _state(db)
    proc = charter(*command, "--db", str(db))
    assert proc.returncode == 2, describe(proc)
    _refused(proc.stderr, db, "not a Charter event log: its table 'runs' is not Charter's")
    assert _state(db) == before


def test_a_newer_log_is_refused_before_it_is_switched_to_wal(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    _newer_log(db)
    before = _state(db)
    for command in (("runs",), ("verify", "X")):
        proc = charter(*command, "--db", str(db))
        assert proc.returncode == 2, describe(proc)
        _refused(proc.stderr, db, f"uses event-log schema {SCHEMA_VERSION + 1}")
    assert _state(db) == before and _journal_mode(db) == "delete"


def test_reading_a_charter_log_does_not_change_it(tmp_path: Path) -> None:
    db = tmp_path / "charter.db"
    run_id = _charter_log(db)
    before = _state(db)
    for command in (("runs",), ("log", run_id), ("verify", run_id)):
        proc = charter(*command, "--db", str(db))
        assert proc.returncode == 0, describe(proc)
    assert _state(db) == before and _journal_mode(db) == "wal"


# -- run checks before it creates; wake checks too (it never creates) ----------------------------------------


@pytest.mark.parametrize(
    "make, why",
    [
        (_own_runs_table, "its table 'runs' is not Charter's"),
        (_runs_view, "'runs' is a view"),
        (_foreign_newer, "its user_version is 7"),
        (_half_a_log, "it has blobs but no runs, events table"),
        (_newer_log, f"uses event-log schema {SCHEMA_VERSION + 1}"),
    ],
    ids=["own-runs-table", "runs-view", "foreign-newer", "half-a-log", "newer-log"],
)
def test_run_and_wake_refuse_a_conflicting_database_before_changing_it(
    tmp_path: Path, make: Callable[[Path], None], why: str
) -> None:
    db = tmp_path / "app.db"
    make(db)
    before = _state(db)
    workflow = REPO / "examples" / "tools_pipeline.yaml"
    env = child_env(allow="examples.tools")
    for command in (("run", str(workflow)), ("wake",)):
        proc = charter(*command, "--db", str(db), env=env)
        assert proc.returncode == 2, describe(proc)
        _refused(proc.stderr, db, "not a Charter event log: " + why if "schema" not in why else why)
        assert _state(db) == before
    assert _journal_mode(db) == "delete"


# -- the store API --------------------------------------------------------------------------------


def test_open_store_for_reading_never_creates_the_file(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no event log at"):
        open_store(db, create=False)
    # Also when the file goes away after open_store looked (the store itself opens it read-write only).
    with pytest.raises(StoreError, match="missing.db"):
        SQLiteEventStore(db, create=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "sql, why",
    [
        (
            ("CREATE TABLE foo (x)", "CREATE INDEX idx_events_kind ON foo (x)"),
            "'idx_events_kind' is a index on 'foo'",
        ),
        (
            ("CREATE TABLE events (run_id, seq, ts, node_path, kind, actor, payload, prev_hash, hash)",),
            "it has events but no runs, blobs table",
        ),
        (
            ("CREATE TABLE foo (x)", "PRAGMA user_version = 1"),
            "it has none of Charter's tables (it has foo); its user_version is 1",
        ),
    ],
    ids=["index-name-taken", "events-alone", "foreign-version-1"],
)
def test_other_conflicts_are_refused_in_both_modes_and_change_nothing(
    tmp_path: Path, sql: tuple[str, ...], why: str
) -> None:
    db = tmp_path / "app.db"
    _sqlite(db, *sql)
    before = _state(db)
    for create in (False, True):
        with pytest.raises(StoreError, match=re.escape("not a Charter event log: " + why)):
            open_store(db, create=create)
        assert _state(db) == before


def test_run_may_still_keep_its_log_in_a_database_with_other_tables(tmp_path: Path) -> None:
    """`run` (create=True) on a database that has none of Charter's names and no user_version adds the
    tables beside the others, as before; reading it afterwards is reading a Charter log."""
    db = tmp_path / "app.db"
    _foreign(db)
    with open_store(db, create=True) as store:
        store.create_run("w")
    with open_store(db, create=False) as store:
        assert [r.workflow_name for r in store.runs()] == ["w"]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT x FROM foo").fetchall() == [(1,)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    assert _journal_mode(db) == "wal"


def test_a_new_file_still_becomes_a_wal_log(tmp_path: Path) -> None:
    for name, make in (("new.db", None), ("empty.db", _empty_file)):
        db = tmp_path / name
        if make:
            make(db)
        with open_store(db, create=True) as store:
            run_id = store.create_run("w").run_id
            assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert _journal_mode(db) == "wal"
        with open_store(db, create=False) as store:
            assert store.run(run_id).workflow_name == "w"


def test_a_version_1_log_is_still_upgraded_when_read(tmp_path: Path) -> None:
    """The one change opening makes to an existing Charter log (spec §2): the run_leases table."""
    db = tmp_path / "charter.db"
    run_id = _charter_log(db)
    _sqlite(db, "DROP TABLE run_leases", "PRAGMA user_version = 1")
    with open_store(db, create=False) as store:
        assert store.verify(run_id).ok
        store.release_lease(store.acquire_lease(run_id))
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_log_restored_from_a_dump_without_its_user_version_is_readable(tmp_path: Path) -> None:
    """`sqlite3 charter.db .dump | sqlite3 copy.db` keeps the tables but not user_version: still a log."""
    db = tmp_path / "charter.db"
    run_id = _charter_log(db)
    _sqlite(db, "PRAGMA user_version = 0")
    with open_store(db, create=False) as store:
        assert store.verify(run_id).ok
