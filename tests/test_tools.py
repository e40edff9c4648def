"""Tool calling: the module allow-list, Python callables, HTTP requests (against a local server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fixtures.http_server import serving
from fixtures.workflows import written

from interpreter import RunOptions, run_workflow
from interpreter.policy import PolicyError, build_policy
from interpreter.runtime import RunSetupError
from interpreter.tools import code_digest

MODULE = "h10_tool_tools"
TOOLS = """
import asyncio

def add(a: int, b: int, idempotency_key=None):
    return {"sum": a + b, "key": idempotency_key}

async def twice(x):
    await asyncio.sleep(0)
    return [x, x]

def plain(x):
    return x

def square(x: int, note: str = "") -> int:
    return x * x

def nan():
    return float("nan")

def surrogate():
    return {"text": "a\\ud800b"}

def colliding():
    return {"ok": {1: "one", "1": "also one"}}

def exits():
    raise SystemExit(3)

def exhausted():
    return next(iter([]))
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tools")
    (d / f"{MODULE}.py").write_text(TOOLS)
    return d


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path.startswith("/missing"):
            self._answer(404, {"error": "not found"})
            return
        self._answer(
            200,
            {
                "path": url.path,
                "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                "auth_ok": self.headers.get("Authorization") == "Bearer s3cret",
                "key": self.headers.get("Idempotency-Key"),
            },
        )

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self._answer(201, {"received": json.loads(self.rfile.read(length) or b"null")})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(_Handler) as url:
        yield url


OPTS = RunOptions(allow_modules=(MODULE,))


# --------------------------------------------------------------------------------------------------
# policy


def test_policy_patterns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARTER_ALLOW_MODULES", "envmod, other.*")
    policy = build_policy(("pkg",), None)
    assert policy.allowance_for("pkg") and policy.allowance_for("pkg.sub")
    assert policy.allowance_for("pkgx") is None
    assert policy.allowance_for("envmod") and policy.allowance_for("other.tools")
    assert policy.allowance_for("other") is None
    with pytest.raises(PolicyError, match="'os' is not allowed"):
        policy.check("os", "shell")


def test_policy_trusts_only_the_pyproject_of_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["mytools.*"]\n')
    monkeypatch.delenv("CHARTER_ALLOW_MODULES", raising=False)
    # A pyproject.toml that travels with a shared workflow (above or beside it) allows nothing.
    monkeypatch.chdir(tmp_path)
    assert build_policy((), project / "flows" / "f.yaml").allowance_for("mytools.billing") is None
    # Run from the project itself, its allow-list applies and its modules import from there.
    monkeypatch.chdir(project)
    allowance = build_policy((), project / "flows" / "f.yaml").allowance_for("mytools.billing")
    assert allowance is not None and allowance.root == project.resolve()


def test_disallowed_module_is_never_imported(store: Any, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "h10_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\ndef run():\n    return 1\n"
    )
    graph = written(
        tmp_path,
        "evil",
        """\
        charter: "1.0"
        name: evil
        tools:
          run: {python: "h10_evil:run", effect: write}
        steps:
          - {id: go, tool: run}
        """,
    )
    with pytest.raises(RunSetupError, match="h10_evil"):
        run_workflow(graph, {}, store=store, options=RunOptions(allow_modules=("h10_other",)))
    assert not marker.exists()


def test_a_module_that_raises_at_import_is_named_with_the_line(store: Any, tmp_path: Path) -> None:
    """A tool module failing at import (a missing environment variable) is refused before the run with
    where in the module it failed, not only the exception's text."""
    (tmp_path / "h10_needs_env.py").write_text(
        "import os\n\nURL = os.environ['H10_SURELY_UNSET_URL']\n\ndef f():\n    return 1\n"
    )
    graph = written(
        tmp_path,
        "needs_env",
        """\
        charter: "1.0"
        name: needs-env
        tools:
          f: {python: "h10_needs_env:f", effect: read}
        steps:
          - {id: go, tool: f}
        """,
    )
    with pytest.raises(RunSetupError) as refused:
        run_workflow(graph, {}, store=store, options=RunOptions(allow_modules=("h10_needs_env",)))
    message = str(refused.value)
    assert "KeyError: 'H10_SURELY_UNSET_URL'" in message
    assert f"(at {tmp_path / 'h10_needs_env.py'}:3)" in message


