"""Front-end speed: load + validate + compile a generated 500-step workflow with 1,000 expressions,
and the CLI's start time (`charter --version`).

    python bench/bench_frontend.py [--steps 500] [--runs 5]

Goals (issue 3): under 0.5 s for the file, under 0.15 s for the start. Each stage is timed on its own,
best of N runs; the CEL parse cache is cleared before every run so each run parses every expression
again, as a fresh `charter validate` process would.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(steps: int) -> tuple[str, int]:
    """A workflow of `steps` steps (tool, set, switch, for_each; some nested) and its expression count.

    Every top-level step has an `if` condition and one `${{ }}` value that reads an earlier step, so
    there are two expressions per step; nested steps are counted among the steps."""
    lines = [
        'charter: "1.0"',
        "name: generated",
        "input: {type: object}",
        "models: {default: {provider: openai, model: gpt-4.1-mini}}",
        "tools:",
        '  fetch: {python: "examples.tools:search", effect: read}',
        '  store: {python: "examples.tools:book_expense", effect: write}',
        "identities: {worker: {kind: agent}}",
        "grants:",
        '  - {id: worker-tools, to: worker, tools: ["*"]}',
        "steps:",
    ]
    expressions = 0
    assigned = ["n"]  # the variables `set` steps assign
    made = 0
    i = 0
    while made < steps:
        prev = f"s{i - 1}" if i else None
        cond = (
            f"steps.{prev}.output.count > {i % 7} && input.mode != 'dry'" if prev else "input.mode != 'dry'"
        )
        read = f"steps.{prev}.output.items" if prev else "input.items"
        kind = i % 10
        if kind == 4 and made + 3 <= steps:
            lines += [
                f"  - id: s{i}",
                f'    if: "{cond}"',
                "    switch:",
                f"      - when: size({read}) > {i}",
                f'        steps: [{{id: s{i}_a, tool: fetch, args: {{q: "${{{{ {read}[0] }}}}"}}}}]',
                "      - default: true",
                f"        steps: [{{id: s{i}_b, set: {{n: 0}}}}]",
            ]
            made += 3
            expressions += 3
        elif kind == 7 and made + 2 <= steps:
            lines += [
                f"  - id: s{i}",
                f'    if: "{cond}"',
                "    for_each:",
                f'      in: "${{{{ {read} }}}}"',
                "      concurrency: 4",
                f"      steps: [{{id: s{i}_x, tool: store, args: {{item: \"${{{{ item.name + '-' + string(index) }}}}\"}}}}]",
            ]
            made += 2
            expressions += 3
        elif kind % 2:
            lines += [
                f"  - id: s{i}",
                f'    if: "{cond}"',
                "    tool: fetch",
                f'    args: {{q: "${{{{ {read} }}}}", page: "${{{{ input.page + {i} }}}}"}}',
            ]
            made += 1
            expressions += 3
        else:
            lines += [
                f"  - id: s{i}",
                f'    if: "{cond}"',
                f'    set: {{total_{i}: "total: ${{{{ size({read}) * 2 }}}} items"}}',
            ]
            assigned.append(f"total_{i}")
            made += 1
            expressions += 2
        i += 1
    lines += ["output:", f'  last: "${{{{ steps.s{i - 1}.output }}}}"']
    # `set` assigns only declared variables (CH211)
    lines.insert(lines.index("steps:"), "vars: {" + ", ".join(f"{name}: null" for name in assigned) + "}")
    return "\n".join(lines) + "\n", expressions + 1


def _count_programs(graph: Any) -> int:
    """CEL programs in the compiled graph: conditions, case conditions, and the parts of values."""
    count = len(graph.output.programs) if graph.output else 0
    for node in graph.nodes():
        count += node.condition is not None
        count += sum(len(value.programs) for value in node.values.values()) + len(node.conditions)
        count += sum(block.when is not None for block in node.blocks)
    return count


def _sources(graph: Any) -> list[str]:
    """The source of every CEL program of the graph (for timing the CEL engine alone)."""
    out = [p.source for p in graph.output.programs] if graph.output else []
    for node in graph.nodes():
        out += [node.condition.source] if node.condition is not None else []
        out += [p.source for value in node.values.values() for p in value.programs]
        out += [b.when.source for b in node.blocks if b.when is not None]
    return out


def best(runs: int, fn: Callable[[], Any], before: Callable[[], None] = lambda: None) -> tuple[float, Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(runs):
        before()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from dsl import expr
    from dsl.compiler import compile_workflow
    from dsl.loader import load_file
    from dsl.validate import validate

    text, expressions = generate(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.yaml"
        path.write_text(text, encoding="utf-8")
        # Warm-up: pydantic builds its validators and Lark its parser once per process.
        doc, _ = load_file(path)
        workflow, _ = validate(doc)
        compile_workflow(workflow, doc)

        clear = expr._parse_cached.cache_clear  # noqa: SLF001 - a cold parse cache, as in a fresh process
        t_load, (doc, load_diags) = best(args.runs, lambda: load_file(path))
        t_validate, (workflow, shape) = best(args.runs, lambda: validate(doc))
        t_compile, (graph, diags) = best(args.runs, lambda: compile_workflow(workflow, doc), clear)
        assert not load_diags and not shape and graph is not None, (load_diags, shape, diags[:5])
        nodes = sum(1 for _ in graph.nodes())
        expressions = _count_programs(graph)
        sources = _sources(graph)
        t_cel, _ = best(args.runs, lambda: [expr.compile(src, None) for src in sources], clear)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    version = [sys.executable, "-m", "cli", "--version"]
    t_start, _ = best(
        args.runs, lambda: subprocess.run(version, cwd=ROOT, env=env, capture_output=True, check=True)
    )
    bare = [sys.executable, "-c", "pass"]
    t_python, _ = best(args.runs, lambda: subprocess.run(bare, capture_output=True, check=True))

    total = t_load + t_validate + t_compile
    print(f"workflow: {nodes} steps, {expressions} expressions, {len(text):,} bytes")
    print(f"load      {t_load * 1000:8.1f} ms")
    print(f"validate  {t_validate * 1000:8.1f} ms")
    print(
        f"compile   {t_compile * 1000:8.1f} ms   (of which CEL parse + codegen alone: ~{t_cel * 1000:.0f} ms)"
    )
    print(f"total     {total * 1000:8.1f} ms   (goal < 500 ms)")
    print(
        f"charter --version {t_start * 1000:6.1f} ms   (goal < 150 ms; bare python {t_python * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
