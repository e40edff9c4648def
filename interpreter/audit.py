"""The authorization audit `charter verify` runs after the hash chain: every tool call in the log has an
`authz.decided` event that allowed it, at the same node path, for the same tool, before the call.

A decision covers the next call of its tool at its node path (an agent step decides and calls several
times at one path). When the logged arguments are not masked, their digest must equal the decision's
`args_digest` too (masked arguments — secrets, redactions — cannot be re-digested, so only the tool and
the order are checked for those).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interpreter import store as s
from interpreter.redact import MASK


def _masked(value: Any) -> bool:
    if isinstance(value, str):
        return MASK in value or "[REDACTED:" in value
    if isinstance(value, dict):  # a secret is masked in keys too
        return any(_masked(k) or _masked(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_masked(v) for v in value)
    return False


def audit_authz(events: Iterable[s.Event]) -> list[str]:
    """Problems found (empty: every tool call was authorized before it ran)."""
    from interpreter.authz import args_digest
    from interpreter.hashing import NotCanonicalizable

    allowed: dict[tuple[str, str], list[str]] = {}  # (path, tool) -> digests of allows not yet used
    problems: list[str] = []
    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        key = (event.node_path, str(payload.get("tool")))
        if event.kind == s.AUTHZ_DECIDED and payload.get("decision") == "allow":
            allowed.setdefault(key, []).append(str(payload.get("args_digest") or ""))
        elif event.kind == s.TOOL_CALLED:
            pending = allowed.get(key) or []
            where = f"seq {event.seq}: tool '{key[1]}' at '{key[0] or '(run)'}'"
            if not pending:
                problems.append(f"{where} was called without an allowing authorization decision before it")
                continue
            args = payload.get("args", {})
            if _masked(args):
                pending.pop()  # masked arguments cannot be re-digested: the latest allow covers the call
                continue
            try:
                digest = args_digest(args)
            except NotCanonicalizable:
                digest = ""
            if digest in pending:
                pending.remove(digest)
            else:
                problems.append(f"{where} was called with arguments other than those authorized")
    return problems


__all__ = ["audit_authz"]
