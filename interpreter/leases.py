"""Who is this process, and is the process that holds a run's lease still alive?

A run is executed by at most one process at a time: the process that executes it holds its lease (a
row of `run_leases`, spec/event-log.md §2). A lease of a dead process is free at once, so that
`charter resume` right after a crash works; whether a process is dead can only be told on its own
machine. A process is named by its host (hostname, boot id and PID namespace: a PID means nothing
outside them) and, on Linux, its PID *and start time* (so that a reused PID is not mistaken for the
holder). Any lease is free once its heartbeat has expired -- a holder that stopped renewing it (its
release failed, it stalled) cannot keep a run forever, and fencing (store `_check_lease`) stops it
from writing once another process took over.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

HEARTBEAT_SECONDS = 10.0  # how often a holder renews its lease
LEASE_TTL_SECONDS = 60.0  # a lease not renewed for this long is free, whoever holds it


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    host: str  # hostname, for people
    node: str  # hostname, boot id and PID namespace: where `pid` means something
    pid: int
    start: int | None  # start time in clock ticks after boot (Linux /proc/PID/stat field 22)


_identity: ProcessIdentity | None = None


def this_process() -> ProcessIdentity:
    """This process's identity (computed again after a fork)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity.pid != pid:
        host = socket.gethostname()
        node = "/".join([host, _read("/proc/sys/kernel/random/boot_id"), _pid_namespace()])
        stat = _stat(pid)
        _identity = ProcessIdentity(host, node, pid, stat[1] if stat else None)
    return _identity


_HELD_HERE: set[str] = set()  # owner tokens of the leases this process has taken and not given up


def taken(owner: str) -> None:
    """This process took a lease (`owner` is its token)."""
    _HELD_HERE.add(owner)


def given_up(owner: str) -> None:
    """This process no longer executes under the lease `owner`, even if its row could not be deleted
    (the database stayed locked): in this process the row is stale, not another execution."""
    _HELD_HERE.discard(owner)


def holder_alive(node: str, pid: int, start: int | None, expires_at: str, now: str, owner: str) -> bool:
    """Whether the lease's holder still holds it: its heartbeat has not expired and, when it runs on
    this machine, its process still runs (when it is this process: it has not given the lease up).
    `expires_at` and `now` are ISO-8601 UTC texts of the same format (they compare as strings)."""
    if expires_at <= now:
        return False
    me = this_process()
    if node != me.node or os.name == "nt":  # Windows: os.kill(pid, 0) would terminate the process
        return True
    if pid == me.pid:  # another execution in this very process, or a dead one that had our PID
        return (start is None or start == me.start) and owner in _HELD_HERE
    if me.start is not None:  # Linux: /proc tells whether the PID runs, and since when
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie: killed but not yet reaped
            return False
        return start is None or stat[1] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the PID runs, as another user
        return True
    return True


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process from /proc/PID/stat, None when there is no such process (or no
    /proc). The command name (field 2) may hold spaces and parentheses: fields are counted after its
    last ')'."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""
