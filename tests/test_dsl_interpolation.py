"""Interpolation (spec §14.2): a `${{ }}` inside other text inserts a value whose JSON form is text
(a string, bytes, a timestamp, a duration) as that text, without quotes, and everything else as compact
JSON. Through real runs on a real SQLite event log: `set`, a `fail` message, and an HTTP tool's url,
headers and query against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fixtures.http_server import serving
from fixtures.workflows import written

from interpreter import run_workflow

# (expression, the text interpolation inserts for it)
CASES = [
    ("timestamp('2026-01-02T03:04:05Z')", "2026-01-02T03:04:05Z"),
    ("duration('1m30s')", "90s"),
    ("duration('1.5s')", "1.5s"),
    ("b'ab?>'", "YWI/Pg=="),  # base64
    ("'text'", "text"),
    ("42", "42"),
    ("2.5", "2.5"),
    ("true", "true"),
    ("null", "null"),
    ("[1, 'x']", '[1,"x"]'),
    ("{'a': 1}", '{"a":1}'),
    # Inside a container the value is JSON: a timestamp is a JSON string there, with its quotes.
    ("[timestamp('2026-01-02T03:04:05Z')]", '["2026-01-02T03:04:05Z"]'),
    ("{'d': duration('2s')}", '{"d":"2s"}'),
]


@pytest.mark.parametrize(("source", "text"), CASES, ids=[c[0] for c in CASES])
def test_set_interpolates_each_typed_value_as_the_spec_says(
    store: Any, tmp_path: Path, source: str, text: str
) -> None:
    graph = written(
        tmp_path,
        "interp",
        f"""\
        charter: "1.0"
        name: interp
        vars: {{shown: ""}}
        steps:
          - id: s
            set: {{shown: "at ${{{{ {source} }}}}!"}}
        output: {{shown: "${{{{ vars.shown }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store)
    assert result.status == "completed", result.error
    assert result.output == {"shown": f"at {text}!"}


def test_a_whole_value_template_keeps_its_json_form(store: Any, tmp_path: Path) -> None:
    # `"${{ x }}"` alone is the typed value, whose JSON form is that same text: interpolation agrees.
    graph = written(
        tmp_path,
        "whole",
        """\
        charter: "1.0"
        name: whole
        vars: {x: 0}
        steps: [{id: s, set: {x: 1}}]
        output:
          alone: "${{ timestamp('2026-01-02T03:04:05Z') }}"
          inside: "${{ timestamp('2026-01-02T03:04:05Z') }}${{ '' }}"
          bytes: "${{ b'ab?>' }}"
          took: "${{ duration('90s') }}"
        """,
    )
    result = run_workflow(graph, {}, store=store)
    assert result.status == "completed", result.error
    assert result.output == {
        "alone": "2026-01-02T03:04:05Z",
        "inside": "2026-01-02T03:04:05Z",
        "bytes": "YWI/Pg==",
        "took": "90s",
    }


def test_a_fail_message_interpolates_a_timestamp_without_quotes(store: Any, tmp_path: Path) -> None:
    graph = written(
        tmp_path,
        "failing",
        """\
        charter: "1.0"
        name: failing
        steps:
          - id: stop
            fail: {message: "expired at ${{ timestamp('2026-01-02T03:04:05Z') }} after ${{ duration('2s') }}"}
        """,
    )
    result = run_workflow(graph, {}, store=store)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error["message"] == "expired at 2026-01-02T03:04:05Z after 2s"


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        headers = [[k.lower(), v] for k, v in self.headers.items()]
        data = json.dumps({"path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(_Echo) as url:
        yield url


def test_http_url_headers_and_query_interpolate_typed_values_without_quotes(
    store: Any, tmp_path: Path, server: str
) -> None:
    graph = written(
        tmp_path,
        "http_interp",
        f"""\
        charter: "1.0"
        name: http_interp
        tools:
          call:
            effect: read
            http:
              method: GET
              url: "{server}/at/${{{{ timestamp('2026-01-02T03:04:05Z') }}}}"
              headers:
                X-Since: "since ${{{{ timestamp('2026-01-02T03:04:05Z') }}}}"
                X-Wait: "wait ${{{{ duration('1.5s') }}}}"
                X-Raw: "raw ${{{{ b'ab?>' }}}}"
                X-Flag: "flag ${{{{ true }}}}"
              query:
                since: "from ${{{{ timestamp('2026-01-02T03:04:05Z') }}}}"
                list: "of ${{{{ [1, 'x'] }}}}"
        steps:
          - id: c
            tool: call
        output: {{echo: "${{{{ steps.c.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store)
    assert result.status == "completed", result.error
    echo = result.output["echo"]
    headers = dict(echo["headers"])
    assert headers["x-since"] == "since 2026-01-02T03:04:05Z"
    assert headers["x-wait"] == "wait 1.5s"
    assert headers["x-raw"] == "raw YWI/Pg=="
    assert headers["x-flag"] == "flag true"
    url = urlparse(echo["path"])
    assert url.path == "/at/2026-01-02T03%3A04%3A05Z"  # percent-encoded after the host, no %22
    assert parse_qs(url.query) == {"since": ["from 2026-01-02T03:04:05Z"], "list": ['of [1,"x"]']}
