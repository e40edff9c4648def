"""The `scripted` provider: answers from a YAML file of canned responses, matched by step id and turn.

The file format is documented at the top of examples/sequential.responses.yaml. Entries sharing a step
and turn are used in file order, one per call; a call with no entry left is a `ModelScriptError`. The
file is checked whole when the provider is built, so a typo fails the run before any step runs; the run's
setup refuses an entry whose step looks like a typo of one of the run's agent or llm steps (`check_steps`).
"""

from __future__ import annotations

import difflib
import json
import textwrap
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .base import (
    ModelConfigError,
    ModelRequest,
    ModelResponse,
    ModelScriptError,
    ToolCall,
    Usage,
    strict_json,
)

_KEYS = {"step", "turn", "text", "json", "tool_calls", "usage"}
# How alike (difflib's ratio) a step id the file names must be to one of the run's for `check_steps` to
# take it for a typo of it: 'sumarize', 'extrat', 'Summarize' are; 'extract' and 'extract_terms' are not.
TYPO_CUTOFF = 0.8
_ANSWER_KEYS = ("text", "json", "tool_calls")


@dataclass(frozen=True)
class ScriptEntry:
    step: str
    turn: int
    line: int
    text: str | None = None
    json: Any = None
    is_json: bool = False
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    usage: Usage = Usage()


class ScriptedProvider:
    name = "scripted"

    def __init__(self, *, responses: str | Path, model: str | None = None) -> None:
        self.path = Path(responses)
        self.model = model or "scripted"
        self._entries = _load(self.path)
        self._queues: dict[tuple[str, int], list[ScriptEntry]] = defaultdict(list)
        for entry in self._entries:
            self._queues[(entry.step, entry.turn)].append(entry)
        self._used: dict[tuple[str, int], int] = defaultdict(int)

    @property
    def endpoint(self) -> str:
        return str(self.path)

    async def close(self) -> None:
        return None

    def check_steps(self, model_steps: Collection[str]) -> None:
        """Refuse (ModelConfigError) an entry whose step is not one of `model_steps`, the agent and llm
        steps of the run, but close to one: a typo, which would otherwise be found only when the step it
        was meant for gets no answer, halfway through the run. The error names each such step, its line
        and the nearest step ids. An entry for a step unlike any of them is left alone: a file given on
        the command line answers the steps of every run of the tree, those of a parent run too, which a
        child run continued on its own does not know."""
        known = sorted(set(model_steps))
        problems: dict[str, str] = {}
        for entry in self._entries:
            if entry.step in model_steps or entry.step in problems:
                continue
            close = difflib.get_close_matches(entry.step, known, n=3, cutoff=TYPO_CUTOFF)
            if close:
                problems[entry.step] = (
                    f"{entry.step!r} at line {entry.line} (did you mean {' or '.join(map(repr, close))}?)"
                )
        if problems:
            what = "a step" if len(problems) == 1 else "steps"
            raise ModelConfigError(
                self.name,
                self.endpoint,
                f"the responses file names {what} the workflow does not have: {'; '.join(problems.values())}",
            )

    def mark_used(self, step: str, turn: int) -> None:
        """Skip one entry for (step, turn): a resumed run calls this for each call it takes from the
        event log instead of asking the provider, so the next live call gets the next entry."""
        self._used[(step, turn)] += 1

    async def complete(self, request: ModelRequest) -> ModelResponse:
        key = (request.step, request.turn)
        queue = self._queues.get(key, [])
        index = self._used[key]
        if index >= len(queue):
            raise ModelScriptError(self.name, self.endpoint, self._no_entry(request, len(queue)))
        self._used[key] += 1
        return self._answer(queue[index], request, index)

    def _no_entry(self, request: ModelRequest, available: int) -> str:
        where = f"step {request.step!r} turn {request.turn}"
        if available:
            return f"scripted responses exhausted for {where} (all {available} entries used){_why(request)}"
        steps = sorted({e.step for e in self._entries})
        turns = sorted(e.turn for e in self._entries if e.step == request.step)
        if turns:
            return (
                f"no scripted response for {where}; the file has turns {turns} for that step{_why(request)}"
            )
        return f"no scripted response for {where}; the file has entries for steps {steps}"

    def _answer(self, entry: ScriptEntry, request: ModelRequest, index: int) -> ModelResponse:
        calls = tuple(
            # Ids are deterministic, so a replayed run sees the same ids as the recorded one.
            ToolCall(f"{entry.step}-{entry.turn}-{index + 1}-{n + 1}", name, args)
            for n, (name, args) in enumerate(entry.tool_calls)
        )
        text, structured = entry.text, None
        if entry.is_json:
            text, structured = json.dumps(entry.json), entry.json
        elif request.response_schema is not None and text is not None:
            try:
                structured = strict_json(text)
            except ValueError:
                structured = None
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=entry.usage,
            latency_ms=0.0,
            finish_reason="tool_calls" if calls else "stop",
            model=self.model,
            structured=structured,
        )


