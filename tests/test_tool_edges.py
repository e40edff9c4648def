"""Tools at the edges: HTTP requests that cannot be sent, slow bodies, header and body values that are not
strings, the idempotency key header, MCP time limits, and Python tools raising CancelledError. Against a
real HTTP server on 127.0.0.1, a real MCP server process and real SQLite event logs."""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fixtures.http_server import serving
from fixtures.workflows import written

from interpreter import RunOptions, replay_run, run_workflow

MODULE = "edge_tool_tools"
TOOLS = """
import asyncio

async def awaits_a_cancelled_task():
    helper = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    helper.cancel()
    return await helper  # raises CancelledError: the tool's own failure, not the step's cancellation

def raises_cancelled():
    raise asyncio.CancelledError("from a thread")

STARTED = None  # set by `hangs` once it runs: `after_hangs` waits for it, so the join's loser is in its call

async def hangs():
    global STARTED
    STARTED = STARTED or asyncio.Event()
    STARTED.set()
    await asyncio.sleep(30)

async def after_hangs():
    global STARTED
    STARTED = STARTED or asyncio.Event()
    await STARTED.wait()
    STARTED = None
    return "first"
"""

MCP_SERVER = "edge_mcp_server"  # tests/fixtures/mcp_server.py, copied beside the workflows
OPTS = RunOptions(allow_modules=(MODULE, MCP_SERVER))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("edges")
    (d / f"{MODULE}.py").write_text(TOOLS)
    shutil.copy(Path(__file__).parent / "fixtures" / "mcp_server.py", d / f"{MCP_SERVER}.py")
    return d


