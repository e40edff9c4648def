"""What a workflow's code writes at the file-descriptor level (a program it runs, `os.write(1, ...)`)
goes to stderr: stdout holds only the command's own output, so `charter run ... --json | jq` works.
Real `charter` processes, a real SQLite log, stdout parsed as it is."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import charter, child_env, describe

TOOLS = """
import os, subprocess, sys

os.write(1, b"s9-import-fd1\\n")  # at import (replay loads the module too)


def noisy(n):
    subprocess.run(["echo", "s9-echo-" + str(n)], check=True)
    subprocess.run([sys.executable, "-c", "print('s9-child-python')"], check=True)
    os.write(1, b"s9-fd1\\n")
    print("s9-print")
    if os.environ.get("S9_CRASH") == str(n):
        os._exit(9)  # the process dies in the middle of the run: `charter resume` continues it
    return {"n": n}
"""

NOISES = ("s9-echo-", "s9-child-python", "s9-fd1", "s9-print")


def _project(folder: Path, flow: str) -> Path:
    (folder / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["noisy_tools"]\n')
    (folder / "noisy_tools.py").write_text(TOOLS)
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(flow))
    return path


def _charter(folder: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return charter(*args, "--db", str(folder / "s9.db"), cwd=folder, env=child_env(extra))


def _stdout_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """stdout as `jq` reads it: one JSON document, nothing else."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError("stdout is not one JSON document\n" + describe(proc)) from None


def _noise_on_stderr(proc: subprocess.CompletedProcess[str]) -> None:
    for noise in NOISES:
        assert noise in proc.stderr, describe(proc)
        assert noise not in proc.stdout, describe(proc)


TWO_STEPS = """\
    charter: "1.0"
    name: s9-noisy
    tools:
      noisy: {python: "noisy_tools:noisy", effect: read}
    steps:
      - {id: a, tool: noisy, args: {n: 1}}
      - {id: b, tool: noisy, args: {n: 2}}
    output: {a: "${{ steps.a.output.n }}", b: "${{ steps.b.output.n }}"}
    """


def test_run_json_stdout_is_only_the_result(tmp_path: Path) -> None:
    _project(tmp_path, TWO_STEPS)
    proc = _charter(tmp_path, "run", "flow.yaml", "--json")
    assert proc.returncode == 0, describe(proc)
    assert _stdout_json(proc)["output"] == {"a": 1, "b": 2}
    _noise_on_stderr(proc)
    assert "s9-import-fd1" in proc.stderr
    plain = _charter(tmp_path, "run", "flow.yaml")  # without --json: stdout is the output
    assert plain.returncode == 0 and _stdout_json(plain) == {"a": 1, "b": 2}, describe(plain)


def test_through_a_pipe_into_a_reader(tmp_path: Path) -> None:
    """`charter run --json | python -c 'json.load(stdin)'`, as a shell pipes it into jq."""
    _project(tmp_path, TWO_STEPS)
    cmd = [sys.executable, "-m", "cli", "run", "flow.yaml", "--json", "--db", str(tmp_path / "s9.db")]
    reader = "import json, sys; print(json.load(sys.stdin)['status'])"
    with subprocess.Popen(cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE) as producer:
        read = subprocess.run(
            [sys.executable, "-c", reader], stdin=producer.stdout, capture_output=True, text=True, timeout=60
        )
        assert producer.stdout is not None
        producer.stdout.close()
        assert producer.wait(timeout=60) == 0
    assert read.returncode == 0 and read.stdout.strip() == "completed", read.stderr


def test_resume_replay_json(tmp_path: Path) -> None:
    _project(tmp_path, TWO_STEPS)
    crashed = _charter(tmp_path, "run", "flow.yaml", "--json", S9_CRASH="2")
    assert crashed.returncode == 9, describe(crashed)
    (run,) = json.loads(_charter(tmp_path, "runs", "--json").stdout)
    run_id = run["run_id"]
    resumed = _charter(tmp_path, "resume", run_id, "--json")
    assert resumed.returncode == 0, describe(resumed)
    assert _stdout_json(resumed)["output"] == {"a": 1, "b": 2}
    _noise_on_stderr(resumed)
    replayed = _charter(tmp_path, "replay", run_id, "--json")
    assert replayed.returncode == 0, describe(replayed)
    assert _stdout_json(replayed)["ok"] is True
    assert "s9-import-fd1" in replayed.stderr and "s9-import-fd1" not in replayed.stdout


APPROVE_THEN_TOOL = """\
    charter: "1.0"
    name: s9-noisy-approval
    identities: {ann: {kind: user}}
    tools:
      noisy: {python: "noisy_tools:noisy", effect: read}
    steps:
      - {id: ok, approval: {message: "go?", approvers: [ann]}}
      - {id: b, tool: noisy, args: {n: 2}}
    output: {b: "${{ steps.b.output.n }}"}
    """


def test_approve_and_wake_json(tmp_path: Path) -> None:
    _project(tmp_path, APPROVE_THEN_TOOL)
    waiting = _charter(tmp_path, "run", "flow.yaml", "--json")
    assert waiting.returncode == 3, describe(waiting)
    approved = _charter(tmp_path, "approve", _stdout_json(waiting)["run_id"], "ok", "--as", "ann", "--json")
    assert approved.returncode == 0, describe(approved)
    assert _stdout_json(approved)["output"] == {"b": 2}
    _noise_on_stderr(approved)

    expiring = tmp_path / "expiring.yaml"
    expiring.write_text(
        (tmp_path / "flow.yaml")
        .read_text()
        .replace("approvers: [ann]", "approvers: [ann], timeout: 1ms, on_timeout: approve")
    )
    second = _charter(tmp_path, "run", "expiring.yaml", "--json")
    assert second.returncode == 3, describe(second)
    woken = _charter(tmp_path, "wake", "--json")  # the 1 ms timeout has passed: on_timeout approves
    assert woken.returncode == 0, describe(woken)
    lines = [json.loads(line) for line in woken.stdout.splitlines()]  # JSON lines, nothing else
    assert [(w["run_id"], w["action"]) for w in lines] == [(_stdout_json(second)["run_id"], "resumed")]
    _noise_on_stderr(woken)
