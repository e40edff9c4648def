"""Charter's event store: the append-only, hash-chained system of record of every run.

`EventStore` is the small interface the interpreter depends on; `SQLiteEventStore` is the embedded
backend (one file, several processes). A PostgreSQL backend implements the same protocol later
(DESIGN.md §8). The schema, the event kinds and the hash are documented in spec/event-log.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

import sqlite_utils

from interpreter import leases
from interpreter.hashing import (
    GENESIS_FIELDS,
    NotCanonicalizable,
    canonical_json,
    event_hash,
    event_hasher,
    genesis_hash,
    sha256_hex,
)
from interpreter.leases import LEASE_TTL_SECONDS, holder_alive, this_process

SCHEMA_VERSION = 2  # 2: the run_leases table (a version-1 file is upgraded in place when opened)
DEFAULT_DB = "charter.db"
DEFAULT_BLOB_THRESHOLD = 4096
BLOB_REF_KEY = "$blob"
Durability = Literal["normal", "full"]
_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------------
# Errors


class StoreError(Exception):
    """Any failure of the event store, with a message fit for a person (no sqlite3 internals)."""


class StoreLockedError(StoreError):
    """The database stayed locked by another connection for longer than `busy_timeout`."""


class RunNotFound(StoreError):
    """No run with that id."""


class AmbiguousRunId(StoreError):
    """A run id prefix that several runs share (`resolve_run_id`); `matches` are the newest of them
    (at most 5), `count` how many there are."""

    def __init__(self, message: str, matches: list[RunRecord], count: int) -> None:
        super().__init__(message)
        self.matches = matches
        self.count = count


class BlobNotFound(StoreError):
    """No blob with that digest."""


class PayloadError(StoreError):
    """A payload, actor, input or output that cannot be stored as JSON."""


class DamagedLog(StoreError, ValueError):
    """Stored JSON that no longer decodes: the file was changed outside Charter."""

    def __init__(self, run_id: str, fault: str) -> None:
        super().__init__(f"run {run_id}: {fault}: the log was changed outside Charter")
        self.fault = fault


class LeaseLost(StoreError):
    """This process's lease on a run was taken over by another process (its heartbeat had expired):
    it may not write to the run any more."""


class RunLeased(StoreError):
    """Another live process is executing the run (it holds the run's lease)."""

    def __init__(self, holder: Lease, message: str | None = None) -> None:
        self.holder = holder
        super().__init__(
            message or f"run {holder.run_id} is being executed by another process: {holder.describe()}"
        )


# --------------------------------------------------------------------------------------------------
# Event kinds and run statuses (payload shapes: spec/event-log.md)

RUN_STARTED = "run.started"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_WAITING = "run.waiting"
RUN_RESUMED = "run.resumed"
RUN_CANCELLED = "run.cancelled"
RUN_INTERRUPTED = "run.interrupted"
STEP_STARTED = "step.started"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_SKIPPED = "step.skipped"
STEP_RETRYING = "step.retrying"
TOOL_CALLED = "tool.called"
TOOL_COMPLETED = "tool.completed"
TOOL_FAILED = "tool.failed"
MODEL_CALLED = "model.called"
MODEL_COMPLETED = "model.completed"
DECISION = "decision"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
AUTHZ_DECIDED = "authz.decided"
GUARDRAIL_EVALUATED = "guardrail.evaluated"
VARS_SET = "vars.set"
LOOP_ITERATION = "loop.iteration"
PARALLEL_JOINED = "parallel.joined"

_KINDS: set[str] = {
    RUN_STARTED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_WAITING,
    RUN_RESUMED,
    RUN_CANCELLED,
    RUN_INTERRUPTED,
    STEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_RETRYING,
    TOOL_CALLED,
    TOOL_COMPLETED,
    TOOL_FAILED,
    MODEL_CALLED,
    MODEL_COMPLETED,
    DECISION,
    APPROVAL_REQUESTED,
    APPROVAL_DECIDED,
    AUTHZ_DECIDED,
    GUARDRAIL_EVALUATED,
    VARS_SET,
    LOOP_ITERATION,
    PARALLEL_JOINED,
}


def event_kinds() -> frozenset[str]:
    """The catalogue of event kinds the store accepts."""
    return frozenset(_KINDS)


def register_event_kind(kind: str) -> None:
    """Add a kind to the catalogue (for later features; document its payload in spec/event-log.md)."""
    parts = kind.split(".")
    if not all(p and p.replace("_", "").isalpha() and p.islower() for p in parts):
        raise ValueError(f"invalid event kind {kind!r}: use lower-case dotted words, e.g. 'agent.turn'")
    _KINDS.add(kind)


RUN_STATUSES = ("running", "waiting", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

# --------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the store assigns seq, ts and the hashes."""

    kind: str
    node_path: str = ""
    payload: Any = None
    actor: dict[str, Any] | None = None


class Event(NamedTuple):
    """A stored event. `payload` is resolved from the blob table when it was externalised.

    A named tuple rather than a frozen dataclass: runs write and read events by the thousand, and a
    tuple is built several times faster (replay and the per-step write path both feel it)."""

    run_id: str
    seq: int
    ts: str
    node_path: str
    kind: str
    actor: dict[str, Any] | None
    payload: Any
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    parent_run_id: str | None
    parent_node: str | None
    workflow_name: str
    workflow_digest: str | None
    workflow_source: str | None
    inputs: Any
    principal: str | None
    interpreter_version: str
    status: str
    created_at: str
    updated_at: str
    output: Any
    error: Any
    head_seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to execute a run, held by one process (spec/event-log.md, `run_leases`)."""

    run_id: str
    owner: str  # a random token per acquisition: only its holder renews or releases the lease
    host: str
    node: str
    pid: int
    proc_start: int | None
    acquired_at: str
    heartbeat_at: str
    expires_at: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.acquired_at} (last heartbeat {self.heartbeat_at})"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `verify`. `first_bad_seq` is 0 when the run row itself disagrees with its chain."""

    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""
    events_checked: int = 0


_UNSET: Any = object()

# --------------------------------------------------------------------------------------------------
# The interface


@runtime_checkable
class StoreTransaction(Protocol):
    """Writes that commit together (one fsync with durability "full")."""

    def create_run(
        self,
        workflow_name: str,
        *,
        workflow_source: str | None = None,
        workflow_digest: str | None = None,
        inputs: Any = None,
        principal: str | None = None,
        interpreter_version: str = "",
        parent_run_id: str | None = None,
        parent_node: str | None = None,
        run_id: str | None = None,
        status: str = "running",
    ) -> RunRecord:
        """A new run (id: a fresh ULID unless given); its digest is computed from the source."""
        ...

    def append(
        self,
        run_id: str,
        kind: str,
        node_path: str = "",
        payload: Any = None,
        actor: dict[str, Any] | None = None,
    ) -> Event: ...

    def append_many(self, run_id: str, events: Iterable[NewEvent]) -> list[Event]: ...

    def head_seq(self, run_id: str) -> int:
        """The run's last `seq` (0: no event yet)."""
        ...

    def set_status(self, run_id: str, status: str, *, output: Any = _UNSET, error: Any = _UNSET) -> None: ...

    def put_blob(self, data: bytes, media_type: str = "application/octet-stream") -> str: ...

    def acquire_lease(self, run_id: str) -> Lease:
        """Take the run's lease for this process; `RunLeased` when a live process holds it."""
        ...


@runtime_checkable
class EventStore(StoreTransaction, Protocol):
    """What the interpreter needs from storage; every write is atomic and durable per `durability`."""

    def transaction(self) -> AbstractContextManager[StoreTransaction]: ...

    def events(
        self, run_id: str, after_seq: int = 0, kinds: Collection[str] | None = None
    ) -> Iterator[Event]: ...

    def run(self, run_id: str) -> RunRecord: ...

    def resolve_run_id(self, text: str) -> str:
        """The full id of the one run whose id is `text` or starts with it (case-insensitive, at least
        `MIN_RUN_ID_PREFIX` characters); RunNotFound or AmbiguousRunId otherwise."""
        ...

    def runs(self, limit: int = 50, status: str | None = None) -> list[RunRecord]: ...

    def children(self, run_id: str, node_path: str | None = None) -> list[RunRecord]: ...

    def get_blob(self, sha256: str) -> bytes: ...

    def verify(self, run_id: str) -> VerifyResult: ...

    def renew_lease(self, lease: Lease) -> bool:
        """Push the lease's expiry back; False when it is no longer this holder's."""
        ...

    def release_lease(self, lease: Lease, pending: Iterable[str] = ()) -> bool:
        """Give the lease up, unless one of `pending` was resolved meanwhile (then keep it: False)."""
        ...

    def lease(self, run_id: str) -> Lease | None: ...

    def set_durability(self, durability: Durability) -> None:
        """Commit with this durability from now on (e.g. to continue a run started with "full")."""
        ...

    def decide(self, run_id: str, node_path: str, payload: Any, actor: dict[str, Any] | None) -> Any:
        """Record a decision on a pending approval unless one was made since its request."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# Identifiers and time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Crockford base-32 is read case-insensitively, with I and L as 1 and O as 0 (they never occur in an id).
_CROCKFORD_READ = str.maketrans("IiLlOo", "111100")
MIN_RUN_ID_PREFIX = 4  # the shortest prefix `resolve_run_id` takes (as git's shortest commit hash)
_AMBIGUOUS_SHOWN = 5
_id_lock = threading.Lock()
_last_id = [0, 0]  # [milliseconds, random part] of the previous id, for monotonic ids within a process


def new_run_id() -> str:
    """A ULID: 26 Crockford base-32 characters, sortable by creation time, unique across processes."""
    ms = time.time_ns() // 1_000_000
    with _id_lock:
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
            if rand >= 1 << 80:
                ms, rand = ms + 1, 0
        else:
            rand = secrets.randbits(80)
        _last_id[:] = [ms, rand]
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


_second_prefix: tuple[int, str] = (-1, "")  # (unix second, "YYYY-MM-DDTHH:MM:SS"): strftime once a second


def utc_now() -> str:
    """ISO-8601 UTC with microseconds, e.g. 2026-11-26T13:03:31.123456Z."""
    global _second_prefix
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached_second, prefix = _second_prefix  # one tuple read: safe across threads
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def resolve_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--db PATH` beats `CHARTER_DB`, which beats ./charter.db."""
    return Path(explicit or os.environ.get("CHARTER_DB") or DEFAULT_DB)


def open_store(
    target: str | os.PathLike[str] | None = None, durability: Durability = "normal", *, create: bool = True
) -> EventStore:
    """Open the store named by a path (or `sqlite:///path`); the seam for other backends. With
    `create=False` (every command but `run` and `wake`) the file must already be a Charter event log:
    a missing file (a mistyped --db), an empty one or any other database is an error and is left
    exactly as it was, never made into a log."""
    # Not through Path(): it would collapse the "//" of a URL.
    text = os.fspath(target or os.environ.get("CHARTER_DB") or DEFAULT_DB)
    if text.startswith(("postgres://", "postgresql://")):
        raise StoreError("PostgreSQL event stores are not available yet; use a SQLite file path")
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    if not create and not os.path.exists(text):
        raise StoreError(
            f"no event log at {text}: no run was recorded there (give --db PATH or set CHARTER_DB)"
        )
    return SQLiteEventStore(text, durability=durability, create=create)


# --------------------------------------------------------------------------------------------------
# SQLite backend

_RUN_COLUMNS = (
    "run_id, parent_run_id, parent_node, workflow_name, workflow_digest, workflow_source, inputs, principal, "
    "interpreter_version, status, created_at, updated_at, output, error, head_seq, head_hash"
)
_EVENT_COLUMNS = "run_id, seq, ts, node_path, kind, actor, payload, prev_hash, hash"
_LEASE_COLUMNS = "run_id, owner, host, node, pid, proc_start, acquired_at, heartbeat_at, expires_at"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_HEAD_AND_LEASE = (
    "SELECT head_seq, head_hash, (SELECT owner FROM run_leases l WHERE l.run_id = ?) "
    "FROM runs WHERE run_id = ?"
)
_PAGE = 2000
_WAL_AUTOCHECKPOINT_PAGES = 10_000
_WAL_AUTOCHECKPOINT_PAGES_FULL = 1_000
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_BLOB_REF_PREFIX = '{"' + BLOB_REF_KEY + '":"'
_BLOB_REF_LEN = len(_BLOB_REF_PREFIX) + 64 + 2
_BLOB_REF_MARK = '"' + BLOB_REF_KEY + '":"'
_BLOB_KEY_JSON = '"' + BLOB_REF_KEY + '"'


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in str(exc)


_scan_json = json.JSONDecoder().scan_once


def _read_json(text: str | bytes) -> Any:
    """`json.loads` for the text the store wrote (canonical: no whitespace around the value), read by
    the decoder's C scanner directly -- `loads` spends half of a small payload's time on its
    whitespace checks, and replay reads every event. Anything else gets `json.loads`'s own answer."""
    if type(text) is str:
        try:
            value, end = _scan_json(text, 0)
            if end == len(text):
                return value
        except (StopIteration, ValueError):
            pass
    return json.loads(text)


def _loads(text: str | None) -> Any:
    return None if text is None else _read_json(text)


def _decode(text: str | bytes | None, run_id: str, what: str) -> Any:
    """`_loads` for what is read back: a value that does not decode names itself, not a traceback."""
    try:
        return None if text is None else _read_json(text)
    except (ValueError, TypeError) as exc:
        raise DamagedLog(run_id, f"{what} is not valid JSON ({exc})") from exc


def _dumps(value: Any, what: str) -> str:
    try:
        return canonical_json(value)
    except NotCanonicalizable as exc:
        raise PayloadError(f"{what} is not JSON-serializable: {exc}") from exc


def _check_actor(actor: Any) -> None:
    if actor is not None and not (isinstance(actor, dict) and isinstance(actor.get("sub"), str)):
        raise PayloadError(f"actor must be None or an object with a string 'sub', got {actor!r}")


class _Tx:
    """One open `BEGIN IMMEDIATE` transaction: heads are read once per run and written at commit."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self._store = store
        self._conn = store._conn
        self._heads: dict[str, tuple[int, str]] = {}

    def _head(self, run_id: str) -> tuple[int, str]:
        head = self._heads.get(run_id)
        if head is None:
            # The lease's owner comes with the head (one statement: this runs once per commit).
            row = self._conn.execute(_HEAD_AND_LEASE, (run_id, run_id)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self._store.path}")
            head = (row[0], row[1])
            self._check_lease(run_id, row[2])
            self._heads[run_id] = head
        return head

    def _check_lease(self, run_id: str, holder: str | None) -> None:
        """Fencing: a run this store leased is written only while the lease is still ours."""
        owner = self._store._leased.get(run_id)
        if owner is not None and holder != owner:
            raise LeaseLost(
                f"run {run_id}: another process took over its lease while this one executed it "
                "(no heartbeat for too long); this process stopped"
            )

    def head_seq(self, run_id: str) -> int:
        """The run's last `seq` as this transaction sees it (under the writer lock: nobody appends meanwhile)."""
        return self._head(run_id)[0]

    def flush(self) -> None:
        now = utc_now()
        for run_id, (seq, head_hash) in self._heads.items():
            self._conn.execute(
                "UPDATE runs SET head_seq = ?, head_hash = ?, updated_at = ? WHERE run_id = ? AND head_seq <> ?",
                (seq, head_hash, now, run_id, seq),
            )

    def create_run(
        self,
        workflow_name: str,
        *,
        workflow_source: str | None = None,
        workflow_digest: str | None = None,
        inputs: Any = None,
        principal: str | None = None,
        interpreter_version: str = "",
        parent_run_id: str | None = None,
        parent_node: str | None = None,
        run_id: str | None = None,
        status: str = "running",
    ) -> RunRecord:
        _check_status(status)
        if workflow_source is not None:
            computed = sha256_hex(workflow_source)
            if workflow_digest is not None and workflow_digest != computed:
                raise StoreError("workflow_digest does not match the SHA-256 of workflow_source")
            workflow_digest = computed
        if parent_run_id is not None:
            self._head(parent_run_id)  # raises RunNotFound with a clear message
        now = utc_now()
        fields = {
            "run_id": run_id or new_run_id(),
            "parent_run_id": parent_run_id,
            "parent_node": parent_node,
            "workflow_name": workflow_name,
            "workflow_digest": workflow_digest,
            "inputs": inputs,
            "principal": principal,
            "interpreter_version": interpreter_version,
            "created_at": now,
        }
        inputs_json = None if inputs is None else _dumps(inputs, "run inputs")
        genesis = genesis_hash(fields)
        try:
            self._conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?)",
                (
                    fields["run_id"],
                    parent_run_id,
                    parent_node,
                    workflow_name,
                    workflow_digest,
                    workflow_source,
                    inputs_json,
                    principal,
                    interpreter_version,
                    status,
                    now,
                    now,
                    genesis,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"run {fields['run_id']!r} already exists") from exc
        self._heads[fields["run_id"]] = (0, genesis)
        return RunRecord(
            workflow_source=workflow_source,
            status=status,
            updated_at=now,
            output=None,
            error=None,
            head_seq=0,
            head_hash=genesis,
            **fields,
        )

    def append(
        self,
        run_id: str,
        kind: str,
        node_path: str = "",
        payload: Any = None,
        actor: dict[str, Any] | None = None,
    ) -> Event:
        return self.write(run_id, _prepare(kind, node_path, payload, actor, self._store.blob_threshold))

    def write(self, run_id: str, prepared: _Prepared) -> Event:
        """Chain and insert an event whose JSON was encoded before the writer lock was taken."""
        return self.write_many(run_id, [prepared])[0]

    def write_many(self, run_id: str, prepared: list[_Prepared]) -> list[Event]:
        """Chain a batch of encoded events and insert them with one statement."""
        seq, prev_hash = self._head(run_id)
        rows, events = [], []
        ts = utc_now()  # when the batch was written: its events share it, and `seq` orders them
        hash_event = event_hasher(run_id, ts)
        for kind, node_path, payload, actor, actor_json, payload_json, blobs in prepared:
            for blob in blobs:
                self.put_blob(blob, "application/json")
            seq += 1
            digest = hash_event(seq, node_path, kind, actor_json, payload_json, prev_hash)
            rows.append(
                (
                    run_id,
                    seq,
                    ts,
                    node_path,
                    kind,
                    None if actor is None else actor_json,
                    None if payload is None else payload_json,
                    prev_hash,
                    digest,
                )
            )
            events.append(Event(run_id, seq, ts, node_path, kind, actor, payload, prev_hash, digest))
            prev_hash = digest
        self._conn.executemany(_INSERT_EVENT, rows)
        self._heads[run_id] = (seq, prev_hash)
        return events

    def append_many(self, run_id: str, events: Iterable[NewEvent]) -> list[Event]:
        threshold = self._store.blob_threshold
        prepared = [_prepare(e.kind, e.node_path, e.payload, e.actor, threshold) for e in events]
        return self.write_many(run_id, prepared) if prepared else []

    def set_status(self, run_id: str, status: str, *, output: Any = _UNSET, error: Any = _UNSET) -> None:
        _check_status(status)
        sets, params = ["status = ?", "updated_at = ?"], [status, utc_now()]
        if output is not _UNSET:
            sets.append("output = ?")
            params.append(None if output is None else _dumps(output, "run output"))
        if error is not _UNSET:
            sets.append("error = ?")
            params.append(None if error is None else _dumps(error, "run error"))
        cursor = self._conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*params, run_id))
        if cursor.rowcount == 0:
            raise RunNotFound(f"no run {run_id!r} in {self._store.path}")

    def put_blob(self, data: bytes, media_type: str = "application/octet-stream") -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise PayloadError(f"blob data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        digest = sha256_hex(data)
        self._conn.execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, media_type, data) VALUES (?, ?, ?, ?)",
            (digest, len(data), media_type, data),
        )
        return digest

    def acquire_lease(self, run_id: str) -> Lease:
        row = self._conn.execute(
            f"SELECT {_LEASE_COLUMNS} FROM run_leases WHERE run_id = ?", (run_id,)
        ).fetchone()
        now = utc_now()
        if row is not None:
            held = Lease(*row)
            if holder_alive(held.node, held.pid, held.proc_start, held.expires_at, now, held.owner):
                raise RunLeased(held)
        # The run is free: a token this store kept from a lease it lost earlier fences nothing now
        # (left, a long-lived process such as `charter wake --watch` could never take the run again).
        self._store._leased.pop(run_id, None)
        self._head(run_id)  # RunNotFound for a mistyped id
        me = this_process()
        lease = Lease(run_id, secrets.token_hex(16), me.host, me.node, me.pid, me.start, now, now, _expiry())
        self._conn.execute(
            f"INSERT OR REPLACE INTO run_leases ({_LEASE_COLUMNS}) VALUES ({_LEASE_PARAMS})",
            dataclasses.astuple(lease),
        )
        self._store._leased[run_id] = lease.owner
        leases.taken(lease.owner)
        return lease


