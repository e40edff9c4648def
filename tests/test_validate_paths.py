"""`charter validate` on directories and globs: which files count as workflows (spec §17.2), and a path
that holds none is a usage error rather than a green CI job that checked nothing."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli import main

BAD = "bogus: 1\n"  # every file below is a workflow with one unknown field (CH101)
WORKFLOWS = {
    "block.yaml": 'charter: "1.0"\nname: block\nsteps: []\n' + BAD,
    "quoted.yaml": '"charter": "1.0"\nname: quoted\nsteps: []\n' + BAD,
    "flow.yml": '{charter: "1.0", name: flow, steps: [], bogus: 1}\n',
    "bom.yaml": '\ufeffcharter: "1.0"\nname: bom\nsteps: []\n' + BAD,
    "nested/later.yaml": 'name: later\ncharter: "1.0"\nsteps: []\n' + BAD,
}
OTHERS = {  # a repository's other YAML files are left alone
    "ci.yaml": "on: push\njobs: {build: {runs-on: ubuntu-latest}}\n",
    "notes.yaml": "charters:\n  - one\n",
}


def validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    return result.exit_code, result.output


def test_a_directory_checks_every_file_that_declares_charter(tmp_path: Path) -> None:
    for name, text in {**WORKFLOWS, **OTHERS}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, out = validate(str(tmp_path))
    assert code == 1, out
    flagged = {line.split(":", 1)[0] for line in out.splitlines() if "CH101" in line}
    assert flagged == {str(tmp_path / name) for name in WORKFLOWS}
    assert f"{len(WORKFLOWS)} file(s) checked" in out
    assert validate(str(tmp_path / "**" / "*.y*ml"))[0] == 1  # a glob finds the same


def test_a_path_without_workflows_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "ci.yaml").write_text(OTHERS["ci.yaml"])
    for path in (str(tmp_path), str(tmp_path / "missing"), str(tmp_path / "*.yml")):
        code, out = validate(path)
        assert code == 2 and "no workflow file" in out, (path, out)


def test_the_hint_for_a_templated_condition_is_yaml_that_keeps_its_meaning(tmp_path: Path) -> None:
    """Following the CH308 hint must give the same condition, not a YAML tag (`!x`) that another hint
    then tells the author to remove, inverting it."""
    flow = tmp_path / "hint.yaml"
    flow.write_text(
        'charter: "1.0"\nname: h\nvars: {done: false}\nsteps:\n  - {id: a, if: "${{ !vars.done }}", set: {done: true}}\n'
    )
    code, out = validate(str(flow))
    assert code == 1 and "CH308" in out
    hint = out.split("write it without the braces: ", 1)[1].splitlines()[0]
    flow.write_text(flow.read_text().replace('"${{ !vars.done }}"', hint))
    assert validate(str(flow)) == (0, "1 file(s) checked: 0 error(s), 0 warning(s)\n")
