"""`charter resume RUN` continues the workflow as the log recorded it; when the file the run started from
was edited since, it says so in one stderr line (and how to run the edited file), and does nothing else
differently. Real `charter` processes, a real SQLite log."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from fixtures.charter_cli import charter, child_env, describe

TOOLS = """
import os

def step(name):
    if os.environ.get("S9_CRASH") == name:
        os._exit(9)  # the process dies in the middle of the run
    return name
"""

FLOW = """\
    charter: "1.0"
    name: s9-resume-edited
    tools:
      step: {python: "resume_tools_mod:step", effect: read}
    steps:
      - {id: a, tool: step, args: {name: a}}
      - {id: b, tool: step, args: {name: b}}
    output: {version: original, b: "${{ steps.b.output }}"}
    """


def _charter(folder: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return charter(*args, "--db", str(folder / "runs.db"), cwd=folder, env=child_env(extra))


def _interrupted_run(folder: Path) -> str:
    (folder / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["resume_tools_mod"]\n')
    (folder / "resume_tools_mod.py").write_text(TOOLS)
    (folder / "flow.yaml").write_text(textwrap.dedent(FLOW))
    crashed = _charter(folder, "run", "flow.yaml", S9_CRASH="b")
    assert crashed.returncode == 9, describe(crashed)
    (run,) = json.loads(_charter(folder, "runs", "--json").stdout)
    return run["run_id"]


def _notes(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "changed since run" in line]


def test_resume_says_the_file_changed_and_continues_as_recorded(tmp_path: Path) -> None:
    run_id = _interrupted_run(tmp_path)
    flow = tmp_path / "flow.yaml"
    flow.write_text(flow.read_text().replace("version: original", "version: edited"))
    resumed = _charter(tmp_path, "resume", run_id, "--json")
    assert resumed.returncode == 0, describe(resumed)
    assert json.loads(resumed.stdout)["output"] == {"version": "original", "b": "b"}  # as recorded
    assert _notes(resumed) == [
        f"note: flow.yaml changed since run {run_id} started; the run continues as recorded (the workflow "
        f"as it was then); to run the edited file: charter run flow.yaml --from {run_id}@STEP"
    ]
    finished = _charter(tmp_path, "resume", run_id)  # nothing to continue: no note, as before
    assert finished.returncode == 0 and _notes(finished) == [], describe(finished)
    assert "already completed" in finished.stderr


def test_resume_of_an_unchanged_file_says_nothing_more(tmp_path: Path) -> None:
    run_id = _interrupted_run(tmp_path)
    resumed = _charter(tmp_path, "resume", run_id, "--json")
    assert resumed.returncode == 0, describe(resumed)
    assert _notes(resumed) == []
    assert json.loads(resumed.stdout)["output"] == {"version": "original", "b": "b"}


def test_resume_from_another_folder_names_the_file_it_started_from(tmp_path: Path) -> None:
    project = tmp_path / "my project"
    project.mkdir()
    run_id = _interrupted_run(project)
    flow = project / "flow.yaml"
    flow.write_text(flow.read_text().replace("version: original", "version: edited"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = charter(
        "resume", run_id, "--db", str(project / "runs.db"), "--allow-module", "resume_tools_mod",
        cwd=elsewhere, env=child_env({"PYTHONPATH": f"{project}:{child_env()['PYTHONPATH']}"}),
    )  # fmt: skip
    assert resumed.returncode == 0, describe(resumed)
    (note,) = _notes(resumed)
    assert note.startswith(f"note: {flow} changed since run {run_id} started")
    assert note.endswith(f"charter run '{flow}' --from {run_id}@STEP")