_Prepared = tuple[str, str, Any, dict[str, Any] | None, str, str, list[bytes]]
_LEASE_PARAMS = ", ".join("?" * len(_LEASE_COLUMNS.split(",")))
# A pending node is resolved when a decision follows its latest approval request, or when the newest
# child run started at it has finished.
_RESOLVED_PENDING = """
SELECT 1 FROM events d WHERE d.run_id = :run AND d.kind = 'approval.decided' AND d.node_path IN ({paths})
  AND d.seq > COALESCE((SELECT MAX(r.seq) FROM events r WHERE r.run_id = d.run_id
                        AND r.kind = 'approval.requested' AND r.node_path = d.node_path), 0)
UNION ALL
SELECT 1 FROM runs c WHERE c.parent_run_id = :run AND c.parent_node IN ({paths})
  AND c.status IN ('completed', 'failed', 'cancelled')
  AND c.created_at = (SELECT MAX(n.created_at) FROM runs n
                      WHERE n.parent_run_id = :run AND n.parent_node = c.parent_node)
LIMIT 1
"""


_DECIDED_SINCE_REQUEST = """
SELECT payload FROM events WHERE run_id = ? AND kind = 'approval.decided' AND node_path = ?
  AND seq > COALESCE((SELECT MAX(seq) FROM events WHERE run_id = ? AND kind = 'approval.requested'
                      AND node_path = ?), 0)
ORDER BY seq LIMIT 1
"""