class _Handler(BaseHTTPRequestHandler):
    """`/echo` answers what it received: the raw header lines and the body; `/slowbody` sends a long body
    one byte at a time, each well within any per-read timeout."""

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8") if length else None
        headers = [[k.lower(), v] for k, v in self.headers.items()]
        data = json.dumps({"path": self.path, "headers": headers, "body": body}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/slowbody"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "600")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up: what this test expects
                pass
            return
        self._echo()

    def do_POST(self) -> None:  # noqa: N802
        self._echo()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(_Handler) as url:
        yield url


def kinds(store: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.kind == kind]


# --------------------------------------------------------------------------------------------------
# HTTP: a request that cannot be made is a step error (`http`), never the run's `internal` failure


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "José"}, "the value of header 'X-Name' is not ASCII"),
        ({"name": "a\nb"}, "the value of header 'X-Name' holds a line break"),
        ({"host": "127.0.0.1:99999"}, "the port 99999 is out of range"),
        ({"host": "[::1"}, "InvalidURL"),
    ],
)
def test_a_request_that_cannot_be_sent_is_an_http_error_that_catch_sees_and_replay_reproduces(
    store: Any, workdir: Path, server: str, args: dict[str, str], message: str
) -> None:
    host = server.removeprefix("http://")
    graph = written(
        workdir,
        "unsendable",
        """\
        charter: "1.0"
        name: unsendable
        input: {type: object}
        vars: {error: null}
        tools:
          call:
            effect: read
            http:
              method: GET
              url: "http://${{ args.host }}/echo"
              headers: {X-Name: "${{ args.name }}"}
        steps:
          - id: t
            try:
              steps:
                - id: c
                  retry: {attempts: 3, backoff: {initial: 10ms}}
                  tool: call
                  args: {host: "${{ input.host }}", name: "${{ input.name }}"}
              catch:
                steps: [{id: why, set: {error: "${{ error }}"}}]
        output: {error: "${{ vars.error }}"}
        """,
    )
    result = run_workflow(graph, {"host": host, "name": "x", **args}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    error = result.output["error"]
    assert error["code"] == "http" and message in error["message"] and "cannot be sent" in error["message"]
    # Every call that started has its end in the log; another attempt cannot change it: made once.
    assert len(kinds(store, result.run_id, "tool.called")) == 1
    assert [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")] == ["http"]
    assert replay_run(result.run_id, store=store).ok


def test_an_agent_hears_of_a_request_that_cannot_be_sent_and_goes_on(
    store: Any, workdir: Path, server: str
) -> None:
    (workdir / "agent_answers.yaml").write_text(
        json.dumps(
            {
                "responses": [
                    {"step": "ag", "turn": 1, "tool_calls": [{"name": "hdr", "args": {"name": "José"}}]},
                    {"step": "ag", "turn": 2, "text": "done"},
                ]
            }
        )
    )
    graph = written(
        workdir,
        "agent_unsendable",
        f"""\
        charter: "1.0"
        name: agent-unsendable
        models: {{default: {{provider: scripted, responses: agent_answers.yaml}}}}
        tools:
          hdr:
            effect: read
            args: {{type: object, properties: {{name: {{type: string}}}}}}
            http: {{method: GET, url: "{server}/echo", headers: {{X-Name: "${{{{ args.name }}}}"}}}}
        identities: {{bot: {{kind: agent}}}}
        grants: [{{id: g, to: bot, tools: [hdr]}}]
        steps:
          - id: ag
            agent: {{identity: bot, tools: [hdr], prompt: "greet José"}}
        output: {{answer: "${{{{ steps.ag.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"answer": "done"}
    failed = kinds(store, result.run_id, "tool.failed")
    assert len(failed) == 1 and failed[0]["error"]["code"] == "http"
    assert replay_run(result.run_id, store=store).ok


# --------------------------------------------------------------------------------------------------
# HTTP: `http.timeout` bounds the whole request, not each read


def test_the_http_timeout_cuts_off_a_body_that_trickles_in(store: Any, workdir: Path, server: str) -> None:
    """The server sends a byte every 50 ms for 30 s: no read waits anywhere near the 0.5 s limit."""
    graph = written(
        workdir,
        "slowbody",
        f"""\
        charter: "1.0"
        name: slowbody
        tools:
          slow: {{effect: read, http: {{method: GET, url: "{server}/slowbody", timeout: 500ms}}}}
        steps:
          - id: s
            retry: {{attempts: 2, backoff: {{initial: 10ms}}, on: [timeout]}}
            tool: slow
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout"
    assert "timed out after 500ms" in result.error["message"]
    assert [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")] == ["timeout", "timeout"]


# --------------------------------------------------------------------------------------------------
# HTTP: a header, body or query value that is not a string is sent as its JSON text


def test_values_that_are_not_strings_are_sent_as_json_text(store: Any, workdir: Path, server: str) -> None:
    graph = written(
        workdir,
        "nonstrings",
        f"""\
        charter: "1.0"
        name: nonstrings
        tools:
          send:
            effect: write
            http:
              method: POST
              url: "{server}/echo"
              headers:
                X-Bool: "${{{{ args.b }}}}"
                X-Null: "${{{{ args.n }}}}"
                X-Map: "${{{{ args.m }}}}"
                X-Text: "${{{{ args.s }}}}"
                X-Said: "v=${{{{ args.b }}}}"
                X-Literal: true
              query: {{m: "${{{{ args.m }}}}", l: "${{{{ args.l }}}}", f: "${{{{ args.f }}}}"}}
              body: "${{{{ args.u }}}}"
        steps:
          - id: s
            tool: send
            args: {{b: true, n: null, m: {{a: 1}}, s: "as is", l: [1, "x"], f: 1.5, u: {{t: "é"}}}}
        output: {{echo: "${{{{ steps.s.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    echo = result.output["echo"]
    headers = dict(echo["headers"])
    assert headers["x-bool"] == "true" and headers["x-said"] == "v=true"  # as interpolation has it
    assert headers["x-null"] == "null" and headers["x-literal"] == "true"
    assert headers["x-text"] == "as is" and json.loads(headers["x-map"]) == {"a": 1}
    assert echo["body"] == '{"t":"é"}'
    query = parse_qs(urlparse(echo["path"]).query)
    assert query == {"m": ['{"a":1}'], "l": ["1", "x"], "f": ["1.5"]}


# --------------------------------------------------------------------------------------------------
# HTTP: one Idempotency-Key header, the definition's own when it sets one in any case


def test_an_idempotency_key_header_set_in_any_case_is_sent_once_and_wins(
    store: Any, workdir: Path, server: str
) -> None:
    graph = written(
        workdir,
        "idem",
        f"""\
        charter: "1.0"
        name: idem
        tools:
          own: {{effect: write, http: {{url: "{server}/echo", headers: {{idempotency-key: "order-${{{{ args.n }}}}"}}}}}}
          charters: {{effect: write, http: {{url: "{server}/echo"}}}}
        steps:
          - {{id: a, tool: own, args: {{n: 7}}}}
          - {{id: b, tool: charters, args: {{}}}}
        output: {{a: "${{{{ steps.a.output.headers }}}}", b: "${{{{ steps.b.output.headers }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    for step, expected in (("a", "order-7"), ("b", f"{result.run_id}/b/1")):
        keys = [v for k, v in result.output[step] if k == "idempotency-key"]
        assert keys == [expected]


# --------------------------------------------------------------------------------------------------
# Python tools: a CancelledError the tool raised is its failure; a cancellation from outside still cancels


@pytest.mark.parametrize("tool", ["awaits_a_cancelled_task", "raises_cancelled"])
def test_a_cancelled_error_the_tool_raised_itself_is_a_tool_error(
    store: Any, workdir: Path, tool: str
) -> None:
    graph = written(
        workdir,
        f"own_cancel_{tool}",
        f"""\
        charter: "1.0"
        name: own-cancel
        vars: {{error: null}}
        tools:
          t: {{python: "{MODULE}:{tool}", effect: read}}
        steps:
          - id: caught
            try:
              steps: [{{id: c, tool: t}}]
              catch:
                steps: [{{id: why, set: {{error: "${{{{ error }}}}"}}}}]
          - {{id: uncaught, tool: t}}
        output: {{error: "${{{{ vars.error }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "tool"
    assert "tool 't' raised CancelledError" in result.error["message"]
    assert store.run(result.run_id).status == "failed"  # ended, not left `running`
    caught = next(e.payload for e in store.events(result.run_id) if e.kind == "vars.set")
    assert caught["vars"]["error"]["code"] == "tool"
    assert [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")] == ["tool", "tool"]
    assert replay_run(result.run_id, store=store).ok


def test_a_cancellation_from_outside_still_cancels_the_tool(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "outside_cancel",
        f"""\
        charter: "1.0"
        name: outside-cancel
        tools:
          hangs: {{python: "{MODULE}:hangs", effect: read}}
          after_hangs: {{python: "{MODULE}:after_hangs", effect: read}}
        steps:
          - id: race
            parallel:
              join: any
              branches:
                - [{{id: quick, tool: after_hangs}}]
                - [{{id: loser, tool: hangs}}]
          - {{id: cut, timeout: 200ms, tool: hangs}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout", result.error
    assert result.error["step"] == "cut"
    codes = [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")]
    assert codes == ["cancelled", "cancelled"]  # the join's loser and the timed-out call: not `tool`


# --------------------------------------------------------------------------------------------------
# MCP: a declared timeout governs the call and the server's start; the client's own limits (shortened
# here) apply only when nothing is declared, and cut off with code `timeout`


def mcp_flow(
    workdir: Path, name: str, *, tool_timeout: str = "", step_timeout: str = "", seconds: float
) -> Any:
    tool_limit = f", timeout: {tool_timeout}" if tool_timeout else ""
    step_limit = (
        f"timeout: {step_timeout}"
        if step_timeout
        else "retry: {attempts: 2, backoff: {initial: 10ms}, on: [timeout]}"
    )
    return written(
        workdir,
        name,
        f"""\
        charter: "1.0"
        name: {name}
        tools:
          nap: {{mcp: {{command: [python, -m, {MCP_SERVER}], tool: sleep}}, effect: read{tool_limit}}}
        steps:
          - id: s
            {step_limit}
            tool: nap
            args: {{seconds: {seconds}}}
        output: {{answer: "${{{{ steps.s.output }}}}"}}
        """,
    )


def short_defaults(monkeypatch: pytest.MonkeyPatch, *, startup: float, call: float) -> None:
    """The run's MCP client pool with these default limits (the real ones are 30 s and 60 s)."""
    from interpreter import mcp_client

    pool = mcp_client.McpClientPool
    monkeypatch.setattr(
        mcp_client, "McpClientPool", functools.partial(pool, startup_timeout=startup, call_timeout=call)
    )


@pytest.mark.parametrize(
    ("tool_timeout", "step_timeout"), [("20s", ""), ("", "20s")], ids=["tool timeout", "step timeout"]
)
def test_a_declared_timeout_governs_an_mcp_call_and_start_not_the_clients_defaults(
    store: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch, tool_timeout: str, step_timeout: str
) -> None:
    # Defaults far below what the server needs to start (a Python process importing the SDK) and to
    # answer (it sleeps 1 s): only a declared limit lets the call through.
    short_defaults(monkeypatch, startup=0.01, call=0.2)
    graph = mcp_flow(workdir, "mcp_declared", tool_timeout=tool_timeout, step_timeout=step_timeout, seconds=1)
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"answer": "woke up"}


def test_an_agent_steps_own_timeout_governs_the_start_of_the_server_that_describes_its_tool(
    store: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent asks the server for the tool's description (no `args` declared) before its first model
    # call: the agent step's `timeout` bounds that start, not the client's default (here 0.01 s).
    short_defaults(monkeypatch, startup=0.01, call=0.2)
    (workdir / "agent_mcp.responses.yaml").write_text(
        "responses:\n  - {step: ag, tool_calls: [{name: nap, args: {seconds: 0.1}}]}\n"
        "  - {step: ag, turn: 2, text: rested}\n"
    )
    graph = written(
        workdir,
        "agent_mcp",
        f"""\
        charter: "1.0"
        name: agent_mcp
        models:
          default: {{provider: scripted, responses: agent_mcp.responses.yaml}}
        tools:
          nap: {{mcp: {{command: [python, -m, {MCP_SERVER}], tool: sleep}}, effect: read}}
        identities: {{bot: {{kind: agent}}}}
        grants: [{{id: g, to: bot, tools: [nap]}}]
        steps:
          - id: ag
            timeout: 20s
            agent: {{identity: bot, tools: [nap], prompt: rest}}
        output: {{answer: "${{{{ steps.ag.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert (result.status, result.output) == ("completed", {"answer": "rested"}), result.error


def test_an_mcp_call_past_its_declared_timeout_fails_with_timeout_and_is_retried(
    store: Any, workdir: Path
) -> None:
    graph = mcp_flow(workdir, "mcp_cut", tool_timeout="1s", seconds=10)
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout"
    assert [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")] == ["timeout", "timeout"]


@pytest.mark.parametrize("which", ["start", "call"])
def test_the_mcp_clients_default_limits_fail_with_timeout_when_nothing_is_declared(
    store: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    if which == "start":
        short_defaults(monkeypatch, startup=0.01, call=60)
    else:
        short_defaults(monkeypatch, startup=30, call=0.2)
    graph = mcp_flow(workdir, "mcp_default", seconds=1)
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "timeout", result.error
    expected = "did not start within 0.01s" if which == "start" else "no answer within 0.2s"
    assert expected in result.error["message"]
    # `retry: {on: [timeout]}` applies: two attempts, each cut off
    assert [f["error"]["code"] for f in kinds(store, result.run_id, "tool.failed")] == ["timeout", "timeout"]
