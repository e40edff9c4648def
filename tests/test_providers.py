"""OpenAI-compatible and Anthropic providers against a real HTTP server on 127.0.0.1 started by the tests.

The server speaks both protocols; the first path segment picks a scenario (plain answer, tool calls,
structured output, malformed JSON, 429 then success, 500s, slow answers, dropped connections, ...).
Waits between retries go through the provider's `sleep` hook, so the tests see which waits were asked
for without waiting.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from interpreter.providers import (
    Message,
    ModelAuthError,
    ModelBadResponseError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelRequest,
    ModelServerError,
    ModelTimeoutError,
    ToolCall,
    ToolSpec,
    Usage,
    compute_cost,
    get_provider,
)
from interpreter.providers._http import RetryPolicy
from interpreter.providers.anthropic import AnthropicProvider
from interpreter.providers.openai import OpenAIProvider

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=60.0)
SCHEMA = {"type": "object", "properties": {"risk": {"type": "string"}}, "required": ["risk"]}
LOOKUP = ToolSpec(
    "lookup_company", "Look a company up.", {"type": "object", "properties": {"name": {"type": "string"}}}
)


# --- the server ---------------------------------------------------------------------------------------


def openai_answer(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "test-model-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


def anthropic_answer(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": 20, "output_tokens": 7},
    }


class FakeLLMServer:
    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.headers: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                scenario = self.path.strip("/").split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests[scenario].append(body)
                    server.headers[scenario].append(dict(self.headers))
                    count = len(server.requests[scenario])
                anthropic = self.path.endswith("/v1/messages")
                server.answer(self, scenario, count, body, anthropic)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout tests)

    def answer(
        self, h: BaseHTTPRequestHandler, scenario: str, count: int, body: dict, anthropic: bool
    ) -> None:
        def ok(text: str | None = None, **extra: Any) -> None:
            if anthropic:
                self.send(h, 200, anthropic_answer(extra.get("content") or [{"type": "text", "text": text}]))
            else:
                self.send(h, 200, openai_answer({"content": text, **extra}))

        if scenario == "plain":
            ok("Hello from the model.")
        elif scenario == "tools":
            if anthropic:
                content = [
                    {"type": "text", "text": "Looking up."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup_company",
                        "input": {"name": "ACME"},
                    },
                ]
                self.send(h, 200, anthropic_answer(content, "tool_use"))
            else:
                calls = [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "lookup_company", "arguments": '{"name": "ACME"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "lookup_company", "arguments": "{oops"},
                    },
                ]
                self.send(h, 200, openai_answer({"content": None, "tool_calls": calls}, "tool_calls"))
        elif scenario == "structured":
            if anthropic:
                ok(
                    content=[
                        {"type": "tool_use", "id": "toolu_9", "name": "respond", "input": {"risk": "medium"}}
                    ]
                )
            else:
                ok('{"risk": "medium"}')
        elif scenario == "noschema":  # an OpenAI-compatible server that knows only json_object
            if body.get("response_format", {}).get("type") == "json_schema":
                self.send(h, 400, {"error": {"message": "response_format json_schema is not supported"}})
            else:
                ok('```json\n{"risk": "low"}\n```')
        elif scenario == "malformed":
            self.send(h, 200, b'{"choices": [{"message": {"content": "cut off')
        elif scenario == "nan":  # Python's json module reads it; JSON (and the event log) has no NaN
            self.send(
                h, 200, b'{"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "n": NaN}'
            )
        elif scenario == "overflow":  # 1e999: Python reads infinity, which no log can hold
            call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1e999}'}}
            self.send(h, 200, openai_answer({"content": None, "tool_calls": [call]}, "tool_calls"))
        elif scenario == "shapeless":
            self.send(h, 200, {"object": "something else"})
        elif scenario == "cutoff":
            self.send(h, 200, openai_answer({"content": '{"risk": "hi'}, "length"))
        elif scenario == "refusal":
            self.send(h, 200, openai_answer({"content": None, "refusal": "I can't help with that."}))
        elif scenario.startswith("ratelimit") and count == 1:
            self.send(h, 429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "7"})
        elif scenario.startswith("flaky") and count == 1:
            self.send(h, 500, {"error": {"message": "internal error"}})
        elif scenario == "down":
            self.send(
                h, 529 if anthropic else 503, {"error": {"type": "overloaded_error", "message": "Overloaded"}}
            )
        elif scenario == "always429":
            self.send(h, 429, {"error": {"message": "Slow down"}}, {"Retry-After": "0"})
        elif scenario == "auth":
            self.send(h, 401, {"error": {"message": "Incorrect API key provided"}})
        elif scenario == "slow":
            self.release.wait(10)
            ok("too late")
        elif scenario == "drop" or (scenario.startswith("droponce") and count == 1):
            h.close_connection = True
            h.connection.close()  # no status line at all: the client sees the connection drop
        else:
            ok("recovered")

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def ask(text: str = "Hi", **fields: Any) -> ModelRequest:
    return ModelRequest(messages=(Message("system", "Be brief."), Message("user", text)), **fields)


def run_openai(url: str, request: ModelRequest, **kwargs: Any) -> tuple[Any, list[float]]:
    return _run(
        lambda: OpenAIProvider(
            model="test-model", base_url=url, api_key="sk-test", retry=FAST_RETRY, **kwargs
        ),
        request,
    )


def run_anthropic(url: str, request: ModelRequest, **kwargs: Any) -> tuple[Any, list[float]]:
    return _run(
        lambda: AnthropicProvider(
            model="claude-test", base_url=url, api_key="ak-test", retry=FAST_RETRY, **kwargs
        ),
        request,
    )


def _run(make: Any, request: ModelRequest) -> tuple[Any, list[float]]:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> Any:
        provider = make()
        provider.http.sleep = record
        try:
            return await provider.complete(request)
        finally:
            await provider.close()

    return asyncio.run(go()), waits


# --- OpenAI-compatible ------------------------------------------------------------------------------------


def test_openai_plain_answer(server: FakeLLMServer) -> None:
    response, waits = run_openai(server.url("plain"), ask(parameters={"temperature": 0}))
    assert response.text == "Hello from the model."
    assert response.tool_calls == ()
    assert response.usage == Usage(12, 5)
    assert response.finish_reason == "stop"
    assert response.model == "test-model-0613"
    assert response.latency_ms > 0
    assert waits == []
    sent = server.requests["plain"][-1]
    assert sent["model"] == "test-model" and sent["temperature"] == 0
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert server.headers["plain"][-1]["Authorization"] == "Bearer sk-test"


def test_openai_tool_calls_round_trip(server: FakeLLMServer) -> None:
    history = (
        Message("user", "Assess ACME"),
        Message("assistant", "", tool_calls=(ToolCall("call_0", "lookup_company", {"name": "ACME"}),)),
        Message("tool", '{"rating": "A"}', tool_call_id="call_0"),
    )
    response, _ = run_openai(server.url("tools"), ModelRequest(messages=history, tools=(LOOKUP,)))
    assert response.finish_reason == "tool_calls"
    good, bad = response.tool_calls
    assert good == ToolCall("call_a", "lookup_company", {"name": "ACME"})
    assert bad.name == "lookup_company" and bad.arguments == {} and "not valid JSON" in (bad.error or "")
    sent = server.requests["tools"][-1]
    assert sent["tools"][0]["function"]["name"] == "lookup_company"
    assistant, tool = sent["messages"][1], sent["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "lookup_company",
        "arguments": '{"name": "ACME"}',
    }
    assert tool == {"role": "tool", "tool_call_id": "call_0", "content": '{"rating": "A"}'}


def test_openai_structured_output_uses_json_schema(server: FakeLLMServer) -> None:
    response, _ = run_openai(server.url("structured"), ask(response_schema=SCHEMA))
    assert response.structured == {"risk": "medium"}
    assert server.requests["structured"][-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA},
    }


def test_openai_falls_back_when_server_rejects_json_schema(server: FakeLLMServer) -> None:
    response, _ = run_openai(server.url("noschema"), ask(response_schema=SCHEMA))
    assert response.structured == {"risk": "low"}
    first, second = server.requests["noschema"][-2:]
    assert first["response_format"]["type"] == "json_schema"
    assert second["response_format"] == {"type": "json_object"}
    assert json.dumps(SCHEMA) in second["messages"][0]["content"]


def test_openai_malformed_json_is_a_bad_response(server: FakeLLMServer) -> None:
    with pytest.raises(ModelBadResponseError) as caught:
        run_openai(server.url("malformed"), ask())
    message = str(caught.value)
    assert message.startswith("openai model call to http://127.0.0.1:")
    assert "/malformed/v1/chat/completions failed: the answer is not JSON" in message


def test_openai_nan_is_not_json(server: FakeLLMServer) -> None:
    with pytest.raises(ModelBadResponseError, match="the answer is not JSON"):
        run_openai(server.url("nan"), ask())


def test_openai_tool_arguments_overflowing_a_double_are_not_json(server: FakeLLMServer) -> None:
    response, _ = run_openai(server.url("overflow"), ask())
    (call,) = response.tool_calls
    assert call.arguments == {} and call.error is not None and "not valid JSON" in call.error


def test_openai_json_without_choices_is_a_bad_response(server: FakeLLMServer) -> None:
    with pytest.raises(ModelBadResponseError, match="has no choices"):
        run_openai(server.url("shapeless"), ask())


def test_openai_cut_off_or_refused_answer_is_an_error_not_an_answer(server: FakeLLMServer) -> None:
    with pytest.raises(ModelBadResponseError, match="cut off .finish_reason length.; raise `max_tokens`"):
        run_openai(server.url("cutoff"), ask(response_schema=SCHEMA))
    with pytest.raises(ModelBadResponseError, match="refused to answer: I can't help with that"):
        run_openai(server.url("refusal"), ask())


def test_openai_429_honours_retry_after_then_succeeds(server: FakeLLMServer) -> None:
    response, waits = run_openai(server.url("ratelimit"), ask())
    assert response.text == "recovered"
    assert waits == [7.0]
    assert len(server.requests["ratelimit"]) == 2


def test_a_retry_after_beyond_the_call_timeout_gives_up_at_once(server: FakeLLMServer) -> None:
    """The model's timeout bounds the whole call: a Retry-After (7 s) that would outlast it (5 s) is
    not waited for; the rate-limit error is the call's answer, after one attempt."""
    before = len(server.requests["ratelimit-long"])
    with pytest.raises(ModelRateLimitError, match="gave up after 1 attempt\\)"):
        _, waits = run_openai(server.url("ratelimit-long"), ask(), timeout=5.0)
    assert len(server.requests["ratelimit-long"]) == before + 1