def _expiry() -> str:
    """utc_now() + LEASE_TTL_SECONDS, in the same format (lease times compare as strings)."""
    at = datetime.now(UTC) + timedelta(seconds=LEASE_TTL_SECONDS)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prepare(kind: str, node_path: str, payload: Any, actor: Any, blob_threshold: int) -> _Prepared:
    """Validate and encode an event; a payload over the threshold becomes a blob reference."""
    if kind not in _KINDS:
        raise StoreError(f"unknown event kind {kind!r} (see spec/event-log.md for the catalogue)")
    if not isinstance(node_path, str):
        raise PayloadError(f"node_path must be a string, got {node_path!r}")
    _check_actor(actor)
    try:
        payload_json = canonical_json(payload)
    except NotCanonicalizable as exc:
        raise PayloadError(f"{_where(kind, node_path)} is not JSON-serializable: {exc}") from exc
    # The reserved key can only be there if its JSON string is in the text: look closer only then.
    if (
        _BLOB_KEY_JSON in payload_json
        and isinstance(payload, dict)
        and (
            BLOB_REF_KEY in payload
            or any(isinstance(v, dict) and BLOB_REF_KEY in v for v in payload.values())
        )
    ):
        raise PayloadError(
            f"{_where(kind, node_path)}: the key {BLOB_REF_KEY!r} is reserved for blob references"
        )
    blobs: list[bytes] = []
    if len(payload_json) * 4 > blob_threshold:  # cheap test first: a char is at most 4 UTF-8 bytes
        data = payload_json.encode("utf-8")
        if len(data) > blob_threshold:
            payload_json, blobs = _externalise(payload, data, blob_threshold)
    return kind, node_path, payload, actor, _actor_json(actor), payload_json, blobs


