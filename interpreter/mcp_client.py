"""Tools from MCP servers, with the `mcp` SDK (the optional extra `charter[mcp]`).

A run holds one `McpClientPool`. The first use of a server starts it (stdio: the command runs once per
run) or connects to it (streamable HTTP), lists its tools, and keeps the session until `close()`.
Arguments are validated against the tool's input schema before the call.

Nothing here can hang a run: starting, listing and calling are bounded by timeouts, and a server that
exits (or is killed) fails the calls in flight with an `McpServerError` that says which server and what
happened, with the tail of its stderr when it wrote any. The pool's next call for that server starts it
again (a new session): once per call, so a step's `retry` gets a fresh server for each attempt.

A server that answers its start with something that is not MCP (not JSON-RPC: a stdio server printing to
its stdout, a URL that is not an MCP endpoint) fails the start promptly, with an excerpt of what it sent,
unless a real answer follows within `_NOT_MCP_GRACE` (a stray line, such as a banner, is tolerated).
During a call such output is tolerated until the call's timeout, whose error then names it. The SDK's own report of such output (a traceback logged on stderr) is dropped for Charter's
sessions: the error says it instead.

A stdio server runs in a process Charter starts itself (`_stdio`, not the SDK's `stdio_client`, whose
shutdown a second cancellation could leave waiting forever on a server that stays alive), in a process
group of its own. However the session ends -- closed with the run, a failed or cut-off start, a
cancellation (Ctrl-C, SIGTERM, a `timeout`) -- the process is stopped within bounded time: an orderly
close first closes its stdin and lets it exit, then SIGTERM goes to its process group, then SIGKILL. A
cancellation during that moves on to the next signal at once. A server the event loop abandons is killed
when the interpreter exits (`_kill_left_over`).

A tool's result is the value the tool returned (`McpResult.value`): a string stays a string, a number a
number, a list a list. MCP carries structured content only as an object, so the SDKs send any other value
as `{"result": value}` and declare that wrapper as the tool's output schema; the wrapper is taken off
(`_wrapped`), while an object the tool itself returned is kept as it is, even one whose only key is
`result`.

Each session lives in its own asyncio task (the SDK's anyio task groups must be entered and left by
one task), so `call()` and `close()` may come from any task of the run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import json
import logging
import math
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from jsonschema.exceptions import SchemaError

from interpreter import schemas
from interpreter.providers.base import ToolSpec

# The limits when the caller names none (a workflow that declares no timeout around the call): a server
# that hangs must not hold a run forever. `NO_LIMIT` asks for none: a timeout around the call bounds it.
DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 60.0
NO_LIMIT = math.inf
_CLOSE_TIMEOUT = 10.0
_EXIT_GRACE = 2.0  # an orderly close: how long a stdio server has to exit once its stdin is closed
_TERM_GRACE = 2.0  # how long it has to exit after SIGTERM, before SIGKILL
_REAP_GRACE = 2.0  # after SIGKILL, how long to wait for the event loop to see it gone
_READ_CHUNK = 1 << 16
_STDERR_TAIL = 800
_NOT_MCP_GRACE = 2.0  # after output that is not MCP, how long a real answer may still come
_EXCERPT = 120
_PARSE_ERROR = -32700  # JSON-RPC's code, which SDK 2.x gives a request whose HTTP answer was not JSON-RPC


class McpError(Exception):
    """An MCP tool could not be used."""


class McpServerError(McpError):
    """The server failed to start, could not be reached, died, or did not answer in time."""


class McpTimeoutError(McpServerError):
    """The server did not start, or a call got no answer, within the time limit."""


class McpToolError(McpError):
    """The tool ran and reported an error (the server is fine)."""

    def __init__(self, message: str, result: McpResult) -> None:
        super().__init__(message)
        self.result = result


class McpArgumentError(McpError):
    """The arguments do not match the tool's input schema, or the tool does not exist."""


class McpEnvError(McpError):
    """A server's `env` sets a variable that would make it run code its allowance does not name (a
    policy refusal, like a command the allow-list does not permit)."""


