"""The language models (dsl/model.py) and shape validation (dsl/validate.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dsl.diagnostics import CODES, Diagnostic
from dsl.loader import load_file, load_text
from dsl.model import (
    AgentStep,
    ExprKind,
    ParallelStep,
    SwitchStep,
    Workflow,
    iter_expressions,
    parse_duration,
)
from dsl.validate import validate

CH1_CODES = {code for code in CODES if code.startswith("CH1")}  # the shape-validation range

EXAMPLES = sorted(
    p for p in (Path(__file__).parent.parent / "examples").glob("*.yaml") if ".responses." not in p.name
)

HEADER = 'charter: "1.0"\nname: t\n'


def check(body: str) -> tuple[Workflow | None, list[Diagnostic]]:
    doc, diags = load_text(HEADER + textwrap.dedent(body), "t.yaml")
    assert doc is not None and not diags, diags
    return validate(doc)


def only(body: str) -> Diagnostic:
    workflow, diags = check(body)
    assert workflow is None
    assert len(diags) == 1, "\n".join(f"{d.line}:{d.column} {d.code} {d.message}" for d in diags)
    return diags[0]


# --- examples ------------------------------------------------------------------------------------------


def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"sequential", "routing", "parallel", "guarded_agent", "approval", "tools_pipeline"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_clean(path: Path) -> None:
    doc, diags = load_file(path)
    assert doc is not None and diags == []
    workflow, diags = validate(doc)
    assert diags == [] and workflow is not None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_scripted_responses_exist(path: Path) -> None:
    doc, _ = load_file(path)
    workflow, _ = validate(doc)
    assert workflow is not None
    for model in workflow.models.values():
        if model.provider == "scripted":
            assert (path.parent / str(model.responses)).is_file()


def test_models_are_frozen() -> None:
    workflow, _ = check("steps: [{id: a, set: {x: 1}}]")
    assert workflow is not None
    with pytest.raises(ValidationError):
        workflow.name = "other"  # type: ignore[misc]


# --- the step union and step fields ---------------------------------------------------------------------


def test_step_kind_is_the_key_present() -> None:
    workflow, diags = check(
        """
        steps:
          - id: a
            agent: {prompt: hi}
          - id: s
            switch:
              - {when: "true", steps: [{id: b, llm: {prompt: x}}]}
              - {default: true, steps: []}
          - id: p
            parallel: {branches: {one: [{id: c, set: {v: 1}}]}, join: first-n, n: 1}
        """
    )
    assert diags == [] and workflow is not None
    assert [type(s) for s in workflow.steps] == [AgentStep, SwitchStep, ParallelStep]
    agent = workflow.steps[0]
    assert isinstance(agent, AgentStep) and agent.agent.model == "default" and agent.agent.max_turns == 10


def test_aliased_keywords() -> None:
    workflow, diags = check(
        """
        steps:
          - id: f
            if: input.go
            for_each: {in: "${{ input.xs }}", as: x, concurrency: 3, steps: [{id: s, set: {v: "${{ x }}"}}]}
          - id: t
            try: {steps: [{id: u, tool: lookup}], catch: {as: err, steps: []}}
        """
    )
    assert diags == [] and workflow is not None
    dumped = workflow.model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["steps"][0]["if"] == "input.go"
    assert dumped["steps"][0]["for_each"]["in"] == "${{ input.xs }}"
    assert dumped["steps"][1]["try"]["catch"]["as"] == "err"


def test_broken_agent_step_reports_only_agent_errors() -> None:
    _, diags = check(
        """
        steps:
          - id: classify
            agent:
              promt: "hello"
              max_turns: "5"
        """
    )
    messages = sorted(d.message for d in diags)
    assert messages == [
        "'max_turns' in agent step 'classify' must be an integer, not the string '5'",
        "missing required field 'prompt' in agent step 'classify'",
        "unknown field 'promt' in agent step 'classify' (did you mean 'prompt'?)",
    ]
    unknown = next(d for d in diags if d.code == "CH101")
    assert (unknown.line, unknown.column) == (7, 7)  # the key itself


def test_step_without_kind() -> None:
    d = only("steps:\n  - id: x\n    agnet: {prompt: hi}\n")
    assert d.code == "CH105"
    assert "step 'x' must have exactly one of agent, llm, tool" in d.message and "(found none)" in d.message
    assert d.hint == "did you mean 'agent'?"
    assert (d.line, d.column) == (4, 5)


def test_step_with_two_kinds() -> None:
    d = only("steps:\n  - id: x\n    tool: t\n    llm: {prompt: hi}\n")
    assert d.code == "CH105" and "(found llm, tool)" in d.message


def test_step_that_is_not_a_mapping() -> None:
    d = only("steps:\n  - just text\n")
    assert d.code == "CH105" and "a step must be a mapping" in d.message


def test_step_level_field_inside_the_wrong_level() -> None:
    d = only("steps:\n  - id: x\n    tool: t\n    prompt: hi\n")
    assert d.code == "CH101" and d.message == "unknown field 'prompt' in step 'x'"
    d = only("steps:\n  - id: x\n    agent: {prompt: hi}\n    max_turns: 3\n")
    assert d.code == "CH101" and d.hint == "'max_turns' belongs inside 'agent:'"


def test_nested_steps_positions() -> None:
    d = only(
        """
        steps:
          - id: r
            switch:
              - when: input.a
                steps:
                  - id: deep
                    tool: t
                    timeout: 30
        """
    )
    assert d.code == "CH106" and d.message.startswith("'timeout' in step 'deep' must be a duration")
    assert (d.line, d.column) == (11, 22)


def test_did_you_mean_deep_inside_loops_and_branches() -> None:
    d = only(
        """
        steps:
          - id: l
            loop:
              max_iterations: 3
              steps:
                - id: p
                  parallel:
                    branches:
                      - - {id: a, llm: {prompt: x, modle: fast}}
        """
    )
    assert d.code == "CH101" and d.message == "unknown field 'modle' in llm step 'a' (did you mean 'model'?)"


def test_step_id_must_be_an_identifier() -> None:
    d = only("steps: [{id: my-step, set: {x: 1}}]\n")
    assert d.code == "CH107" and "'id' in step 'my-step' is not valid" in d.message


def test_missing_steps_and_unknown_top_level_field() -> None:
    _, diags = check("stesp: []\n")
    codes = sorted((d.code, d.message) for d in diags)
    assert codes == [
        ("CH101", "unknown field 'stesp' in the workflow (did you mean 'steps'?)"),
        ("CH102", "missing required field 'steps' in the workflow"),
    ]


# --- durations, CEL fields, schemas, regexes -------------------------------------------------------------


@pytest.mark.parametrize(
    "text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), ("2d", 172800)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["30", "5 m", "1x", "m5", "", "0s"])
def test_bad_durations(bad: str) -> None:
    d = only(f"timeout: '{bad}'\nsteps: [{{id: a, set: {{x: 1}}}}]\n")
    assert d.code == "CH106" and d.message.startswith("'timeout' in the workflow")


def test_cel_field_given_a_yaml_boolean() -> None:
    d = only("steps: [{id: a, if: true, set: {x: 1}}]\n")
    assert d.code == "CH103" and "quote it" in d.message


def test_invalid_json_schema() -> None:
    d = only("input: {type: objekt}\nsteps: [{id: a, set: {x: 1}}]\n")
    assert d.code == "CH111" and d.message.startswith("'input' in the workflow is not a valid JSON Schema")


def test_invalid_regex() -> None:
    d = only(
        "guardrails: [{id: g, on: tool.input, regex: '(', action: redact}]\nsteps: [{id: a, set: {x: 1}}]\n"
    )
    assert d.code == "CH112" and "missing )" in d.message


# --- cross-field rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,code,fragment",
    [
        (
            "tools: {t: {effect: read}}",
            "CH110",
            "tool 't' must have exactly one of python, http, mcp, workflow (found none)",
        ),
        ("tools: {t: {python: 'a:b', workflow: w.yaml, effect: read}}", "CH110", "(found python, workflow)"),
        ("tools: {t: {mcp: {tool: x}, effect: read}}", "CH110", "exactly one of command, url"),
        ("tools: {t: {python: 'a.b', effect: read}}", "CH107", "write 'module:function'"),
        ("tools: {t: {python: 'a:b'}}", "CH102", "missing required field 'effect' in tool 't'"),
        ("tools: {t: {python: 'a:b', effect: delete}}", "CH104", "must be 'read' or 'write', not 'delete'"),
        (
            "tools: {'bad name': {python: 'a:b', effect: read}}",
            "CH107",
            "'bad name' is not a valid tool name",
        ),
        ("models: {default: {provider: scripted}}", "CH109", "model 'default' uses the scripted provider"),
        (
            "tools: {t: {python: 'a:b', effect: read, guardrails: [{id: g, on: agent.output, check: x}]}}",
            "CH109",
            "tool 't' has guardrail 'g' on agent.output",
        ),
        ("models: {default: {provider: openai}}", "CH109", "needs 'model'"),
        ("guardrails: [{id: g, check: 'x'}]", "CH109", "guardrail 'g' needs 'on'"),
        ("guardrails: [{id: g, on: tool.input, check: 'x', regex: 'y'}]", "CH110", "(found check, regex)"),
        ("guardrails: [{id: g, on: tool.input, check: 'x', action: redact}]", "CH109", "needs a 'regex'"),
        ("guardrails: [{id: g, limits: {max_tool_calls: 3}, on: tool.input}]", "CH109", "remove 'on'"),
        ("guardrails: [{id: g, limits: {}}]", "CH109", "at least one budget"),
        ("guardrails: [{id: g, on: tool.inptu, check: x}]", "CH104", "not 'tool.inptu'"),
        ("grants: [{id: g, to: 'role:', tools: [t]}]", "CH107", "identity name or 'role:NAME'"),
        ("grants: [{id: g, to: a, tools: []}]", "CH108", "'tools' in grant 'g' must not be empty"),
    ],
)
def test_declaration_rules(body: str, code: str, fragment: str) -> None:
    d = only(body + "\nsteps: [{id: a, set: {x: 1}}]\n")
    assert d.code == code and fragment in d.message, d.message


@pytest.mark.parametrize(
    "step,code,fragment",
    [
        ("{id: s, switch: [{default: true, steps: []}, {when: x, steps: []}]}", "CH109", "put it last"),
        (
            "{id: s, switch: [{when: x, default: true, steps: []}]}",
            "CH109",
            "either 'when' or 'default: true'",
        ),
        ("{id: p, parallel: {branches: [[], []], join: first-n}}", "CH109", "needs 'n'"),
        ("{id: p, parallel: {branches: [[], []], join: first-n, n: 3}}", "CH109", "only 2"),
        ("{id: p, parallel: {branches: [[]], join: some}}", "CH104", "'join' in parallel step 'p' must be"),
        ("{id: a, agent: {prompt: hi, tools: [t]}}", "CH109", "needs an 'identity'"),
        ("{id: l, loop: {steps: [{id: b, set: {x: 1}}]}}", "CH102", "'max_iterations' in loop step 'l'"),
        ("{id: r, tool: t, retry: {attempts: 0}}", "CH108", "'attempts' in 'retry' in step 'r' must be >= 1"),
        ("{id: f, fail: {}}", "CH102", "missing required field 'message' in fail step 'f'"),
        ("{id: x, set: {}}", "CH108", "'set' in step 'x' must not be empty"),
        ("{id: x, set: {bad-name: 1}}", "CH107", "'bad-name' is not a valid variable name"),
    ],
)
def test_step_rules(step: str, code: str, fragment: str) -> None:
    d = only(f"steps: [{step}]\n")
    assert d.code == code and fragment in d.message, d.message


def test_all_errors_at_once_sorted_by_position() -> None:
    _, diags = check(
        """
        models: {default: {provider: scripted}}
        steps:
          - {id: a, agent: {promt: x}}
          - {id: b}
          - {id: c, tool: t, timeout: soon}
        """
    )
    assert [d.code for d in diags] == ["CH109", "CH102", "CH101", "CH105", "CH106"]
    assert diags == sorted(diags)
    assert all(d.file == "t.yaml" and d.code in CH1_CODES for d in diags)


# --- expressions ------------------------------------------------------------------------------------------


def test_iter_expressions_finds_every_kind_with_its_path() -> None:
    workflow, diags = check(
        """
        vars: {limit: "${{ input.limit }}"}
        grants: [{id: g, to: bot, tools: [t], when: args.n < 3}]
        guardrails: [{id: h, on: tool.input, check: args.n > 0, message: "n is ${{ args.n }}"}]
        steps:
          - id: a
            if: input.go
            agent:
              identity: bot
              tools: [t]
              instructions: Be brief.
              prompt: "{{ q }}"
              vars: {q: "${{ input.q }}"}
          - id: l
            loop:
              until: steps.b.output > 3
              max_iterations: 5
              steps: [{id: b, tool: t, args: {n: ["${{ index }}", 2, "x"]}}]
        output: {answer: "${{ steps.a.output }}"}
        """
    )
    assert diags == [] and workflow is not None
    found = {(site.path, site.kind, site.text) for site in iter_expressions(workflow)}
    assert found == {
        (("vars", "limit"), ExprKind.VALUE, "${{ input.limit }}"),
        (("grants", 0, "when"), ExprKind.CEL, "args.n < 3"),
        (("guardrails", 0, "check"), ExprKind.CEL, "args.n > 0"),
        (("guardrails", 0, "message"), ExprKind.VALUE, "n is ${{ args.n }}"),
        (("steps", 0, "if"), ExprKind.CEL, "input.go"),
        (("steps", 0, "agent", "instructions"), ExprKind.PROMPT, "Be brief."),
        (("steps", 0, "agent", "prompt"), ExprKind.PROMPT, "{{ q }}"),
        (("steps", 0, "agent", "vars", "q"), ExprKind.VALUE, "${{ input.q }}"),
        (("steps", 1, "loop", "until"), ExprKind.CEL, "steps.b.output > 3"),
        (("steps", 1, "loop", "steps", 0, "args", "n", 0), ExprKind.VALUE, "${{ index }}"),
        (("steps", 1, "loop", "steps", 0, "args", "n", 2), ExprKind.VALUE, "x"),
        (("output", "answer"), ExprKind.VALUE, "${{ steps.a.output }}"),
    }


def test_iter_expressions_paths_point_at_the_yaml() -> None:
    path = next(p for p in EXAMPLES if p.name == "routing.yaml")
    doc, _ = load_file(path)
    workflow, _ = validate(doc)
    assert workflow is not None
    sites = list(iter_expressions(workflow))
    assert any(s.kind is ExprKind.CEL for s in sites)
    for site in sites:
        assert doc.has(site.path), site.path


# --- robustness -------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


class _Doc:
    def __init__(self, data: object) -> None:
        self.file, self.data = "m.yaml", data

    def position(self, path: object) -> tuple[int, int]:
        return (1, 1)

    key_position = position


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_examples_never_raise(data: st.DataObject) -> None:
    import copy

    path = data.draw(st.sampled_from(EXAMPLES))
    doc, _ = load_file(path)
    tree = copy.deepcopy(doc.data)
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(_paths(tree)[1:]))
        parent = tree
        for part in target[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[target[-1]]
        else:
            parent[target[-1]] = data.draw(_JSON)
    workflow, diags = validate(_Doc(tree))
    assert (workflow is None) == bool(diags)
    assert all(d.code in CH1_CODES and d.message for d in diags)
