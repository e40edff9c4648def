"""Diagnostics for mistakes a new user makes that the validator once let through.

CH310: `{{ x }}` (the Jinja habit) in a value field is literal text; values use `${{ x }}`.
CH215: a step `timeout` on an approval step never fires; `approval.timeout` bounds the wait.
CH214 on a step that runs a child workflow: the child's failure arrives as code `workflow`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dsl.diagnostics import Diagnostic, Severity
from dsl.frontend import check_file

HEADER = """\
charter: "1.0"
name: t
input: {type: object, properties: {name: {type: string}, items: {type: array}}}
models: {default: {provider: openai, model: gpt-4.1-mini}}
tools:
  echo: {python: "examples.tools:search", effect: read}
  book: {python: "examples.tools:issue_refund", effect: write}
"""


def check(tmp_path: Path, body: str, name: str = "wf") -> list[Diagnostic]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return check_file(path)


def hits(diags: list[Diagnostic], code: str) -> list[Diagnostic]:
    return [d for d in diags if d.code == code]


# --- CH310: `{{ }}` in a value ------------------------------------------------------------------------


def test_braces_in_tool_args_warn_with_the_dollar_form_as_hint(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - id: greet
            tool: echo
            args: {text: "Hello {{ input.name }}"}
        """,
    )
    assert [d.code for d in diags] == ["CH310"]
    (d,) = diags
    assert d.severity is Severity.WARNING
    assert (d.line, d.column) == (11, 25)  # at the `{{`
    assert "{{ input.name }}" in d.message and "literal" in d.message
    assert d.hint == "did you mean `${{ input.name }}`?"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        # set, and a multi-line mapping
        (
            """\
            vars: {g: ""}
            steps:
              - id: s
                set:
                  g: "{{input.name}}!"
            """,
            12,
        ),
        # the workflow output reads steps
        (
            """\
            steps:
              - {id: a, tool: echo, args: {}}
            output:
              r: "{{ steps.a.output }}"
            """,
            11,
        ),
        # a step's output reads result
        (
            """\
            steps:
              - id: a
                tool: echo
                args: {}
                output: {r: "got {{ result }}"}
            """,
            12,
        ),
        # approval and fail messages
        (
            """\
            steps:
              - id: ok
                approval: {message: "Pay {{ input.name }}?"}
            """,
            10,
        ),
        (
            """\
            steps:
              - id: stop
                fail: {message: "no {{ input.name }}"}
            """,
            10,
        ),
        # a for_each item, and a workflow step input
        (
            """\
            steps:
              - id: each
                for_each:
                  in: "${{ input.items }}"
                  steps:
                    - {id: one, tool: echo, args: {q: "{{ item }}"}}
            """,
            13,
        ),
        (
            """\
            steps:
              - id: kid
                workflow: {path: child.yaml, input: {name: "{{ input.name }}"}}
            """,
            10,
        ),
        # an llm step's vars (their values are CEL values, never rendered by Jinja)
        (
            """\
            steps:
              - id: ask
                llm:
                  prompt: "Hi {{ who }}"
                  vars: {who: "{{ input.name }}"}
            """,
            12,
        ),
    ],
)
def test_braces_warn_in_every_value_field(tmp_path: Path, body: str, line: int) -> None:
    (tmp_path / "child.yaml").write_text('charter: "1.0"\nname: child\nsteps: []\n', encoding="utf-8")
    diags = check(tmp_path, body)
    found = hits(diags, "CH310")
    assert len(found) == 1, diags
    assert found[0].line == line
    assert found[0].hint is not None and found[0].hint.startswith("did you mean `${{ ")
    assert not [d for d in diags if d.severity is Severity.ERROR], diags


def test_braces_warn_in_a_tool_definition_reading_args(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: t
            tools:
              get: {http: {method: GET, url: "https://x.example/{{ args.id }}"}, effect: read}
            steps: [{id: a, tool: get, args: {id: 1}}]
            """
        ),
        encoding="utf-8",
    )
    (d,) = check_file(path)
    assert (d.code, d.line, d.column) == ("CH310", 4, 53)
    assert d.hint == "did you mean `${{ args.id }}`?"


def test_every_bare_braces_of_a_string_is_reported_at_its_column(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - {id: a, tool: echo, args: {q: "{{ input.name }} and ${{ input.name }} and {{ input.items }}"}}
        """,
    )
    found = hits(diags, "CH310")
    assert [(d.line, d.column) for d in found] == [(9, 36), (9, 79)]
    assert [d.hint for d in found] == [
        "did you mean `${{ input.name }}`?",
        "did you mean `${{ input.items }}`?",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "{{ .Name }} {{ range .Items }}x{{ end }}",  # a Go template: not CEL
        "Hi {{name}}",  # Mustache: no `name` in scope here
        "{{ input.name | upper }}",  # a Jinja filter: not CEL
        "{{{ input.name }}}",  # Handlebars' raw braces
        "$${{ input.name }}",  # the escape of a literal `${{`
        "${{ input.name }}",  # the right form
        "${{ {'a': {'b': 1}} }}",  # map literals inside an expression
        "${{ '{{ input.name }}' }}",  # braces in a CEL string literal are that string
        "{{ result.x }}",  # `result` is not in scope in args
        "{{ }} and {{  }}",  # empty
        "{{ 1 + 2 }}",  # CEL, but reads no variable
    ],
)
def test_literal_braces_are_left_alone(tmp_path: Path, text: str) -> None:
    body = f"steps:\n  - {{id: a, tool: echo, args: {{q: '{text}'}}}}\n"
    diags = check(tmp_path, body)
    assert hits(diags, "CH310") == [], diags


