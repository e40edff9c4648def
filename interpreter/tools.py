"""Calling tools: Python callables (sync ones on daemon worker threads, async ones awaited) and HTTP
requests through httpx. Every failure comes back as a `StepError` with a message fit for a person."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import io
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl.model import parse_duration
from interpreter import schemas
from interpreter.hashing import sha256_hex
from interpreter.policy import ModulePolicy
from interpreter.runtime import StepError

_SCALARS = (str, int, float, bool, type(None))


# --------------------------------------------------------------------------------------------------
# A pool of daemon threads: a hanging tool that a timeout cut off must not keep the process alive at
# exit (concurrent.futures joins its workers at interpreter shutdown).


class _DaemonPool:
    """Runs sync tools off the event loop. Up to `core` workers start as calls come; a call that finds
    them all busy waits. While calls wait, the pool looks every `grow_after` seconds for workers stuck
    in one call since the last look (a tool blocked on I/O, hung, or waiting for another call) and
    starts a worker for each, up to `max_workers`: slow tools still run side by side (the workers
    double at each look while all are stuck), while a burst of quick calls is left to the workers
    that take them in turn, not met by a thread each that only fights over the GIL. Workers stay for
    the next calls. Finished calls are handed to their loop in batches: the loop is woken once for all
    that finish before it looks."""

    def __init__(self, max_workers: int = 256, core: int | None = None, grow_after: float = 0.002) -> None:
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a call
        self._queued = 0  # calls no worker has taken yet
        self._max = max_workers
        self._core = core or min(max_workers, (os.cpu_count() or 1) + 2)
        self._grow_after = grow_after
        self._growing = False  # a look is due
        self._look_from = 0  # the calls taken when it was asked for
        # The looks run on a thread of their own: no event loop (closed, stopped or busy) can hold them up.
        self._watcher: threading.Thread | None = None
        self._wanted = threading.Event()  # wakes the watcher for a look
        self._taken = 0  # calls the workers have taken so far: numbers them
        self._running: dict[int, int] = {}  # worker (thread id) -> the number of the call it runs
        self._settled: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # finished calls not yet delivered

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]
    ) -> asyncio.Future[tuple[Any, BaseException | None]]:
        """Run `fn` on a worker. The future's result is `(result, None)` or `(None, exception)`: what
        `fn` raised is handed over, not set on the future (which cannot carry a StopIteration)."""
        future = loop.create_future()
        self._work.put((loop, future, fn))
        with self._lock:
            self._queued += 1
            if self._queued > self._idle and self._threads < self._core:
                self._start()
            if self._queued > self._idle and not self._growing:  # all busy: the call waits
                self._look_later()
        return future

    def _look_later(self) -> None:  # with the lock held
        self._growing, self._look_from = True, self._taken
        if self._watcher is not None:
            self._wanted.set()
        elif _started(watcher := threading.Thread(target=self._watch, name="charter-tool-pool", daemon=True)):
            self._watcher = watcher
        else:
            self._growing = False  # the next call that waits asks again

    def _watch(self) -> None:
        while True:
            time.sleep(self._grow_after)
            if not self._grow():
                self._wanted.wait()
                self._wanted.clear()

    def _start(self) -> None:
        if _started(threading.Thread(target=self._worker, name="charter-tool", daemon=True)):
            self._threads += 1
            self._idle += 1

    def _grow(self) -> bool:
        """Start a worker for each one stuck since the last look (and any the system refused before, up
        to `core`); whether to look again."""
        with self._lock:
            if self._queued > self._idle:
                stuck = sum(1 for number in self._running.values() if number <= self._look_from)
                missing = max(0, self._core - self._threads)
                for _ in range(min(stuck + missing, self._queued - self._idle, self._max - self._threads)):
                    self._start()
            self._growing = self._queued > self._idle and self._threads < self._max
            self._look_from = self._taken
            return self._growing

    def _worker(self) -> None:
        me = threading.get_ident()
        while True:
            loop, future, fn = self._work.get()
            with self._lock:
                self._queued -= 1
                self._idle -= 1
                self._taken += 1
                self._running[me] = self._taken
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting step
                result, error = None, exc
            with self._lock:
                self._idle += 1
                del self._running[me]
                if loop.is_closed():  # the run was cut off while this call hung: nobody waits for it
                    self._settled.pop(loop, None)
                    continue
                settled = self._settled.setdefault(loop, [])
                settled.append((future, (result, error)))
                if len(settled) > 1:
                    continue  # the loop is woken for the first one already and takes them all
            try:
                loop.call_soon_threadsafe(self._deliver, loop)
            except RuntimeError:  # the loop closed while this call hung
                with self._lock:
                    self._settled.pop(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: settle every call that finished since the loop was woken (one wake-up for many)."""
        with self._lock:
            settled = self._settled.pop(loop, ())
        for future, outcome in settled:
            if not future.done():  # a call cut off by a timeout was cancelled
                future.set_result(outcome)