# Variables that choose what code a started program runs, besides its command: the program found on
# PATH, the dynamic loader's preloads and search paths, an interpreter's startup hooks and import paths
# (Python imports `sitecustomize` from PYTHONPATH before any module; Node, Perl, Ruby and the JVM take
# options that load code). A workflow file's `env` setting one would run code the user never allowed
# (spec §8.3: a command is started only when the user allowed it), so they are refused.
_CODE_LOADING_ENV = frozenset(
    {
        "PATH",
        "BASH_ENV",
        "ENV",
        "GCONV_PATH",
        "NODE_OPTIONS",
        "NODE_PATH",
        "CLASSPATH",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "RUBYOPT",
        "RUBYLIB",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
    }
)
_CODE_LOADING_PREFIXES = ("LD_", "DYLD_", "PYTHON")
# PYTHON* variables that only change how the interpreter runs, never what it runs.
_HARMLESS_PYTHON_ENV = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED"}
)


def code_loading_env(names: Iterable[str]) -> list[str]:
    """The names among `names` that a stdio server's env may not set, sorted (any case counts)."""
    return sorted(
        name
        for name in names
        if name.upper() in _CODE_LOADING_ENV
        or (name.upper().startswith(_CODE_LOADING_PREFIXES) and name.upper() not in _HARMLESS_PYTHON_ENV)
    )


def env_refusal(label: str, refused: list[str]) -> str:
    return (
        f"{label}: its env sets {', '.join(refused)}, which would make it run code other than the "
        "allowed command; a workflow file cannot set it (a server that needs it is started by a "
        "script of its own, which the user allows)"
    )


def _check_env(label: str, env: tuple[tuple[str, str], ...]) -> None:
    """Refuse (McpEnvError) a stdio server environment that chooses the code the server runs. The keys
    are fixed in the workflow file, so a run checks them before it starts (`tools.check_mcp_commands`);
    this is the last line, for a config made otherwise."""
    refused = code_loading_env(name for name, _ in env)
    if refused:
        raise McpEnvError(env_refusal(label, refused))


