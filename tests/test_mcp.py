"""The MCP client against real MCP server processes: tests/fixtures/mcp_server.py (written with the SDK),
mcp_crash_server.py (it with tools that make it exit), mcp_garbage_server.py (servers answering with
something that is not MCP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from interpreter.loop import run_coroutine  # noqa: E402
from interpreter.mcp_client import (  # noqa: E402
    NO_LIMIT,
    McpArgumentError,
    McpClientPool,
    McpConnection,
    McpError,
    McpServerConfig,
    McpServerError,
    McpToolError,
)
from tests.fixtures.charter_cli import charter, charter_cmd, child_env  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SERVER = str(FIXTURES / "mcp_server.py")
STDIO = McpServerConfig.create(command=[sys.executable, SERVER])
CRASHING = McpServerConfig.create(command=[sys.executable, str(FIXTURES / "mcp_crash_server.py")])
GARBAGE = str(FIXTURES / "mcp_garbage_server.py")


def with_pool(body: Callable[[McpClientPool], Awaitable[Any]], **kwargs: Any) -> Any:
    async def go() -> Any:
        pool = McpClientPool(**{"startup_timeout": 30.0, "call_timeout": 30.0, **kwargs})
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_lists_tools_with_their_schemas() -> None:
    tools = with_pool(lambda pool: pool.list_tools(STDIO))
    by_name = {t.name: t for t in tools}
    assert sorted(by_name) == [
        "add",
        "boxed",
        "echo",
        "fail",
        "nothing",
        "primes",
        "profile",
        "ratio",
        "sleep",
    ]
    assert by_name["add"].description == "Add two integers."
    assert by_name["add"].input_schema["required"] == ["a", "b"]


def test_calls_a_tool_and_reuses_one_server() -> None:
    async def body(pool: McpClientPool) -> Any:
        first, second = await asyncio.gather(pool.connection(STDIO), pool.connection(STDIO))
        assert first is second  # two steps asking at once still start one server
        return [
            await pool.call(STDIO, "add", {"a": 2, "b": 3}),
            await pool.call(STDIO, "add", {"a": -1, "b": 1}),
        ]

    five, zero = with_pool(body)
    assert five.text == "5" and five.value == 5 and not five.is_error
    assert zero.value == 0
    assert five.to_record()["content"] == [{"type": "text", "text": "5"}]


def test_a_result_is_what_the_tool_returned() -> None:
    """The SDK sends a value that is not an object as structured content {"result": value}; the client
    gives the value back as it was. Objects stay as they are, even one whose only key is `result`."""
    calls = [
        ("echo", {"text": "hello"}),
        ("echo", {"text": '{"result": "x"}'}),  # a string that looks like the wrapper is still a string
        ("ratio", {"a": 1, "b": 4}),
        ("primes", {"below": 12}),
        ("primes", {"below": 2}),
        ("nothing", {}),
        ("profile", {"name": "Ann"}),
        ("boxed", {"text": "in a box"}),
    ]

    async def body(pool: McpClientPool) -> list[Any]:
        return [await pool.call(STDIO, tool, args) for tool, args in calls]

    results = with_pool(body)
    assert [r.value for r in results] == [
        "hello",
        '{"result": "x"}',
        0.25,
        [2, 3, 5, 7, 11],
        [],
        None,
        {"name": "Ann", "tags": ["a", "b"], "age": 41},
        {"result": "in a box"},
    ]
    echo, boxed = results[0], results[-1]
    assert echo.wrapped and echo.structured == {"result": "hello"}  # the record keeps what was sent
    assert not boxed.wrapped and boxed.structured == {"result": "in a box"}


def test_tool_error_is_reported_and_server_keeps_running() -> None:
    async def body(pool: McpClientPool) -> Any:
        with pytest.raises(McpToolError) as caught:
            await pool.call(STDIO, "fail", {"reason": "nope"})
        assert caught.value.result.is_error
        return str(caught.value), await pool.call(STDIO, "add", {"a": 1, "b": 1})

    message, after = with_pool(body)
    assert "tool 'fail' reported an error: " in message and "fail tool refused: nope" in message
    assert after.value == 2


def test_arguments_are_validated_before_the_call() -> None:
    async def body(pool: McpClientPool) -> None:
        with pytest.raises(
            McpArgumentError,
            match=r"tool 'add': invalid arguments: 'b' is a required property; at `a`: 'x' is not of type 'integer'$",
        ):
            await pool.call(STDIO, "add", {"a": "x"})
        with pytest.raises(
            McpArgumentError,
            match="has no tool 'nope'; its tools: add, boxed, echo, fail, nothing, primes, profile, ratio, sleep",
        ):
            await pool.call(STDIO, "nope", {})

    with_pool(body)


def test_server_that_exits_immediately_is_a_clear_error() -> None:
    config = McpServerConfig.create(command=[sys.executable, SERVER, "exit"])
    with pytest.raises(McpServerError) as caught:
        with_pool(lambda pool: pool.connection(config))
    message = str(caught.value)
    assert "failed to start" in message and "mcp_server.py exit`" in message
    assert "its stderr ends with: refusing to start: broken configuration" in message


def test_missing_command_is_a_clear_error() -> None:
    config = McpServerConfig.create(command=["/nonexistent/charter-mcp-server"])
    with pytest.raises(McpServerError, match="failed to start: command not found"):
        with_pool(lambda pool: pool.connection(config))


def test_server_that_never_answers_times_out_at_startup() -> None:
    config = McpServerConfig.create(command=[sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(McpServerError, match=r"did not start within 1s"):
        with_pool(lambda pool: pool.connection(config), startup_timeout=1.0)


def test_server_killed_mid_call_fails_the_call_and_the_next_call_starts_it_again(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    config = McpServerConfig.create(
        command=[sys.executable, SERVER], env={"CHARTER_TEST_MARKER": str(marker)}
    )

    async def kill_when_sleeping() -> None:
        for _ in range(400):  # bounded: at most ~20s
            if marker.exists() and marker.read_text():
                os.kill(int(marker.read_text()), signal.SIGKILL)
                return
            await asyncio.sleep(0.05)

    async def body(pool: McpClientPool) -> tuple[str, str, Any]:
        killed = await pool.connection(config)
        killer = asyncio.create_task(kill_when_sleeping())
        with pytest.raises(McpServerError) as during:
            await pool.call(config, "sleep", {"seconds": 60})
        await killer
        with pytest.raises(McpServerError) as after:  # the session itself stays ended
            await killed.call("add", {"a": 1, "b": 2})
        again = await pool.call(config, "add", {"a": 1, "b": 2})  # the pool starts the server again
        assert await pool.connection(config) is not killed
        return str(during.value), str(after.value), again.value

    during, after, again = with_pool(body)
    assert "tool 'sleep': the server went away during the call: the server exited" in during
    assert "is no longer running" in after
    assert again == 3


def test_a_crashed_server_is_started_again_once_per_call() -> None:
    """A server that exits during a call fails that call; each later call finds it ended and starts it
    again (a new process), also when it exited between calls."""

    async def body(pool: McpClientPool) -> tuple[list[int], str]:
        first = (await pool.call(CRASHING, "pid", {})).value
        with pytest.raises(McpServerError) as crashed:
            await pool.call(CRASHING, "crash", {"reason": "testing"})
        second = (await pool.call(CRASHING, "pid", {})).value
        assert (await pool.call(CRASHING, "pid", {})).value == second  # one server while it runs
        session = await pool.connection(CRASHING)
        os.kill(second, signal.SIGKILL)  # between calls
        for _ in range(200):  # bounded: at most ~10s for the session to see its server end
            if not session.alive:
                break
            await asyncio.sleep(0.05)
        assert not session.alive
        third = (await pool.call(CRASHING, "pid", {})).value
        return [first, second, third], str(crashed.value)

    pids, crashed = with_pool(body)
    assert len(set(pids)) == 3
    assert (
        "tool 'crash': the server went away during the call: the server exited (its stdout closed)" in crashed
    )
    assert crashed.endswith("its stderr ends with: crashing on purpose: testing")


def sdk_parse_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The SDK's log records about output that is not JSON-RPC (a traceback on stderr, unconfigured)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("mcp") and r.exc_info]


def test_a_server_answering_garbage_is_a_prompt_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    """A stdio server that answers every line with plain text: the start fails at once (not after the
    startup timeout), naming the server and what it sent; the SDK's traceback is not logged."""
    config = McpServerConfig.create(command=[sys.executable, GARBAGE])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(McpServerError) as caught:  # with the not-MCP reason, not "did not start within"
        with_pool(lambda pool: pool.connection(config), startup_timeout=60.0)
    assert str(caught.value) == (
        f"MCP server `{sys.executable} {GARBAGE}` answered with something that is not MCP (JSON-RPC): "
        "'this is not json-rpc' (a stdio MCP server must write only JSON-RPC messages to its stdout)"
    )
    assert sdk_parse_reports(caplog) == []