def _started(thread: threading.Thread) -> bool:
    """Start a thread; False when the system refuses another one (the calls then wait for the workers
    there are)."""
    try:
        thread.start()
    except RuntimeError:
        return False
    return True


_POOL = _DaemonPool()


# --------------------------------------------------------------------------------------------------
# Python tools


@dataclass(frozen=True, slots=True)
class PythonTarget:
    module: str
    qualname: str

    @classmethod
    def parse(cls, text: str) -> PythonTarget:
        module, _, qualname = text.partition(":")
        return cls(module, qualname)


def find_module_file(module: str, roots: list[Path]) -> Path | None:
    """The source file of a module, found without importing anything."""
    parts = module.split(".")
    for root in [*roots, *(Path(p) for p in sys.path if p)]:
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _module_root(module: str, roots: list[Path]) -> Path | None:
    """The first of `roots` that `-m module` run there would import it from (its top-level name)."""
    top = module.split(".")[0]
    return next((r for r in roots if (r / f"{top}.py").is_file() or (r / top).is_dir()), None)


def code_digest(target: str, roots: list[Path]) -> str | None:
    """SHA-256 of the source of a tool function (the whole module when the function's definition is not
    found), read without importing: replay compares it to tell that a tool's code changed."""
    parsed = PythonTarget.parse(target)
    path = find_module_file(parsed.module, roots)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    key = (sha256_hex(text), parsed.qualname)
    if key not in _DIGESTS:
        if len(_DIGESTS) >= 1024:
            _DIGESTS.clear()
        _DIGESTS[key] = _source_digest(text, parsed.qualname)
    return _DIGESTS[key]


# Parsing a module costs milliseconds and every run asks again: kept by the module's content.
_DIGESTS: dict[tuple[str, str], str | None] = {}


def _source_digest(text: str, qualname: str) -> str | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for name in qualname.split("."):
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == name
            ),
            None,
        )
        if node is None:
            return sha256_hex(text)
        body = getattr(node, "body", [])
    segment = _segment(text, node) if node is not None else None
    return sha256_hex(segment or text)


def _segment(text: str, node: ast.AST) -> str | None:
    """`ast.get_source_segment`, without its character-by-character split of the whole file."""
    start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    first, last = getattr(node, "col_offset", None), getattr(node, "end_col_offset", None)
    if start is None or end is None or first is None or last is None:
        return None
    lines = io.StringIO(text, newline="").readlines()[start - 1 : end]  # \n, \r\n, \r: as the parser
    if not lines:
        return None
    # Offsets are in UTF-8 bytes.
    if len(lines) == 1:
        return lines[0].encode("utf-8")[first:last].decode("utf-8")
    head = lines[0].encode("utf-8")[first:].decode("utf-8")
    tail = lines[-1].encode("utf-8")[:last].decode("utf-8")
    return head + "".join(lines[1:-1]) + tail