@dataclass(frozen=True)
class McpServerConfig:
    """How to reach one server: `command` (stdio) or `url` (streamable HTTP). Hashable: the pool keys
    sessions on it, so tools declaring the same server share one process."""

    command: tuple[str, ...] | None = None
    url: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise McpError("an MCP server needs exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.command is not None and not self.command:
            raise McpError("an MCP server's 'command' is empty")
        if self.command is not None:
            _check_env(self.label, self.env)

    @classmethod
    def create(
        cls,
        *,
        command: list[str] | tuple[str, ...] | None = None,
        url: str | None = None,
        env: Mapping[str, Any] | None = None,
        cwd: str | None = None,
    ) -> McpServerConfig:
        """From a `dsl.model.McpTool`'s fields, with `env` already evaluated by the engine."""
        pairs = tuple(sorted((str(k), str(v)) for k, v in (env or {}).items()))
        return cls(command=tuple(command) if command is not None else None, url=url, env=pairs, cwd=cwd)

    @property
    def label(self) -> str:
        if self.command is not None:
            return f"MCP server `{' '.join(self.command)}`"
        return f"MCP server at {self.url}"


@dataclass(frozen=True)
class McpToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None

    def to_spec(self, name: str | None = None, description: str | None = None) -> ToolSpec:
        """The tool as offered to a model, under the workflow's name and description when given."""
        return ToolSpec(name or self.name, description or self.description, self.input_schema)


@dataclass(frozen=True)
class McpResult:
    """A tool's answer: `structured` the structured content as the server sent it, `text` the joined text
    blocks, `content` every block as JSON; `wrapped` when `structured` is `{"result": value}` carrying a
    value that is not an object."""

    text: str
    structured: Any = None
    content: list[dict[str, Any]] = field(default_factory=list)
    is_error: bool = False
    wrapped: bool = False

    @property
    def value(self) -> Any:
        """The tool's output for the workflow: what the tool returned (the structured content, without
        the SDKs' `{"result": ...}` wrapper), else the text when there is no structured content."""
        if self.wrapped:
            return self.structured["result"]
        return self.structured if self.structured is not None else self.text

    def to_record(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "structured": self.structured,
            "content": self.content,
            "is_error": self.is_error,
            "wrapped": self.wrapped,
        }


def _sdk() -> Any:
    try:
        import mcp
    except ImportError:
        raise McpError("MCP tools need the `mcp` package: pip install 'charter[mcp]'") from None
    for name in _SDK_TRANSPORT_LOGGERS:
        logging.getLogger(name).addFilter(_NOT_MCP_LOG)  # once: a filter is added only if absent
    return mcp


class McpConnection:
    """One session with one server."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.config = config
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self.tools: dict[str, McpToolInfo] = {}
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
        self._spawned = asyncio.Event()  # the transport is up (or failed): cancelling is safe from then on
        self._dead = asyncio.Event()
        self._failure: str | None = None
        self._stderr: IO[bytes] | None = None
        self._process: asyncio.subprocess.Process | None = None  # a stdio server's
        self._orderly = False  # close() asked: the server may exit by itself before it is signalled
        self._not_mcp: str | None = None  # an excerpt of the last output that was not MCP
        self._not_mcp_seen = asyncio.Event()  # set (and replaced) at each such output

    @property
    def alive(self) -> bool:
        """Started, and neither ended nor broken: calls can use it."""
        return self._session is not None and not self._dead.is_set()

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start or connect, initialize and list the tools, within `startup_timeout`."""
        _sdk()
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(), name=f"mcp {self.config.label}")
        not_mcp = self._watch_not_mcp()
        died = asyncio.ensure_future(self._dead.wait())
        try:
            try:
                done, _ = await asyncio.wait(
                    {self._ready, not_mcp, died},
                    timeout=_seconds(self.startup_timeout),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in (not_mcp, died):
                    waiter.cancel()
            if self._ready in done:
                self._ready.result()  # raises the McpServerError of a failed start
                return
            error: type[McpServerError] = McpServerError
            if not_mcp in done:
                self._failure = f"it {self._not_mcp_reason()}"
                message = f"{self.config.label} {self._not_mcp_reason()}"
            elif died in done:
                message = self._start_failure(self._failure or "the session ended")
            else:
                error, message = (
                    McpTimeoutError,
                    f"{self.config.label} did not start within {self.startup_timeout:g}s",
                )
            await self._abort()
            raise error(message + self._stderr_tail())
        except BaseException:  # McpError, or the run was cancelled (Ctrl-C) while the server started
            await asyncio.shield(self._abort())
            if self._ready.done() and not self._ready.cancelled():
                self._ready.exception()  # retrieved: a failure the session reported too late is not logged
            self._close_stderr()  # its tail is in the error already; a restart opens a new one
            raise

    async def close(self) -> None:
        """End the session (and stop a stdio server). Bounded; safe to call twice. Cancelled, it leaves
        the session task to finish stopping the server (its own cancellation hurries that along)."""
        self._orderly = True
        self._closing.set()
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_TIMEOUT)
            if not done:
                await self._abort()
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def _abort(self) -> None:
        """End the session now: cancel its task, which stops a stdio server at once (SIGTERM, then
        SIGKILL). Bounded: a task that does not end in time is left, its server killed."""
        self._orderly = False
        task = self._task
        if task is not None and not task.done():
            # A task cancelled while asyncio spawns its subprocess never finishes (CPython gh-103847):
            # let the spawn complete (milliseconds), then cancel.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spawned.wait(), _CLOSE_TIMEOUT)
            task.cancel()
            # asyncio.wait, not wait_for: on its timeout wait_for cancels again and then waits for the
            # task without a limit.
            await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT)
        if self._process is not None:
            _signal(self._process, signal.SIGKILL)  # a no-op once it was seen to exit

    async def _own(self) -> None:
        """The session's task: enter the transport and session, report ready, wait for close."""
        assert self._ready is not None
        mcp = _sdk()
        _current.set(self)  # for the SDK's log records, in this task and the transport's tasks
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(mcp))
                self._spawned.set()
                read = _WatchedStream(streams[0], self)
                session = await stack.enter_async_context(mcp.ClientSession(read, streams[1]))
                await session.initialize()
                listed = await session.list_tools()
                self.tools = {t.name: _tool_info(t) for t in listed.tools}
                self._session = session
                self._ready.set_result(None)
                await self._closing.wait()
        except asyncio.CancelledError:
            self._failure = self._failure or "the session was cancelled"
            raise
        except Exception as exc:  # anyio wraps failures in exception groups; _describe looks inside
            if _not_mcp_error(exc):  # SDK 2.x over HTTP: the request failed with a parse error
                self._failure = f"it {self._not_mcp_reason()}"
                message = f"{self.config.label} {self._not_mcp_reason()}"
            else:
                self._failure = self._failure or _describe(exc)  # the transport's own report first
                message = self._start_failure(self._failure)
            if not self._ready.done():
                self._ready.set_exception(McpServerError(message + self._stderr_tail()))
        finally:
            if not self._closing.is_set() and self._failure is None:
                self._failure = "the session ended"
            self._spawned.set()
            self._dead.set()

    def _transport(self, mcp: Any) -> Any:
        if self.config.command is not None:
            return self._stdio()
        try:
            from mcp.client.streamable_http import streamable_http_client as connect
        except ImportError:  # mcp 1.x
            from mcp.client.streamable_http import streamablehttp_client as connect
        return connect(self.config.url)

    @contextlib.asynccontextmanager
    async def _stdio(self) -> AsyncIterator[tuple[Any, Any]]:
        """The stdio transport: the server's process, and the streams of messages the session reads and
        writes (a line of its stdout that is not JSON-RPC comes as the parse error, as with the SDK's).
        On the way out the process is stopped (`_stop`), whatever ends the session."""
        import anyio
        from mcp.client.stdio import get_default_environment

        command, *args = self.config.command or ()
        env = {**get_default_environment(), **dict(self.config.env)}
        # A real file: the server's stderr goes there (not onto our terminal) and into error messages.
        self._stderr = tempfile.TemporaryFile()
        # A session of its own: a terminal's Ctrl-C goes to Charter, which stops the server (and what
        # the server started: its process group) itself.
        process = await asyncio.create_subprocess_exec(
            command,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=self.config.cwd,
            start_new_session=True,
        )
        self._process = process
        _LIVE.add(process)
        self._spawned.set()
        to_session, read_stream = anyio.create_memory_object_stream(0)
        write_stream, from_session = anyio.create_memory_object_stream(0)

        async def read() -> None:
            assert process.stdout is not None
            pending = bytearray()
            try:
                async with to_session:
                    while chunk := await process.stdout.read(_READ_CHUNK):
                        searched = len(pending)
                        pending += chunk
                        while (end := pending.find(b"\n", searched)) >= 0:
                            line = bytes(pending[:end])
                            del pending[: end + 1]
                            searched = 0
                            await to_session.send(_parse_message(line))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                # The session is gone: keep reading (and dropping) what the server writes, so that a
                # full pipe does not keep it from exiting.
                while await process.stdout.read(_READ_CHUNK):
                    pass
            except Exception as exc:  # noqa: BLE001 - reported as the end of the transport
                self._lost(f"reading from the server failed: {_describe(exc)}")

        async def write() -> None:
            assert process.stdin is not None
            try:
                async with from_session:
                    async for item in from_session:
                        message = getattr(item, "message", item)  # SDK 1.x before SessionMessage: bare
                        data = message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                        process.stdin.write(data.encode("utf-8"))
                        await process.stdin.drain()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            except Exception as exc:  # noqa: BLE001 - e.g. BrokenPipeError: the server closed its stdin
                self._lost(f"writing to the server failed: {_describe(exc)}")
                to_session.close()  # the session sees its stream end, not a request waiting forever

        pipes = [asyncio.create_task(read()), asyncio.create_task(write())]
        try:
            yield read_stream, write_stream
        finally:
            for stream in (read_stream, write_stream):
                stream.close()
            try:
                await _stop(process, orderly=self._orderly)
            finally:
                for task in pipes:
                    task.cancel()
                for stream in (to_session, from_session):
                    stream.close()

    # --- what the transport reports -------------------------------------------------------------------

    def _saw_not_mcp(self, excerpt: str | None, *, wake: bool = True) -> None:
        """The server sent something that is not MCP: remember it, and wake the waiters (`wake`) so
        they fail unless a real answer comes within the grace."""
        if excerpt:
            self._not_mcp = excerpt
        if wake:
            seen, self._not_mcp_seen = self._not_mcp_seen, asyncio.Event()
            seen.set()

    def _ended(self) -> None:
        """The transport's read stream ended: a stdio server exited (or closed its stdout)."""
        if not self._closing.is_set():
            self._lost(
                "the server exited (its stdout closed)"
                if self.config.command
                else "the server closed the connection"
            )

    def _watch_not_mcp(self) -> asyncio.Future[None]:
        """A future done once the server sends something that is not MCP (from now on), and the grace
        after it has passed."""
        seen = self._not_mcp_seen

        async def watch() -> None:
            await seen.wait()
            await asyncio.sleep(_NOT_MCP_GRACE)

        return asyncio.ensure_future(watch())

    def _start_failure(self, reason: str) -> str:
        verb = "failed to start" if self.config.command else "could not be reached"
        message = f"{self.config.label} {verb}: {reason}"
        if self._not_mcp:  # e.g. a program that printed something and exited
            message += f", after it {self._not_mcp_reason()}"
        return message

    def _not_mcp_reason(self) -> str:
        reason = "answered with something that is not MCP (JSON-RPC)"
        if self._not_mcp:
            reason += f": {self._not_mcp}"
        if self.config.command is not None:
            reason += " (a stdio MCP server must write only JSON-RPC messages to its stdout)"
        return reason

    # --- calls ----------------------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, timeout: float | None = None
    ) -> McpResult:
        """Call `tool` with validated `arguments`. Raises McpArgumentError, McpToolError, McpServerError."""
        self._check_alive()
        limit = self.call_timeout if timeout is None else timeout
        info = self.tools.get(tool)
        if info is None or not _fits(info, arguments):
            # A server may change its tools while it runs (MCP's tools/list_changed): the list taken at
            # the start may lack a tool added since, or hold an older schema. Asked again once before
            # the call is refused for good (a refusal no retry changes).
            await self.refresh(timeout=limit)
            info = self.tools.get(tool)
            if info is None:
                have = ", ".join(sorted(self.tools)) or "none"
                raise McpArgumentError(f"{self.config.label} has no tool {tool!r}; its tools: {have}")
            _validate(self.config.label, info, arguments)
        call = asyncio.ensure_future(self._session.call_tool(tool, dict(arguments)))
        died = asyncio.ensure_future(self._dead.wait())
        try:
            done, _ = await asyncio.wait(
                {call, died}, timeout=_seconds(limit), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (call, died):
                if not task.done():
                    task.cancel()
        where = f"{self.config.label}, tool {tool!r}"
        if call in done and call.exception() is None:
            return _result(where, call.result(), info)
        if call in done:
            error = call.exception()
            if _not_mcp_error(error):  # SDK 2.x over HTTP
                self._lost(f"it {self._not_mcp_reason()}")
                raise McpServerError(f"{where}: the server {self._not_mcp_reason()}")
            reason = self._failure or _describe(error)
            if _connection_lost(error):
                self._lost(reason)
                raise McpServerError(
                    f"{where}: the server went away during the call: {reason}{self._stderr_tail()}"
                )
            raise McpServerError(f"{where}: the call failed: {reason}{self._stderr_tail()}")
        if died in done:
            raise McpServerError(
                f"{where}: the server went away during the call: {self._failure}{self._stderr_tail()}"
            )
        # Stray output during a call (a tool printing progress) is tolerated: only the call's timeout
        # ends it, and then says what else the server wrote.
        meanwhile = f"; meanwhile the server {self._not_mcp_reason()}" if self._not_mcp else ""
        raise McpTimeoutError(f"{where}: no answer within {limit:g}s{meanwhile}")

    async def refresh(self, *, timeout: float | None = None) -> None:
        """List the server's tools again (within `timeout`, default the call timeout). A server that
        does not answer keeps the list it had: the call that follows then fails with its own reason."""
        self._check_alive()
        limit = self.call_timeout if timeout is None else timeout
        try:
            listed = await asyncio.wait_for(self._session.list_tools(), _seconds(limit))
        except Exception:  # noqa: BLE001 - a dead or slow server is reported by the call, not here
            return
        self.tools = {t.name: _tool_info(t) for t in listed.tools}

    def _lost(self, reason: str) -> None:
        """The transport is gone or unusable (the SDK keeps the session open): fail later calls of this
        session (the pool starts a new one), release the rest."""
        self._failure = self._failure or reason
        self._dead.set()
        self._closing.set()

    def _check_alive(self) -> None:
        if self._session is None:
            raise McpServerError(f"{self.config.label} is not started")
        if self._dead.is_set():
            raise McpServerError(
                f"{self.config.label} is no longer running: {self._failure}{self._stderr_tail()}"
            )

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        try:
            size = os.fstat(self._stderr.fileno()).st_size
            data = os.pread(self._stderr.fileno(), _STDERR_TAIL, max(0, size - _STDERR_TAIL))
        except OSError:
            return ""
        text = data.decode("utf-8", "replace").strip()
        return f"; its stderr ends with: {text}" if text else ""


class _WatchedStream:
    """The transport's read stream as the session reads it, with what the session does not report:
    output that is not JSON-RPC and other transport faults (the SDK passes them on as exceptions, which
    the session only logs) and the end of the stream (a stdio server exited, even between calls)."""

    def __init__(self, inner: Any, connection: McpConnection) -> None:
        self._inner = inner
        self._connection = connection

    async def receive(self) -> Any:
        import anyio

        try:
            item = await self._inner.receive()
        except anyio.EndOfStream:
            self._connection._ended()
            raise
        if isinstance(item, ValueError):  # the SDK's parse error: not JSON, or not JSON-RPC
            self._connection._saw_not_mcp(_excerpt(item))
        elif isinstance(item, Exception):  # another transport fault (SDK 1.x over HTTP): no answer will come
            self._connection._lost(f"the transport failed: {_describe(item)}")
        return item

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:  # e.g. SDK 2.x's `last_context`
        return getattr(self._inner, name)


_current: contextvars.ContextVar[McpConnection | None] = contextvars.ContextVar(
    "charter_mcp_connection", default=None
)
_SDK_TRANSPORT_LOGGERS = ("mcp.client.stdio", "mcp.client.streamable_http")


class _NotMcpLog(logging.Filter):
    """Drops the SDK's log records about a server's output that is not JSON-RPC (a pydantic traceback,
    printed on stderr when logging is not configured) when one of Charter's sessions received it: the
    session's error says it, with an excerpt of the output kept here. Other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        connection = _current.get()
        if connection is None:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValueError):  # pydantic's ValidationError: not JSON, or not JSON-RPC
            connection._saw_not_mcp(_excerpt(error), wake=False)
            return False
        message = record.getMessage()
        if message.startswith("Unexpected content type"):  # SDK 2.x over HTTP
            kind = message.partition(":")[2].strip() or "unknown"
            connection._saw_not_mcp(f"a response of content type {kind}", wake=False)
            return False
        return True


_NOT_MCP_LOG = _NotMcpLog()


class McpClientPool:
    """The MCP sessions of one run, one per server, started on first use and closed together."""

    def __init__(
        self, *, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self._connections: dict[McpServerConfig, McpConnection] = {}
        self._starting: dict[McpServerConfig, asyncio.Lock] = {}

    async def connection(
        self, config: McpServerConfig, *, startup_timeout: float | None = None
    ) -> McpConnection:
        """The server's session, started on first use, and started again when the last one ended (the
        server exited, was killed or broke the protocol): at most one start per call. A start is bounded
        by `startup_timeout` (None: the pool's; `NO_LIMIT`: none, the caller bounds it)."""
        lock = self._starting.setdefault(config, asyncio.Lock())
        async with lock:  # two steps asking at once still start one server
            existing = self._connections.get(config)
            if existing is not None and existing.alive:
                return existing
            if existing is not None:  # stop what is left of it first (its process, its stderr file)
                del self._connections[config]
                await existing.close()
            connection = McpConnection(
                config,
                startup_timeout=self.startup_timeout if startup_timeout is None else startup_timeout,
                call_timeout=self.call_timeout,
            )
            await connection.start()
            self._connections[config] = connection
            return connection

    async def list_tools(
        self, config: McpServerConfig, *, startup_timeout: float | None = None
    ) -> list[McpToolInfo]:
        """The server's tools as it lists them now: a session started earlier in the run asks again,
        since a server may change its tools while it runs (an agent step is offered what is there)."""
        started = self._connections.get(config)
        connection = await self.connection(config, startup_timeout=startup_timeout)
        if connection is started:
            await connection.refresh(timeout=startup_timeout)
        return list(connection.tools.values())

    async def call(
        self,
        config: McpServerConfig,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        timeout: float | None = None,
        startup_timeout: float | None = None,
    ) -> McpResult:
        """`timeout` bounds the call, `startup_timeout` a start it needs (None: the pool's limits;
        `NO_LIMIT`: none, the caller bounds them)."""
        connection = await self.connection(config, startup_timeout=startup_timeout)
        return await connection.call(tool, arguments, timeout=timeout)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


# --- stdio server processes -----------------------------------------------------------------------------

# The stdio servers started and not yet seen to exit, for `_kill_left_over`.
_LIVE: set[asyncio.subprocess.Process] = set()


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    """Send `signum` to the server's process group (the server and what it started), unless the server
    was seen to exit (its group id may then be another's)."""
    if process.returncode is not None:
        _LIVE.discard(process)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signum)
        else:  # pragma: no cover - Windows: the process alone
            process.kill() if signum == getattr(signal, "SIGKILL", None) else process.terminate()


