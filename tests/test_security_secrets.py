"""A declared secret never reaches the event log nor what `charter log`/`explain` print (spec §9), in
whatever shape it comes back: as the key of an object an HTTP API answers with, too. Real `charter`
processes on a real SQLite file, a real HTTP server on 127.0.0.1 (the `server` fixture)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import describe, run_json, tool_project
from fixtures.charter_cli import project_charter as charter

TOKEN = "tok-KEYED-5512-secret"
ENV = {"API_TOKEN": TOKEN}


def project(tmp_path: Path, workflow: str) -> None:
    tool_project(tmp_path, "secrettools")
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(workflow))


def log_bytes(folder: Path) -> bytes:
    """Every byte the store wrote: the SQLite file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in folder.glob("charter.db*"))


def test_a_secret_as_the_key_of_an_answer_never_reaches_the_log(tmp_path: Path, server: Any) -> None:
    """An API that reports usage per key answers `{"usage": {"<the token>": 42}}`: the token is masked
    in the keys of what the log keeps (the tool's result, the step's and the run's output), so neither
    the file nor `charter log`, `explain` or the run's printed output hold it."""
    server.answers.append((200, {"usage": {TOKEN: 42}, "plan": "pro"}))
    project(
        tmp_path,
        f"""\
        charter: "1.0"
        name: usage
        secrets: [API_TOKEN]
        tools:
          usage:
            http:
              method: POST
              url: "{server.url}/usage"
              headers: {{Authorization: "Bearer ${{{{ secrets.API_TOKEN }}}}"}}
            effect: read
        steps:
          - {{id: fetch, tool: usage}}
        output:
          calls: "${{{{ steps.fetch.output.usage }}}}"
          keys: "${{{{ size(steps.fetch.output.usage) }}}}"
        """,
    )
    ran = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=ENV)
    assert ran.returncode == 0, describe(ran)
    assert server.headers[0]["authorization"] == f"Bearer {TOKEN}"  # the call had the secret
    result = run_json(ran)
    assert result["output"] == {"calls": {"[REDACTED]": 42}, "keys": 1}
    assert TOKEN not in ran.stdout + ran.stderr
    assert TOKEN.encode() not in log_bytes(tmp_path)
    for command in (
        ("log", result["run_id"]),
        ("log", result["run_id"], "--json"),
        ("explain", result["run_id"]),
    ):
        shown = charter(*command, cwd=tmp_path, env=ENV)
        assert shown.returncode == 0, describe(shown)
        assert TOKEN not in shown.stdout + shown.stderr, command
    verified = charter("verify", result["run_id"], cwd=tmp_path)
    assert verified.returncode == 0, describe(verified)


def test_keys_that_mask_alike_stay_apart() -> None:
    from interpreter.redact import mask_secrets

    value = {"a-SEC": 1, "b-SEC": 2, "[REDACTED]": 3, "deep": [{"SEC": "SEC"}], 4: "x"}
    assert mask_secrets(value, ["a-SEC", "b-SEC", "SEC"]) == {
        "[REDACTED]#2": 1,
        "[REDACTED]#3": 2,
        "[REDACTED]": 3,
        "deep": [{"[REDACTED]": "[REDACTED]"}],
        4: "x",
    }