def _why(request: ModelRequest) -> str:
    """Why the step asked again: a re-ask's feedback (say, the answer did not fit output_schema) is the
    last message, and usually what the script's author needs to see, not the missing turn."""
    last = request.messages[-1] if request.messages else None
    if request.turn < 2 or last is None or last.role != "user" or not last.content:
        return ""
    return f". Turn {request.turn} answers this message: {textwrap.shorten(last.content, 400)}"


# --- loading ------------------------------------------------------------------------------------------


def _load(path: Path) -> list[ScriptEntry]:
    def fail(what: str) -> ModelConfigError:
        return ModelConfigError("scripted", str(path), what)

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("the responses file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the responses file: {exc}") from None
    try:
        nodes = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(f"the responses file is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not isinstance(data.get("responses"), list):
        raise fail("the responses file needs a top-level 'responses:' list")
    lines = _entry_lines(nodes)
    return [_entry(raw, lines[i] if i < len(lines) else 0, fail) for i, raw in enumerate(data["responses"])]


def _entry_lines(root: Any) -> list[int]:
    """1-based line of each entry of `responses`, for error messages."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "responses" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _entry(raw: Any, line: int, fail: Any) -> ScriptEntry:
    where = f"entry at line {line}"
    if not isinstance(raw, dict):
        raise fail(f"{where}: each entry must be a mapping with step and text, json or tool_calls")
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise fail(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    step = raw.get("step")
    if not isinstance(step, str) or not step:
        raise fail(f"{where}: 'step' (the id of the agent or llm step) is required")
    turn = raw.get("turn", 1)
    if not isinstance(turn, int) or isinstance(turn, bool) or turn < 1:
        raise fail(f"{where}: 'turn' must be an integer from 1, not {turn!r}")
    answers = [k for k in _ANSWER_KEYS if k in raw]
    if len(answers) != 1:
        raise fail(f"{where}: needs exactly one of text, json, tool_calls (found {answers or 'none'})")
    entry = ScriptEntry(step=step, turn=turn, line=line, usage=_usage(raw.get("usage"), where, fail))
    if "text" in raw:
        if not isinstance(raw["text"], str):
            raise fail(f"{where}: 'text' must be a string; use 'json' for a structured answer")
        return replace(entry, text=raw["text"])
    if "json" in raw:
        return replace(entry, json=_json_value(raw["json"], f"{where}: 'json'", fail), is_json=True)
    return replace(entry, tool_calls=_tool_calls(raw["tool_calls"], where, fail))


def _json_value(value: Any, what: str, fail: Any) -> Any:
    """A value a real model could have answered: JSON (YAML's .nan, .inf, dates and non-string keys
    are not), or the answer could not be logged when the run gets to it."""
    try:
        if strict_json(json.dumps(value, allow_nan=False)) == value:
            return value
    except (TypeError, ValueError):
        pass
    raise fail(f"{what} must be JSON: no .nan or .inf, dates or non-string keys (quote them)")


def _tool_calls(raw: Any, where: str, fail: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(f"{where}: 'tool_calls' must be a non-empty list of {{name, args}}")
    calls = []
    for n, call in enumerate(raw, 1):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise fail(f"{where}: tool call {n} needs a 'name'")
        extra = sorted(set(map(str, call)) - {"name", "args"})
        if extra:
            raise fail(f"{where}: tool call {n} has unknown key(s) {extra}; allowed: name, args")
        args = call.get("args", {})
        if not isinstance(args, dict):
            raise fail(f"{where}: tool call {n} 'args' must be a mapping")
        calls.append((call["name"], _json_value(args, f"{where}: tool call {n} 'args'", fail)))
    return tuple(calls)


def _usage(raw: Any, where: str, fail: Any) -> Usage:
    if raw is None:
        return Usage()
    if not isinstance(raw, dict) or set(map(str, raw)) - {"input_tokens", "output_tokens"}:
        raise fail(f"{where}: 'usage' must be a mapping with input_tokens and output_tokens")
    values = [raw.get("input_tokens", 0), raw.get("output_tokens", 0)]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        raise fail(f"{where}: usage token counts must be non-negative integers")
    return Usage(values[0], values[1])
