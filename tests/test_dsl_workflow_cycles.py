"""Cycles of workflow files (spec §13.13, CH402): a file that calls itself, directly or through other
files, and a file whose calls lead into a cycle of other files, reported at the call that leads there.
Each file of the graph is read once; files that do not exist or do not load are left to their own
diagnostics. With real files in the test's folder, through `charter validate` and `compile_file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import dsl.loader
from cli import main
from dsl.frontend import compile_file


def write(folder: Path, name: str, *calls: str, tools: dict[str, str] | None = None) -> Path:
    """A workflow file `name` whose steps call each of `calls` in turn (and declares workflow `tools`)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['charter: "1.0"', f"name: {path.stem.replace('-', '_')}", "vars: {x: 0}"]
    if tools:
        lines.append("tools:")
        lines += [f"  {tool}: {{workflow: {target}, effect: write}}" for tool, target in tools.items()]
    lines.append("steps:")
    lines.append("  - {id: first, set: {x: 1}}")
    lines += [f"  - id: call_{i}\n    workflow: {{path: {target}}}" for i, target in enumerate(calls)]
    lines += [f"  - {{id: use_{tool}, tool: {tool}}}" for tool in tools or {}]
    path.write_text("\n".join(lines) + "\n")
    return path


def validate(*paths: Path) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["validate", "--format", "json", *map(str, paths)])
    return result.exit_code, json.loads(result.stdout)


