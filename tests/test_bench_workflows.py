"""The workflows the benchmarks generate are valid Charter: a benchmark that no longer compiles (the
language moved on) fails here, in CI, rather than when someone next runs it. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_engine, bench_frontend
from dsl.frontend import compile_file


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("frontend", bench_frontend.generate(120)[0]),
        ("sequential", bench_engine.sequential_yaml(5)),
        ("fanout", bench_engine.fanout_yaml(5)),
        ("loop", bench_engine.loop_yaml(5)),
    ],
)
def test_benchmark_workflow_compiles(tmp_path: Path, name: str, source: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(source, encoding="utf-8")
    graph, diags = compile_file(path)
    assert graph is not None and not diags, [str(d) for d in diags]
