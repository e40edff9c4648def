"""A scripted responses file whose entries name a step the run does not have (a typo, a renamed step) is
refused when the run is set up, naming the file, the unknown ids and the nearest step ids; the CLI exits 2
and writes nothing. The steps a file may name are those of the whole run: a responses file given on the
command line answers a parent's steps and those of the child runs it starts, so an entry for a step unlike
any the run knows is left alone (it may be a parent's, which a child run continued on its own does not
know); one close to a step of the run is a typo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dsl import diagnostics
from dsl.frontend import compile_file
from interpreter import RunOptions, run_workflow
from interpreter.providers import ModelConfigError
from interpreter.providers.scripted import ScriptedProvider
from interpreter.runtime import RunSetupError
from interpreter.store import open_store
from tests.fixtures.charter_cli import project_charter as charter
from tests.fixtures.charter_cli import run_json

FLOW = """\
charter: "1.0"
name: typo
models:
  default: {provider: scripted, responses: r.yaml}
steps:
  - id: extract
    llm: {prompt: "Extract."}
  - id: gate
    approval: {message: "go on?"}
  - id: summarize
    llm: {prompt: "Summarize."}
output: {s: "${{ steps.summarize.output }}"}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def compiled(path: Path):  # type: ignore[no-untyped-def]
    graph, diags = compile_file(path)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    assert graph is not None and not errors, diagnostics.format_text(errors)
    return graph


def test_check_steps_names_each_typo_with_its_line_and_the_nearest_ids(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "r.yaml",
        """\
        responses:
          - {step: extract, text: a}
          - {step: sumarize, text: b}
          - {step: sumarize, turn: 2, text: c}
          - {step: plan, text: d}
          - {step: Extract, text: e}
        """,
    )
    provider = ScriptedProvider(responses=script)
    with pytest.raises(ModelConfigError) as caught:
        provider.check_steps({"extract", "summarize", "summarise", "report"})
    assert str(caught.value) == (
        f"scripted model ({script}): the responses file names steps the workflow does not have: "
        "'sumarize' at line 3 (did you mean 'summarize' or 'summarise'?); "
        "'Extract' at line 6 (did you mean 'extract'?)"
    )
    # 'plan' is like none of them: the step of a parent run, whose file a child run shares.
    provider.check_steps({"extract", "summarize", "sumarize", "Extract"})


def test_steps_that_only_share_a_prefix_are_no_typo(tmp_path: Path) -> None:
    script = write(
        tmp_path, "r.yaml", "responses:\n  - {step: extract, text: a}\n  - {step: summary, text: b}\n"
    )
    ScriptedProvider(responses=script).check_steps({"extract_terms", "summarize_all"})


def test_a_typo_in_the_declared_file_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    write(tmp_path, "flow.yaml", FLOW)
    script = write(
        tmp_path, "r.yaml", "responses:\n  - {step: extract, text: a}\n  - {step: sumarize, text: b}\n"
    )
    refused = charter("run", "flow.yaml", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"error: model 'default': scripted model ({script}): the responses file names a step the workflow "
        "does not have: 'sumarize' at line 3 (did you mean 'summarize'?)"
    )
    assert not list(tmp_path.glob("charter.db*"))  # nothing was written for the run
    as_json = charter("run", "flow.yaml", "--json", cwd=tmp_path)
    assert as_json.returncode == 2
    document = run_json(as_json)
    assert document["status"] == "refused" and document["error"]["code"] == "invalid"
    assert "'sumarize' at line 3 (did you mean 'summarize'?)" in document["error"]["message"]