async def _exited(process: asyncio.subprocess.Process, limit: float) -> bool:
    """Whether the process exits within `limit` seconds. Its return code, not `wait()`: that also waits
    for its pipes to close, which a child it left running may hold open."""
    deadline = asyncio.get_running_loop().time() + limit
    while process.returncode is None:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _stop(process: asyncio.subprocess.Process, *, orderly: bool) -> None:
    """Stop a stdio server: when `orderly`, close its stdin and give it `_EXIT_GRACE` to exit; then
    SIGTERM to its process group and `_TERM_GRACE`; then SIGKILL. A cancellation moves on to the next
    stage at once, and is raised again at the end: bounded, and the server does not outlive it."""
    cancelled: BaseException | None = None
    stages: list[tuple[int | None, float]] = [(signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, _REAP_GRACE)]
    if orderly:
        stages.insert(0, (None, _EXIT_GRACE))
    for signum, grace in stages:
        if process.returncode is not None:
            break
        if signum is None:
            if process.stdin is not None:
                with contextlib.suppress(Exception):
                    process.stdin.close()
        else:
            _signal(process, signum)
        try:
            await _exited(process, grace)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if process.returncode is not None:
        _LIVE.discard(process)
    if cancelled is not None:
        raise cancelled


@atexit.register
def _kill_left_over() -> None:
    """At exit, kill the stdio servers whose sessions never ended (a task the event loop abandoned)."""
    for process in list(_LIVE):
        _signal(process, signal.SIGKILL)
    _LIVE.clear()


