"""OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp server, LM Studio) over httpx.

Structured output: `response_format: json_schema` first. Many compatible servers reject it; then the
provider falls back to `json_object`, and then to a plain request, each with the schema spelled out in a
system message, and remembers the mode that worked for the rest of the run. Both response formats answer
an object (OpenAI refuses a `json_schema` whose root is not one): an answer of another type (a string of
an `enum`, a list) is asked for as `{"value": ...}` and unwrapped, as the `anthropic` provider does.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from ._http import JsonHttpClient, RetryPolicy
from .base import (
    NOT_JSON,
    Message,
    ModelBadResponseError,
    ModelRequest,
    ModelRequestError,
    ModelResponse,
    ToolCall,
    Usage,
    parse_structured,
    strict_json,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_SCHEMA_MODES = ("json_schema", "json_object", "plain")


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        parameters: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.parameters = dict(parameters or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = JsonHttpClient(
            self.name,
            base_url or DEFAULT_BASE_URL,
            headers,
            timeout=timeout,
            retry=retry,
            transport=transport,
        )
        self._schema_mode = "json_schema"

    @property
    def endpoint(self) -> str:
        return self.http.base_url + "/chat/completions"

    async def close(self) -> None:
        await self.http.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        while True:
            mode = self._schema_mode  # this request's (a call side by side may move the provider on)
            body = self._body(request, mode)
            try:
                data = await self.http.post("/chat/completions", body)
                break
            except ModelRequestError as error:
                if request.response_schema is None or not _rejects_format(error):
                    raise
                if mode == _SCHEMA_MODES[-1]:
                    raise
                following = _SCHEMA_MODES[_SCHEMA_MODES.index(mode) + 1]
                if _SCHEMA_MODES.index(following) > _SCHEMA_MODES.index(self._schema_mode):
                    self._schema_mode = following
        response = self._parse(data, request, mode)
        latency = (time.perf_counter() - started) * 1000.0
        return ModelResponse(
            text=response.text,
            tool_calls=response.tool_calls,
            usage=response.usage,
            latency_ms=latency,
            finish_reason=response.finish_reason,
            model=response.model,
            structured=response.structured,
        )

    # --- request --------------------------------------------------------------------------------------

    def _body(self, request: ModelRequest, schema_mode: str) -> dict[str, Any]:
        messages = [_message(m) for m in request.messages]
        body: dict[str, Any] = {**self.parameters, **request.parameters}
        body["model"] = request.model or self.model
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        schema = request.response_schema
        if schema is not None:
            # Both response formats produce an object: any other answer is asked for as {"value": ...}.
            if _wraps(schema, schema_mode):
                schema = _wrapped(schema)
            if schema_mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema},
                }
            else:
                if schema_mode == "json_object":
                    body["response_format"] = {"type": "json_object"}
                instruction = "Answer with only a JSON value (no prose) that matches this JSON Schema:\n"
                messages.insert(0, {"role": "system", "content": instruction + json.dumps(schema)})
        body["messages"] = messages
        return body

    # --- response -------------------------------------------------------------------------------------

    def _parse(self, data: dict[str, Any], request: ModelRequest, schema_mode: str) -> ModelResponse:
        def bad(what: str) -> ModelBadResponseError:
            return ModelBadResponseError(self.name, self.endpoint, what)

        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad(f"the answer has no choices: {json.dumps(data)[:200]}")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise bad("the first choice has no message")
        text = _content_text(message.get("content"), bad)
        # A cut-off answer is never a final answer nor a tool call with half its arguments.
        finish = choices[0].get("finish_reason")
        if finish == "length":
            raise bad(
                "the answer was cut off (finish_reason length); raise `max_tokens` or "
                "`max_completion_tokens` in the model's parameters"
            )
        if finish == "content_filter":
            raise bad("the provider's content filter withheld the answer (finish_reason content_filter)")
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            raise bad(f"the model refused to answer: {message['refusal']:.200}")
        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):  # iterating a number or a string would crash, not fail the call
            raise bad(f"the message's tool_calls is not a list: {raw_calls!r:.100}")
        calls = tuple(_tool_call(c, i, bad) for i, c in enumerate(raw_calls))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        parsed = parse_structured(text) if request.response_schema is not None and not calls else NOT_JSON
        if parsed is not NOT_JSON and _wraps(request.response_schema, schema_mode):
            # the answer inside its wrapper, which is how it is used and logged (as for `anthropic`);
            # `{"value": null}` is the answer null, its text `null`
            if isinstance(parsed, dict) and set(parsed) == {"value"}:
                parsed = parsed["value"]
                text = json.dumps(parsed)
            else:
                parsed = NOT_JSON  # not the answer asked for: the agent loop re-asks with the problem
        structured = None if parsed is NOT_JSON else parsed
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))),
            finish_reason=choices[0].get("finish_reason"),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            structured=structured,
        )


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    return out


def _content_text(content: Any, bad: Any) -> str | None:
    """The answer's text. Some compatible servers answer with a list of content parts, as requests may
    send them (`[{"type": "text", "text": ...}]`): their text is the answer; any other shape is not one."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    raise bad(f"message content is not a string: {content!r:.100}")


def _tool_call(raw: Any, index: int, bad: Any) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise bad(f"tool call {index} is not an object with a function")
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"tool call {index} has no function name")
    call_id = raw.get("id") if isinstance(raw.get("id"), str) else f"call_{index}"
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # some compatible servers send an object, not a string
        return ToolCall(call_id, name, arguments)
    try:
        parsed = strict_json(arguments or "{}")
    except (TypeError, ValueError):
        return ToolCall(call_id, name, {}, error=f"the arguments are not valid JSON: {arguments!r:.200}")
    if not isinstance(parsed, dict):
        return ToolCall(call_id, name, {}, error=f"the arguments are not a JSON object: {arguments!r:.200}")
    return ToolCall(call_id, name, parsed)


def _wraps(schema: Any, schema_mode: str) -> bool:
    """Whether the answer to `schema` is asked for wrapped in an object: `json_schema` (OpenAI refuses a
    schema whose root is not an object) and `json_object` (the answer is always an object) cannot give a
    string, a number or a list themselves."""
    return isinstance(schema, dict) and schema.get("type") != "object" and schema_mode != "plain"


def _wrapped(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"value": schema},
        "required": ["value"],
        "additionalProperties": False,
    }


def _rejects_format(error: ModelRequestError) -> bool:
    """Whether a 4xx says the server does not support the response_format we sent."""
    detail = str(getattr(error, "detail", "")).lower()
    return getattr(error, "status", None) in (400, 404, 415, 422) and (
        "response_format" in detail or "json_schema" in detail or "json_object" in detail
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