def test_code_digest_reads_without_importing(tmp_path: Path) -> None:
    (tmp_path / "h10_digest.py").write_text("raise SystemExit('imported!')\ndef f():\n    return 1\n")
    first = code_digest("h10_digest:f", [tmp_path])
    (tmp_path / "h10_digest.py").write_text("raise SystemExit('imported!')\n\n\ndef f():\n    return 1\n")
    assert code_digest("h10_digest:f", [tmp_path]) == first  # the function's own text did not change
    (tmp_path / "h10_digest.py").write_text("def f():\n    return 2\n")
    assert code_digest("h10_digest:f", [tmp_path]) != first


# --------------------------------------------------------------------------------------------------
# python tools


def test_python_tools_sync_async_and_idempotency_key(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "python_tools",
        f"""\
        charter: "1.0"
        name: python-tools
        tools:
          add:
            python: "{MODULE}:add"
            effect: read
            args: {{type: object, required: [a, b], properties: {{a: {{type: integer}}, b: {{type: integer}}}}}}
          twice: {{python: "{MODULE}:twice", effect: read}}
        steps:
          - {{id: s, tool: add, args: {{a: 2, b: 3}}}}
          - {{id: t, tool: twice, args: {{x: "${{{{ steps.s.output.sum }}}}"}}}}
        output: {{sum: "${{{{ steps.s.output }}}}", twice: "${{{{ steps.t.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"sum": {"sum": 5, "key": f"{result.run_id}/s/1"}, "twice": [5, 5]}


def test_arguments_are_validated_against_the_schema(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "bad_args",
        f"""\
        charter: "1.0"
        name: bad-args
        tools:
          add:
            python: "{MODULE}:add"
            effect: read
            args: {{type: object, required: [a, b], properties: {{a: {{type: integer}}, b: {{type: integer}}}}}}
        steps:
          - {{id: s, tool: add, args: {{a: 2, b: "three"}}}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed"
    assert result.error["message"] == "tool 'add': invalid arguments at `b`: 'three' is not of type 'integer'"


def test_a_python_tool_without_args_is_checked_against_its_type_hints(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "hinted",
        f"""\
        charter: "1.0"
        name: hinted
        tools:
          square: {{python: "{MODULE}:square", effect: read}}
        steps:
          - {{id: ok, tool: square, args: {{x: 7}}}}
          - {{id: bad, tool: square, args: {{x: "7"}}}}
        output: {{ok: "${{{{ steps.ok.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["node_path"] == "bad"
    assert (
        "tool 'square': invalid arguments" in result.error["message"]
        and "'7' is not of type 'integer'" in result.error["message"]
    )


def test_the_schema_of_a_python_tool_comes_from_its_signature() -> None:
    from interpreter.tools import args_schema

    def tool(query: str, limit: int = 5, tags: list[str] | None = None, idempotency_key: str = "") -> dict:
        return {}

    def anything(**kwargs: Any) -> None:
        return None

    schema = args_schema(tool)
    assert schema is not None and schema["type"] == "object" and schema["required"] == ["query"]
    assert schema["properties"]["query"] == {"type": "string"}
    assert schema["properties"]["limit"] == {"type": "integer", "default": 5}
    assert "idempotency_key" not in schema["properties"]  # the runtime passes it, not the caller
    assert args_schema(anything) is None  # takes any argument: nothing to check


def test_wrong_keyword_and_nan_results_are_step_errors(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "wrong",
        f"""\
        charter: "1.0"
        name: wrong
        vars: {{first: null}}
        tools:
          plain: {{python: "{MODULE}:plain", effect: read}}
          nan: {{python: "{MODULE}:nan", effect: read}}
        steps:
          - id: t
            try:
              steps: [{{id: p, tool: plain, args: {{y: 1}}}}]
              catch:
                steps: [{{id: c, set: {{first: "${{{{ error.message }}}}"}}}}]
          - {{id: n, tool: nan}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and "not JSON" in result.error["message"]
    caught = next(e for e in store.events(result.run_id) if e.kind == "vars.set")
    # checked against the schema of plain's type hints before the call
    assert "tool 'plain': invalid arguments: 'x' is a required property" in caught.payload["vars"]["first"]


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("surrogate", "does not serialise to JSON"),
        # written as JSON both keys are "1": reading it back would drop one value without a word
        ("colliding", "two of its keys become the same JSON key '1'"),
        ("exits", "raised SystemExit: 3"),
        ("exhausted", "raised StopIteration"),  # a future cannot carry it: the pool hands it over
    ],
)
def test_hostile_results_fail_the_step_not_the_process(
    store: Any, workdir: Path, tool: str, message: str
) -> None:
    graph = written(
        workdir,
        f"hostile_{tool}",
        f"""\
        charter: "1.0"
        name: hostile
        tools:
          {tool}: {{python: "{MODULE}:{tool}", effect: read}}
        steps:
          - {{id: t, tool: {tool}}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "tool"
    assert message in result.error["message"]
    assert store.verify(result.run_id).ok


# --------------------------------------------------------------------------------------------------
# HTTP tools


def http_flow(workdir: Path, server: str) -> Any:
    return written(
        workdir,
        "http_tools",
        f"""\
        charter: "1.0"
        name: http-tools
        secrets: [H10_TOKEN]
        vars: {{error: null}}
        tools:
          get_thing:
            effect: read
            http:
              method: GET
              url: "{server}/things/${{{{ args.id }}}}"
              headers: {{Authorization: "Bearer ${{{{ secrets.H10_TOKEN }}}}"}}
              query: {{verbose: "yes"}}
          create:
            effect: write
            http: {{method: POST, url: "{server}/things"}}
          missing:
            effect: read
            http: {{method: GET, url: "{server}/missing"}}
        steps:
          - {{id: got, tool: get_thing, args: {{id: 7}}}}
          - {{id: made, tool: create, args: {{name: widget}}}}
          - id: lost
            try:
              steps: [{{id: m, tool: missing}}]
              catch:
                steps: [{{id: why, set: {{error: "${{{{ error }}}}"}}}}]
        output: {{got: "${{{{ steps.got.output }}}}", made: "${{{{ steps.made.output }}}}", lost: "${{{{ steps.lost.output }}}}"}}
        """,
    )


def test_http_tools(store: Any, workdir: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H10_TOKEN", "s3cret")
    result = run_workflow(http_flow(workdir, server), {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    got = result.output["got"]
    assert got["path"] == "/things/7" and got["query"] == {"verbose": "yes"}
    assert got["auth_ok"] is True and got["key"] == f"{result.run_id}/got/1"
    assert result.output["made"] == {"received": {"name": "widget"}}
    lost = result.output["lost"]["error"]
    assert lost["code"] == "http" and "HTTP 404" in lost["message"]
    # The secret is used but never logged.
    assert all("s3cret" not in json.dumps(e.payload) for e in store.events(result.run_id))


def test_http_url_values_stay_inside_their_segment_and_its_query_is_kept(
    store: Any, workdir: Path, server: str
) -> None:
    graph = written(
        workdir,
        "http_url",
        f"""\
        charter: "1.0"
        name: http-url
        vars: {{base: "{server}"}}
        tools:
          get_thing:
            effect: read
            http:
              method: GET
              url: "${{{{ vars.base }}}}/things/${{{{ args.id }}}}?src=url&tag=${{{{ args.tag }}}}"
              query: {{page: "2"}}
          get_root:
            effect: read
            http: {{method: GET, url: "${{{{ vars.base }}}}?tag=${{{{ args.tag }}}}"}}
        steps:
          - {{id: got, tool: get_thing, args: {{id: "../missing", tag: "a&b=c"}}}}
          - {{id: root, tool: get_root, args: {{tag: "x&admin=1"}}}}
        output: {{got: "${{{{ steps.got.output }}}}", root: "${{{{ steps.root.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error  # not sent to /missing (a 404)
    got = result.output["got"]
    assert got["path"] == "/things/..%2Fmissing"
    assert got["query"] == {"src": "url", "tag": "a&b=c", "page": "2"}
    assert result.output["root"]["query"] == {"tag": "x&admin=1"}  # no path: still one value


def test_missing_secret_is_a_setup_error(
    store: Any, workdir: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("H10_TOKEN", raising=False)
    with pytest.raises(RunSetupError, match="H10_TOKEN"):
        run_workflow(http_flow(workdir, server), {}, store=store, options=OPTS)


# --------------------------------------------------------------------------------------------------
# The pool that runs sync tools off the event loop


def test_pool_runs_blocked_calls_side_by_side_beyond_its_core_workers() -> None:
    from interpreter.tools import _DaemonPool

    pool, n = _DaemonPool(max_workers=64, core=2), 12
    barrier = threading.Barrier(n, timeout=10)  # returns only when all n calls are running at once

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        calls = [pool.submit(loop, lambda i=i: (barrier.wait(), i)[1]) for i in range(n)]
        return await asyncio.gather(*calls)

    assert asyncio.run(main()) == [(i, None) for i in range(n)]
    assert pool._threads == n  # two core workers, then one started for each call left waiting


def test_pool_serves_a_new_loop_while_workers_of_an_old_one_hang() -> None:
    from interpreter.tools import _DaemonPool

    pool, release = _DaemonPool(max_workers=8, core=1), threading.Event()

    async def hang() -> None:  # the run is cut off; its call keeps its worker busy
        loop = asyncio.get_running_loop()
        pool.submit(loop, release.wait)
        pool.submit(loop, release.wait)  # no worker free: a look-again is scheduled on this loop...
        await asyncio.sleep(0)

    async def later() -> str:
        return await asyncio.wait_for(pool.submit(asyncio.get_running_loop(), lambda: "ran"), 10)

    try:
        asyncio.run(hang())  # ...which closes before the look-again fires
        assert asyncio.run(later()) == ("ran", None)
    finally:
        release.set()


def test_pool_delivers_each_result_and_error_to_its_own_call_when_many_finish_together() -> None:
    """Calls that finish while the loop is busy are delivered together: each still reaches its own call."""
    from interpreter.tools import _DaemonPool

    pool, gate = _DaemonPool(max_workers=8, core=4), threading.Event()

    def work(i: int) -> int:
        gate.wait(10)
        if i % 3 == 0:
            raise ValueError(i)
        return i

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        calls = [pool.submit(loop, lambda i=i: work(i)) for i in range(60)]
        gate.set()
        time.sleep(0.05)  # the loop is busy while the workers finish: their results queue up
        return await asyncio.gather(*calls)

    for i, (result, error) in enumerate(asyncio.run(main())):
        if i % 3 == 0:
            assert result is None and isinstance(error, ValueError) and error.args == (i,)
        else:
            assert (result, error) == (i, None)


def test_pool_leaves_a_burst_of_quick_calls_to_its_workers() -> None:
    """Workers that keep taking calls are not stuck: a burst waits for them instead of getting a thread
    per waiting call, which would only fight over the GIL (that was ~90 threads here)."""
    from interpreter.tools import _DaemonPool

    pool, n = _DaemonPool(max_workers=512, core=2), 300

    async def branch(i: int) -> int:  # as a fan-out's branches: some work on the loop, then the call
        busy_until = time.perf_counter() + 0.0001
        while time.perf_counter() < busy_until:
            pass
        result, _ = await pool.submit(asyncio.get_running_loop(), lambda: i * i)
        return result

    async def main() -> list[int]:
        results = []
        for _ in range(3):
            results += await asyncio.gather(*(branch(i) for i in range(n)))
        return results

    assert asyncio.run(main()) == [i * i for i in range(n)] * 3
    assert pool._threads <= 32


def test_pool_keeps_serving_when_the_system_refuses_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from interpreter.tools import _DaemonPool

    start, refusals = threading.Thread.start, [1, 1, 1]

    def refusing_start(thread: threading.Thread) -> None:
        if refusals:
            refusals.pop()
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing_start)
    pool = _DaemonPool(max_workers=8, core=2)

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        first = pool.submit(loop, lambda: "first")  # its worker and the watcher are refused...
        await asyncio.sleep(0.01)
        rest = [pool.submit(loop, lambda i=i: i) for i in range(3)]  # ...and started when calls come
        return await asyncio.wait_for(asyncio.gather(first, *rest), 10)

    assert asyncio.run(main()) == [("first", None), (0, None), (1, None), (2, None)]
    assert not refusals
