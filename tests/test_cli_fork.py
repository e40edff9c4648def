"""`charter run FILE --from RUN@NODE` forks RUN with FILE, an edit of RUN's own workflow: another
workflow, or a NODE that is no step of FILE, is refused (exit 2) instead of running FILE on RUN's input.
Real `charter` processes and a real SQLite log."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from fixtures.charter_cli import describe, project_charter, run_rows, tool_calls, tool_project

FLOW = """\
    charter: "1.0"
    name: {name}
    tools:
      echo: {{python: "fork_tools_mod:echo", effect: read}}
    steps:
      - {{id: fetch, tool: echo, args: {{step: fetch}}}}
      - id: each
        for_each:
          in: "${{{{ [1, 2] }}}}"
          as: n
          steps:
            - {{id: {inner}, tool: echo, args: {{step: inner, n: "${{{{ n }}}}"}}}}
      - {{id: {last}, tool: echo, args: {{step: last}}}}
    output: {{done: true}}
    """


def _flow(folder: Path, file: str, name: str = "orders", inner: str = "price", last: str = "publish") -> str:
    (folder / file).write_text(textwrap.dedent(FLOW.format(name=name, inner=inner, last=last)))
    return file


def _first_run(folder: Path) -> str:
    tool_project(folder, "fork_tools_mod")
    first = project_charter("run", _flow(folder, "orders.yaml"), "--json", cwd=folder)
    assert first.returncode == 0, describe(first)
    (folder / "calls.jsonl").unlink()
    return json.loads(first.stdout)["run_id"]


def _refused(proc: subprocess.CompletedProcess[str], folder: Path, runs: int = 1) -> str:
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    assert tool_calls(folder) == [], "the fork ran the workflow"
    assert len(run_rows(folder / "charter.db")) == runs, "the fork started a run"
    return proc.stderr


def test_a_fork_with_another_workflow_is_refused(tmp_path: Path) -> None:
    run_id = _first_run(tmp_path)
    other = _flow(tmp_path, "other.yaml", name="invoices")
    refused = project_charter("run", other, "--from", f"{run_id}@publish", cwd=tmp_path)
    message = _refused(refused, tmp_path)
    assert f"run {run_id} is of workflow 'orders', but other.yaml is workflow 'invoices'" in message
    as_json = project_charter("run", other, "--from", f"{run_id}@fetch", "--json", cwd=tmp_path)
    _refused(as_json, tmp_path)
    result = json.loads(as_json.stdout)
    assert result["status"] == "refused" and result["error"]["code"] == "invalid"
    assert "'invoices'" in result["error"]["message"] and "'orders'" in result["error"]["message"]


def test_a_fork_at_a_node_the_file_does_not_have_is_refused(tmp_path: Path) -> None:
    run_id = _first_run(tmp_path)
    edited = _flow(tmp_path, "edited.yaml", inner="pricing", last="publish_all")  # steps renamed
    renamed = project_charter("run", edited, "--from", f"{run_id}@publish", cwd=tmp_path)
    message = _refused(renamed, tmp_path)
    assert "edited.yaml (workflow 'orders') has no step 'publish'; did you mean 'publish_all'?" in message
    # an iteration's path names the step without its [i]
    inner = project_charter("run", edited, "--from", f"{run_id}@each[1]/body/price", cwd=tmp_path)
    message = _refused(inner, tmp_path)
    assert "has no step 'each[1]/body/price' (the step 'each/body/price')" in message
    assert "did you mean 'each/body/pricing'?" in message
    nothing_close = project_charter("run", edited, "--from", f"{run_id}@zzz", cwd=tmp_path)
    assert "its steps: fetch, each, each/body/pricing, publish_all" in _refused(nothing_close, tmp_path)


def test_forking_an_edit_of_the_same_workflow_still_runs(tmp_path: Path) -> None:
    run_id = _first_run(tmp_path)
    edited = _flow(tmp_path, "edited.yaml", last="publish_all")  # the steps before it unchanged
    forked = project_charter("run", edited, "--from", f"{run_id}@each[1]/body/price", "--json", cwd=tmp_path)
    assert forked.returncode == 0, describe(forked)
    assert json.loads(forked.stdout)["status"] == "completed"
    assert [(c["step"], c.get("n")) for c in tool_calls(tmp_path)] == [("inner", 2), ("last", None)]
