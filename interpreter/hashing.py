"""Canonical JSON and the hashes of Charter's event log.

Kept apart from the store so that a second backend (PostgreSQL) and external verifiers compute
exactly the same bytes. The canonical form is Python's `json.dumps` with sorted keys, no
whitespace, `ensure_ascii=False`, NaN/Infinity rejected, encoded as UTF-8 (documented in
spec/event-log.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

GENESIS_FIELDS = (
    "run_id",
    "parent_run_id",
    "parent_node",
    "workflow_name",
    "workflow_digest",
    "inputs",
    "principal",
    "interpreter_version",
    "created_at",
)
"""Fields of the run row that the chain's genesis hash binds (immutable after creation)."""

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """`_encoder`'s C core, built once: `JSONEncoder.encode` builds it anew on every call, which is
    most of the cost of encoding an event's small payload. Without a circular-reference check (which
    keeps state), so one instance serves every thread; a cycle ends as a RecursionError instead."""
    try:
        return c_make_encoder(None, _encoder.default, encode_basestring, None, ":", ",", True, False, False)  # type: ignore[misc]
    except TypeError:  # a Python whose C encoder takes other arguments, or none at all
        return None


_encode = _c_encoder()


class NotCanonicalizable(ValueError):
    """A value that has no canonical JSON form (a set, bytes, NaN, a non-string key...)."""


def canonical_json(value: Any) -> str:
    """The canonical JSON text of `value`; raises NotCanonicalizable for anything JSON cannot hold."""
    try:
        text = "".join(_encode(value, 0)) if _encode is not None else _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise NotCanonicalizable(str(exc)) from exc
    except RecursionError:
        raise NotCanonicalizable("the value is nested too deeply (or contains itself)") from None
    if not text.isascii():
        try:  # a lone surrogate ("\ud800") is a Python str but not Unicode text: it has no UTF-8 form
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NotCanonicalizable("text with a lone surrogate code point is not valid Unicode") from None
    return text


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def event_hash_from_parts(
    *,
    run_id: str,
    seq: int,
    ts: str,
    node_path: str,
    kind: str,
    actor_json: str,
    payload_json: str,
    prev_hash: str,
) -> str:
    """Hash of an event row, built from already-canonical JSON texts of `actor` and `payload`.

    Equal to `sha256(canonical_json({...}))` because canonical JSON sorts keys at every level: the
    keys below are in sorted order and the nested texts are canonical themselves. This is the hot
    path of `append`, so it avoids re-encoding the payload.
    """
    # encode_basestring is exactly what the canonical encoder emits for a str (ensure_ascii=False).
    text = (
        f'{{"actor":{actor_json},"kind":{encode_basestring(kind)},"node_path":{encode_basestring(node_path)},'
        f'"payload":{payload_json},"prev_hash":{encode_basestring(prev_hash)},'
        f'"run_id":{encode_basestring(run_id)},"seq":{int(seq)},"ts":{encode_basestring(ts)}}}'
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def event_hash(
    *,
    run_id: str,
    seq: int,
    ts: str,
    node_path: str,
    kind: str,
    actor: Any,
    payload: Any,
    prev_hash: str,
) -> str:
    """Reference definition of an event's hash (what `verify` and external tools compute)."""
    row = {
        "run_id": run_id,
        "seq": seq,
        "ts": ts,
        "node_path": node_path,
        "kind": kind,
        "actor": actor,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return sha256_hex(canonical_json(row))


def genesis_hash(run_fields: dict[str, Any]) -> str:
    """The `prev_hash` of a run's first event: binds the chain to the run row's identity.

    Editing the workflow digest, the inputs or the principal of a run after the fact breaks the chain
    at its start, which a constant genesis (64 zeros) would not detect.
    """
    return sha256_hex(canonical_json({name: run_fields.get(name) for name in GENESIS_FIELDS}))
