"""The contract between the agent loop and language-model providers.

A provider turns one `ModelRequest` (messages, tools, an optional JSON Schema for the answer) into one
`ModelResponse` (text, tool calls, usage, latency). It never runs tools and never loops: the agent loop
does that. Every failure is a `ModelError` whose message names the provider, the endpoint and what
happened, so a run error reads well without a traceback.

Records: `to_record()` gives a JSON-ready dict for the event log and `ModelResponse.from_record()`
rebuilds a response from it, so replay needs no network.

Provider-opaque blocks: `thinking` on a response (and on the assistant message made from it) holds blocks a
provider needs back unchanged in that assistant turn, e.g. Anthropic's `thinking` (with its signature) and
`redacted_thinking` blocks. The agent loop only carries and records them; providers that have none ignore
them. They are not the answer: `text` never includes them.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for. `error` is set when the model's arguments were not a JSON object;
    the agent loop should then tell the model instead of running the tool."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": self.arguments}
        if self.error is not None:
            record["error"] = self.error
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ToolCall:
        return cls(
            id=record["id"],
            name=record["name"],
            arguments=dict(record.get("arguments") or {}),
            error=record.get("error"),
        )


@dataclass(frozen=True)
class Message:
    """One chat message. Assistant messages may carry tool calls; tool messages answer one call
    (`tool_call_id`), with `is_error` when the tool failed."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    # An assistant answer's provider-opaque blocks (see the module doc), sent back as they came.
    thinking: tuple[dict[str, Any], ...] = ()

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            record["tool_calls"] = [c.to_record() for c in self.tool_calls]
        if self.tool_call_id is not None:
            record["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            record["name"] = self.name
        if self.is_error:
            record["is_error"] = True
        if self.thinking:
            record["thinking"] = [dict(b) for b in self.thinking]
        return record


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, description and the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ModelRequest:
    """One model call. `step` and `turn` (1-based within one execution of the step) identify the call;
    the scripted provider matches on them and the event log records them."""

    messages: tuple[Message, ...]
    model: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    response_schema: dict[str, Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    step: str = ""
    turn: int = 1

    def to_record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "step": self.step,
            "turn": self.turn,
            "parameters": self.parameters,
            "response_schema": self.response_schema,
            "tools": [t.to_record() for t in self.tools],
            "messages": [m.to_record() for m in self.messages],
        }


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def to_record(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True)
class ModelResponse:
    """The model's answer. `structured` holds the parsed JSON answer when the request had a
    `response_schema` and the answer parsed as JSON (validation against the schema is the agent loop's).
    It is None for no such answer and for the JSON `null` alike: `text` then tells them apart (it is
    `null` for a null answer; `parse_structured(text)` reads it back).
    `thinking`: provider-opaque blocks to send back unchanged with this answer (see the module doc).
    `skipped_tool_calls`: tool calls the model made together with its final answer, which are not run."""

    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    latency_ms: float = 0.0
    finish_reason: str | None = None
    model: str | None = None
    structured: Any = None
    thinking: tuple[dict[str, Any], ...] = ()
    skipped_tool_calls: tuple[ToolCall, ...] = ()

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "text": self.text,
            "tool_calls": [c.to_record() for c in self.tool_calls],
            "usage": self.usage.to_record(),
            "latency_ms": self.latency_ms,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "structured": self.structured,
        }
        # Only when present, so the record of an ordinary answer keeps its shape.
        if self.thinking:
            record["thinking"] = [dict(b) for b in self.thinking]
        if self.skipped_tool_calls:
            record["skipped_tool_calls"] = [c.to_record() for c in self.skipped_tool_calls]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelResponse:
        usage = record.get("usage") or {}
        return cls(
            text=record.get("text"),
            tool_calls=tuple(ToolCall.from_record(c) for c in record.get("tool_calls") or ()),
            usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            latency_ms=float(record.get("latency_ms", 0.0)),
            finish_reason=record.get("finish_reason"),
            model=record.get("model"),
            structured=record.get("structured"),
            thinking=tuple(dict(b) for b in record.get("thinking") or ()),
            skipped_tool_calls=tuple(ToolCall.from_record(c) for c in record.get("skipped_tool_calls") or ()),
        )


