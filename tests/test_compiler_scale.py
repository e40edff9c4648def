"""The compiler on workflows of thousands of steps: what each step may read (`steps.<id>`) is checked
exactly as on small files (the steps visible at each place are shared between places, not copied per
step, which made compiling quadratic in the number of steps). No timings are asserted: the sizes below
took seconds before and are here for the diagnostics they must still give."""

from __future__ import annotations

from dsl.compiler import compile_workflow
from dsl.diagnostics import Diagnostic
from dsl.loader import load_text
from dsl.validate import validate

HEADER = """\
charter: "1.0"
name: scale
tools:
  search: {python: "examples.tools:search", effect: read}
steps:
"""


def _compile(text: str) -> list[Diagnostic]:
    doc, diags = load_text(text, "<string>")
    assert doc is not None and not diags, diags
    workflow, shape = validate(doc)
    assert workflow is not None and not shape, shape
    graph, found = compile_workflow(workflow, doc)
    assert (graph is None) == bool(found)
    return found


def _step(indent: str, sid: str, reads: str | None) -> str:
    if reads is None:
        return f"{indent}- {{id: {sid}, tool: search}}"
    return f'{indent}- {{id: {sid}, tool: search, args: {{q: "${{{{ {reads} }}}}"}}}}'


def _chain(prefix: str, n: int, indent: str, reads: dict[int, str] | None = None) -> list[str]:
    """n steps `<prefix>0..`: those given in `reads` read what it says, every 100th reads the step 99
    before it, and the others read nothing (each distinct expression is parsed, which is not the point)."""
    reads = reads or {}

    def read(k: int) -> str | None:
        if k in reads:
            return reads[k]
        return f"steps.{prefix}{k - 99}.output" if k >= 99 and k % 100 == 99 else None

    return [_step(indent, f"{prefix}{k}", read(k)) for k in range(n)]


def _line(text: str, sid: str) -> int:
    """The line of step `sid` (1-based)."""
    return text[: text.index(f"id: {sid},")].count("\n") + 1


def _found(diags: list[Diagnostic]) -> set[tuple[str, int, str]]:
    return {(d.code, d.line, d.message) for d in diags}


def test_a_long_sequence_reads_only_earlier_steps() -> None:
    n = 10_000
    reads = {
        n - 10: f"steps.s{n - 5}.output",  # a later step: an error, however long the sequence
        n - 9: "steps.s0.output",  # the first step, from near the end: fine
        n - 8: "steps.nowhere.output",  # no such step
        n - 7: f"steps.s{n - 7}.status",  # itself
        n - 6: f"has(steps.s{n - 1})",  # has() may ask about any step
        n - 4: f"steps.s{n - 5}.outputs",  # a visible step, but no such field
    }
    text = (
        HEADER
        + "\n".join(_chain("s", n, "  ", reads))
        + f'\noutput: {{last: "${{{{ steps.s{n - 1}.output }}}}"}}\n'
    )
    diags = _compile(text)
    assert _found(diags) == {
        (
            "CH203",
            _line(text, f"s{n - 10}"),
            f"step 's{n - 5}' runs after this point, so steps.s{n - 5} is not available here",
        ),
        ("CH202", _line(text, f"s{n - 8}"), "unknown step 'nowhere' in steps.nowhere"),
        ("CH203", _line(text, f"s{n - 7}"), f"step 's{n - 7}' reads its own result through steps.s{n - 7}"),
        (
            "CH302",
            _line(text, f"s{n - 4}"),
            f"steps.s{n - 5} has no field 'outputs': a step has output, status and error",
        ),
    }, diags