def test_openai_500_then_success_backs_off(server: FakeLLMServer) -> None:
    response, waits = run_openai(server.url("flaky"), ask())
    assert response.text == "recovered"
    assert len(waits) == 1 and 0.005 <= waits[0] <= 0.01


def test_openai_persistent_5xx_gives_up_with_clear_error(server: FakeLLMServer) -> None:
    before = len(server.requests["down"])
    with pytest.raises(ModelServerError) as caught:
        run_openai(server.url("down"), ask())
    assert "HTTP 503: Overloaded (gave up after 3 attempts)" in str(caught.value)
    assert len(server.requests["down"]) - before == 3


def test_openai_backoff_grows_exponentially(server: FakeLLMServer) -> None:
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=3.0)
    waits = [policy.backoff(n) for n in (1, 2, 3)]
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 1.5 <= waits[2] <= 3.0


def test_openai_auth_error_is_not_retried(server: FakeLLMServer) -> None:
    with pytest.raises(ModelAuthError, match="HTTP 401: Incorrect API key provided"):
        run_openai(server.url("auth"), ask())
    assert len(server.requests["auth"]) == 1


def test_openai_slow_answer_times_out(server: FakeLLMServer) -> None:
    with pytest.raises(ModelTimeoutError, match="no answer within 0.3s"):
        run_openai(server.url("slow"), ask(), timeout=0.3)


