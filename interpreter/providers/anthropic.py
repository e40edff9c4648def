"""Anthropic Messages API with tool use, over httpx (no SDK needed).

Structured output: the Messages API has no JSON-schema response format, so the provider offers the
model a `respond` tool whose input schema is the answer's schema. Without other tools, the model is made
to call it; with other tools, or with extended thinking on (the API refuses forced tool use then), it is
told to call `respond` for its final answer. A `respond` call becomes the structured answer, never a tool
call for the agent loop; other tool calls in the same answer are not run (the model said it is done) but
kept in `skipped_tool_calls`, so the log says what was left out. (When the workflow offers a tool named
`respond` itself, the answer tool takes the first free name of `respond_answer`, `respond_answer_2`, ...)

Extended thinking (`thinking` in the parameters): the answer's `thinking` and `redacted_thinking` blocks
are kept whole, as the response's opaque `thinking`, and sent back first in that assistant turn: the API
checks their signatures and refuses a tool-use turn that comes back without them.

Stop reasons: `end_turn`, `stop_sequence` and `tool_use` are complete answers. An answer cut off by
`max_tokens` (or by the context window) is an error, never a final answer or a tool call with half its
input; so is a refusal (`refusal`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import httpx

from ._http import JsonHttpClient, RetryPolicy
from .base import (
    NOT_JSON,
    Message,
    ModelBadResponseError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
    parse_structured,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
RESPOND_TOOL = "respond"
_THINKING = ("thinking", "redacted_thinking")
# Stop reasons of an answer that is not whole: used as it is, it would be a truncated output or a tool
# call with a truncated input.
_CUT_OFF = {
    "max_tokens": "the answer was cut off at max_tokens={limit}; raise `max_tokens` in the model's parameters",
    "model_context_window_exceeded": "the answer was cut off: the conversation fills the model's context window",
}


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.parameters = dict(parameters or {})
        headers = {"x-api-key": api_key, "anthropic-version": API_VERSION}
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        # Accept both "https://api.anthropic.com" and ".../v1" as the base URL.
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        self.http = JsonHttpClient(
            self.name, base, headers, timeout=timeout, retry=retry, transport=transport
        )

    @property
    def endpoint(self) -> str:
        return self.http.base_url + "/v1/messages"

    async def close(self) -> None:
        await self.http.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        body = self._body(request)
        data = await self.http.post("/v1/messages", body)
        response = self._parse(data, request, body)
        return replace(response, latency_ms=(time.perf_counter() - started) * 1000.0)

    # --- request --------------------------------------------------------------------------------------

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": DEFAULT_MAX_TOKENS, **self.parameters, **request.parameters}
        body["model"] = request.model or self.model
        system = [m.content for m in request.messages if m.role == "system" and m.content]
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.response_schema is not None:
            respond = _respond_tool(request)
            tools.append(
                {
                    "name": respond,
                    "description": "Give the final answer, as this tool's input.",
                    "input_schema": _object_schema(request.response_schema),
                }
            )
            if request.tools or _thinking(body):
                system.append(f"When you have the final answer, call the `{respond}` tool with it.")
            else:
                body["tool_choice"] = {"type": "tool", "name": respond}
        if system:
            body["system"] = "\n\n".join(system)
        if tools:
            body["tools"] = tools
        body["messages"] = _messages(request.messages)
        return body

    # --- response -------------------------------------------------------------------------------------

    def _parse(self, data: dict[str, Any], request: ModelRequest, body: dict[str, Any]) -> ModelResponse:
        def bad(what: str) -> ModelBadResponseError:
            return ModelBadResponseError(self.name, self.endpoint, what)

        content = data.get("content")
        if not isinstance(content, list):
            raise bad(f"the answer has no content list: {json.dumps(data)[:200]}")
        stop = data.get("stop_reason")
        if stop in _CUT_OFF:
            raise bad(_CUT_OFF[stop].format(limit=body.get("max_tokens")))
        if stop == "refusal":
            said = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict)).strip()
            raise bad(
                "the model refused to answer (stop_reason refusal)" + (f": {said:.200}" if said else "")
            )
        respond = _respond_tool(request) if request.response_schema is not None else None
        texts: list[str] = []
        calls: list[ToolCall] = []
        thinking: list[dict[str, Any]] = []
        structured: Any = None
        answered = False  # the answer tool was called: its answer may be null
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                raise bad(f"content block {index} is not an object")
            if block.get("type") in _THINKING:
                thinking.append(dict(block))  # opaque: sent back exactly as it came
            elif block.get("type") == "text":
                texts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                call = _tool_call(block, index, bad)
                if request.response_schema is not None and call.name == respond:
                    structured, answered = _unwrap(call.arguments, request.response_schema), True
                else:
                    calls.append(call)
        text = "".join(texts) if texts else None
        skipped: list[ToolCall] = []
        if answered:
            text = json.dumps(structured)  # `null` for the answer null, which `structured` cannot say
            skipped, calls = calls, []  # the final answer ends the turn: its other calls are not run
        elif request.response_schema is not None and not calls:
            parsed = parse_structured(text)
            structured = None if parsed is NOT_JSON else parsed
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        # input_tokens excludes the tokens read from or written to the prompt cache; they are input too.
        cached = _int(usage.get("cache_read_input_tokens")) + _int(usage.get("cache_creation_input_tokens"))
        return ModelResponse(
            text=text,
            tool_calls=tuple(calls),
            usage=Usage(_int(usage.get("input_tokens")) + cached, _int(usage.get("output_tokens"))),
            finish_reason=stop if isinstance(stop, str) else None,
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            structured=structured,
            thinking=tuple(thinking),
            skipped_tool_calls=tuple(skipped),
        )


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages API turns: system messages go to `system`; tool results become `tool_result` blocks in a
    user turn; adjacent turns of the same role merge, since the API wants user and assistant to alternate."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _blocks(message)
        if not blocks:  # an empty answer (re-asked): the API refuses a message with no content
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.content,
        }
        if message.is_error:
            block["is_error"] = True
        return "user", [block]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    # An answer's thinking blocks go back first in its turn, unchanged (the API checks their signatures);
    # alone (a re-asked answer whose tool calls were not run) they would be a turn the API refuses.
    if blocks:
        blocks[:0] = [dict(b) for b in message.thinking]
    return message.role, blocks


def _thinking(body: dict[str, Any]) -> bool:
    """Whether the request turns extended thinking on (`thinking: {type: enabled, ...}` in the parameters)."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type", "enabled") != "disabled"


def _respond_tool(request: ModelRequest) -> str:
    """The name of the answer tool: `respond`, unless the request offers a tool of that name."""
    taken = {t.name for t in request.tools}
    if RESPOND_TOOL not in taken:
        return RESPOND_TOOL
    name, n = f"{RESPOND_TOOL}_answer", 2
    while name in taken:
        name, n = f"{RESPOND_TOOL}_answer_{n}", n + 1
    return name


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Tool inputs must be objects: a non-object answer schema is wrapped as {"value": ...}."""
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {"value": schema}, "required": ["value"]}


def _unwrap(arguments: dict[str, Any], schema: dict[str, Any]) -> Any:
    return arguments if schema.get("type") == "object" else arguments.get("value")


def _tool_call(block: dict[str, Any], index: int, bad: Any) -> ToolCall:
    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
    if not isinstance(name, str) or not name:
        raise bad(f"tool_use block {index} has no name")
    if not isinstance(call_id, str):
        raise bad(f"tool_use block {index} has no id")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name, {}, error=f"the input is not a JSON object: {arguments!r:.200}")
    return ToolCall(call_id, name, arguments)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
