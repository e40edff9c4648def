"""The arguments schema derived from a Python tool's signature (spec §8): a name the function does not
take is refused before the call, as a wrong type is (not retried, naming the parameter it meant), and
a parameter whose default is None accepts null (the §13.11 example passes `approved_by: null`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import pytest
from fixtures.workflows import written

from interpreter import RunOptions, run_workflow
from interpreter.tools import args_schema

MODULE = "s9_toolargs_tools"
TOOLS = """
import json, os

def _log(name, **args):
    with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as f:
        f.write(json.dumps({"tool": name, **args}) + "\\n")

def score(records: list, delay: float = 0.0) -> dict:
    _log("score", records=records, delay=delay)
    return {"n": len(records)}

def loose(records: list, **options) -> dict:
    _log("loose", records=records, **options)
    return {"options": sorted(options)}

def book_expense(employee: str, total: float, approved_by: str = None) -> dict:
    _log("book_expense", employee=employee, total=total, approved_by=approved_by)
    return {"employee": employee, "total": total, "approved_by": approved_by}

def noted(text: str = "none") -> str:
    return text
"""

OPTS = RunOptions(allow_modules=(MODULE,))


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("s9_toolargs")  # one module, imported once: one folder
    (folder / f"{MODULE}.py").write_text(TOOLS)
    return folder


@pytest.fixture
def workdir(tools_dir: Path) -> Path:
    (tools_dir / "calls.jsonl").unlink(missing_ok=True)
    return tools_dir


def calls(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kinds(store: Any, run_id: str) -> list[str]:
    return [e.kind for e in store.events(run_id)]


def score_flow(workdir: Path, name: str, args: str) -> Any:
    return written(
        workdir,
        name,
        f"""\
        charter: "1.0"
        name: {name}
        tools:
          score: {{python: "{MODULE}:score", effect: read}}
        steps:
          - id: s
            tool: score
            args: {args}
            retry: {{attempts: 3, backoff: {{initial: 1ms}}}}
        output: {{r: "${{{{ steps.s.output }}}}"}}
        """,
    )


def test_a_misspelt_argument_is_refused_before_the_call_and_not_retried(store: Any, workdir: Path) -> None:
    graph = score_flow(workdir, "typo", "{records: [1, 2], dealy: 0.5}")
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed"
    assert result.error["code"] == "tool"
    assert result.error["message"] == (
        "tool 'score': invalid arguments: unknown argument 'dealy' (did you mean 'delay'?)"
    )
    assert calls(workdir) == []  # the function never ran
    seen = kinds(store, result.run_id)
    assert "step.retrying" not in seen and "tool.called" not in seen
    assert [e.payload["attempt"] for e in store.events(result.run_id) if e.kind == "step.failed"] == [1]


def test_a_wrong_type_is_refused_the_same_way(store: Any, workdir: Path) -> None:
    graph = score_flow(workdir, "wrongtype", '{records: [1, 2], delay: "soon"}')
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed" and result.error["code"] == "tool"
    assert result.error["message"] == (
        "tool 'score': invalid arguments at `delay`: 'soon' is not of type 'number'"
    )
    assert calls(workdir) == [] and "step.retrying" not in kinds(store, result.run_id)


def test_unknown_arguments_far_from_any_parameter_name_what_it_takes(store: Any, workdir: Path) -> None:
    graph = score_flow(workdir, "far", "{records: [1], colour: red, zz: 1}")
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed"
    assert result.error["message"] == (
        "tool 'score': invalid arguments: unknown arguments 'colour', 'zz'; expected: records, delay"
    )
    assert calls(workdir) == []


def test_a_tool_taking_kwargs_still_accepts_any_argument(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "loose",
        f"""\
        charter: "1.0"
        name: loose
        tools:
          loose: {{python: "{MODULE}:loose", effect: read}}
        steps:
          - {{id: s, tool: loose, args: {{records: [1], dealy: 0.5}}}}
        output: {{r: "${{{{ steps.s.output }}}}"}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"r": {"options": ["dealy"]}}


def test_the_spec_approval_example_passes_null_to_a_parameter_defaulting_to_none(
    store: Any, workdir: Path
) -> None:
    """Spec §13.11: when the approval is skipped, `approved_by` is null; `approved_by: str = None`."""
    graph = written(
        workdir,
        "approval_step",
        f"""\
        charter: "1.0"
        name: approval-step
        input:
          type: object
          required: [employee, total]
          properties: {{employee: {{type: string}}, total: {{type: number}}}}
        tools:
          book_expense: {{python: "{MODULE}:book_expense", effect: write}}
        steps:
          - id: finance_ok
            if: input.total > 1000.0
            approval:
              message: "${{{{ input.employee }}}} claims ${{{{ input.total }}}}."
              approvers: ["role:finance"]
              timeout: 72h
              on_timeout: deny
          - id: book
            tool: book_expense
            args:
              employee: "${{{{ input.employee }}}}"
              total: "${{{{ input.total }}}}"
              approved_by: "${{{{ steps.finance_ok.status == 'completed' ? steps.finance_ok.output.by : null }}}}"
        output:
          booking: "${{{{ steps.book.output }}}}"
        """,
    )
    result = run_workflow(graph, {"employee": "ann", "total": 120.0}, store=store, options=OPTS)
    assert result.status == "completed", result.error
    assert result.output == {"booking": {"employee": "ann", "total": 120.0, "approved_by": None}}
    assert calls(workdir) == [
        {"tool": "book_expense", "employee": "ann", "total": 120.0, "approved_by": None}
    ]


def test_a_parameter_with_another_default_still_refuses_null(store: Any, workdir: Path) -> None:
    graph = written(
        workdir,
        "noted",
        f"""\
        charter: "1.0"
        name: noted
        tools:
          noted: {{python: "{MODULE}:noted", effect: read}}
        steps:
          - {{id: s, tool: noted, args: {{text: null}}}}
        """,
    )
    result = run_workflow(graph, {}, store=store, options=OPTS)
    assert result.status == "failed"
    assert (
        result.error["message"] == "tool 'noted': invalid arguments at `text`: None is not of type 'string'"
    )


def _nullable(schema: dict[str, Any], name: str) -> bool:
    prop = schema["properties"][name]
    return {"type": "null"} in prop.get("anyOf", []) or prop == {"default": None}


def test_the_derived_schema_of_optional_and_union_hints() -> None:
    def tool(
        a: str,
        b: str = None,  # type: ignore[assignment]
        c: str | None = None,
        d: Optional[str] = None,  # noqa: UP045 - the spelling under test
        e: Union[int, str] = None,  # type: ignore[assignment]  # noqa: UP007
        f: int | None = 3,
        g: list[str] = None,  # type: ignore[assignment]
        h=None,
        i: str = "x",
    ) -> None:
        return None

    schema = args_schema(tool)
    assert schema is not None
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["a"]
    assert schema["properties"]["b"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    for name in "bcdefgh":
        assert _nullable(schema, name), (name, schema["properties"][name])
    for name in "ai":
        assert not _nullable(schema, name), (name, schema["properties"][name])
    assert schema["properties"]["f"]["default"] == 3