def test_openai_dropped_connection_is_retried(server: FakeLLMServer) -> None:
    response, waits = run_openai(server.url("droponce"), ask())
    assert response.text == "recovered" and len(waits) == 1


def test_openai_always_dropped_connection_is_a_connection_error(server: FakeLLMServer) -> None:
    with pytest.raises(ModelConnectionError, match="connection dropped.*gave up after 3 attempts"):
        run_openai(server.url("drop"), ask())


def test_openai_unreachable_server_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelConnectionError, match="cannot connect"):
        run_openai(f"http://127.0.0.1:{port}/v1", ask())


# --- Anthropic ------------------------------------------------------------------------------------------


def test_anthropic_plain_answer(server: FakeLLMServer) -> None:
    response, _ = run_anthropic(server.url("plain"), ask())
    assert response.text == "Hello from the model."
    assert response.usage == Usage(20, 7)
    assert response.finish_reason == "end_turn"
    sent = server.requests["plain"][-1]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert sent["max_tokens"] == 4096
    headers = server.headers["plain"][-1]
    assert headers["x-api-key"] == "ak-test" and headers["anthropic-version"] == "2023-06-01"


def test_anthropic_tool_use_and_tool_results(server: FakeLLMServer) -> None:
    history = (
        Message("user", "Assess ACME and Globex"),
        Message(
            "assistant",
            "Checking.",
            tool_calls=(
                ToolCall("t1", "lookup_company", {"name": "ACME"}),
                ToolCall("t2", "lookup_company", {"name": "Globex"}),
            ),
        ),
        Message("tool", "rated A", tool_call_id="t1"),
        Message("tool", "no such company", tool_call_id="t2", is_error=True),
    )
    response, _ = run_anthropic(server.url("tools"), ModelRequest(messages=history, tools=(LOOKUP,)))
    assert response.text == "Looking up."
    assert response.tool_calls == (ToolCall("toolu_1", "lookup_company", {"name": "ACME"}),)
    assert response.finish_reason == "tool_use"
    sent = server.requests["tools"][-1]
    assert sent["tools"] == [
        {"name": "lookup_company", "description": "Look a company up.", "input_schema": LOOKUP.parameters}
    ]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "t1",
        "name": "lookup_company",
        "input": {"name": "ACME"},
    }
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "rated A"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "no such company", "is_error": True},
    ]