def test_a_file_whose_call_leads_into_a_cycle_of_other_files_is_ch402_at_that_call(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml")
    b = write(tmp_path, "b.yaml", "c.yaml")
    c = write(tmp_path, "c.yaml", "b.yaml")
    code, diags = validate(a)
    assert code == 1
    assert diags == [
        {
            "file": str(a),
            "line": 7,  # `    workflow: {path: b.yaml}`, at the path
            "column": 22,
            "code": "CH402",
            "severity": "error",
            "message": "workflow 'b.yaml' leads into a cycle of workflow files: b.yaml -> c.yaml -> b.yaml",
            "hint": "every run of this call would fail when that file is compiled; break the cycle there",
        }
    ]
    # the files of the cycle report it themselves, as a cycle through them
    graph, own = compile_file(b)
    assert graph is None and [(d.code, d.message) for d in own] == [
        ("CH402", "workflow calls form a cycle: b.yaml -> c.yaml -> b.yaml")
    ]
    assert [d.message for d in compile_file(c)[1]] == [
        "workflow calls form a cycle: c.yaml -> b.yaml -> c.yaml"
    ]
    # through the API too: no graph, one diagnostic
    graph, diags_api = compile_file(a)
    assert graph is None and [(d.code, d.line, d.column) for d in diags_api] == [("CH402", 7, 22)]


def test_the_way_into_a_cycle_further_down_is_named(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml")
    write(tmp_path, "b.yaml", "c.yaml")
    write(tmp_path, "c.yaml", "d.yaml")
    write(tmp_path, "d.yaml", "c.yaml")
    _, diags = compile_file(a)
    assert [d.message for d in diags] == [
        "workflow 'b.yaml' leads into a cycle of workflow files: c.yaml -> d.yaml -> c.yaml "
        "(reached through a.yaml -> b.yaml -> c.yaml)"
    ]


def test_a_file_that_calls_itself_further_down_into_one_more_file(tmp_path: Path) -> None:
    # c.yaml calls itself: a cycle of one file, which c reports as such and a as a cycle it leads into.
    a = write(tmp_path, "a.yaml", "b.yaml")
    write(tmp_path, "b.yaml", "c.yaml")
    c = write(tmp_path, "c.yaml", "c.yaml")
    assert [d.message for d in compile_file(a)[1]] == [
        "workflow 'b.yaml' leads into a cycle of workflow files: c.yaml -> c.yaml "
        "(reached through a.yaml -> b.yaml -> c.yaml)"
    ]
    assert "is this file" in compile_file(c)[1][0].message


def test_a_cycle_back_to_this_file_is_named_first_and_once(tmp_path: Path) -> None:
    # b leads both back to a and into c's own cycle: the cycle through a is the one a reports.
    a = write(tmp_path, "a.yaml", "b.yaml")
    write(tmp_path, "b.yaml", "c.yaml", "a.yaml")
    write(tmp_path, "c.yaml", "c.yaml")
    assert [d.message for d in compile_file(a)[1]] == [
        "workflow calls form a cycle: a.yaml -> b.yaml -> a.yaml"
    ]


def test_every_call_that_leads_into_the_cycle_is_reported_and_the_others_are_not(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml", "ok.yaml", "b.yaml", tools={"again": "b.yaml", "fine": "ok.yaml"})
    write(tmp_path, "b.yaml", "c.yaml")
    write(tmp_path, "c.yaml", "b.yaml")
    write(tmp_path, "ok.yaml")
    _, diags = compile_file(a)
    where = [(d.code, d.line) for d in diags]
    text = a.read_text().splitlines()
    assert where == sorted(
        [("CH402", text.index("  again: {workflow: b.yaml, effect: write}") + 1)]
        + [("CH402", n + 1) for n, line in enumerate(text) if line == "    workflow: {path: b.yaml}"]
    )
    assert len(where) == 3


def test_paths_are_relative_to_each_files_folder(tmp_path: Path) -> None:
    # a -> sub/b.yaml -> (sub/)c.yaml -> (sub/)b.yaml: each call read from the folder of its own file.
    a = write(tmp_path, "a.yaml", tools={"child": "sub/b.yaml"})
    write(tmp_path, "sub/b.yaml", "c.yaml")
    write(tmp_path, "sub/c.yaml", "b.yaml")
    write(tmp_path, "c.yaml")  # the c.yaml beside a.yaml is not the one sub/b.yaml calls
    assert [d.message for d in compile_file(a)[1]] == [
        "workflow 'sub/b.yaml' leads into a cycle of workflow files: sub/b.yaml -> sub/c.yaml -> sub/b.yaml"
    ]
    write(tmp_path, "sub/c.yaml", "../c.yaml")
    assert compile_file(a)[1] == []


def test_missing_and_unloadable_files_down_the_chain_are_left_to_their_own_checks(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml")
    b = write(tmp_path, "b.yaml", "missing.yaml", "broken.yaml", "folder", '"nul\\0.yaml"')
    (tmp_path / "broken.yaml").write_text('charter: "1.0"\nsteps: [\n')
    (tmp_path / "folder").mkdir()
    code, diags = validate(a)
    assert (code, diags) == (0, [])
    # b itself reports the files it names that do not exist (CH209, a NUL byte in a path too); the file
    # that does not load reports itself when it is checked
    assert [(d.code, d.line) for d in compile_file(b)[1]] == [("CH209", 7), ("CH209", 11), ("CH209", 13)]
    assert [d.code for d in compile_file(tmp_path / "broken.yaml")[1]] == ["CH004"]


def test_a_dag_of_shared_files_validates_clean(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml", "c.yaml")
    write(tmp_path, "b.yaml", "d.yaml")
    write(tmp_path, "c.yaml", "d.yaml")
    write(tmp_path, "d.yaml")
    assert validate(a) == (0, [])


def count_loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    loads: dict[str, int] = {}
    real = dsl.loader.load_file

    def counting(path: Any) -> Any:
        loads[str(path)] = loads.get(str(path), 0) + 1
        return real(path)

    monkeypatch.setattr(dsl.loader, "load_file", counting)
    return loads


def test_each_file_is_read_once_in_a_lattice_of_many_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 layers of 3 files, each calling all 3 of the next layer: 3**40 chains of calls, 120 files. The
    # last layer calls back into the one before it, so there is a cycle at the bottom.
    layers, width = 40, 3
    for layer in range(layers):
        nxt = [f"l{layer + 1}_{j}.yaml" for j in range(width)] if layer + 1 < layers else ["l38_0.yaml"]
        for i in range(width):
            write(tmp_path, f"l{layer}_{i}.yaml", *nxt)
    a = write(tmp_path, "a.yaml", *(f"l0_{i}.yaml" for i in range(width)))
    loads = count_loads(monkeypatch)
    _, diags = compile_file(a)
    assert [d.code for d in diags] == ["CH402"] * width
    assert "l38_0.yaml -> l39_0.yaml -> l38_0.yaml" in diags[0].message
    assert loads and max(loads.values()) == 1  # a.yaml is read once by compile_file, the others once here
    assert len(loads) <= layers * width + 1


def test_a_long_chain_ending_in_a_cycle_is_found_at_any_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # deeper than any fixed bound on the walk: 300 files, then a cycle of two
    n = 300
    for i in range(n):
        write(tmp_path, f"f{i}.yaml", f"f{i + 1}.yaml")
    write(tmp_path, f"f{n}.yaml", f"f{n + 1}.yaml")
    write(tmp_path, f"f{n + 1}.yaml", f"f{n}.yaml")
    a = write(tmp_path, "a.yaml", "f0.yaml")
    loads = count_loads(monkeypatch)
    _, diags = compile_file(a)
    assert [d.code for d in diags] == ["CH402"]
    assert diags[0].message.startswith(f"workflow 'f0.yaml' leads into a cycle of workflow files: f{n}.yaml")
    assert max(loads.values()) == 1
    # without the cycle at the end, the long chain is fine
    write(tmp_path, f"f{n + 1}.yaml")
    assert compile_file(a)[1] == []


CALL_C = "{id: go, workflow: {path: c.yaml}}"
NESTED = {
    "group": f"{{id: g, steps: [{CALL_C}]}}",
    "for_each": f"{{id: g, for_each: {{in: [1], steps: [{CALL_C}]}}}}",
    "loop": f"{{id: g, loop: {{max_iterations: 2, steps: [{CALL_C}]}}}}",
    "try": f"{{id: g, try: {{steps: [{{id: s, set: {{x: 1}}}}], catch: {{steps: [{CALL_C}]}}}}}}",
    "switch": f"{{id: g, switch: [{{when: 'true', steps: [{{id: s, set: {{x: 1}}}}]}}, "
    f"{{default: true, steps: [{CALL_C}]}}]}}",
    "parallel list": f"{{id: g, parallel: {{branches: [[{{id: s, set: {{x: 1}}}}], [{CALL_C}]]}}}}",
    "parallel map": f"{{id: g, parallel: {{branches: {{one: [{CALL_C}]}}}}}}",
}


@pytest.mark.parametrize("step", NESTED.values(), ids=NESTED.keys())
def test_calls_nested_in_any_step_kind_of_another_file_are_followed(tmp_path: Path, step: str) -> None:
    a = write(tmp_path, "a.yaml", "b.yaml")
    b = tmp_path / "b.yaml"
    b.write_text(f'charter: "1.0"\nname: b\nvars: {{x: 0}}\nsteps:\n  - {step}\n')
    write(tmp_path, "c.yaml", "b.yaml")
    assert compile_file(b)[1] and compile_file(b)[1][0].code == "CH402", compile_file(b)[1]
    assert [d.message for d in compile_file(a)[1]] == [
        "workflow 'b.yaml' leads into a cycle of workflow files: b.yaml -> c.yaml -> b.yaml"
    ]


def test_data_shaped_like_a_call_is_not_a_call(tmp_path: Path) -> None:
    # a value (a variable named `workflow`, a child's input) is data, not a workflow step
    a = write(tmp_path, "a.yaml", "b.yaml")
    (tmp_path / "b.yaml").write_text(
        'charter: "1.0"\nname: b\nvars: {workflow: null}\nsteps:\n'
        "  - {id: s, set: {workflow: {path: b.yaml}}}\n"
        "  - {id: c, workflow: {path: c.yaml, input: {workflow: {path: a.yaml}}}}\n"
    )
    write(tmp_path, "c.yaml")
    assert compile_file(tmp_path / "b.yaml")[1] == []
    assert compile_file(a)[1] == []