@dataclass
class PythonTool:
    name: str
    target: str
    fn: Callable[..., Any]
    is_async: bool
    takes_key: bool
    code: str | None
    schema: dict[str, Any] | None = None  # of its arguments, from its type hints (None: unknown)


def args_schema(fn: Callable[..., Any]) -> dict[str, Any] | None:
    """The JSON Schema of a Python tool's arguments, derived from its signature and type hints (spec
    §8): what a model is shown, and what a call is checked against, when the tool declares no `args`.
    None when the signature cannot be read, a hint has no JSON Schema, or the function takes **kwargs.

    An argument the function does not take is refused (`additionalProperties: false`), as a wrong type
    is, before the call: a misspelt name is the caller's mistake, not a failure of the tool that a retry
    could mend. A parameter whose default is None accepts null (`x: str = None` is `str | None`)."""
    import typing
    import warnings

    import pydantic

    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError):
        return None
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.name == "idempotency_key" or param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            continue
        if param.kind is param.VAR_KEYWORD:
            return None  # takes any argument: nothing to check
        default = ... if param.default is param.empty else param.default
        hint = hints.get(param.name, Any)
        if param.default is None:  # `x: str = None`: None is what the function expects when x is left out
            try:
                hint = typing.Optional[hint]  # noqa: UP045 - `hint | None` fails for some hints (a string)
            except TypeError:
                pass
        fields[param.name] = (hint, default)
    try:
        with warnings.catch_warnings():  # e.g. a parameter named `json` "shadows" a BaseModel attribute
            warnings.simplefilter("ignore")
            model = pydantic.create_model(f"{getattr(fn, '__name__', 'tool')}_args", **fields)
            schema = model.model_json_schema()
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot describe: leave the call unchecked
        return None
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema["additionalProperties"] = False  # no **kwargs (returned above): any other name is a TypeError
    return schema


def resolve_python(name: str, target: str, policy: ModulePolicy) -> PythonTool:
    """Check the module against the policy, then import it and find the callable."""
    parsed = PythonTarget.parse(target)
    allowance = policy.check(parsed.module, name)
    roots = policy.import_roots(allowance)
    for root in reversed(roots):  # first on sys.path in the policy's order, wherever they were before
        text = str(root)
        if text in sys.path:
            sys.path.remove(text)
        sys.path.insert(0, text)
    try:
        obj: Any = importlib.import_module(parsed.module)
        for part in parsed.qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a clear step error
        raise StepError(
            "tool",
            f"tool '{name}': cannot load {target}: {type(exc).__name__}: {exc}{_raised_at(exc)}",
            type="ToolError",
        ) from None
    if not callable(obj):
        raise StepError("tool", f"tool '{name}': {target} is not callable", type="ToolError")
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    return PythonTool(
        name=name,
        target=target,
        fn=obj,
        is_async=inspect.iscoroutinefunction(obj),
        takes_key="idempotency_key" in params,
        code=code_digest(target, roots),
        schema=args_schema(obj),
    )