def _parse_message(line: bytes) -> Any:
    """A line of a stdio server's stdout as the SDK's session reads it: the message, or the parse error
    (a pydantic ValidationError, whose input `_excerpt` quotes) when the line is not JSON-RPC."""
    from mcp import types

    text = line.decode("utf-8", "replace")
    try:
        adapter = getattr(types, "jsonrpc_message_adapter", None)  # SDK 2.x
        if adapter is not None:
            message = adapter.validate_json(text, by_name=False)
        else:
            message = types.JSONRPCMessage.model_validate_json(text)
    except ValueError as exc:
        return exc
    try:
        from mcp.shared.message import SessionMessage
    except ImportError:  # SDK 1.x before 1.7: the streams carry bare messages
        return message
    return SessionMessage(message)


# --- helpers ------------------------------------------------------------------------------------------


def _seconds(limit: float) -> float | None:
    """A limit as asyncio.wait takes it: None waits as long as it takes."""
    return None if limit == NO_LIMIT else limit


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    """SDK 2.x uses snake_case attributes where 1.x used camelCase."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _tool_info(tool: Any) -> McpToolInfo:
    schema = _attr(tool, "input_schema", "inputSchema") or {"type": "object"}
    output = _attr(tool, "output_schema", "outputSchema")
    return McpToolInfo(
        name=tool.name,
        description=tool.description or "",
        input_schema=dict(schema),
        output_schema=dict(output) if isinstance(output, Mapping) else None,
    )


def _fits(info: McpToolInfo, arguments: Mapping[str, Any]) -> bool:
    """Whether `arguments` satisfy the tool's input schema as last listed (an invalid schema: no)."""
    try:
        return not schemas.errors(info.input_schema, dict(arguments))
    except SchemaError:
        return False


