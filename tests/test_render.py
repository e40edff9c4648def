"""Rendering execution graphs as Mermaid, DOT and JSON, and the `charter graph` command that prints them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from dsl.frontend import compile_file
from dsl.graph import ExecutionGraph
from dsl.render import render

EXAMPLES = Path(__file__).parent.parent / "examples"
WORKFLOWS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith(".responses.yaml"))


def graph_of(name: str) -> ExecutionGraph:
    graph, diags = compile_file(EXAMPLES / name)
    assert graph is not None, diags
    return graph


def test_mermaid_routing_has_a_decision_and_labelled_cases() -> None:
    text = render(graph_of("routing.yaml"), "mermaid")
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    ids = {name: nid for nid, name in re.findall(r"^\s+(n\d+)\W+([a-z_]+) \(", text, re.MULTILINE)}
    assert f'{ids["route"]}{{"route (switch)"}}' in text
    assert (
        f'{ids["route"]} -->|"steps.classify.output.intent == #quot;technical#quot;"| {ids["technical"]}'
        in text
    )
    assert f'{ids["route"]} -->|"default"| {ids["general"]}' in text
    for end in ("billing", "technical", "general"):
        assert f"  {ids[end]} --> finish" in lines
    assert f"  start --> {ids['classify']}" in lines
    assert "&&" not in text and ">=" not in text  # entity-escaped inside labels


def test_mermaid_parallel_and_for_each_use_subgraphs() -> None:
    text = render(graph_of("parallel.yaml"), "mermaid")
    assert text.count("subgraph ") == 3
    assert text.count("subgraph ") == len([line for line in text.splitlines() if line.strip() == "end"])
    pipeline = render(graph_of("tools_pipeline.yaml"), "mermaid")
    assert 'priced: for each line"]' in pipeline
    assert '-->|"next"|' in pipeline  # loop back edges


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_dot_is_well_formed(path: Path) -> None:
    text = render(graph_of(path.name), "dot")
    assert text.startswith("digraph ")
    assert text.count("{") == text.count("}")
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_json_lists_every_node_and_edges_between_them(path: Path) -> None:
    graph = graph_of(path.name)
    data = json.loads(render(graph, "json"))
    assert [n["path"] for n in data["nodes"]] == [n.path for n in graph.nodes()]
    assert all({"path", "id", "kind"} <= n.keys() for n in data["nodes"])
    paths = {n["path"] for n in data["nodes"]}
    assert all(e["from"] in paths and e["to"] in paths for e in data["edges"])
    assert data["digest"] == graph.digest


def test_json_nested_nodes_name_their_parent_and_block() -> None:
    data = json.loads(render(graph_of("tools_pipeline.yaml"), "json"))
    fallback = next(n for n in data["nodes"] if n["id"] == "fallback")
    assert fallback == {
        "path": "priced/body/price/catch/fallback",
        "id": "fallback",
        "kind": "tool",
        "parent": "priced/body/price",
        "block": "catch",
    }


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mermaid, dot, json"):
        render(graph_of("routing.yaml"), "svg")


def test_cli_graph_and_validate() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["graph", str(EXAMPLES / "routing.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD")
    result = runner.invoke(main, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output


def test_cli_graph_of_an_invalid_file_prints_diagnostics(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('charter: "1.0"\nname: bad\nsteps:\n  - {id: a, tool: missing}\n')
    result = CliRunner().invoke(main, ["graph", str(bad)])
    assert result.exit_code == 1
    assert "CH204" in result.output


def test_cli_graph_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    # Like `validate`: a path that names no file is a mistyped command (2), not an invalid workflow (1).
    result = CliRunner().invoke(main, ["graph", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