class _NotJson(enum.Enum):
    NOT_JSON = "NOT_JSON"

    def __repr__(self) -> str:
        return "NOT_JSON"


# What `parse_structured` gives for a text that holds no JSON value; a model that answered the JSON
# `null` gives None, which an output_schema may well allow.
NOT_JSON: Final = _NotJson.NOT_JSON


def parse_structured(text: str | None) -> Any:
    """The JSON value in a model's text answer (None for the JSON `null`), or `NOT_JSON` when it holds
    none. Tolerates a ```json fence around it, which models add even when told not to."""
    if not text:
        return NOT_JSON
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        return strict_json(body)
    except ValueError:
        return NOT_JSON


def strict_json(text: str | bytes) -> Any:
    """`json.loads` without the NaN and Infinity that Python accepts, nor a number too large for a
    double (`1e999`, which Python reads as infinity): an answer holding one could not be logged."""
    return json.loads(text, parse_constant=_not_json, parse_float=_finite)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


# --- errors -------------------------------------------------------------------------------------------


class ModelError(Exception):
    """A model call failed. `retryable` tells whether trying again later could help."""

    retryable = False
    kind = "error"

    def __init__(self, provider: str, endpoint: str, what: str, *, status: int | None = None) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.what = what
        self.status = status  # the HTTP status the server answered, when it answered with an error
        super().__init__(self._format())

    def _format(self) -> str:
        if self.endpoint == "-":  # nothing was called: a configuration problem
            return f"{self.provider} model: {self.what}"
        return f"{self.provider} model call to {self.endpoint} failed: {self.what}"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": self.kind,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "message": str(self),
        }
        if self.status is not None:
            record["status"] = self.status
        return record


class ModelConfigError(ModelError):
    """The model is configured wrongly (unknown provider, missing responses file, ...)."""

    kind = "config"

    def _format(self) -> str:
        where = "" if self.endpoint == "-" else f" ({self.endpoint})"
        return f"{self.provider} model{where}: {self.what}"


class ModelAuthError(ModelError):
    """No key, or the server refused the key (401/403)."""

    kind = "auth"


class ModelRateLimitError(ModelError):
    """Still rate limited (429) after the retries."""

    kind = "rate_limit"
    retryable = True


class ModelServerError(ModelError):
    """The server kept failing (5xx) after the retries."""

    kind = "server"
    retryable = True


class ModelRequestError(ModelError):
    """The server rejected the request (4xx other than auth and rate limits), e.g. an unknown model."""

    kind = "request"


class ModelBadResponseError(ModelError):
    """The server answered with something that is not a valid response (malformed JSON, missing fields),
    or an answer that cannot be used (cut off, filtered, refused). The provider does not ask again
    itself, but a step's `retry` does (spec §12.4): the next answer may well be whole."""

    kind = "bad_response"
    retryable = True


class ModelTimeoutError(ModelError):
    """The call did not finish within its timeout."""

    kind = "timeout"
    retryable = True


class ModelConnectionError(ModelError):
    """The server could not be reached, or dropped the connection, after the retries."""

    kind = "connection"
    retryable = True


class ModelScriptError(ModelError):
    """The scripted provider has no (more) response for a call."""

    kind = "script"


# --- the provider protocol ----------------------------------------------------------------------------


@runtime_checkable
class ModelProvider(Protocol):
    """What the agent loop calls. One instance per configured model per run; `close()` once at the end."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    async def close(self) -> None: ...


def compute_cost(usage: Usage, prices: Any) -> float | None:
    """Cost of one call from declared prices per 1,000 tokens (a `dsl.model.Prices` or a mapping with
    `input_per_1k` and `output_per_1k`); None when the model declares no prices."""
    if prices is None:
        return None
    if isinstance(prices, Mapping):
        per_in, per_out = float(prices["input_per_1k"]), float(prices["output_per_1k"])
    else:
        per_in, per_out = float(prices.input_per_1k), float(prices.output_per_1k)
    return (usage.input_tokens * per_in + usage.output_tokens * per_out) / 1000.0
