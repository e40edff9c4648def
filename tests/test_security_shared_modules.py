"""A module of an allowed name that a shared workflow file brings along (beside it, or in its own project)
never replaces the module of the project Charter runs from (spec §8.1): allowing `mytools` for your
project must not run a stranger's `mytools`. Real `charter` processes on real files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fixtures.charter_cli import describe, run_json
from fixtures.charter_cli import project_charter as charter

FLOW = """\
charter: "1.0"
name: shared
tools:
  where: {python: "%s:where", effect: read}
steps:
  - {id: a, tool: where}
output: {from: "${{ steps.a.output }}"}
"""


def module(folder: Path, name: str, answer: str) -> None:
    """`name` (dotted: a package) in `folder`, whose `where()` answers `answer`."""
    *packages, last = name.split(".")
    for i in range(len(packages)):
        package = folder.joinpath(*packages[: i + 1])
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    target = folder.joinpath(*packages, f"{last}.py")
    target.write_text(f"def where() -> str:\n    return {answer!r}\n")


@pytest.mark.parametrize("name", ["mytools", "pkg.tools"])
@pytest.mark.parametrize("allowed_by", ["pyproject", "flag"])
@pytest.mark.parametrize("shared_has_a_project", [False, True], ids=["bare-folder", "own-project"])
def test_a_shared_files_module_never_replaces_the_projects(
    tmp_path: Path, name: str, allowed_by: str, shared_has_a_project: bool
) -> None:
    project, shared = tmp_path / "project", tmp_path / "shared"
    project.mkdir()
    shared.mkdir()
    module(project, name, "the project")
    module(shared, name, "the shared folder")
    (shared / "flow.yaml").write_text(FLOW % name)
    if shared_has_a_project:  # its own pyproject allows everything: not trusted, and not first either
        (shared / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["*"]\n')
    extra: tuple[str, ...] = ()
    if allowed_by == "pyproject":
        (project / "pyproject.toml").write_text(f'[tool.charter]\nallow-modules = ["{name}"]\n')
    else:
        extra = ("--allow-module", name)
    proc = charter("run", str(shared / "flow.yaml"), "--json", *extra, cwd=project)
    assert proc.returncode == 0, describe(proc)
    assert run_json(proc)["output"] == {"from": "the project"}


def test_a_workflow_in_the_project_still_finds_its_own_tools_beside_it(tmp_path: Path) -> None:
    """The file's folder is still searched, after the project: a flow in `flows/` with its tools
    beside it runs from the project root."""
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["flowtools"]\n')
    flows = tmp_path / "flows"
    flows.mkdir()
    module(flows, "flowtools", "beside the flow")
    (flows / "flow.yaml").write_text(textwrap.dedent(FLOW % "flowtools"))
    proc = charter("run", "flows/flow.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert run_json(proc)["output"] == {"from": "beside the flow"}