def _raised_at(exc: BaseException) -> str:
    """Where the module's own code raised `exc` (not the import machinery), as " (at FILE:LINE)"."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if isinstance(exc, SyntaxError) or not frames or frames[-1].filename == __file__:
        return ""  # a SyntaxError names its place itself; a missing attribute has no line of its own
    return f" (at {frames[-1].filename}:{frames[-1].lineno})"


def normalise_result(name: str, value: Any) -> Any:
    """A tool's result as plain JSON, or a step error when it does not serialise."""
    if type(value) in _SCALARS and type(value) is not str:
        if type(value) is float and (value != value or value in (float("inf"), float("-inf"))):
            raise StepError("tool", f"tool '{name}' returned {value}, which is not JSON", type="ToolError")
        return value
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")  # a lone surrogate has no UTF-8 form: UnicodeEncodeError, a ValueError
        return value if type(value) is str else json.loads(text, object_pairs_hook=_distinct_keys)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StepError(
            "tool", f"tool '{name}' returned a value that does not serialise to JSON: {exc}", type="ToolError"
        ) from None


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object read back from a dict `json.dumps` wrote: keys such as 1 and "1" are written as
    the same text, and reading it back would keep only the last value."""
    obj: dict[str, Any] = {}
    for key, member in pairs:
        if key in obj:
            raise ValueError(f"two of its keys become the same JSON key {key!r} (such as 1 and '1')")
        obj[key] = member
    return obj


async def call_python(tool: PythonTool, args: dict[str, Any], key: str) -> Any:
    kwargs = dict(args)
    if tool.takes_key:
        kwargs["idempotency_key"] = key
    try:
        if tool.is_async:
            result = await tool.fn(**kwargs)
        else:
            fn = tool.fn
            result, error = await _POOL.submit(asyncio.get_running_loop(), lambda: fn(**kwargs))
            if error is not None:
                raise error  # here, in this frame: a StopIteration is reported as itself
    except StepError:
        raise
    except KeyboardInterrupt:
        raise
    except asyncio.CancelledError as exc:
        # Only a cancellation of this task is the step's: a timeout, a join's loser, Ctrl-C (the task is
        # then `cancelling`). A CancelledError the tool raised itself (it awaited a task something else
        # cancelled, or raised it in its thread) is its own failure, which catch and retry see.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise _raised(tool.name, exc) from None
    except BaseException as exc:  # noqa: BLE001 - the tool's own failure (even SystemExit) is the step's error
        raise _raised(tool.name, exc) from None
    return normalise_result(tool.name, result)


def _raised(name: str, exc: BaseException) -> StepError:
    text = f": {exc}" if str(exc) else ""
    return StepError("tool", f"tool '{name}' raised {type(exc).__name__}{text}", type="ToolError")


# --------------------------------------------------------------------------------------------------
# HTTP tools


def _url(compiled: Any, default: str, bindings: Mapping[str, Any]) -> str:
    """The request URL. A value interpolated after the host (into the path, query or fragment) is
    percent-encoded, so that an argument (say, an agent's `../admin`) stays one segment or one query
    value; a value before (a base URL, a host) is inserted as it is."""
    from urllib.parse import quote

    from dsl.templates import to_text

    if compiled is None:
        return default
    if compiled.parts is None:  # the whole url one `${{ }}`: its text, as an interpolation inserts it
        return to_text(compiled.evaluate(bindings))
    text = ""
    for part in compiled.parts:
        if type(part) is str:
            text += part
            continue
        piece = to_text(part.evaluate(bindings))
        host = text.find("://") + 3
        after_host = host >= 3 and any(c in text[host:] for c in "/?#")
        text += quote(piece, safe="") if after_host else piece
    return text


class _Unsendable(ValueError):
    """A request that HTTP cannot carry, said without quoting the value (it may hold a secret)."""


def _check_headers(headers: Mapping[str, str]) -> None:
    """Header names and values must be ASCII without line breaks or NUL (RFC 9110): an argument such as
    a model's "José" is refused with the header's name, not by an encoder deep in httpx."""
    for name, value in headers.items():
        for what, text in (("name", name), ("value", value)):
            if not text.isascii():
                raise _Unsendable(
                    f"the {what} of header {name!r} is not ASCII, which an HTTP header cannot carry"
                )
            if any(c in text for c in "\r\n\0"):
                raise _Unsendable(f"the {what} of header {name!r} holds a line break or NUL")


def _check_port(url: Any) -> None:
    """httpx accepts any port number; the socket layer would refuse one out of range only when sending."""
    if url.port is not None and not 0 < url.port < 65536:
        raise _Unsendable(f"the port {url.port} is out of range (1-65535)")


def _query_value(value: Any) -> Any:
    """A `query` parameter's text; a list stays a list (the parameter repeated), each item as text."""
    from dsl.templates import to_text

    if isinstance(value, list):
        return [to_text(item) for item in value]
    return to_text(value)


def _reason(exc: BaseException) -> str:
    """One line: the first failure inside anyio's exception groups, with its type when its text is bare."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def call_http(
    name: str,
    spec: Any,
    values: Mapping[str, Any],
    bindings: Mapping[str, Any],
    args: dict[str, Any],
    key: str,
    client: Any,
    mask: Callable[[Any], Any] = lambda text: text,
) -> Any:
    """One request; a non-2xx answer is a tool error that carries the status and the start of the
    body, cut after `mask` (the run's secrets) so that no part of a secret the server echoed is left."""
    import httpx

    from dsl.expr import from_cel
    from dsl.templates import to_text

    def value(field: str, default: Any) -> Any:
        compiled = values.get(field)
        return default if compiled is None else from_cel(compiled.evaluate(bindings))

    try:
        url = _url(values.get("url"), spec.url, bindings)
        # A value that is not a string goes as its JSON text (`true`, `null`, `{"a":1}`), as it does
        # interpolated (§14), never as Python's repr (`True`, `None`).
        headers = {str(k): to_text(v) for k, v in (value("headers", spec.headers) or {}).items()}
        # The call's key, unless the definition sets the header itself (in any case: header names are
        # case-insensitive, and two copies would leave the server to pick one).
        if not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = key
        query = {str(k): _query_value(v) for k, v in (value("query", spec.query) or {}).items()}
        body = value("body", spec.body)
        body = None if body is None else to_text(body)
        payload = value("json", spec.json_)
    except Exception as exc:  # noqa: BLE001 - an expression error in the tool definition
        raise StepError("expression", f"tool '{name}': {exc}", type="ExpressionError") from None
    if payload is None and body is None and spec.method in ("POST", "PUT", "PATCH"):
        payload = args
    limit = parse_duration(spec.timeout) if spec.timeout else None
    what = f"tool '{name}': {spec.method} {url}"
    try:
        # Built apart from sending: what fails here (a URL that does not parse, a header HTTP cannot
        # carry, a body that is not JSON) never reached the network, and another attempt with the same
        # values fails the same way.
        _check_headers(headers)
        request = client.build_request(
            spec.method,
            httpx.URL(url).copy_merge_params(query) if query else url,  # `params=` drops the url's query
            headers=headers,
            json=payload if body is None else None,
            content=body,
            timeout=30.0 if limit is None else limit,  # httpx's, per phase: the server's longest silence
        )
        _check_port(request.url)
    except Exception as exc:  # noqa: BLE001 - httpx.InvalidURL, UnicodeError, ...: never a run's `internal` failure
        reason = str(exc) if isinstance(exc, _Unsendable) else _reason(exc)
        raise StepError(
            "http", f"{what} cannot be sent: {reason}", type="ToolError", category="tool", retryable=False
        ) from None
    # httpx applies its timeout to each phase (connect, each read): a server that trickles its answer a
    # byte at a time never trips it. The declared `timeout` bounds the whole request, body included.
    try:
        async with asyncio.timeout(limit):
            response = await client.send(request)
    except (TimeoutError, httpx.TimeoutException):
        after = f" after {spec.timeout}" if spec.timeout else ""
        raise StepError("timeout", f"{what} timed out{after}", type="ToolError", category="tool") from None
    except httpx.HTTPError as exc:
        raise StepError("http", f"{what} failed: {exc}", type="ToolError", category="tool") from None
    except Exception as exc:  # noqa: BLE001 - a transport fault httpx does not wrap (anyio's ExceptionGroup, OSError)
        raise StepError("http", f"{what} failed: {_reason(exc)}", type="ToolError", category="tool") from None
    if not 200 <= response.status_code < 300:
        raise StepError(
            "http",
            f"tool '{name}': {spec.method} {url} answered HTTP {response.status_code}: {mask(response.text)[:200]}",
            type="ToolError",
            category="tool",
            retryable=response.status_code >= 500 or response.status_code == 429,
            details={"status": response.status_code},
        )
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except (ValueError, RecursionError):
            return normalise_result(name, response.text)
        return normalise_result(name, body)  # NaN, lone surrogates, absurd nesting: a step error
    return normalise_result(name, response.text)


def validate_args(name: str, schema: dict[str, Any] | None, args: Any, cache: dict[str, Any]) -> None:
    """Check a call's arguments against the tool's `args` JSON Schema."""
    if schema is None:
        return
    problems = schemas.errors(schemas.compiled(schema, cache, name), args)
    if problems:
        message = schemas.describe(problems, f"tool '{name}': invalid arguments", root_key="argument")
        raise StepError("tool", message, type="ToolError", retryable=False)


# --------------------------------------------------------------------------------------------------
# One path for every tool call (tool steps and agents' tool calls): resolve, dispatch, bound in time.
# Events, authorization and guardrails are the caller's.


async def call_tool(
    ex: Any,
    name: str,
    args: dict[str, Any],
    *,
    key: str,
    scope: Any,
    path: str,
    child_path: str | None = None,
    identity: str | None = None,
) -> Any:
    """Call the declared tool `name` with `args` (already validated) and return its JSON result.
    `child_path` is the node a workflow tool's child run hangs from (default: `path`). `identity` is the
    identity the call runs under (an agent's, a tool step's; None: the workflow itself), which an HTTP
    tool's definition reads as `identity` to pick that identity's credentials from `secrets`."""
    await ex.durable()  # what the run did so far is in the log before the call acts on the world
    compiled = ex.graph.tools.get(name) if ex.graph.tools else None
    tool = compiled.tool if compiled is not None else ex.graph.workflow.tools[name]
    timeout = parse_duration(tool.timeout) if tool.timeout else None
    if tool.python:
        call = call_python(ex.python_tool(name, tool.python), args, key)
    elif tool.http is not None:
        bindings = {**ex.bindings(scope), "args": args, "identity": identity or ""}  # the call's own args
        values = compiled.values if compiled is not None else {}
        call = call_http(name, tool.http, values, bindings, args, key, await ex.http(), ex.guard.mask)
    elif tool.workflow is not None:
        from interpreter.steps import child_run

        call = child_run(ex, child_path or path, tool.workflow, args, key)
    elif tool.mcp is not None:
        call = call_mcp(ex, name, tool, compiled, args, scope, path)
    else:
        raise StepError("unsupported", f"tool '{name}' has no kind", retryable=False)
    if timeout is None:
        return await call
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise StepError(
            "timeout", f"tool '{name}' timed out after {tool.timeout}", type="ToolError", category="tool"
        ) from None


# --------------------------------------------------------------------------------------------------
# MCP tools. A stdio server's command is code execution, so it passes the same allow-list as python
# modules: `[python, -m, pkg.server]` and `[python, path/to/server.py]` are checked as the module they
# run (and started with this interpreter, from the allowing project's root); any other program is
# checked by its name (allow it with `--allow-module PROGRAM`). Servers reached by `url` need no check.

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$")


def mcp_command(
    command: list[str] | tuple[str, ...], policy: ModulePolicy, tool: str
) -> tuple[list[str], str | None]:
    """The command to start (and its working directory) once the policy allows it; PolicyError if not."""
    from interpreter.policy import PolicyError

    program, rest = command[0], list(command[1:])
    if _PYTHON.match(Path(program).name) and rest:
        if rest[0] == "-m" and len(rest) >= 2:
            allowance = policy.check(rest[1], tool)
            roots = policy.import_roots(allowance)
            return [sys.executable, *rest], str(_module_root(rest[1], roots) or roots[0])
        if rest[0].endswith(".py"):
            for root in policy.roots:
                script = (root / rest[0]).resolve()
                if script.is_file() and script.is_relative_to(root.resolve()):
                    module = ".".join(script.relative_to(root.resolve()).with_suffix("").parts)
                    allowance = policy.check(module, tool)
                    return [sys.executable, str(script), *rest[1:]], str(policy.import_roots(allowance)[0])
            raise PolicyError(f"tool '{tool}': MCP server script '{rest[0]}' is not found in the project")
    # Allowed as written: a program given with a folder (./bin/docs-server, perhaps shipped with the
    # workflow file) is not the program of that name on PATH that an allowance by name means.
    if policy.allowance_for(program) is None:
        raise PolicyError(
            f"tool '{tool}': MCP server command '{program}' is not allowed; allow it with --allow-module {program} "
            f"(or CHARTER_ALLOW_MODULES, or [tool.charter] allow-modules in pyproject.toml)"
        )
    return list(command), None


def check_mcp_commands(graph: Any, policy: ModulePolicy) -> None:
    """Every stdio MCP server of a workflow must be allowed, and its `env` must not set a variable that
    chooses the code it runs (PATH, LD_*, PYTHONPATH, ...: its keys are fixed in the file, whatever
    their values). Checked before a run; nothing is started."""
    from interpreter.mcp_client import code_loading_env, env_refusal
    from interpreter.policy import PolicyError

    problems = []
    for name, tool in graph.workflow.tools.items():
        if tool.mcp is not None and tool.mcp.command:
            try:
                mcp_command(tool.mcp.command, policy, name)
            except PolicyError as exc:
                problems.append(str(exc))
            refused = code_loading_env(tool.mcp.env)
            if refused:
                first = next(key for key in tool.mcp.env if key in refused)  # in the order of the file
                where = _key_position(graph, ("tools", name, "mcp", "env", first))
                label = f"tool '{name}': MCP server `{' '.join(tool.mcp.command)}`"
                problems.append(f"{where}{env_refusal(label, refused)}")
    if problems:
        raise PolicyError("\n".join(problems))


def _key_position(graph: Any, path: tuple[str, ...]) -> str:
    """`file:line:col: ` of a key of the workflow file, or nothing when the graph has no source."""
    source, file = getattr(graph, "source", None), getattr(graph, "file", None)
    if not source or not file:
        return ""
    from dsl.loader import load_text

    doc, _ = load_text(source, file)
    if doc is None:
        return ""
    line, column = doc.key_position(path)
    return f"{file}:{line}:{column}: "


def _mcp_config(ex: Any, name: str, tool: Any, scope: Any) -> Any:
    from interpreter.mcp_client import McpEnvError, McpError, McpServerConfig
    from interpreter.policy import PolicyError

    spec = tool.mcp
    command, cwd = None, None
    if spec.command:
        try:
            command, cwd = mcp_command(spec.command, ex.policy, name)
        except PolicyError as exc:
            raise StepError("policy", str(exc), type="PolicyError", retryable=False) from None
    env = spec.env
    compiled = ex.graph.tools.get(name) if ex.graph.tools else None
    if compiled is not None and compiled.values.get("env") is not None:
        env = ex.evaluate(compiled.values["env"], scope, f"tool '{name}': env")
    try:
        return McpServerConfig.create(command=command, url=spec.url, env=env, cwd=cwd)
    except McpEnvError as exc:  # `check_mcp_commands` refuses it before a run: a last line here
        raise StepError("policy", f"tool '{name}': {exc}", type="PolicyError", retryable=False) from None
    except McpError as exc:
        raise StepError("tool", f"tool '{name}': {exc}", type="ToolError", retryable=False) from None


def _mcp_limit(ex: Any, tool: Any, path: str) -> float | None:
    """The MCP client's own limit on a call and on a start it needs: none (`NO_LIMIT`) when the workflow
    bounds the call itself, with the tool's `timeout`, a `timeout` of the step making the call or of a
    step around it, or the workflow's `timeout` (spec §8.3), so that the declared limit governs and cuts
    the call off with code `timeout`; else None, the client's defaults."""
    from interpreter.engine import static_path
    from interpreter.mcp_client import NO_LIMIT

    if tool.timeout or ex.graph.workflow.timeout:
        return NO_LIMIT
    parts = path.split("/") if path else []
    for i in range(len(parts), 0, -1):
        try:
            node = ex.graph.node(static_path("/".join(parts[:i])))
        except KeyError:  # a segment that is no step (an agent's call, a case): the steps around it count
            continue
        if getattr(node.step, "timeout", None):
            return NO_LIMIT
    return None


async def mcp_tool_info(ex: Any, name: str, tool: Any, scope: Any, path: str | None = None) -> Any:
    """The server's description of an MCP tool (`McpToolInfo`): starts or reuses the run's session.
    `path` is the step that asks (default: the steps around `scope`), whose time limits bound the start."""
    from interpreter.mcp_client import McpError, McpTimeoutError

    config = _mcp_config(ex, name, tool, scope)
    remote = tool.mcp.tool or name
    limit = _mcp_limit(ex, tool, scope.runtime if path is None else path)
    try:
        tools = {t.name: t for t in await run_resources(ex).mcp().list_tools(config, startup_timeout=limit)}
    except McpTimeoutError as exc:
        raise StepError("timeout", f"tool '{name}': {exc}", type="ToolError", category="mcp") from None
    except McpError as exc:
        raise StepError("tool", f"tool '{name}': {exc}", type="ToolError", category="mcp") from None
    if remote not in tools:
        have = ", ".join(sorted(tools)) or "none"
        raise StepError(
            "tool",
            f"tool '{name}': {config.label} has no tool {remote!r}; its tools: {have}",
            retryable=False,
        )
    return tools[remote]


async def call_mcp(
    ex: Any, name: str, tool: Any, compiled: Any, args: dict[str, Any], scope: Any, path: str = ""
) -> Any:
    from interpreter.mcp_client import McpArgumentError, McpError, McpTimeoutError, McpToolError

    config = _mcp_config(ex, name, tool, scope)
    limit = _mcp_limit(ex, tool, path)
    try:
        result = (
            await run_resources(ex)
            .mcp()
            .call(config, tool.mcp.tool or name, args, timeout=limit, startup_timeout=limit)
        )
    except McpTimeoutError as exc:  # the client's default limit (nothing declared bounds the call)
        raise StepError("timeout", f"tool '{name}': {exc}", type="ToolError", category="mcp") from None
    except McpToolError as exc:
        raise StepError("tool", f"tool '{name}': {exc}", type="ToolError") from None
    except McpArgumentError as exc:
        raise StepError("tool", f"tool '{name}': {exc}", type="ToolError", retryable=False) from None
    except McpError as exc:  # the server failed to start, died, or did not answer
        raise StepError("tool", f"tool '{name}': {exc}", type="ToolError", category="mcp") from None
    return normalise_result(name, result.value)


# --------------------------------------------------------------------------------------------------
# What a run opens on first use and closes at its end: MCP sessions, model providers.


class RunResources:
    def __init__(self) -> None:
        self.closers: list[Callable[[], Any]] = []
        self._mcp: Any = None

    def mcp(self) -> Any:
        if self._mcp is None:
            from interpreter.mcp_client import McpClientPool

            self._mcp = McpClientPool()
            self.closers.append(self._mcp.close)
        return self._mcp

    async def aclose(self) -> None:
        closers, self.closers = self.closers, []
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # noqa: BLE001, S110 - closing must not hide the run's outcome
                pass


def run_resources(ex: Any) -> RunResources:
    resources = getattr(ex, "resources", None)
    if resources is None:
        resources = ex.resources = RunResources()
        _close_with_run(ex, resources)
    return resources


def _close_with_run(ex: Any, resources: RunResources) -> None:
    """Close `resources` when the run ends: the engine awaits every closer in `ex.closers`."""
    ex.closers.append(resources.aclose)
