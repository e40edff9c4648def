"""Canonical JSON and the hashes of Charter's event log.

Kept apart from the store so that a second backend (PostgreSQL) and external verifiers compute
exactly the same bytes. The canonical form is Python's `json.dumps` with sorted keys, no
whitespace, `ensure_ascii=False`, NaN/Infinity and non-string object keys rejected, encoded as
UTF-8 (documented in spec/event-log.md).
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


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_keys(value: Any) -> None:
    """Refuse a dict key that is not a string, anywhere in `value` (which encoded: JSON types only).

    `json` writes an int, float, bool or None key as a string but sorts the keys by their own values:
    {2: .., 10: ..} is written {"2": .., "10": ..}, while the same object read back sorts "10" first.
    The text hashed on write would differ from the one `verify` hashes, and the key would come back
    as another value ("2", not 2). Exact-type tests first: this runs on every event's payload."""
    kind = type(value)
    if kind is dict:
        for key, member in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise NotCanonicalizable(f"object keys must be strings, got {type(key).__name__} key {key!r}")
            if type(member) not in _SCALARS:
                _check_keys(member)
    elif kind is list or kind is tuple:
        for member in value:
            if type(member) not in _SCALARS:
                _check_keys(member)
    elif isinstance(value, dict):  # a subclass (OrderedDict...): its items, as the encoder reads them
        _check_keys(dict(value.items()))
    elif isinstance(value, list | tuple):
        _check_keys(list(value))


def canonical_json(value: Any) -> str:
    """The canonical JSON text of `value`; raises NotCanonicalizable for anything JSON cannot hold."""
    try:
        text = "".join(_encode(value, 0)) if _encode is not None else _encoder.encode(value)
        if type(value) not in _SCALARS:
            _check_keys(value)
    except NotCanonicalizable:
        raise
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
    return event_hasher(run_id, ts)(seq, node_path, kind, actor_json, payload_json, prev_hash)


def event_hasher(run_id: str, ts: str) -> Callable[[int, str, str, str, str, str], str]:
    """`event_hash_from_parts` for a batch of one run's events written at one `ts`, as
    `hash(seq, node_path, kind, actor_json, payload_json, prev_hash)`: the shared fields are encoded
    once (the store hashes every event of a commit this way)."""
    # encode_basestring is exactly what the canonical encoder emits for a str (ensure_ascii=False).
    run_and_seq = f',"run_id":{encode_basestring(run_id)},"seq":'
    ts_and_end = f',"ts":{encode_basestring(ts)}}}'
    sha256 = hashlib.sha256

    def digest(
        seq: int, node_path: str, kind: str, actor_json: str, payload_json: str, prev_hash: str
    ) -> str:
        text = (
            f'{{"actor":{actor_json},"kind":{encode_basestring(kind)},"node_path":{encode_basestring(node_path)},'
            f'"payload":{payload_json},"prev_hash":{encode_basestring(prev_hash)}{run_and_seq}{int(seq)}{ts_and_end}'
        )
        return sha256(text.encode("utf-8")).hexdigest()

    return digest


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
