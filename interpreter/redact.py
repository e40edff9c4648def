"""Searching and masking text inside JSON-like values (guardrail regexes, secrets before logging).

What counts as "the text of a value", used everywhere here:

- every string, at any depth of nested lists and objects (object *values*; keys are never searched
  nor masked, so masking cannot merge two keys into one);
- every number (not bool), as its JSON text, so a card number sent as an integer cannot slip past a
  pattern; a number with a match is replaced by the masked string when redacting;
- null and booleans are never matched.

Only non-empty matches count: a pattern that can match the empty string (`a*`) is a violation only
where it matches at least one character.

Secrets are masked in object keys too (`mask_everywhere`): a guardrail's regex never reads a key, but
a secret must not reach the log in any shape, and an API may answer with an object keyed by the very
token it was called with. Keys that mask alike stay apart (`[REDACTED]`, `[REDACTED]#2`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import re2

MASK = "[REDACTED]"


class PatternError(ValueError):
    """A regular expression RE2 does not accept."""


def compile_pattern(pattern: str) -> Any:
    """Compile an RE2 pattern; PatternError with RE2's reason when it is invalid."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(f"invalid RE2 pattern {pattern!r}: {reason}") from None


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def iter_texts(value: Any) -> Iterator[str]:
    """Every searchable text inside `value` (see the module docstring)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
        else:
            text = _text_of(item)
            if text is not None:
                yield text


def _nonempty_matches(regex: Any, text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in regex.finditer(text) if m.end() > m.start()]


def count_matches(value: Any, regex: Any) -> int:
    """Number of non-empty matches of a compiled RE2 `regex` in the texts of `value`."""
    return sum(len(_nonempty_matches(regex, text)) for text in iter_texts(value))


def _mask_text(text: str, regex: Any, mask: str) -> tuple[str, int]:
    spans = _nonempty_matches(regex, text)
    if not spans:
        return text, 0
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(mask)
        last = end
    out.append(text[last:])
    return "".join(out), len(spans)


def mask_matches(value: Any, regex: Any, mask: str = MASK, *, keys: bool = False) -> tuple[Any, int]:
    """A copy of `value` with every non-empty match in its texts replaced by `mask`, and the count.
    With `keys` (for secrets), the keys of objects too: two keys that mask to the same text are kept
    apart by a suffix (`#2`, `#3`...), so no member of an object is lost.

    Containers are rebuilt (the input is never mutated); tuples come back as lists, as in JSON.
    """
    if isinstance(value, dict):
        total = 0
        members: list[tuple[Any, bool, Any]] = []  # (key, masked?, value)
        for key, item in value.items():
            new_key, n = _mask_text(key, regex, mask) if keys and isinstance(key, str) else (key, 0)
            masked, m = mask_matches(item, regex, mask, keys=keys)
            total += n + m
            members.append((new_key, n > 0, masked))
        taken = {key for key, changed, _ in members if not changed}
        out: dict[Any, Any] = {}
        for key, changed, item in members:
            if changed:  # never the same as another key of the object
                base, i = key, 1
                while key in taken:
                    i += 1
                    key = f"{base}#{i}"
                taken.add(key)
            out[key] = item
        return out, total
    if isinstance(value, list | tuple):
        total = 0
        items: list[Any] = []
        for item in value:
            masked, n = mask_matches(item, regex, mask, keys=keys)
            items.append(masked)
            total += n
        return items, total
    text = _text_of(value)
    if text is None:
        return value, 0
    masked_text, n = _mask_text(text, regex, mask)
    return (masked_text if n else value), n


def mask_everywhere(value: Any, regex: Any, mask: str = MASK) -> tuple[Any, int]:
    """`mask_matches` with the keys of objects masked too (for secrets)."""
    return mask_matches(value, regex, mask, keys=True)


def mask_secrets(value: Any, secrets: Iterable[str], mask: str = MASK) -> Any:
    """`value` with every occurrence of each secret's literal text masked (before anything is logged).

    Longer secrets are masked first so that one secret containing another is masked whole. Empty
    strings are ignored.
    """
    literals = sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)
    if not literals:
        return value
    regex = compile_pattern("|".join(re2.escape(s) for s in literals))
    return mask_everywhere(value, regex, mask)[0]