def _where(kind: str, node_path: str) -> str:
    return f"payload of {kind} at {node_path or '<run>'}"


_ACTORS: list[tuple[dict[str, Any], str]] = []  # a run's events share a few actors: encode each once
_ACTORS_KEPT = 8


def _actor_json(actor: dict[str, Any] | None) -> str:
    if actor is None:
        return "null"
    for known, text in tuple(_ACTORS):  # a snapshot: safe when another thread appends
        if known == actor:  # exact: `known` holds only strings, and no number or bool equals a string
            return text
    text = _dumps(actor, "actor")
    # Only actors made of strings are kept: {"mfa": 1} == {"mfa": True} in Python, not in JSON.
    if _strings_only(actor):
        if len(_ACTORS) >= _ACTORS_KEPT:
            _ACTORS.pop(0)
        _ACTORS.append((copy.deepcopy(actor), text))  # a copy: the caller may change its dict later
    return text


def _strings_only(value: Any) -> bool:
    """Dicts whose keys and leaves are all `str` exactly (the usual actor: `sub` and nested `act`)."""
    if type(value) is dict:
        return all(type(key) is str and _strings_only(member) for key, member in value.items())
    return type(value) is str


def _externalise(payload: Any, data: bytes, threshold: int) -> tuple[str, list[bytes]]:
    """Move large values to blobs: the largest members of an object first, so that the small ones
    (tool name, duration, token usage) stay queryable with SQL; the whole payload otherwise."""
    if isinstance(payload, dict):
        encoded = {key: canonical_json(value).encode("utf-8") for key, value in payload.items()}
        stored, blobs = dict(payload), []
        for key in sorted(encoded, key=lambda k: len(encoded[k]), reverse=True):
            if len(encoded[key]) <= _BLOB_REF_LEN:
                break
            blobs.append(encoded[key])
            stored[key] = {BLOB_REF_KEY: sha256_hex(encoded[key])}
            text = canonical_json(stored)
            if len(text.encode("utf-8")) <= threshold:
                return text, blobs
    return _BLOB_REF_PREFIX + sha256_hex(data) + '"}', [data]


def _blob_ref(value: Any) -> str | None:
    """The digest if `value` is a blob reference `{"$blob": sha256}`."""
    if isinstance(value, dict) and len(value) == 1:
        digest = value.get(BLOB_REF_KEY)
        if isinstance(digest, str):
            return digest
    return None


def _blob_refs(payload: Any) -> list[str]:
    """Every blob a stored payload refers to: the payload itself, or its top-level members."""
    whole = _blob_ref(payload)
    if whole is not None:
        return [whole]
    if isinstance(payload, dict):
        return [d for d in map(_blob_ref, payload.values()) if d is not None]
    return []


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise StoreError(f"invalid run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")


# What opening a file checks before it changes anything (spec/event-log.md §2): Charter's tables with
# (at least) their columns, and the names of its indexes. A name that something else already uses is
# a foreign database, which Charter must neither read as a log nor write its schema into.
_SCHEMA_TABLES: dict[str, tuple[str, ...]] = {
    "runs": tuple(c.strip() for c in _RUN_COLUMNS.split(",")),
    "events": tuple(c.strip() for c in _EVENT_COLUMNS.split(",")),
    "blobs": ("sha256", "size", "media_type", "data"),
    "run_leases": tuple(c.strip() for c in _LEASE_COLUMNS.split(",")),
}
_V1_TABLES = ("runs", "events", "blobs")  # schema 1; run_leases came with 2 and is added on opening
_SCHEMA_INDEXES = {
    "idx_runs_created_at": "runs",
    "idx_runs_parent_run_id": "runs",
    "idx_events_kind": "events",
}
_SCHEMA_NAMES = (*_SCHEMA_TABLES, *_SCHEMA_INDEXES)
# One statement for every open: the Charter-named objects and their columns (pragma_table_info only
# for those names, so a foreign table of an unloaded virtual-table module is never looked into).
_LAYOUT_QUERY = (
    "SELECT m.name, m.type, m.tbl_name, p.name FROM (SELECT name, type, tbl_name FROM sqlite_master "
    f"WHERE name IN ({', '.join('?' * len(_SCHEMA_NAMES))})) m LEFT JOIN pragma_table_info(m.name) p"
)
_SQLITE_NOTADB = 26