def test_braces_in_prompts_are_jinja_and_not_reported(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - id: ask
            llm:
              instructions: "Answer {{ name }}."
              prompt: "Hello {{ name }}"
              vars: {name: "${{ input.name }}"}
        """,
    )
    assert diags == []


def test_a_string_whose_template_does_not_compile_is_reported_once(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - {id: a, tool: echo, args: {q: "{{ input.name }} ${{ input.name"}}
        """,
    )
    assert [d.code for d in diags] == ["CH305"]


# --- CH215: a step `timeout` on an approval step -------------------------------------------------------


def test_step_timeout_on_an_approval_step_warns_at_the_timeout(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - id: ok
            timeout: 1h
            approval: {message: "Go?"}
        """,
    )
    (d,) = diags
    assert (d.code, d.severity, d.line, d.column) == ("CH215", Severity.WARNING, 10, 14)
    assert "'ok'" in d.message and "never fires" in d.message
    assert d.hint is not None and "approval.timeout" in d.hint and "on_timeout" in d.hint
    assert "{timeout: 1h, on_timeout: deny}" in d.hint


def test_the_hint_keeps_the_approvals_own_timeout_and_decision(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - id: ok
            timeout: 1h
            approval: {message: "Go?", timeout: 72h, on_timeout: approve}
        """,
    )
    (d,) = hits(diags, "CH215")
    assert d.hint is not None and "{timeout: 72h, on_timeout: approve}" in d.hint


@pytest.mark.parametrize(
    "body",
    [
        # the approval's own timeout is the right one
        """\
        steps:
          - id: ok
            approval: {message: "Go?", timeout: 72h, on_timeout: deny}
        """,
        # a group's timeout bounds the other steps' execution too: not reported
        """\
        steps:
          - id: g
            timeout: 1m
            steps:
              - {id: ok, approval: {message: "Go?"}}
              - {id: b, tool: book, args: {}}
        """,
        # a timeout on another kind of step
        """\
        steps:
          - {id: a, tool: echo, args: {}, timeout: 10s}
        """,
    ],
)
def test_other_timeouts_are_not_reported(tmp_path: Path, body: str) -> None:
    assert hits(check(tmp_path, body), "CH215") == []


# --- CH214 on a step that runs a child workflow --------------------------------------------------------

CHILD = 'charter: "1.0"\nname: child\nsteps:\n  - {id: f, fail: {code: out_of_stock, message: "none left"}}\n'


@pytest.mark.parametrize(
    ("step", "tools"),
    [
        ("workflow: {path: child.yaml}", ""),
        ("tool: sub, args: {}", "  sub: {workflow: child.yaml, effect: read}\n"),
    ],
    ids=["workflow-step", "workflow-tool"],
)
def test_retry_on_a_childs_code_says_the_child_fails_with_workflow(
    tmp_path: Path, step: str, tools: str
) -> None:
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    path = tmp_path / "wf.yaml"
    path.write_text(
        f"{HEADER}{tools}steps:\n  - {{id: kid, retry: {{attempts: 2, on: [out_of_stock]}}, {step}}}\n",
        encoding="utf-8",
    )
    diags = check_file(path)
    (d,) = hits(diags, "CH214")
    assert d.hint is not None
    assert "code `workflow`" in d.hint and "§13.13" in d.hint and "list `workflow` in `on`" in d.hint


def test_retry_on_typo_of_workflow_keeps_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    diags = check(
        tmp_path,
        """\
        steps:
          - {id: kid, retry: {attempts: 2, on: [workflw]}, workflow: {path: child.yaml}}
        """,
    )
    (d,) = hits(diags, "CH214")
    assert d.hint == "did you mean 'workflow'?"


def test_retry_on_of_an_ordinary_step_keeps_its_hint(tmp_path: Path) -> None:
    diags = check(
        tmp_path,
        """\
        steps:
          - {id: a, retry: {attempts: 2, on: [out_of_stock]}, tool: echo, args: {}}
        """,
    )
    (d,) = hits(diags, "CH214")
    assert d.hint == "see the error codes (spec Appendix A)"