def _validate(label: str, info: McpToolInfo, arguments: Mapping[str, Any]) -> None:
    try:
        problems = schemas.errors(info.input_schema, dict(arguments))
    except SchemaError as exc:
        raise McpServerError(
            f"{label}: tool {info.name!r} has an invalid input schema: {exc.message}"
        ) from None
    if problems:
        raise McpArgumentError(schemas.describe(problems, f"{label}, tool {info.name!r}: invalid arguments"))


def _result(where: str, raw: Any, info: McpToolInfo) -> McpResult:
    content = [
        block.model_dump(mode="json", by_alias=True, exclude_none=True)
        if hasattr(block, "model_dump")
        else block
        for block in raw.content
    ]
    text = "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    structured = _attr(raw, "structured_content", "structuredContent")
    result = McpResult(
        text=text,
        structured=structured,
        content=content,
        is_error=bool(_attr(raw, "is_error", "isError", default=False)),
        wrapped=_wrapped(structured, text, info.output_schema),
    )
    if result.is_error:
        raise McpToolError(f"{where} reported an error: {text or 'no message'}", result)
    return result


def _wrapped(structured: Any, text: str, output_schema: dict[str, Any] | None) -> bool:
    """Whether `structured` is the SDKs' `{"result": value}` wrapper around a value that is not an object.

    Both must hold: the tool declares the wrapper as its output schema (an object whose one property,
    required, is `result`), and the text content is not the object itself as JSON. The second tells a
    wrapped value from an object the tool returned with the single key `result`: for an object, the
    text content is its JSON (the MCP specification asks servers to send it), while a wrapped value's
    text is the value alone (a string as it is, a list item by item).
    """
    if not (isinstance(structured, dict) and list(structured) == ["result"]):
        return False
    schema = output_schema or {}
    properties = schema.get("properties")
    if not (isinstance(properties, dict) and list(properties) == ["result"]):
        return False
    if schema.get("type", "object") != "object" or schema.get("required") != ["result"]:
        return False
    try:
        return json.loads(text) != structured
    except ValueError:
        return True