def test_thousands_of_steps_in_nested_blocks_keep_their_scopes() -> None:
    """Steps in parallel branches, a for_each, a loop, a try and its catch, switch cases and groups, and a
    sequence after them that reads into each."""
    k, tail = 500, 4000  # 500 steps in each of 10 blocks, then 4,000 after them
    lines = [
        "  - {id: a0, tool: search}",
        "  - id: par",
        "    parallel:",
        "      branches:",
        "        left:",
        *_chain("l", k, "          ", {0: "steps.a0.output"}),
        "        right:",
        *_chain("r", k, "          ", {k - 1: f"steps.l{k - 2}.output"}),  # another branch
        "  - id: fe",
        "    for_each:",
        '      in: "${{ [1, 2] }}"',
        "      steps:",
        *_chain("f", k, "        ", {k - 1: "steps.par.output"}),
        "  - id: lp",
        "    loop:",
        "      max_iterations: 2",
        f'      until: "steps.p{k - 1}.output != null"',  # until sees the body
        "      steps:",
        *_chain("p", k, "        ", {k - 1: f"steps.f{k - 1}.output"}),  # inside for_each fe
        "  - id: tr",
        "    try:",
        "      steps:",
        *_chain("t", k, "        ", {k - 2: "steps.c1.output"}),  # the catch, from the body
        "      catch:",
        "        steps:",
        *_chain("c", k, "          ", {k - 1: f"steps.t{k - 1}.output"}),  # the body, from the catch
        "  - id: sw",
        "    switch:",
        '      - when: "steps.tr.output != null"',
        "        steps:",
        *_chain("w", k, "          "),
        "      - default: true",
        "        steps:",
        *_chain("d", k, "          ", {k - 1: f"steps.w{k - 1}.output"}),  # another case
        "  - id: g",
        "    steps:",
        *_chain("g", k, "      "),
        "  - id: h",
        '    if: "steps.g0.output != null"',
        "    steps:",
        *_chain("h", k, "      "),
        *_chain(
            "z",
            tail,
            "  ",
            {
                0: f"steps.g{k - 1}.output",  # inside a group without `if`: fine
                1: "steps.h1.output",  # inside a group with `if`
                2: "steps.f3.output",
                3: "steps.p3.output",
                4: "steps.l3.output",
                5: "steps.t3.output",
                6: "steps.w3.output",
                7: "steps.sw.output + steps.h.output + steps.lp.output",  # the composites: fine
                tail - 3: f"steps.z{tail - 1}.output",  # later
                tail - 2: "steps.gone.output",
            },
        ),
    ]
    text = HEADER + "\n".join(lines) + "\n"
    diags = _compile(text)

    def later(at: str, sid: str) -> tuple[str, int, str]:
        return (
            "CH203",
            _line(text, at),
            f"step '{sid}' runs after this point, so steps.{sid} is not available here",
        )

    def hidden(at: str, sid: str, why: str) -> tuple[str, int, str]:
        return ("CH203", _line(text, at), f"step '{sid}' {why}, so steps.{sid} is not available here")

    assert _found(diags) == {
        (
            "CH203",
            _line(text, f"r{k - 1}"),
            f"step 'l{k - 2}' is in another branch of parallel step 'par', which runs at the same time",
        ),
        hidden(f"p{k - 1}", f"f{k - 1}", "runs once per item inside for_each 'fe'"),
        later(f"t{k - 2}", "c1"),
        hidden(f"d{k - 1}", f"w{k - 1}", "is inside a case of switch 'sw', which may not be the case taken"),
        (
            "CH203",
            _line(text, "z1"),
            "step 'h1' is inside group 'h', which has an `if` and may have been skipped (then none of its "
            "steps ran), so steps.h1 is not available here",
        ),
        hidden("z2", "f3", "runs once per item inside for_each 'fe'"),
        hidden("z3", "p3", "runs once per iteration inside loop 'lp'"),
        hidden("z4", "l3", "is inside a branch of parallel 'par'"),
        hidden("z5", "t3", "is inside try 'tr' and may not have completed"),
        hidden("z6", "w3", "is inside a case of switch 'sw', which may not be the case taken"),
        later(f"z{tail - 3}", f"z{tail - 1}"),
        ("CH202", _line(text, f"z{tail - 2}"), "unknown step 'gone' in steps.gone"),
    }, diags