@dataclass(frozen=True)
class _Layout:
    """What a database file holds, as far as opening it is concerned."""

    version: int  # PRAGMA user_version
    tables: frozenset[str]  # Charter's tables present (each with Charter's columns)

    @property
    def current(self) -> bool:
        return self.version == SCHEMA_VERSION and self.tables == frozenset(_SCHEMA_TABLES)


def _not_a_log(path: str, why: str) -> StoreError:
    return StoreError(f"{path}: not a Charter event log: {why}")


def _read_layout(conn: sqlite3.Connection, path: str, *, create: bool) -> _Layout:
    """Read (never write) what `path` holds. Anything Charter must not use is a StoreError here, before
    the caller changes the file: a database that is not SQLite, a newer schema, a Charter name that
    something else uses, a partial schema; and, unless `create`, a file with none of Charter's tables
    (empty or another application's: reading never makes a log)."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        rows = conn.execute(_LAYOUT_QUERY, _SCHEMA_NAMES).fetchall()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_NOTADB:
            raise _not_a_log(path, f"not a SQLite database ({exc})") from exc
        raise  # busy (polled by the caller) or damaged: reported as such
    kinds: dict[str, tuple[str, str]] = {}
    columns: dict[str, set[str]] = {}
    for name, kind, table, column in rows:
        kinds[name] = (kind, table)
        if column is not None:
            columns.setdefault(name, set()).add(column)
    v1 = [t for t in _V1_TABLES if kinds.get(t, ("",))[0] == "table"]
    if version > SCHEMA_VERSION:  # before any other judgment: a newer Charter may have changed tables
        if v1:
            raise StoreError(
                f"{path} uses event-log schema {version}; this Charter understands up to {SCHEMA_VERSION}"
            )
        raise _not_a_log(path, f"its user_version is {version} and it has none of Charter's tables")
    for name, (kind, table) in kinds.items():
        if name in _SCHEMA_TABLES:
            if kind != "table":
                raise _not_a_log(path, f"'{name}' is a {kind}, not Charter's table")
            missing = [c for c in _SCHEMA_TABLES[name] if c not in columns.get(name, ())]
            if missing:
                shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                raise _not_a_log(path, f"its table '{name}' is not Charter's (it has no column {shown})")
        elif kind != "index" or table != _SCHEMA_INDEXES[name]:
            raise _not_a_log(path, f"'{name}' is a {kind} on '{table}', not Charter's index")
    present = frozenset(name for name in kinds if name in _SCHEMA_TABLES)
    if len(v1) == len(_V1_TABLES):
        return _Layout(version, present)
    if present:  # a schema that Charter never leaves half made (it is created in one transaction)
        lacking = [t for t in _V1_TABLES if t not in present]
        raise _not_a_log(path, f"it has {', '.join(sorted(present))} but no {', '.join(lacking)} table")
    if create and version == 0:  # nobody's database, or one that others share: Charter's tables join it
        return _Layout(version, present)
    if os.path.exists(path) and os.path.getsize(path) == 0:
        raise _not_a_log(path, "the file is empty")
    others = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if not others:
        why = "the database has no tables"
    else:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        why = f"it has none of Charter's tables (it has {shown})"
    if version:  # another application's version number, which writing Charter's would overwrite
        why += f"; its user_version is {version}"
    raise _not_a_log(path, why)


class SQLiteEventStore:
    """The event log in one SQLite file (WAL), safe to share between processes.

    Every write runs inside `BEGIN IMMEDIATE`: the writer lock is taken before the run's head is read,
    so two writers can never allocate the same `seq` or fork a chain. Reads never block writers (WAL).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Durability = "normal",
        *,
        busy_timeout: float = 5.0,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
        create: bool = True,
    ) -> None:
        """Open (with `create`, make) the event log at `path`. The file is read first and changed only
        once it is known to be a Charter log, or a database Charter may add its tables to (`create`):
        another application's database is refused as it was, and so, unless `create`, is an empty one."""
        if durability not in ("normal", "full"):
            raise StoreError(f"invalid durability {durability!r}; expected 'normal' or 'full'")
        self.path = os.fspath(path)
        self._abspath = os.path.abspath(self.path)  # for verify's own connection, wherever cwd is then
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.blob_threshold = blob_threshold
        self._lock = threading.RLock()
        self._tx: _Tx | None = None
        self._leased: dict[str, str] = {}  # run id -> owner token of the leases taken through this store
        self._closed = False
        self._pid = os.getpid()
        with self._translate("opening the database"):
            # timeout=0: a busy database is polled by `_polling`, never by SQLite's own busy handler
            # (which sleeps in long steps, and would double the wait on top of the polling).
            target, uri = self.path, False
            if not create and self.path not in ("", ":memory:"):
                # mode=rw: a file removed since open_store looked is an error, not a new empty file.
                target, uri = Path(self._abspath).as_uri() + "?mode=rw", True
            self._conn = sqlite3.connect(
                target, timeout=0, isolation_level=None, check_same_thread=False, uri=uri
            )
            try:
                # Checked before the first write (the WAL switch): a refused file is left as it was.
                layout = self._polling(lambda: self._read_layout_snapshot(create))
                # Several processes may open a new file at once: both steps wait for each other's locks.
                self._polling(self._configure)
                self.db = sqlite_utils.Database(self._conn)
                if not layout.current:  # a current log (the usual case) takes no write lock
                    self._polling(lambda: self._ensure_schema_atomically(create))
            except BaseException:  # a foreign or too new file, not WAL-capable, locked: nothing left open
                self._conn.close()
                raise

    # -- setup

    def set_durability(self, durability: Durability) -> None:
        if durability not in ("normal", "full"):
            raise StoreError(f"invalid durability {durability!r}; expected 'normal' or 'full'")
        with self._lock, self._translate("changing the durability"):
            self._check_usable()
            self.durability = durability
            self._sync_pragmas()

    def _sync_pragmas(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'full' else 'NORMAL'}")
        # normal: checkpoint every ~40 MB of WAL instead of every 4 MB: each checkpoint fsyncs, and at
        # the default interval they cost about a third of a small commit's time. full: every commit
        # fsyncs anyway, and a WAL that is checkpointed every 4 MB is rewritten in place from then on;
        # an fsync after overwriting is about half as costly as one after growing the file.
        pages = _WAL_AUTOCHECKPOINT_PAGES if self.durability == "normal" else _WAL_AUTOCHECKPOINT_PAGES_FULL
        conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")

    def _configure(self) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() not in ("wal", "memory"):
            raise StoreError(f"{self.path}: cannot switch the database to WAL mode (got {mode!r})")
        conn.execute("PRAGMA foreign_keys = ON")
        self._sync_pragmas()
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")

    def _read_layout_snapshot(self, create: bool) -> _Layout:
        # One read transaction: the version and the tables as of one moment, even while another process
        # creates the schema of a new file.
        self._conn.execute("BEGIN")
        try:
            return _read_layout(self._conn, self.path, create=create)
        finally:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")  # it only read

    def _ensure_schema_atomically(self, create: bool) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have made (or changed) it meanwhile.
            self._ensure_schema(_read_layout(self._conn, self.path, create=create))
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _ensure_schema(self, layout: _Layout) -> None:
        """Bring a file `_read_layout` accepted to the current schema: all of it for a new file, the
        run_leases table for a version-1 log. `if_not_exists` never meets a foreign object of the same
        name: `_read_layout` refused those."""
        if layout.current:
            return
        db = self.db
        db["runs"].create(
            {
                "run_id": str,
                "parent_run_id": str,
                "parent_node": str,
                "workflow_name": str,
                "workflow_digest": str,
                "workflow_source": str,
                "inputs": str,
                "principal": str,
                "interpreter_version": str,
                "status": str,
                "created_at": str,
                "updated_at": str,
                "output": str,
                "error": str,
                "head_seq": int,
                "head_hash": str,
            },
            pk="run_id",
            foreign_keys=[("parent_run_id", "runs", "run_id")],
            not_null=["workflow_name", "interpreter_version", "status", "created_at", "updated_at"]
            + ["head_seq", "head_hash"],
            if_not_exists=True,
        )
        db["events"].create(
            {
                "run_id": str,
                "seq": int,
                "ts": str,
                "node_path": str,
                "kind": str,
                "actor": str,
                "payload": str,
                "prev_hash": str,
                "hash": str,
            },
            pk=("run_id", "seq"),
            foreign_keys=[("run_id", "runs", "run_id")],
            not_null=["ts", "node_path", "kind", "prev_hash", "hash"],
            if_not_exists=True,
        )
        db["blobs"].create(
            {"sha256": str, "size": int, "media_type": str, "data": bytes},
            pk="sha256",
            not_null=["size", "data"],
            if_not_exists=True,
        )
        db["run_leases"].create(
            {
                "run_id": str,
                "owner": str,
                "host": str,
                "node": str,
                "pid": int,
                "proc_start": int,
                "acquired_at": str,
                "heartbeat_at": str,
                "expires_at": str,
            },
            pk="run_id",
            foreign_keys=[("run_id", "runs", "run_id")],
            not_null=["owner", "host", "node", "pid", "acquired_at", "heartbeat_at", "expires_at"],
            if_not_exists=True,
        )
        db["runs"].create_index(["created_at"], if_not_exists=True)
        db["runs"].create_index(["parent_run_id"], if_not_exists=True)
        db["events"].create_index(["kind"], if_not_exists=True)
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- error translation and transactions

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise StoreLockedError(
                    f"{self.path}: the database is locked by another connection "
                    f"(waited {self.busy_timeout:g}s) while {doing}"
                ) from exc
            raise StoreError(f"{self.path}: {doing} failed: {exc}") from exc

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        if os.getpid() != self._pid:
            # A SQLite connection inherited through fork() corrupts locks if used: open a new store.
            raise StoreError(f"{self.path}: this store was opened in another process; open a new one")

    def _polling(self, operation: Callable[[], _T]) -> _T:
        """Run `operation`, retrying every 0.1-2 ms while the database is busy, up to `busy_timeout`.

        SQLite's own busy handler sleeps in growing steps (up to 100 ms) and so almost never catches
        the few microseconds between two commits of a busy writer in another process: that process
        would starve this one. Short jittered polls keep two writers interleaving.
        """
        delay, deadline = 0.0001, 0.0
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.busy_timeout
                if now >= deadline:
                    raise
                time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
                delay = min(delay * 2, 0.002)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """Group writes into one commit. Nested use (same thread) joins the open transaction."""
        with self._lock:
            self._check_usable()
            if self._tx is not None:
                yield self._tx
                return
            with self._translate("starting a write transaction"):
                self._polling(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            tx = _Tx(self)
            self._tx = tx
            try:
                with self._translate("writing events"):
                    yield tx
                    tx.flush()
                    self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # keep the original error, not this one
                        self._conn.execute("ROLLBACK")
                raise
            finally:
                self._tx = None

    # -- writes (each its own transaction unless one is open)

    def create_run(self, workflow_name: str, **fields: Any) -> RunRecord:
        """See `EventStore.create_run` for the fields."""
        with self.transaction() as tx:
            return tx.create_run(workflow_name, **fields)

    def append(
        self,
        run_id: str,
        kind: str,
        node_path: str = "",
        payload: Any = None,
        actor: dict[str, Any] | None = None,
    ) -> Event:
        # Encode before taking the writer lock: other processes wait less.
        prepared = _prepare(kind, node_path, payload, actor, self.blob_threshold)
        with self.transaction() as tx:
            return tx.write(run_id, prepared)

    def append_many(self, run_id: str, events: Iterable[NewEvent]) -> list[Event]:
        prepared = [_prepare(e.kind, e.node_path, e.payload, e.actor, self.blob_threshold) for e in events]
        with self.transaction() as tx:
            return tx.write_many(run_id, prepared) if prepared else []

    def head_seq(self, run_id: str) -> int:
        return self.run(run_id).head_seq

    def set_status(self, run_id: str, status: str, *, output: Any = _UNSET, error: Any = _UNSET) -> None:
        with self.transaction() as tx:
            tx.set_status(run_id, status, output=output, error=error)

    def put_blob(self, data: bytes, media_type: str = "application/octet-stream") -> str:
        with self.transaction() as tx:
            return tx.put_blob(data, media_type)

    def decide(self, run_id: str, node_path: str, payload: Any, actor: dict[str, Any] | None) -> Any:
        """Record `approval.decided` at `node_path` unless a decision already follows its latest
        request -- checked and written in one transaction, so two deciders (a person, a timeout)
        cannot both decide. Returns the earlier decision's payload, or None when this one was recorded."""
        prepared = _prepare(APPROVAL_DECIDED, node_path, payload, actor, self.blob_threshold)
        with self.transaction() as tx:
            row = tx._conn.execute(_DECIDED_SINCE_REQUEST, (run_id, node_path, run_id, node_path)).fetchone()
            if row is not None:
                where = f"the decision at {node_path}"
                return self._resolve(_decode(row[0], run_id, where), run_id, where)
            tx.write(run_id, prepared)
            return None

    # -- leases (who executes a run)

    def acquire_lease(self, run_id: str) -> Lease:
        with self.transaction() as tx:
            return tx.acquire_lease(run_id)

    def renew_lease(self, lease: Lease) -> bool:
        with self.transaction() as tx:
            cursor = tx._conn.execute(
                "UPDATE run_leases SET heartbeat_at = ?, expires_at = ? WHERE run_id = ? AND owner = ?",
                (utc_now(), _expiry(), lease.run_id, lease.owner),
            )
            return cursor.rowcount > 0

    def release_lease(self, lease: Lease, pending: Iterable[str] = ()) -> bool:
        """Checked and released in one transaction: whoever resolves a pending node (decides an
        approval, finishes a child run) either sees the lease free or is seen here."""
        paths = list(pending)
        with self.transaction() as tx:
            if paths:
                sql = _RESOLVED_PENDING.format(paths=", ".join(f":p{i}" for i in range(len(paths))))
                params = {"run": lease.run_id, **{f"p{i}": p for i, p in enumerate(paths)}}
                if tx._conn.execute(sql, params).fetchone() is not None:
                    return False
            tx._conn.execute(
                "DELETE FROM run_leases WHERE run_id = ? AND owner = ?", (lease.run_id, lease.owner)
            )
        if self._leased.get(lease.run_id) == lease.owner:
            del self._leased[lease.run_id]
        leases.given_up(lease.owner)
        return True

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease row, live or stale (None when nobody took it or it was released)."""
        rows = self._query(
            f"SELECT {_LEASE_COLUMNS} FROM run_leases WHERE run_id = ?", (run_id,), "reading a lease"
        )
        return Lease(*rows[0]) if rows else None

    # -- reads

    def _query(self, sql: str, params: tuple[Any, ...], doing: str) -> list[tuple[Any, ...]]:
        with self._lock, self._translate(doing):
            self._check_usable()
            return self._polling(lambda: self._conn.execute(sql, params).fetchall())

    def get_blob(self, sha256: str) -> bytes:
        rows = self._query("SELECT data FROM blobs WHERE sha256 = ?", (sha256,), "reading a blob")
        if not rows:
            raise BlobNotFound(f"no blob {sha256} in {self.path}")
        return bytes(rows[0][0])

    def run(self, run_id: str) -> RunRecord:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,), "reading a run")
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in {self.path}")
        return _run_record(rows[0])

    def resolve_run_id(self, text: str) -> str:
        """The full id of the run `text` names: its id exactly as stored, or, as git takes a commit
        hash, any prefix of it of at least MIN_RUN_ID_PREFIX characters that no other run's id starts
        with, in any case (Crockford base-32: `i`/`l` read as 1, `o` as 0). One range query on the
        primary key's index, never a scan. RunNotFound when no run matches (the message `run()`
        gives), AmbiguousRunId when several do (naming the newest few), StoreError for a prefix shorter
        than MIN_RUN_ID_PREFIX."""
        text = text.strip()
        if self._query("SELECT 1 FROM runs WHERE run_id = ?", (text,), "reading a run"):
            return text  # a full id, or one made outside new_run_id() in another alphabet
        prefix = text.translate(_CROCKFORD_READ).upper()
        if not prefix or len(prefix) > 26 or any(c not in _CROCKFORD for c in prefix):
            raise RunNotFound(f"no run {text!r} in {self.path}")  # no ULID starts with it
        if len(prefix) < MIN_RUN_ID_PREFIX:
            raise StoreError(
                f"run id {text!r} is too short: give at least {MIN_RUN_ID_PREFIX} of its 26 characters "
                "(charter runs lists the ids)"
            )
        # Every id starting with `prefix` sorts in [prefix, prefix with its last character + 1).
        bounds = (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        found = self._query(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2", bounds, "reading a run"
        )
        if len(found) == 1:
            return str(found[0][0])
        if not found:
            raise RunNotFound(f"no run {text!r} in {self.path}")
        rows = self._query(
            f"SELECT {_RUN_COLUMNS}, (SELECT COUNT(*) FROM runs WHERE run_id >= ? AND run_id < ?) "
            f"FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY run_id DESC LIMIT {_AMBIGUOUS_SHOWN}",
            (*bounds, *bounds),
            "reading runs",
        )
        count = int(rows[0][-1]) if rows else len(found)
        matches = [_run_record(row[:-1], lenient=True) for row in rows]
        lines = [
            f"  {r.run_id}  {r.status:<9}  {r.workflow_name[:24]:<24}  started {r.created_at}"
            for r in matches
        ]
        if count > len(matches):
            lines.append(f"  ... and {count - len(matches)} more (charter runs lists them)")
        raise AmbiguousRunId(
            f"run id {text!r} is ambiguous: {count} runs in {self.path} start with it; give more of its "
            "characters:\n" + "\n".join(lines),
            matches,
            count,
        )

    def runs(self, limit: int = 50, status: str | None = None) -> list[RunRecord]:
        """Newest first. A run whose stored JSON no longer decodes is listed with those fields None
        (one damaged row must not hide the others; reading that run names the damage)."""
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, int(limit)),
            "listing runs",
        )
        return [_run_record(row, lenient=True) for row in rows]

    def children(self, run_id: str, node_path: str | None = None) -> list[RunRecord]:
        """The child runs a run started (at `node_path`, or anywhere), oldest first."""
        where, params = ("AND parent_node = ?", (node_path,)) if node_path is not None else ("", ())
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE parent_run_id = ? {where} ORDER BY created_at, rowid",
            (run_id, *params),
            "listing child runs",
        )
        return [_run_record(row) for row in rows]

    def _event_rows(
        self, run_id: str, after_seq: int, kinds: Collection[str] | None = None
    ) -> Iterator[tuple[Any, ...]]:
        # Pages, not one long-lived cursor: a half-read SELECT would hold a read transaction open on
        # the shared connection and make the next BEGIN IMMEDIATE fail.
        only = "" if kinds is None else f" AND kind IN ({', '.join('?' * len(kinds))})"
        while True:
            rows = self._query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? AND seq > ?{only} ORDER BY seq LIMIT ?",
                (run_id, after_seq, *(kinds or ()), _PAGE),
                "reading events",
            )
            yield from rows
            if len(rows) < _PAGE:
                return
            after_seq = rows[-1][1]

    def events(
        self, run_id: str, after_seq: int = 0, kinds: Collection[str] | None = None
    ) -> Iterator[Event]:
        """The run's events in order, after `after_seq` (only those of `kinds`, when given); blob
        references are resolved."""
        self.run(run_id)  # RunNotFound for a mistyped id rather than an empty timeline
        loads = _read_json
        for run, seq, ts, node_path, kind, actor, payload, prev_hash, digest in self._event_rows(
            run_id, after_seq, kinds
        ):
            try:
                value = None if payload is None else loads(payload)
                actor_value = None if actor is None else loads(actor)
            except ValueError:  # the one that does not decode raises DamagedLog
                value = _decode(payload, run_id, f"event seq {seq}'s payload")
                actor_value = _decode(actor, run_id, f"event seq {seq}'s actor")
            if payload is not None and _BLOB_REF_MARK in payload:  # cheap test; _resolve decides
                value = self._resolve(value, run_id, f"event seq {seq}")
            yield Event(run, seq, ts, node_path, kind, actor_value, value, prev_hash, digest)

    def _resolve(self, stored: Any, run_id: str, where: str) -> Any:
        def load(digest: str) -> Any:
            return _decode(self.get_blob(digest), run_id, f"blob {digest} of {where}")

        whole = _blob_ref(stored)
        if whole is not None:
            return load(whole)
        if isinstance(stored, dict):
            return {
                key: value if (digest := _blob_ref(value)) is None else load(digest)
                for key, value in stored.items()
            }
        return stored

    # -- verification

    def verify(self, run_id: str) -> VerifyResult:
        """Recompute the chain and compare it with the run row's checkpoint; stops at the first fault.

        The run row and its events are read from one snapshot of the file: a run that commits while
        it is verified is checked as it was when verify began (its later events are not seen, rather
        than taken for rows added past the checkpoint). Data so damaged that it cannot be checked at
        all (a run row that no longer decodes) is a fault with `first_bad_seq` None."""
        with self._snapshot("verifying a run") as read:
            row = read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.path}")
            try:
                events = read(f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
                return self._verify(_run_record(row), events)
            except DamagedLog as exc:
                return VerifyResult(False, None, exc.fault)
            except (LookupError, ValueError, TypeError) as exc:  # RunNotFound is neither: it propagates
                return VerifyResult(False, None, f"the log is damaged: {type(exc).__name__}: {exc}")

    @contextmanager
    def _snapshot(self, doing: str) -> Iterator[Callable[[str, tuple[Any, ...]], sqlite3.Cursor]]:
        """`execute` for reads that all see the file as it was at the first of them: one read
        transaction (WAL keeps its snapshot) on a connection of its own, so that the shared one stays
        free for this process's writers meanwhile (a long verify must not hold up a run's commits or
        its lease's heartbeat). Blobs are read through the shared connection: the store never changes
        or deletes one, so any later state holds those of the snapshot's events."""
        with self._lock:
            self._check_usable()
        with self._translate(doing):
            if self.path in ("", ":memory:"):  # no other connection can open it: read under our lock
                with self._lock:
                    yield self._conn.execute
                return
            conn = sqlite3.connect(
                self._abspath, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read
                yield conn.execute
            finally:
                conn.close()

    def _verify(self, run: RunRecord, rows: Iterable[tuple[Any, ...]]) -> VerifyResult:
        if run.workflow_source is not None and run.workflow_digest != sha256_hex(run.workflow_source):
            return VerifyResult(False, 0, "the run's workflow_source does not match its workflow_digest")
        genesis = genesis_hash({name: getattr(run, name) for name in GENESIS_FIELDS})
        expected_seq, prev_hash, checked = 1, genesis, 0
        ended: tuple[int, str, str | None] | None = None  # the last event that ended the run
        for row in rows:
            fault = self._check_row(row, expected_seq, prev_hash, run)
            if fault is not None:
                return VerifyResult(False, fault[0], fault[1], checked)
            checked += 1
            expected_seq, prev_hash = row[1] + 1, row[8]
            if row[4] in (RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED):
                ended = (row[1], row[4], row[6])
            elif row[4] == RUN_RESUMED:
                ended = None
        last_seq = expected_seq - 1
        if last_seq < run.head_seq:
            return VerifyResult(
                False,
                last_seq + 1,
                f"log truncated: the run's checkpoint says {run.head_seq} events, found {last_seq}",
                checked,
            )
        if prev_hash != run.head_hash:
            return VerifyResult(
                False, last_seq, "the last event does not match the run's head_hash checkpoint", checked
            )
        fault = self._check_outcome(run, ended)
        if fault is not None:
            return VerifyResult(False, 0, fault, checked)
        return VerifyResult(True, None, "", checked)

    def _check_outcome(self, run: RunRecord, ended: tuple[int, str, str | None] | None) -> str | None:
        """The run row's status, output and error are those of its last run.completed / run.failed /
        run.cancelled event (which the chain covers); a run continued since has no outcome yet."""
        if ended is None:
            if run.status in TERMINAL_STATUSES:
                return f"the run row says {run.status}, but no event ended the run"
            return None
        seq, kind, payload = ended
        logged = self._resolve(_loads(payload), run.run_id, f"event seq {seq}") or {}
        status, field = {
            RUN_COMPLETED: ("completed", "output"),
            RUN_FAILED: ("failed", "error"),
            RUN_CANCELLED: ("cancelled", "error"),
        }[kind]
        if run.status != status or getattr(run, field) != logged.get(field):
            return (
                f"the run row's status, output or error ({run.status}) do not match the event that "
                f"ended the run (seq {seq}, {kind}): the run row was edited"
            )
        return None

    def _check_row(
        self, row: tuple[Any, ...], expected_seq: int, prev_hash: str, run: RunRecord
    ) -> tuple[int, str] | None:
        run_id, seq, ts, node_path, kind, actor, payload, stored_prev, stored_hash = row
        if seq != expected_seq:
            return expected_seq, f"event seq {expected_seq} is missing (next stored seq is {seq})"
        if seq > run.head_seq:
            return (
                seq,
                f"event seq {seq} is beyond the run's checkpoint ({run.head_seq}): added outside the store",
            )
        try:
            actor_value, payload_value = _loads(actor), _loads(payload)
        except json.JSONDecodeError:
            return seq, f"event seq {seq} holds invalid JSON"
        recomputed = event_hash(
            run_id=run_id,
            seq=seq,
            ts=ts,
            node_path=node_path,
            kind=kind,
            actor=actor_value,
            payload=payload_value,
            prev_hash=stored_prev,
        )
        if recomputed != stored_hash:
            return seq, f"event seq {seq} was modified: its hash does not match its contents"
        if stored_prev != prev_hash:
            if seq == 1:
                return 0, "the run row does not match the chain's genesis (run fields edited?)"
            return seq - 1, (
                f"event seq {seq} does not link to seq {seq - 1}: seq {seq - 1} was rewritten "
                f"(or seq {seq}'s prev_hash was)"
            )
        for digest in _blob_refs(payload_value):
            fault = self._check_blob(seq, digest)
            if fault is not None:
                return fault
        return None

    def _check_blob(self, seq: int, digest: str) -> tuple[int, str] | None:
        rows = self._query("SELECT data, size FROM blobs WHERE sha256 = ?", (digest,), "reading a blob")
        if not rows:
            return seq, f"event seq {seq} refers to blob {digest}, which is missing"
        data, size = rows[0][0], rows[0][1]
        if not isinstance(data, bytes) or sha256_hex(data) != digest or size != len(data):
            return seq, f"blob {digest} of event seq {seq} was modified"
        return None

    # -- lifecycle

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SQLiteEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_record(row: tuple[Any, ...], *, lenient: bool = False) -> RunRecord:
    (run_id, parent_run_id, parent_node, name, digest, source, inputs, principal, version, status) = row[:10]
    created_at, updated_at, output, error, head_seq, head_hash = row[10:]

    def decode(text: str | None, what: str) -> Any:
        try:
            return _decode(text, run_id, what)
        except DamagedLog:
            if lenient:
                return None
            raise

    return RunRecord(
        run_id=run_id,
        parent_run_id=parent_run_id,
        parent_node=parent_node,
        workflow_name=name,
        workflow_digest=digest,
        workflow_source=source,
        inputs=decode(inputs, "column inputs"),
        principal=principal,
        interpreter_version=version,
        status=status,
        created_at=created_at,
        updated_at=updated_at,
        output=decode(output, "column output"),
        error=decode(error, "column error"),
        head_seq=head_seq,
        head_hash=head_hash,
    )


__all__ = [
    "MIN_RUN_ID_PREFIX",
    "AmbiguousRunId",
    "BlobNotFound",
    "DamagedLog",
    "Event",
    "EventStore",
    "Lease",
    "NewEvent",
    "PayloadError",
    "RunNotFound",
    "RunLeased",
    "RunRecord",
    "SQLiteEventStore",
    "StoreError",
    "StoreLockedError",
    "StoreTransaction",
    "VerifyResult",
    "event_kinds",
    "new_run_id",
    "open_store",
    "register_event_kind",
    "resolve_db_path",
]