def test_anthropic_structured_output_through_forced_tool(server: FakeLLMServer) -> None:
    response, _ = run_anthropic(server.url("structured"), ask(response_schema=SCHEMA))
    assert response.structured == {"risk": "medium"}
    assert json.loads(response.text or "") == {"risk": "medium"}
    assert response.tool_calls == ()
    sent = server.requests["structured"][-1]
    assert sent["tool_choice"] == {"type": "tool", "name": "respond"}
    assert sent["tools"][-1]["input_schema"] == SCHEMA


def test_anthropic_malformed_json_is_a_bad_response(server: FakeLLMServer) -> None:
    with pytest.raises(
        ModelBadResponseError, match=r"anthropic model call to .*/v1/messages failed: the answer is not JSON"
    ):
        run_anthropic(server.url("malformed"), ask())


def test_anthropic_429_then_success(server: FakeLLMServer) -> None:
    response, waits = run_anthropic(server.url("ratelimit-anthropic"), ask())
    assert response.text == "recovered" and waits == [7.0]


def test_anthropic_500_then_success(server: FakeLLMServer) -> None:
    response, waits = run_anthropic(server.url("flaky-anthropic"), ask())
    assert response.text == "recovered" and len(waits) == 1


def test_anthropic_overloaded_gives_up(server: FakeLLMServer) -> None:
    with pytest.raises(ModelServerError, match="HTTP 529: Overloaded .gave up after 3 attempts"):
        run_anthropic(server.url("down"), ask())


def test_anthropic_slow_and_dropped(server: FakeLLMServer) -> None:
    with pytest.raises(ModelTimeoutError):
        run_anthropic(server.url("slow"), ask(), timeout=0.3)
    with pytest.raises(ModelConnectionError):
        run_anthropic(server.url("drop"), ask())


def test_persistent_429_is_a_rate_limit_error(server: FakeLLMServer) -> None:
    with pytest.raises(ModelRateLimitError, match="HTTP 429: Slow down .gave up after 3 attempts"):
        _, waits = run_openai(server.url("always429"), ask())
    assert len(server.requests["always429"]) == 3


# --- the registry -------------------------------------------------------------------------------------


def test_get_provider_from_declaration_with_env_key(server: FakeLLMServer) -> None:
    declared = {
        "provider": "openai",
        "model": "gpt-x",
        "base_url": server.url("plain"),
        "api_key_env": "MY_KEY",
    }

    async def go() -> Any:
        provider = get_provider(declared, environ={"MY_KEY": "sk-env"})
        try:
            return await provider.complete(ask())
        finally:
            await provider.close()

    assert asyncio.run(go()).text == "Hello from the model."
    assert server.headers["plain"][-1]["Authorization"] == "Bearer sk-env"


def test_cost_from_declared_prices() -> None:
    assert compute_cost(Usage(1000, 500), {"input_per_1k": 0.5, "output_per_1k": 2.0}) == pytest.approx(1.5)
    assert compute_cost(Usage(1000, 500), None) is None