def _connection_lost(exc: BaseException | None) -> bool:
    """Whether a failed request means the transport is gone (server exited, killed, unreachable)."""
    import anyio

    if isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | ConnectionError | EOFError):
        return True
    error = getattr(exc, "error", None)  # the SDK's MCPError carries ErrorData
    code = getattr(error, "code", getattr(exc, "code", None))
    return code == -32000 or "connection closed" in str(exc).lower()


def _not_mcp_error(exc: BaseException | None) -> bool:
    """Whether a failed request means the server answered something that is not JSON-RPC (SDK 2.x over
    HTTP turns that into an error of the request)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    error = getattr(exc, "error", None)
    code = getattr(error, "code", getattr(exc, "code", None))
    message = getattr(error, "message", None) or str(exc)
    return code == _PARSE_ERROR or message.startswith("Unexpected content type")


def _excerpt(error: BaseException) -> str | None:
    """The start of what the server sent, from the SDK's parse error (a pydantic ValidationError, whose
    errors carry the input), quoted; None when the error does not carry it."""
    try:
        value = error.errors()[0]["input"]  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not a ValidationError: no excerpt
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            value = str(value)
    text = " ".join(value.split())
    if not text:
        return "an empty line"
    return repr(text[:_EXCERPT] + "…" if len(text) > _EXCERPT else text)


def _describe(exc: BaseException | None) -> str:
    """A one-line reason, looking inside anyio's exception groups for the real failure."""
    if exc is None:
        return "unknown error"
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) and message else str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        text = f"command not found ({text})"
    return " ".join(text.split())
