"""A declared secret (or a model's API key) never reaches what Charter writes or prints (spec §9): the
live progress on stderr, replay's divergence report, an HTTP error's body excerpt, a provider's error;
and a value the log keeps masked is never used as if it were the secret by a resumed run.
Real `charter` processes, a real SQLite file, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import run_json, tool_calls, tool_project
from fixtures.http_server import serving

from tests.fixtures.openai_server import OpenAIServer

TOKEN = "tok-LEAK-7781-zz"
SECRET_ENV = {"LEAK_TOKEN": TOKEN}


def write(folder: Path, text: str, name: str = "wf.yaml") -> None:
    tool_project(folder, "leaktools")
    (folder / name).write_text(text, encoding="utf-8")


def db_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("charter.db*"))


def test_live_progress_masks_secrets_in_failures_retries_and_approval_messages(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
charter: "1.0"
name: progress
secrets: [LEAK_TOKEN]
steps:
  - id: ok
    approval: {message: "use ${{ secrets.LEAK_TOKEN }}?"}
  - id: r
    retry: {attempts: 2, backoff: {initial: 1ms}}
    fail: {message: "bad token ${{ secrets.LEAK_TOKEN }}"}
""",
    )
    waiting = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert waiting.returncode == 3, waiting.stderr
    assert "waiting for approval" in waiting.stderr and "[REDACTED]" in waiting.stderr
    done = charter("approve", run_json(waiting)["run_id"], "ok", "--as", "ann", cwd=tmp_path, env=SECRET_ENV)
    assert done.returncode == 1, done.stderr
    assert "↻ r: bad token [REDACTED]" in done.stderr and "✗ r: bad token [REDACTED]" in done.stderr
    for proc in (waiting, done):
        assert TOKEN not in proc.stderr + proc.stdout
    assert TOKEN.encode() not in db_bytes(tmp_path)


SECRET_ARGS = """\
charter: "1.0"
name: secret-args
secrets: [LEAK_TOKEN]
tools:
  echo: {python: "leaktools:echo", effect: read}
steps:
  - {id: a, tool: echo, args: {note: "${{ 'Bearer ' + secrets.LEAK_TOKEN }}"}}
output: {sent: "${{ steps.a.output }}"}
"""


@pytest.mark.parametrize("key_at_replay", [True, False])
def test_replay_of_a_run_that_passed_a_secret_reproduces_it_and_never_prints_it(
    tmp_path: Path, key_at_replay: bool
) -> None:
    write(tmp_path, SECRET_ARGS)
    ran = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert ran.returncode == 0, ran.stderr
    run_id = run_json(ran)["run_id"]
    replayed = charter("replay", run_id, "--json", cwd=tmp_path, env=SECRET_ENV if key_at_replay else {})
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr  # no credential needed
    # An edited workflow diverges at the call, and the report shows the arguments masked.
    write(tmp_path, SECRET_ARGS.replace("'Bearer '", "'Token '"), name="edited.yaml")
    edited = charter("replay", run_id, "--file", "edited.yaml", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert edited.returncode == 1, edited.stdout + edited.stderr
    divergence = json.loads(edited.stdout)["divergence"]
    assert divergence["node_path"] == "a" and divergence["got"] == {"note": "Token [REDACTED]"}
    assert TOKEN not in edited.stdout + edited.stderr


def test_a_resumed_run_never_calls_a_tool_with_a_secret_the_log_kept_masked(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
charter: "1.0"
name: resumed-secret
secrets: [LEAK_TOKEN]
tools:
  echo: {python: "leaktools:echo", effect: read}
  send: {python: "leaktools:send", effect: write}
steps:
  - {id: a, tool: echo, args: {note: "${{ secrets.LEAK_TOKEN }}"}}
  - {id: ok, approval: {message: go?}}
  - {id: c, tool: send, args: {to: ops, body: "${{ steps.a.output.note }}"}}
""",
    )
    waiting = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert waiting.returncode == 3, waiting.stderr
    run_id = run_json(waiting)["run_id"]
    done = charter("approve", run_id, "ok", "--as", "ann", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert done.returncode == 1, done.stderr
    error = run_json(done)["error"]
    assert (error["code"], error["node_path"]) == ("policy", "c")
    assert f"--from {run_id}@a" in error["message"]
    assert [c["tool"] for c in tool_calls(tmp_path)] == ["echo"]  # `send` was not called with [REDACTED]
    # Run from the step that read the secret, the call gets it again.
    forked = charter("run", "wf.yaml", "--from", f"{run_id}@a", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert forked.returncode == 3, forked.stderr


def test_an_empty_secret_is_no_secret(tmp_path: Path) -> None:
    write(tmp_path, SECRET_ARGS)
    proc = charter("run", "wf.yaml", cwd=tmp_path, env={"LEAK_TOKEN": ""})
    assert proc.returncode == 2 and "LEAK_TOKEN" in proc.stderr, proc.stderr
    assert tool_calls(tmp_path) == []


class _EchoesTheToken(BaseHTTPRequestHandler):
    """Answers 401 quoting the Authorization header it got, as some gateways do."""

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        body = ("x" * 185 + " rejected: " + self.headers.get("Authorization", "")).encode()
        self.send_response(401)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echoing_server() -> Iterator[str]:
    with serving(_EchoesTheToken) as url:
        yield url


def test_an_http_error_excerpt_never_holds_part_of_a_secret(tmp_path: Path, echoing_server: str) -> None:
    # The body's first 200 characters end inside the token: cut before masking, its start would remain.
    write(
        tmp_path,
        f"""\
charter: "1.0"
name: http-echo
secrets: [LEAK_TOKEN]
tools:
  status:
    http: {{method: GET, url: "{echoing_server}/s", headers: {{Authorization: "${{{{ secrets.LEAK_TOKEN }}}}"}}}}
    effect: read
steps:
  - {{id: s, tool: status}}
""",
    )
    proc = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=SECRET_ENV)
    assert proc.returncode == 1, proc.stderr
    message = run_json(proc)["error"]["message"]
    assert "HTTP 401" in message and "rejected: [RED" in message
    assert TOKEN[:4] not in proc.stdout + proc.stderr
    assert TOKEN[:4].encode() not in db_bytes(tmp_path)


def test_a_model_key_from_the_environment_is_masked_like_a_secret(tmp_path: Path) -> None:
    key = "sk-envkey-98765432"
    write(
        tmp_path,
        """\
charter: "1.0"
name: keyed
models:
  default: {provider: openai, model: m, base_url: URL, api_key_env: GATEWAY_KEY}
steps:
  - {id: ask, llm: {prompt: hello}}
""",
    )
    with OpenAIServer() as server:
        (tmp_path / "wf.yaml").write_text(
            (tmp_path / "wf.yaml").read_text().replace("URL", server.url), encoding="utf-8"
        )
        server.fail(401, f"invalid key: Bearer {key}")
        proc = charter("run", "wf.yaml", "--json", cwd=tmp_path, env={"GATEWAY_KEY": key})
    assert proc.returncode == 1, proc.stderr
    assert "invalid key: Bearer [REDACTED]" in run_json(proc)["error"]["message"]
    assert key not in proc.stdout + proc.stderr
    assert key.encode() not in db_bytes(tmp_path)
