"""Tools from MCP servers, with the `mcp` SDK (the optional extra `charter[mcp]`).

A run holds one `McpClientPool`. The first use of a server starts it (stdio: the command runs once per
run) or connects to it (streamable HTTP), lists its tools, and keeps the session until `close()`.
Arguments are validated against the tool's input schema before the call.

Nothing here can hang a run: starting, listing and calling are bounded by timeouts, and a server that
exits (or is killed) fails the calls in flight and every later call with an `McpServerError` that says
which server and what happened, with the tail of its stderr when it wrote any.

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
import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from jsonschema.exceptions import SchemaError

from interpreter import schemas
from interpreter.providers.base import ToolSpec

DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 60.0
_CLOSE_TIMEOUT = 10.0
_STDERR_TAIL = 800


class McpError(Exception):
    """An MCP tool could not be used."""


class McpServerError(McpError):
    """The server failed to start, could not be reached, died, or did not answer in time."""


class McpToolError(McpError):
    """The tool ran and reported an error (the server is fine)."""

    def __init__(self, message: str, result: McpResult) -> None:
        super().__init__(message)
        self.result = result


class McpArgumentError(McpError):
    """The arguments do not match the tool's input schema, or the tool does not exist."""


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

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start or connect, initialize and list the tools, within `startup_timeout`."""
        _sdk()
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(), name=f"mcp {self.config.label}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.startup_timeout)
        except TimeoutError:
            await self._abort()
            raise McpServerError(
                f"{self.config.label} did not start within {self.startup_timeout:g}s{self._stderr_tail()}"
            ) from None
        except BaseException:  # McpError, or the run was cancelled (Ctrl-C) while the server started
            await asyncio.shield(self._abort())
            raise

    async def close(self) -> None:
        """End the session (and stop a stdio server). Bounded; safe to call twice."""
        self._closing.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _CLOSE_TIMEOUT)
            except (TimeoutError, Exception):
                await self._abort()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def _abort(self) -> None:
        if self._task is not None and not self._task.done():
            # A task cancelled while asyncio spawns its subprocess never finishes (CPython gh-103847):
            # let the spawn complete (milliseconds), then cancel.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spawned.wait(), _CLOSE_TIMEOUT)
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, _CLOSE_TIMEOUT)

    async def _own(self) -> None:
        """The session's task: enter the transport and session, report ready, wait for close."""
        assert self._ready is not None
        mcp = _sdk()
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(mcp))
                self._spawned.set()
                session = await stack.enter_async_context(mcp.ClientSession(streams[0], streams[1]))
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
            self._failure = _describe(exc)
            if not self._ready.done():
                verb = "failed to start" if self.config.command else "could not be reached"
                self._ready.set_exception(
                    McpServerError(f"{self.config.label} {verb}: {self._failure}{self._stderr_tail()}")
                )
        finally:
            if not self._closing.is_set() and self._failure is None:
                self._failure = "the session ended"
            self._spawned.set()
            self._dead.set()

    def _transport(self, mcp: Any) -> Any:
        if self.config.command is not None:
            from mcp.client.stdio import get_default_environment

            command, *args = self.config.command
            env = {**get_default_environment(), **dict(self.config.env)}
            params = mcp.StdioServerParameters(command=command, args=args, env=env, cwd=self.config.cwd)
            # A real file: the server's stderr goes there (not onto our terminal) and into error messages.
            self._stderr = tempfile.TemporaryFile()
            return mcp.stdio_client(params, errlog=self._stderr)
        try:
            from mcp.client.streamable_http import streamable_http_client as connect
        except ImportError:  # mcp 1.x
            from mcp.client.streamable_http import streamablehttp_client as connect
        return connect(self.config.url)

    # --- calls ----------------------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: Mapping[str, Any], *, timeout: float | None = None
    ) -> McpResult:
        """Call `tool` with validated `arguments`. Raises McpArgumentError, McpToolError, McpServerError."""
        self._check_alive()
        info = self.tools.get(tool)
        if info is None:
            have = ", ".join(sorted(self.tools)) or "none"
            raise McpArgumentError(f"{self.config.label} has no tool {tool!r}; its tools: {have}")
        _validate(self.config.label, info, arguments)
        limit = timeout or self.call_timeout
        call = asyncio.ensure_future(self._session.call_tool(tool, dict(arguments)))
        died = asyncio.ensure_future(self._dead.wait())
        try:
            done, _ = await asyncio.wait({call, died}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (call, died):
                if not task.done():
                    task.cancel()
        where = f"{self.config.label}, tool {tool!r}"
        if call in done and call.exception() is None:
            return _result(where, call.result(), info)
        if call in done:
            error = call.exception()
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
        raise McpServerError(f"{where}: no answer within {limit:g}s")

    def _lost(self, reason: str) -> None:
        """The transport is gone (the SDK keeps the session open): fail later calls, release the rest."""
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


class McpClientPool:
    """The MCP sessions of one run, one per server, started on first use and closed together."""

    def __init__(
        self, *, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT, call_timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> None:
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self._connections: dict[McpServerConfig, McpConnection] = {}
        self._starting: dict[McpServerConfig, asyncio.Lock] = {}

    async def connection(self, config: McpServerConfig) -> McpConnection:
        lock = self._starting.setdefault(config, asyncio.Lock())
        async with lock:  # two steps asking at once still start one server
            existing = self._connections.get(config)
            if existing is not None:
                return existing
            connection = McpConnection(
                config, startup_timeout=self.startup_timeout, call_timeout=self.call_timeout
            )
            await connection.start()
            self._connections[config] = connection
            return connection

    async def list_tools(self, config: McpServerConfig) -> list[McpToolInfo]:
        return list((await self.connection(config)).tools.values())

    async def call(
        self,
        config: McpServerConfig,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> McpResult:
        return await (await self.connection(config)).call(tool, arguments, timeout=timeout)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


# --- helpers ------------------------------------------------------------------------------------------


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