def test_a_program_that_prints_and_exits_is_named_with_what_it_printed() -> None:
    config = McpServerConfig.create(command=[sys.executable, "-c", "print('hello there')"])
    with pytest.raises(McpServerError) as caught:
        with_pool(lambda pool: pool.connection(config))
    assert str(caught.value).endswith(
        "failed to start: the server exited (its stdout closed), after it answered with something that is "
        "not MCP (JSON-RPC): 'hello there' (a stdio MCP server must write only JSON-RPC messages to its stdout)"
    )


def test_stray_lines_are_tolerated_and_named_when_the_answer_does_not_come(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real server that prints lines on its stdout (a banner, a tool's chatter) still works: a call
    whose answer comes after such output (even seconds later) succeeds; one whose answer never comes
    fails at its timeout and names what the server wrote instead."""
    config = McpServerConfig.create(command=[sys.executable, GARBAGE, "banner"])
    caplog.set_level(logging.DEBUG)

    async def body(pool: McpClientPool) -> tuple[Any, Any, Any, str]:
        added = await pool.call(config, "add", {"a": 1, "b": 2})
        chatty = await pool.call(config, "chatty", {"text": "hi"})
        late = await pool.call(config, "rude", {"seconds": 2.5}, timeout=30.0)  # longer than the grace
        with pytest.raises(McpServerError) as never:
            await pool.call(config, "rude", {"seconds": 60}, timeout=1.0)
        return added.value, chatty.value, late.value, str(never.value)

    added, chatty, late, never = with_pool(body)
    assert (added, chatty, late) == (3, "hi", "late")
    assert never.endswith(
        "tool 'rude': no answer within 1s; meanwhile the server answered with something that is not MCP "
        "(JSON-RPC): 'rude says hello' (a stdio MCP server must write only JSON-RPC messages to its stdout)"
    )
    assert sdk_parse_reports(caplog) == []


def test_a_start_cancelled_while_the_server_spawns_ends_its_session() -> None:
    """Ctrl-C while a server is being started: the session task ends too. Left running, it would be
    cancelled by the loop's shutdown in the middle of the spawn, which never finishes (CPython
    gh-103847): the process hung."""

    async def cancel_the_start() -> bool:
        connection = McpConnection(STDIO, startup_timeout=30.0)
        starting = asyncio.create_task(connection.start())
        await asyncio.sleep(0)  # start() made the session task, which spawns the server next
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        return connection._task is not None and connection._task.done()

    assert run_coroutine(cancel_the_start(), grace=5.0)


def test_call_timeout_is_a_clear_error() -> None:
    async def body(pool: McpClientPool) -> None:
        with pytest.raises(McpServerError, match=r"tool 'sleep': no answer within 0.5s"):
            await pool.call(STDIO, "sleep", {"seconds": 30}, timeout=0.5)

    with_pool(body)


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not reaped by an orphan's new parent, does
    not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def ends(pid: int, within: float = 30.0) -> bool:
    """Whether process `pid` has ended, or ends within `within` seconds (a generous bound, no timing)."""
    deadline = time.monotonic() + within
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_if_running(pid_file: Path) -> None:
    """A test's clean-up: the server a failing test left behind does not outlive it."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


# Prints a line that is not MCP, then stays: reads its stdin until it closes, and ignores SIGTERM; it
# notes both (files in the folder it is given), and only SIGKILL ends it.
STUBBORN_NOT_MCP = """
import os, signal, sys, time

folder = sys.argv[1]


def note(name):
    open(os.path.join(folder, name), "w").close()


signal.signal(signal.SIGTERM, lambda *_: note("terminated"))
with open(os.path.join(folder, "pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(folder, "pid.tmp"), os.path.join(folder, "pid"))
print("hello, I am not MCP", flush=True)
sys.stdin.read()
note("stdin-closed")
while True:
    time.sleep(1)
"""


def test_a_start_cut_off_while_it_stops_a_server_that_is_not_mcp_ends_and_the_server_is_killed(
    tmp_path: Path,
) -> None:
    """A server that printed something that is not MCP and stays alive: the start, failing, stops it.
    A `timeout` passing meanwhile (the step's cut-off) still ends the start, and the server is
    terminated, then killed. The step used to hang forever here: the cut-off cancelled the SDK's
    shutdown of the server midway, which then waited for a server that never exits."""
    (tmp_path / "server.py").write_text(STUBBORN_NOT_MCP, encoding="utf-8")
    config = McpServerConfig.create(command=[sys.executable, str(tmp_path / "server.py"), str(tmp_path)])

    async def cut_off_while_stopping() -> bool:
        connection = McpConnection(config, startup_timeout=NO_LIMIT)  # only the cut-off bounds it
        starting = asyncio.create_task(connection.start())
        for _ in range(1200):  # bounded (~60s): until the failed start is stopping the server
            if starting.done() or any((tmp_path / n).exists() for n in ("stdin-closed", "terminated")):
                break
            await asyncio.sleep(0.05)
        starting.cancel()  # the cut-off
        done, _ = await asyncio.wait({starting}, timeout=60)
        return bool(done)

    try:
        assert run_coroutine(cut_off_while_stopping(), grace=5.0), "the start did not end"
        assert ends(int((tmp_path / "pid").read_text())), "the server outlived its start"
        assert (tmp_path / "terminated").exists()  # SIGTERM first, then SIGKILL
    finally:
        kill_if_running(tmp_path / "pid")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_server_does_not_outlive_charter_stopped_by_signals(tmp_path: Path, signum: int) -> None:
    """`charter run` stopped by a signal while an MCP call runs, and by a second one while it closes the
    server: the server is stopped too (it runs in a process group of its own, which a terminal's Ctrl-C
    does not reach). It used to stay running: the second signal cancelled the server's shutdown."""
    marker = tmp_path / "pid"
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        textwrap.dedent(
            f"""\
            charter: "1.0"
            name: mcp-signals
            tools:
              nap:
                mcp: {{command: [python, -m, tests.fixtures.mcp_server], tool: sleep, env: {{CHARTER_TEST_MARKER: "{marker}"}}}}
                effect: read
            steps:
              - {{id: call, tool: nap, args: {{seconds: 600}}}}
            """
        ),
        encoding="utf-8",
    )
    env = {**child_env(), "CHARTER_DB": str(tmp_path / "charter.db")}
    process = subprocess.Popen(
        charter_cmd("run", str(flow)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()):  # the server is in the call
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
            time.sleep(0.05)
        process.send_signal(signum)
        time.sleep(0.5)  # charter is closing the server now: the second signal interrupts that
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 128 + signum, output
        assert ends(int(marker.read_text())), "the server outlived charter"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        kill_if_running(marker)


# --- streamable HTTP ------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving_http(script: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`script http PORT` on a free local port, once it accepts connections: its /mcp URL and process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, script, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"{script} exited at startup")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def http_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with serving_http(SERVER) as served:
        yield served


def test_streamable_http_list_call_and_server_death(http_server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, process = http_server
    config = McpServerConfig.create(url=url)

    async def body(pool: McpClientPool) -> tuple[list[str], Any, str]:
        names = sorted(t.name for t in await pool.list_tools(config))
        result = await pool.call(config, "add", {"a": 20, "b": 22})
        process.kill()
        process.wait(timeout=10)
        with pytest.raises(McpServerError) as caught:
            await pool.call(config, "add", {"a": 1, "b": 1})
        return names, result.value, str(caught.value)

    names, value, error = with_pool(body)
    assert names == ["add", "boxed", "echo", "fail", "nothing", "primes", "profile", "ratio", "sleep"]
    assert value == 42
    assert error.startswith(f"MCP server at {url}, tool 'add': the server went away during the call")


def test_an_http_endpoint_that_is_not_mcp_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    """A URL answering JSON that is not JSON-RPC (here a chat completion): reached, but not MCP."""
    caplog.set_level(logging.DEBUG)
    with serving_http(GARBAGE) as (url, _), pytest.raises(McpServerError) as caught:
        with_pool(lambda pool: pool.connection(McpServerConfig.create(url=url)), startup_timeout=20.0)
    assert str(caught.value) == (
        f"MCP server at {url} answered with something that is not MCP (JSON-RPC): "
        """'{"id": "x", "object": "chat.completion", "choices": []}'"""
    )
    assert sdk_parse_reports(caplog) == []


def test_unreachable_http_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = McpServerConfig.create(url=f"http://127.0.0.1:{port}/mcp")
    with pytest.raises(
        McpServerError, match=rf"MCP server at http://127.0.0.1:{port}/mcp could not be reached"
    ):
        with_pool(lambda pool: pool.connection(config), startup_timeout=10.0)


# --- in a run ---------------------------------------------------------------------------------------------


def run_flow(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent(body), encoding="utf-8")
    # Run from the repository, whose pyproject.toml allows the modules tests.fixtures.*.
    return charter("run", str(flow), "--json", db=tmp_path / "charter.db", timeout=120)


def test_a_step_retry_gets_a_new_server_after_a_crash(tmp_path: Path) -> None:
    """The crash fails the step's first attempt with a retryable error; the retry starts the server
    again and succeeds."""
    marker = tmp_path / "crashed"
    proc = run_flow(
        tmp_path,
        f"""
        charter: "1.0"
        name: mcp-restart
        tools:
          flaky: {{mcp: {{command: [python, -m, tests.fixtures.mcp_crash_server], tool: crash_once}}, effect: read}}
        steps:
          - id: call
            retry: {{attempts: 2, backoff: {{initial: 100ms}}}}
            tool: flaky
            args: {{marker: "{marker}"}}
        output: {{answer: "${{{{ steps.call.output }}}}"}}
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"answer": "survived"' in proc.stdout
    assert marker.exists()


def test_a_run_against_a_server_answering_garbage_fails_clearly_without_a_traceback(tmp_path: Path) -> None:
    proc = run_flow(
        tmp_path,
        """
        charter: "1.0"
        name: mcp-garbage
        tools:
          ok: {mcp: {command: [python, -m, tests.fixtures.mcp_garbage_server], tool: ok}, effect: read}
        steps:
          - {id: call, tool: ok, args: {q: a}}
        """,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "pydantic" not in proc.stderr
    assert (
        "answered with something that is not MCP (JSON-RPC): 'this is not json-rpc'"
        in proc.stdout + proc.stderr
    )


# A server whose tools change while it runs: `open_door` adds the tool `door` (and the server tells its
# clients, as MCP's tools/list_changed does); `reshape` replaces `door` by one that takes `key`.
CHANGING_SERVER = '''
try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:
    from mcp.server.fastmcp import FastMCP as Server

server = Server("changing")


def door(name: str) -> str:
    """Walk through the door."""
    return f"welcome, {name}"


def keyed_door(key: int) -> str:
    """Walk through the door, with its key."""
    return f"unlocked with {key}"


@server.tool()
def open_door() -> str:
    """Add the tool `door`."""
    server.add_tool(door, name="door")
    return "opened"


@server.tool()
def reshape() -> str:
    """Make `door` take a key instead of a name."""
    server.remove_tool("door")
    server.add_tool(keyed_door, name="door")
    return "reshaped"


server.run("stdio")
'''


def test_a_tool_the_server_adds_or_changes_while_it_runs_is_called(tmp_path: Path) -> None:
    """The tool list taken when the server started lacks a tool it added since, or has the schema it
    had then: the client lists the tools again before refusing a call for good (a refusal no retry
    changes), and a later listing (an agent step's tools) shows the server's tools as they are now."""
    script = tmp_path / "changing_server.py"
    script.write_text(CHANGING_SERVER, encoding="utf-8")
    config = McpServerConfig.create(command=[sys.executable, str(script)])

    async def body(pool: McpClientPool) -> Any:
        assert sorted(t.name for t in await pool.list_tools(config)) == ["open_door", "reshape"]
        await pool.call(config, "open_door", {})
        added = await pool.call(config, "door", {"name": "dana"})
        listed = sorted(t.name for t in await pool.list_tools(config))
        await pool.call(config, "reshape", {})
        reshaped = await pool.call(config, "door", {"key": 7})
        with pytest.raises(McpArgumentError, match="has no tool 'window'"):
            await pool.call(config, "window", {})
        return added.value, listed, reshaped.value

    assert with_pool(body) == ("welcome, dana", ["door", "open_door", "reshape"], "unlocked with 7")


def test_a_server_env_that_would_load_other_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    """The allowance names the server's module; a workflow file's `env` must not make Python import other
    code first (PYTHONPATH to the workflow's folder, whose sitecustomize.py Python imports at startup):
    the run is refused before it starts (`charter run` exits 2), at the key, naming the variable, and
    that code never runs."""
    marker = tmp_path / "ran"
    (tmp_path / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    proc = run_flow(
        tmp_path,
        f"""
        charter: "1.0"
        name: mcp-env
        tools:
          add:
            mcp: {{command: [python, -m, tests.fixtures.mcp_server], env: {{PYTHONPATH: "{tmp_path}"}}}}
            effect: read
        steps:
          - {{id: call, tool: add, args: {{a: 1, b: 2}}}}
        """,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (tmp_path / "flow.yaml").read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "PYTHONPATH" in text)
    column = lines[line - 1].index("PYTHONPATH") + 1
    assert (
        f"{tmp_path / 'flow.yaml'}:{line}:{column}: tool 'add': MCP server `python -m tests.fixtures.mcp_server`: "
        "its env sets PYTHONPATH, which would make it run code other than the allowed command"
    ) in proc.stderr, proc.stderr
    assert '"status": "refused"' in proc.stdout and '"run_id": null' in proc.stdout  # nothing was recorded
    assert not marker.exists()


def test_a_code_loading_env_met_at_a_call_is_a_policy_error() -> None:
    """The check before the run is the rule; a server config the call path meets all the same (a run
    that skipped that check) is refused as policy, not as a tool failure a retry could change."""
    from types import SimpleNamespace

    from dsl.model import McpTool
    from interpreter.policy import build_policy
    from interpreter.runtime import StepError
    from interpreter.tools import _mcp_config

    tool = SimpleNamespace(
        mcp=McpTool(command=["python", "-m", "tests.fixtures.mcp_server"], env={"LD_PRELOAD": "/tmp/x.so"})
    )
    ex = SimpleNamespace(
        policy=build_policy(("tests.fixtures.mcp_server",), None), graph=SimpleNamespace(tools=None)
    )
    with pytest.raises(StepError) as caught:
        _mcp_config(ex, "add", tool, None)
    assert caught.value.to_dict()["code"] == "policy" and caught.value.to_dict()["type"] == "PolicyError"
    assert "its env sets LD_PRELOAD" in str(caught.value)


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "ld_library_path", "PYTHONSTARTUP", "NODE_OPTIONS"])
def test_code_loading_variables_are_refused_in_a_stdio_servers_env(name: str) -> None:
    with pytest.raises(McpError, match=f"its env sets {name}"):
        McpServerConfig.create(command=["docs-server"], env={name: "/tmp/elsewhere", "DOCS_TOKEN": "t"})
    # what only tunes the interpreter is fine
    McpServerConfig.create(command=["docs-server"], env={"PYTHONUNBUFFERED": "1", "DOCS_TOKEN": "t"})
