"""The commands Charter prints for the user to paste (`charter approve RUN NODE`, `--from RUN@NODE`) quote
a node path with an iteration index (`each[0]/body/ok`), which a shell would take for a pattern (zsh: "no
matches found"). Each printed command is pasted into `bash -O failglob` (which, like zsh, refuses a
pattern that matches no file) and must do what it says. Real `charter` processes, a real SQLite log."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from fixtures.charter_cli import child_env, describe

APPROVALS = """\
    charter: "1.0"
    name: s9-quoting
    identities: {ann: {kind: user}}
    steps:
      - id: each
        for_each:
          in: "${{ input.items }}"
          as: item
          concurrency: 2
          steps:
            - {id: ok, approval: {message: "item ${{ item }}?", approvers: [ann]}}
            - id: check
              if: item == "bad"
              fail: {message: "bad item"}
    output: {done: true}
    """


def _charter(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "--db", str(folder / "my runs.db")],
        cwd=folder,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _paste(folder: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`command` as a user pastes it into a shell where `charter` is this checkout's CLI."""
    assert command.startswith("charter "), command
    script = f'charter() {{ "{sys.executable}" -m cli "$@"; }}\n{command}\n'
    return subprocess.run(
        ["bash", "-O", "failglob", "-c", script],
        cwd=folder,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _commands(stderr: str, after: str) -> list[str]:
    """The commands the output names after `after` (on the same line, or one per following line)."""
    found: list[str] = []
    lines = stderr.splitlines()
    for n, line in enumerate(lines):
        if after not in line:
            continue
        rest = line.split(after, 1)[1].strip()
        if rest:
            found.append(rest)
        else:
            found.extend(following.strip() for following in lines[n + 1 :] if following.startswith("  "))
    assert found, f"no command after {after!r} in:\n{stderr}"
    return found


def _flow(folder: Path) -> Path:
    (folder / "flow.yaml").write_text(textwrap.dedent(APPROVALS))
    (folder / "each").mkdir()  # a folder the pattern `each[0]/...` could look into
    return folder / "flow.yaml"


def test_the_printed_approve_command_works_pasted_into_a_shell(tmp_path: Path) -> None:
    _flow(tmp_path)
    waiting = _charter(tmp_path, "run", "flow.yaml", "--input", '{"items": ["fine"]}')
    assert waiting.returncode == 3, describe(waiting)
    (command,) = _commands(waiting.stderr, "decide with:")
    assert "'each[0]/body/ok'" in command and "--db 'my runs.db'" in command.replace(str(tmp_path) + "/", "")
    approved = _paste(tmp_path, command.replace("NAME", "ann"))
    assert approved.returncode == 0, approved.stderr


def test_each_of_several_printed_approve_commands_works_pasted(tmp_path: Path) -> None:
    _flow(tmp_path)
    waiting = _charter(tmp_path, "run", "flow.yaml", "--input", '{"items": ["one", "two"]}', "--json")
    assert waiting.returncode == 3, describe(waiting)
    run_id = json.loads(waiting.stdout)["run_id"]
    commands = _commands(waiting.stderr, "decide each with:")
    assert len(commands) == 2, waiting.stderr
    outcomes = [_paste(tmp_path, command.replace("NAME", "ann")) for command in commands]
    assert [o.returncode for o in outcomes] == [3, 0], [o.stderr for o in outcomes]
    assert f"run {run_id} completed" in outcomes[1].stderr


def test_the_printed_fork_command_works_pasted_into_a_shell(tmp_path: Path) -> None:
    _flow(tmp_path)
    waiting = _charter(tmp_path, "run", "flow.yaml", "--input", '{"items": ["bad"]}', "--json")
    run_id = json.loads(waiting.stdout)["run_id"]
    failed = _charter(tmp_path, "approve", run_id, "each[0]/body/ok", "--as", "ann")
    assert failed.returncode == 1 and "failed at each[0]/body/check" in failed.stderr, describe(failed)
    again = _charter(tmp_path, "resume", run_id)
    (command,) = _commands(again.stderr, "to run it again from a step:")
    assert f"--from '{run_id}@each[0]/body/check'" in command
    forked = _paste(tmp_path, f"{command.replace('FILE', 'flow.yaml')} --db 'my runs.db' --json")
    assert forked.returncode == 1, forked.stderr  # it ran, and failed at that step again
    fork_id = json.loads(forked.stdout)["run_id"]
    listed = _charter(tmp_path, "runs").stdout
    line = next(line for line in listed.splitlines() if line.startswith(fork_id))
    assert line.endswith(f"(forked from '{run_id}@each[0]/body/check')"), listed
