"""The compiler: scopes, references, grants, structure, positions inside strings, and the graph it builds."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from pathlib import Path

import pytest

from dsl import compiler
from dsl.compiler import compile_workflow
from dsl.diagnostics import Diagnostic, Severity
from dsl.frontend import compile_file
from dsl.graph import ExecutionGraph
from dsl.loader import load_text
from dsl.validate import validate

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
WORKFLOWS = [p for p in EXAMPLES if not p.name.endswith(".responses.yaml")]

HEADER = """\
charter: "1.0"
name: t
models: {default: {provider: openai, model: gpt-4.1-mini}}
tools:
  search: {python: "examples.tools:search", effect: read}
  refund: {python: "examples.tools:issue_refund", effect: write}
"""

# The variables the snippets below `set` (a set step may only assign declared variables).
SNIPPET_VARS = "vars: {x: null, y: null, z: null, done: null, why: null, r: null, k: null, auth: null}\n"


def build(
    body: str, header: str = HEADER, file: str = "<string>"
) -> tuple[ExecutionGraph | None, list[Diagnostic]]:
    text = header + textwrap.dedent(body)
    if "\nvars:" not in text:
        text += SNIPPET_VARS  # appended, so that line numbers asserted below stay put
    doc, diags = load_text(text, file)
    assert doc is not None and not diags, diags
    workflow, shape = validate(doc)
    assert workflow is not None, shape
    return compile_workflow(workflow, doc)


def codes(diags: list[Diagnostic]) -> list[str]:
    return [d.code for d in diags]


def only(diags: list[Diagnostic], code: str) -> Diagnostic:
    hits = [d for d in diags if d.code == code]
    assert len(hits) == 1, diags
    return hits[0]


# --- the examples -----------------------------------------------------------------------------------


def test_examples_are_found() -> None:
    assert len(WORKFLOWS) >= 5


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_example_compiles_without_diagnostics(path: Path) -> None:
    graph, diags = compile_file(path)
    assert diags == []
    assert graph is not None
    assert graph.digest == hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()
    assert [n.path for n in graph.nodes()]  # every example has steps


# --- the graph -----------------------------------------------------------------------------------------


def test_routing_graph_paths_kinds_and_compiled_fields() -> None:
    graph, diags = compile_file(Path(__file__).parent.parent / "examples" / "routing.yaml")
    assert graph is not None and diags == []
    assert [n.path for n in graph.nodes()] == [
        "classify",
        "route",
        "route/case-0/billing",
        "route/case-1/technical",
        "route/default/general",
    ]
    route = graph.node("route")
    assert route.kind == "switch"
    assert [b.label for b in route.blocks] == ["case-0", "case-1", "default"]
    assert route.blocks[2].when is None
    steps = {"classify": {"output": {"intent": "technical", "confidence": 0.9}}}
    assert route.blocks[0].when.evaluate({"steps": steps}) is False
    assert route.blocks[1].when.evaluate({"steps": steps}) is True
    classify = graph.node("classify")
    assert classify.values["vars"].evaluate({"input": {"message": "hi"}}) == {"message": "hi"}
    assert classify.prompts["prompt"].render({"message": "hi"}) == "Request: hi"
    assert graph.output is not None
    with pytest.raises(KeyError):
        graph.node("nope")


def test_graph_is_immutable() -> None:
    graph, _ = build("""
    steps:
      - {id: a, set: {x: 1}}
    """)
    assert graph is not None
    node = graph.node("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.id = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        node.values["x"] = node.values["set"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.digest = ""  # type: ignore[misc]


def test_nested_paths_and_blocks() -> None:
    graph, diags = build("""
    steps:
      - id: each
        for_each:
          in: "${{ input.items }}"
          steps:
            - id: guarded
              try:
                steps: [{id: risky, tool: search, args: {q: "${{ item }}"}}]
                catch:
                  steps: [{id: fallback, set: {why: "${{ error.message }}"}}]
      - id: fan
        parallel:
          branches:
            - [{id: left, set: {x: 1}}]
            - [{id: right, set: {x: 2}}]
    """)
    assert diags == [] and graph is not None
    assert graph.node("each/body/guarded/body/risky").kind == "tool"
    assert graph.node("each/body/guarded/catch/fallback").kind == "set"
    assert graph.node("fan/branch-1/right").id == "right"
    risky = graph.node("each/body/guarded/body/risky")
    assert risky.values["args"].evaluate({"item": "x"}) == {"q": "x"}


def test_edges_follow_sequences_cases_and_loops() -> None:
    graph, _ = build("""
    steps:
      - {id: a, set: {x: 1}}
      - id: sw
        switch:
          - when: vars.x == 1
            steps: [{id: one, set: {y: 1}}]
          - default: true
            steps: [{id: other, set: {y: 2}}]
      - id: each
        for_each:
          in: "${{ input.items }}"
          steps: [{id: body, set: {z: 1}}]
      - {id: z, set: {done: true}}
    """)
    assert graph is not None
    edges = set(graph.edges())
    assert ("a", "sw", "") in edges
    assert ("sw", "sw/case-0/one", "vars.x == 1") in edges
    assert ("sw", "sw/default/other", "default") in edges
    assert ("sw/case-0/one", "each", "") in edges and ("sw/default/other", "each", "") in edges
    assert ("each", "each/body/body", "body") in edges
    assert ("each/body/body", "each", "next") in edges
    assert ("each", "z", "") in edges


def test_warnings_alone_still_give_a_graph() -> None:
    graph, diags = build(
        """
    identities: {bot: {kind: agent}}
    grants:
      - {id: g, to: bot, tools: [search, nothing_*]}
    steps:
      - {id: a, tool: search}
    """
    )
    assert codes(diags) == ["CH503"]
    assert diags[0].severity is Severity.WARNING
    assert graph is not None


def test_errors_give_no_graph_and_all_are_reported() -> None:
    graph, diags = build("""
    steps:
      - {id: a, tool: serch}
      - {id: b, if: "1", set: {x: "${{ steps.zz.output }}"}}
      - {id: a, llm: {model: fast, prompt: "{{ q }}"}}
    """)
    assert graph is None
    assert set(codes(diags)) >= {"CH204", "CH303", "CH202", "CH201", "CH205", "CH307"}


# --- references and scopes -------------------------------------------------------------------------------


def test_duplicate_id_names_first_occurrence() -> None:
    _, diags = build("""
    steps:
      - {id: a, set: {x: 1}}
      - id: g
        steps:
          - {id: a, set: {x: 2}}
    """)
    d = only(diags, "CH201")
    assert "line 9, column 10" in d.message and (d.line, d.column) == (12, 14)


def test_step_visibility_rules() -> None:
    _, diags = build("""
    steps:
      - {id: a, set: {x: 1}}
      - id: grp
        steps:
          - {id: inner, set: {x: "${{ steps.a.output }}"}}
      - {id: b, set: {x: "${{ steps.inner.output }}", y: "${{ steps.grp.status }}"}}
      - id: lp
        loop:
          max_iterations: 3
          until: steps.page.output.done && index > 1
          steps: [{id: page, tool: search, args: {n: "${{ index }}"}}]
      - id: t
        try:
          steps: [{id: risky, tool: refund}]
          catch: {as: oops, steps: [{id: rescue, set: {r: "${{ steps.risky.status + oops.message }}"}}]}
      - {id: c, if: has(steps.rescue), set: {x: 1}, output: {r: "${{ result }}"}}
    """)
    assert diags == []


def test_step_not_yet_visible_messages() -> None:
    _, diags = build("""
    steps:
      - {id: a, set: {x: "${{ steps.a.output }}"}}
      - id: t
        try:
          steps: [{id: risky, set: {x: "${{ steps.rescue.output }}"}}]
          catch: {steps: [{id: rescue, set: {x: 1}}]}
      - {id: after, set: {x: "${{ steps.risky.output }}"}}
    """)
    messages = [d.message for d in diags if d.code == "CH203"]
    assert len(messages) == 3, diags
    assert "reads its own result" in messages[0]
    assert "inside try 't'" in messages[2]


def test_scope_errors_say_where_the_name_exists() -> None:
    _, diags = build("""
    steps:
      - {id: a, set: {x: "${{ item }}"}}
      - {id: g, tool: search}
    guardrails:
      - {id: r, on: tool.input, check: steps.a.output == 1}
    """)
    assert codes(diags) == ["CH304", "CH304"]
    assert "for_each" in diags[0].message


def test_group_with_if_exports_only_itself() -> None:
    # A group whose `if` is false runs none of its steps, which then have no `steps` entry (§15.1 rule 2).
    _, diags = build("""
    steps:
      - id: grp
        if: input.go
        steps:
          - {id: inner, set: {x: 1}}
          - {id: inner2, set: {x: "${{ steps.inner.output }}"}}
          - id: sub
            steps: [{id: deep, set: {x: 1}}]
      - {id: after, set: {x: "${{ steps.inner.output }}", y: "${{ steps.grp.status }}"}}
      - {id: later, if: has(steps.deep), set: {x: "${{ steps.deep.output }}"}}
    output:
      a: "${{ steps.inner2.output }}"
      b: "${{ steps.grp.output }}"
    """)
    hits = [d for d in diags if d.code == "CH203"]
    assert [(d.line, d.message.split(" is ")[0]) for d in hits] == [
        (16, "step 'inner'"),
        (17, "step 'deep'"),
        (19, "step 'inner2'"),
    ], diags
    assert len(diags) == 3, diags
    assert "inside group 'grp', which has an `if`" in hits[0].message
    assert hits[0].hint is not None and "steps.grp.output" in hits[0].hint


def test_group_without_if_or_inside_a_run_group_stays_visible() -> None:
    _, diags = build("""
    steps:
      - id: outer
        steps:
          - id: g1
            if: "true"
            steps: [{id: a, set: {x: 1}}]
          - id: g2
            steps:
              - {id: b, if: input.go, set: {x: 1}}
              - id: g3
                if: input.go
                steps: [{id: c, set: {x: "${{ steps.a.output }}"}}]
          - {id: d, set: {x: "${{ steps.b.status }}", y: "${{ steps.g3.status }}"}}
      - {id: e, set: {x: "${{ steps.a.output }}", y: "${{ steps.b.status }}", z: "${{ steps.c.output }}"}}
    """)
    d = only(diags, "CH203")
    assert d.line == 21 and "'c' is inside group 'g3'" in d.message


@pytest.mark.parametrize(
    "container",
    [
        "try: {steps: [{id: inner, set: {x: 1}}], catch: {steps: [{id: c, set: {x: 2}}]}}",
        "switch: [{when: input.a, steps: [{id: inner, set: {x: 1}}]}]",
        "parallel: {branches: [[{id: inner, set: {x: 1}}], [{id: p2, set: {y: 1}}]]}",
        "for_each: {in: [1, 2], steps: [{id: inner, set: {x: 1}}]}",
        "loop: {max_iterations: 2, steps: [{id: inner, set: {x: 1}}]}",
        "steps: [{id: inner, set: {x: 1}}]",
    ],
    ids=["try", "switch", "parallel", "for_each", "loop", "steps"],
)
def test_container_with_if_exports_only_itself(container: str) -> None:
    _, diags = build(f"""
    steps:
      - id: box
        if: input.go
        {container}
      - {{id: ok, set: {{x: "${{{{ steps.box.output }}}}", y: "${{{{ steps.box.status }}}}"}}}}
      - {{id: bad, set: {{x: "${{{{ steps.inner.output }}}}"}}}}
    """)
    d = only(diags, "CH203")
    assert d.line == 13 and len(diags) == 1, diags


def test_workflow_step_with_if_exports_only_itself(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text('charter: "1.0"\nname: c\nsteps:\n  - {id: kid, set: {y: 1}}\n')
    main = tmp_path / "main.yaml"
    main.write_text(
        'charter: "1.0"\nname: m\nvars: {x: null}\nsteps:\n'
        "  - {id: call, if: input.go, workflow: {path: child.yaml}}\n"
        '  - {id: ok, set: {x: "${{ steps.call.status }}"}}\n'
        '  - {id: bad, set: {x: "${{ steps.kid.output }}"}}\n'
    )
    _, diags = compile_file(main)
    assert codes(diags) == ["CH202"], diags  # the child's steps are not steps of this file


def test_catch_and_until_do_not_see_steps_of_a_skippable_group() -> None:
    _, diags = build("""
    steps:
      - id: t
        try:
          steps:
            - {id: first, set: {x: 1}}
            - id: grp
              if: input.go
              steps: [{id: risky, tool: refund}]
          catch:
            steps: [{id: rescue, set: {x: "${{ steps.first.output }}", y: "${{ steps.risky.status }}"}}]
      - id: lp
        loop:
          max_iterations: 3
          until: steps.page.output.done
          steps:
            - id: g
              if: index > 0
              steps: [{id: page, tool: search}]
    """)
    assert [(d.code, d.line) for d in diags] == [("CH203", 17), ("CH203", 21)], diags


def test_secrets_outside_their_scope_is_ch304() -> None:
    header = HEADER + "secrets: [TOK]\nidentities: {bot: {kind: agent}}\n"
    _, diags = build(
        """
    grants:
      - {id: g, to: bot, tools: [search], when: secrets.TOK != ""}
    guardrails:
      - {id: r, on: tool.input, check: secrets.TOK != ""}
    steps:
      - {id: a, tool: search, identity: bot, args: {k: "${{ secrets.TOK }}"}}
    """,
        header=header,
    )
    assert [(d.code, d.line) for d in diags] == [("CH304", 11), ("CH304", 13)], diags
    for d in diags:
        assert d.message == (
            "'secrets' is not in scope here: it exists only in step fields, the workflow `output`, "
            "the initial `vars` and tool definitions"
        )


def test_scope_messages_follow_the_spec_table() -> None:
    header = (
        HEADER.replace(
            "  refund:",
            '  mcp_t: {mcp: {command: [x], env: {A: "${{ identity }}"}}, effect: read}\n  refund:',
        )
        + "identities: {bot: {kind: agent}}\n"
    )
    _, diags = build(
        """
    vars:
      a: 1
      b: "${{ vars.a }}"
      x: null
    grants:
      - {id: g1, to: bot, tools: [search], when: output == "x"}
      - {id: g2, to: bot, tools: [search], when: result != null}
      - {id: g3, to: bot, tools: [search], when: usage != null}
    guardrails:
      - {id: r1, on: tool.input, check: action == "read"}
      - {id: r2, on: tool.input, check: steps.s.status == "completed"}
    steps:
      - {id: s, set: {x: "${{ args }}"}}
    """,
        header=header,
    )
    messages = {
        d.message.split("'")[1]: d.message.split(": it exists ")[1] for d in diags if d.code == "CH304"
    }
    assert messages == {
        "identity": "only in grant conditions, guardrail checks and messages and the values of HTTP tool "
        "definitions",
        "vars": "everywhere except in the initial `vars`",
        "output": "only in guardrail checks and messages (a step's `output` mapping reads `result`)",
        "result": "only in a step's `output` mapping (the step's natural result) and in guardrail checks and "
        "messages (a tool call's result)",
        "usage": "only in guardrail checks and messages",
        "action": "only in grant conditions",
        "steps": "only in step fields and the workflow `output`",
        "args": "only in tool definitions, grant conditions and guardrail checks and messages",
    }, diags
    assert len(diags) == 8, diags


def test_unknown_names_have_did_you_mean_hints() -> None:
    _, diags = build(
        """
    secrets: [API_KEY]
    identities: {triage: {kind: agent}}
    steps:
      - {id: a, tool: serch, identity: triag}
      - {id: b, set: {k: "${{ secrets.API_KEYS }}"}}
      - {id: c, llm: {model: defualt, prompt: "{{ qestion }}", vars: {question: 1}}}
    """
    )
    hints = {d.code: d.hint for d in diags}
    assert hints["CH204"] == "did you mean 'search'?"
    assert hints["CH206"] == "did you mean 'triage'?"
    assert hints["CH207"] == "did you mean 'API_KEY'?"
    assert hints["CH205"] == "did you mean 'default'?"
    assert hints["CH307"] == "did you mean 'question'?"


def test_declared_secrets_are_fine_in_tools_and_steps() -> None:
    header = HEADER + textwrap.dedent("""\
    secrets: [TOKEN]
    """)
    graph, diags = build(
        """
    steps:
      - {id: a, set: {auth: "Bearer ${{ secrets.TOKEN }}"}}
    """,
        header=header.replace(
            "  refund:",
            '  call: {http: {url: "https://x/${{ args.id }}?k=${{ secrets.TOKEN }}"}, effect: read}\n  refund:',
        ),
    )
    assert diags == [] and graph is not None
    assert (
        graph.tools["call"].values["url"].evaluate({"args": {"id": 7}, "secrets": {"TOKEN": "s"}})
        == "https://x/7?k=s"
    )


# --- expressions and positions ---------------------------------------------------------------------------


def test_condition_types() -> None:
    _, diags = build("""
    steps:
      - {id: a, if: input.flag, set: {x: 1}}
      - {id: b, if: "'yes'", set: {x: 1}}
      - {id: c, if: "${{ input.flag }}", set: {x: 1}}
    """)
    assert codes(diags) == ["CH303", "CH308"]


def test_error_columns_point_inside_quoted_and_block_strings() -> None:
    _, diags = build("""
    steps:
      - id: a
        set:
          x: "one ${{ input.a + }} two"
          y: |
            first line
            second ${{ 1 + 'x' }}
    """)
    syntax, type_ = only(diags, "CH301"), only(diags, "CH302")
    assert (syntax.line, syntax.column) == (11, 28)
    assert (type_.line, type_.column) == (14, 22)


def test_prompt_errors() -> None:
    _, diags = build("""
    steps:
      - id: a
        llm:
          vars: {name: "${{ input.name }}"}
          instructions: "{% if name %}Hi"
          prompt: |
            Hello {{ name }}
            and {{ friend }}
    """)
    assert only(diags, "CH306").line == 12
    friend = only(diags, "CH307")
    assert (friend.line, friend.column) == (15, 16)


# --- structure ----------------------------------------------------------------------------------------------


def test_unreachable_only_after_unconditional_fail() -> None:
    _, diags = build("""
    steps:
      - {id: maybe, if: input.bad, fail: {message: bad}}
      - {id: ok, set: {x: 1}}
      - {id: stop, fail: {message: stop}}
      - {id: never, set: {x: 1}}
      - {id: never2, set: {x: 1}}
    """)
    d = only(diags, "CH401")
    assert "'never'" in d.message


def test_workflow_cycle_across_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text('charter: "1.0"\nname: a\nsteps:\n  - {id: call_b, workflow: {path: b.yaml}}\n')
    b.write_text('charter: "1.0"\nname: b\nsteps:\n  - {id: call_a, workflow: {path: a.yaml}}\n')
    _, diags = compile_file(a)
    d = only(diags, "CH402")
    assert "a.yaml -> b.yaml -> a.yaml" in d.message
    (tmp_path / "c.yaml").write_text('charter: "1.0"\nname: c\nsteps:\n  - {id: x, set: {y: 1}}\n')
    b.write_text('charter: "1.0"\nname: b\nsteps:\n  - {id: call_c, workflow: {path: c.yaml}}\n')
    assert compile_file(a)[1] == []


# --- grants ----------------------------------------------------------------------------------------------


def test_grant_coverage_by_identity_role_and_glob() -> None:
    header = HEADER + textwrap.dedent("""\
    identities:
      bot: {kind: agent, roles: [support]}
    grants:
      - {id: by-role, to: "role:support", tools: ["sea*"]}
      - {id: deny-refund, to: bot, tools: [refund], effect: deny}
    """)
    _, diags = build(
        """
    steps:
      - {id: a, agent: {identity: bot, tools: [search, refund], prompt: go}}
    """,
        header=header,
    )
    d = only(diags, "CH501")
    assert "'refund'" in d.message and "'bot'" in d.message and d.severity is Severity.ERROR


def test_internal_error_becomes_a_diagnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(compiler._Compiler, "run", boom)
    graph, diags = build("""
    steps:
      - {id: a, set: {x: 1}}
    """)
    assert graph is None and codes(diags) == ["CH299"]


def test_for_each_in_must_be_a_list() -> None:
    _, diags = build("""
    steps:
      - {id: a, for_each: {in: "${{ size(input.items) }}", steps: [{id: b, set: {x: 1}}]}}
      - {id: c, for_each: {in: "just text", steps: [{id: d, set: {x: 1}}]}}
      - {id: e, for_each: {in: [1, 2], steps: [{id: f, set: {x: "${{ item + index }}"}}]}}
      - {id: g, for_each: {in: "${{ input.items.filter(i, i > 0) }}", steps: [{id: h, set: {x: 1}}]}}
    """)
    assert [(d.code, d.line) for d in diags] == [("CH302", 9), ("CH302", 10)]
    assert "not int" in diags[0].message and "not str" in diags[1].message


@pytest.mark.parametrize(
    ("fields", "at", "said"),
    [
        # both written: the second one in the file, whichever it is
        ("as: n\n          index_as: n", (13, 17), "as both its item (`as`) and its index (`index_as`)"),
        ("index_as: n\n          as: n", (13, 11), "as both its item (`as`) and its index (`index_as`)"),
        # one left to its default (as: item, index_as: index): the one written
        ("as: index", (12, 11), "as its item (`as`), the name its index has by default (`index_as`)"),
        ("index_as: item", (12, 17), "as its index (`index_as`), the name its item has by default (`as`)"),
    ],
)
def test_for_each_as_and_index_as_must_differ(fields: str, at: tuple[int, int], said: str) -> None:
    # Spec §13.6: one name for both would let the index hide the item (CH109).
    _, diags = build(
        """
    steps:
      - id: each
        for_each:
          in: [1, 2]
          """
        + fields
        + """
          steps: [{id: b, set: {x: 1}}]
    """
    )
    d = only(diags, "CH109")
    assert d.severity is Severity.ERROR
    assert (d.line, d.column) == at
    name = "n" if "n\n" in fields else fields.split(": ")[1]
    assert d.message == f"for_each 'each' binds '{name}' {said}; the two names must differ"
    assert d.hint is not None and "index_as" in d.hint
    assert codes(diags) == ["CH109"]


def test_for_each_with_two_names_or_the_defaults_compiles() -> None:
    graph, diags = build("""
    steps:
      - {id: a, for_each: {in: [1], steps: [{id: b, set: {x: "${{ item + index }}"}}]}}
      - {id: c, for_each: {in: [1], as: index_ish, steps: [{id: d, set: {x: "${{ index_ish + index }}"}}]}}
      - {id: e, for_each: {in: [1], as: index_as, index_as: as, steps: [{id: f, set: {x: 1}}]}}
    """)
    assert graph is not None and diags == []


def test_for_each_one_name_for_both_fails_validate_at_its_position(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import main

    path = tmp_path / "same.yaml"
    path.write_text(
        'charter: "1.0"\nname: same\nvars: {x: 0}\nsteps:\n'
        '  - {id: each, for_each: {in: [1], as: i, index_as: i, steps: [{id: b, set: {x: "${{ i }}"}}]}}\n'
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{path}:5:53: CH109 for_each 'each' binds 'i' as both its item" in result.output


def test_on_behalf_of_and_step_guardrails() -> None:
    header = HEADER + textwrap.dedent("""\
    identities:
      bot: {kind: agent}
      alice: {kind: user}
    grants:
      - {id: g, to: bot, tools: [search]}
    """)
    graph, diags = build(
        """
    steps:
      - id: a
        agent: {identity: bot, on_behalf_of: alice, tools: [search], prompt: go}
        guardrails:
          - {id: short, on: agent.output, check: size(output) < 10}
      - id: b
        agent: {identity: bot, on_behalf_of: alicia, prompt: go}
    """,
        header=header,
    )
    assert codes(diags) == ["CH206"] and "alicia" in diags[0].message
    graph, diags = build(
        """
    steps:
      - id: a
        agent: {identity: bot, on_behalf_of: "${{ run.principal }}", tools: [search], prompt: go}
        guardrails:
          - {id: short, on: agent.output, check: size(output) < 10}
    """,
        header=header,
    )
    assert diags == [] and graph is not None
    rule = graph.node("a").guardrails[0]
    assert rule.check is not None and rule.check.evaluate({"output": "hello"}) is True


@pytest.mark.parametrize(
    ("budget", "warned"),
    [
        ("guardrails: [{id: b, limits: {max_cost: 1.0}}]", True),  # the whole run
        ("guardrails: [{id: b, limits: {max_cost: 1.0}, steps: [group]}]", True),  # a step around it
        ("guardrails: [{id: b, limits: {max_cost: 1.0}, steps: [other]}]", False),  # another step only
        ("guardrails: [{id: b, limits: {max_tokens: 100}}]", False),  # counts tokens, not cost
        ("guardrails: [{id: b, limits: {max_cost: 1.0}, tools: [search]}]", False),  # tool calls only
    ],
)
def test_a_cost_budget_over_an_unpriced_model_is_warned(budget: str, warned: bool) -> None:
    # CH216: without `prices` a model's calls cost 0, so a max_cost budget over them never trips
    graph, diags = build(f"""
    {budget}
    steps:
      - id: group
        steps:
          - {{id: ask, llm: {{prompt: hello}}}}
      - {{id: other, set: {{x: 1}}}}
    """)
    assert graph is not None
    if warned:
        d = only(diags, "CH216")
        assert d.severity is Severity.WARNING and "model 'default' (of step 'ask')" in d.message
    else:
        assert "CH216" not in codes(diags)


def test_a_cost_budget_of_a_step_around_the_model_call_is_warned_at_that_budget() -> None:
    graph, diags = build("""
    steps:
      - id: group
        guardrails: [{id: group-cost, limits: {max_cost: 0.1}}]
        steps:
          - {id: ask, llm: {prompt: hello}}
    """)
    assert graph is not None
    d = only(diags, "CH216")
    assert "budget 'group-cost'" in d.message and d.line == HEADER.count("\n") + 4