def test_a_typo_in_a_file_given_on_the_command_line_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "flow.yaml", FLOW)
    write(tmp_path, "r.yaml", "responses:\n  - {step: extract, text: a}\n  - {step: summarize, text: b}\n")
    other = write(
        tmp_path, "other.yaml", "responses:\n  - {step: extrat, text: a}\n  - {step: summarize, text: b}\n"
    )
    refused = charter("run", "flow.yaml", "--model", "default=scripted:other.yaml", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"scripted model ({other}):" in refused.stderr
    assert "'extrat' at line 2 (did you mean 'extract'?)" in refused.stderr
    ran = charter("run", "flow.yaml", "--json", cwd=tmp_path)  # the declared file is right
    assert ran.returncode == 3, ran.stderr  # waits at the gate


def test_a_typo_at_the_api_is_a_run_setup_error_and_no_run_is_written(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", "responses:\n  - {step: extract, text: a}\n  - {step: Summarize, text: b}\n")
    graph = compiled(write(tmp_path, "flow.yaml", FLOW))
    store = open_store(str(tmp_path / "charter.db"))
    with pytest.raises(RunSetupError, match=r"'Summarize' at line 3 \(did you mean 'summarize'\?\)"):
        run_workflow(graph, {}, store=store, options=RunOptions(principal="tester"))
    assert store.runs() == []


PARENT = """\
charter: "1.0"
name: parent
models:
  default: {provider: scripted, responses: parent.responses.yaml}
steps:
  - id: summarize
    llm: {prompt: "Summarize."}
  - id: delegate
    workflow: {path: child.yaml, input: {}}
output: {summary: "${{ steps.summarize.output }}", done: "${{ steps.delegate.output }}"}
"""

CHILD = """\
charter: "1.0"
name: child
models:
  default: {provider: scripted, responses: child.responses.yaml}
steps:
  - id: summarise
    llm: {prompt: "Summarise."}
output: {said: "${{ steps.summarise.output }}"}
"""


@pytest.mark.parametrize("typo", [False, True])
def test_one_file_on_the_command_line_answers_a_parent_and_its_child(tmp_path: Path, typo: bool) -> None:
    """The child run is set up with the same --model, in the parent's execution: the file names the
    parent's `summarize`, which the child has not but knows as its parent's, not as a typo of its own
    `summarise`; a typo of the child's step is refused before the parent starts."""
    write(tmp_path, "parent.yaml", PARENT)
    write(tmp_path, "child.yaml", CHILD)  # their own responses files are not read: --model replaces them
    child_step = "sumarise" if typo else "summarise"
    write(
        tmp_path,
        "all.yaml",
        f"responses:\n  - {{step: summarize, text: p}}\n  - {{step: {child_step}, text: e}}\n",
    )
    proc = charter("run", "parent.yaml", "--model", "default=scripted:all.yaml", "--json", cwd=tmp_path)
    if typo:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "'sumarise' at line 3 (did you mean 'summarise' or 'summarize'?)" in proc.stderr
        assert not list(tmp_path.glob("charter.db*"))
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert run_json(proc)["output"] == {"summary": "p", "done": {"said": "e"}}


def test_a_child_run_continued_on_its_own_accepts_its_parents_steps_in_the_shared_file(
    tmp_path: Path,
) -> None:
    """`charter approve CHILD` continues the child run without its parent, whose steps it does not know:
    the file's entry for the parent's `outline` is like none of the child's steps, so no typo."""
    write(tmp_path, "parent.yaml", PARENT.replace("summarize", "outline"))
    write(
        tmp_path,
        "child.yaml",
        CHILD.replace("steps:\n", "steps:\n  - id: gate\n    approval: {message: go?}\n"),
    )
    write(tmp_path, "all.yaml", "responses:\n  - {step: outline, text: p}\n  - {step: summarise, text: e}\n")
    started = charter("run", "parent.yaml", "--model", "default=scripted:all.yaml", "--json", cwd=tmp_path)
    assert started.returncode == 3, started.stdout + started.stderr
    (approval,) = run_json(started)["approvals"]
    done = charter("approve", approval["run_id"], "gate", "--as", "ann", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_json(done)["output"] == {"summary": "p", "done": {"said": "e"}}
