"""`--model NAME=PROVIDER:MODEL[@URL]` over a declared model: an override to another provider or model
drops the declared prices (they are the declared model's) and, for another provider, the parameters that
are not provider-neutral; a max_cost budget that then could not count the model's calls refuses the run
before it starts. Against a real OpenAI-compatible server on 127.0.0.1, through the API and the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from dsl import diagnostics
from dsl.frontend import compile_file
from interpreter import RunOptions, run_workflow
from interpreter.providers import parse_model_override, resolve_config
from interpreter.runtime import RunSetupError
from interpreter.store import open_store
from tests.fixtures.charter_cli import project_charter as charter
from tests.fixtures.charter_cli import run_json
from tests.fixtures.openai_server import OpenAIServer

pytestmark = pytest.mark.usefixtures("no_provider_env")

PRICES = {"input_per_1k": 3.0, "output_per_1k": 15.0}
ANTHROPIC = {
    "provider": "anthropic",
    "model": "claude-x",
    "api_key_env": "CHARTER_TEST_MODEL_KEY",
    "parameters": {"temperature": 0, "max_tokens": 512, "top_k": 5, "thinking": {"type": "disabled"}},
    "prices": PRICES,
}


def override(spec: str) -> dict[str, Any]:
    return parse_model_override(f"default={spec}")[1]


def test_another_provider_keeps_only_the_neutral_parameters_and_no_prices() -> None:
    config = resolve_config(ANTHROPIC, override("openai:gpt-x@http://127.0.0.1:9/v1"), environ={})
    assert (config.provider, config.model, config.base_url) == ("openai", "gpt-x", "http://127.0.0.1:9/v1")
    assert config.parameters == {"temperature": 0, "max_tokens": 512}
    assert config.prices is None
    assert config.dropped == ("prices", "parameters.top_k", "parameters.thinking")


def test_another_model_of_the_same_provider_keeps_the_parameters_but_not_the_prices() -> None:
    config = resolve_config(
        ANTHROPIC, override("anthropic:claude-y"), environ={"CHARTER_TEST_MODEL_KEY": "k"}
    )
    assert (config.model, config.parameters, config.prices) == ("claude-y", ANTHROPIC["parameters"], None)
    assert config.dropped == ("prices",)


def test_the_same_model_elsewhere_keeps_everything() -> None:
    spec = "anthropic:claude-x@https://proxy.example"
    config = resolve_config(ANTHROPIC, override(spec), environ={"CHARTER_TEST_MODEL_KEY": "k"})
    assert (config.base_url, config.parameters, config.prices) == (
        "https://proxy.example",
        ANTHROPIC["parameters"],
        PRICES,
    )
    assert config.dropped == ()


def test_a_scripted_override_stands_in_for_the_declared_model(tmp_path: Path) -> None:
    """Canned answers in a test of the workflow: their usage is priced as the declared model's."""
    config = resolve_config(ANTHROPIC, override(f"scripted:{tmp_path / 'r.yaml'}"), environ={})
    assert (config.provider, config.parameters, config.prices, config.dropped) == (
        "scripted",
        ANTHROPIC["parameters"],
        PRICES,
        (),
    )


def test_an_override_mapping_may_bring_the_new_models_own_prices() -> None:
    new = {"provider": "openai", "model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "prices": PRICES}
    config = resolve_config(ANTHROPIC, new, environ={})
    assert config.prices == PRICES and config.dropped == ("parameters.top_k", "parameters.thinking")


FLOW = """\
charter: "1.0"
name: overridden
models:
  default:
    provider: anthropic
    model: claude-x
    api_key_env: CHARTER_TEST_MODEL_KEY
    parameters: {{temperature: 0, top_k: 5, thinking: {{type: enabled, budget_tokens: 1024}}}}
    prices: {{input_per_1k: 3.0, output_per_1k: 15.0}}
vars: {{n: 0}}
{guardrails}steps:
  - id: draft
    llm: {{prompt: "Draft it."}}
  - id: polish
{polish}output: {{text: "${{{{ steps.draft.output }}}}"}}
"""
POLISH_TOOL = "    steps:\n      - {id: noop, set: {n: 1}}\n"


def flow(tmp_path: Path, guardrails: str = "", polish: str = POLISH_TOOL) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(guardrails=textwrap.dedent(guardrails), polish=polish), encoding="utf-8")
    return path


def compiled(path: Path) -> Any:
    graph, diags = compile_file(path)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    assert graph is not None and not errors, diagnostics.format_text(errors)
    return graph


def run(tmp_path: Path, path: Path, spec: str) -> tuple[Any, Any]:
    store = open_store(str(tmp_path / "charter.db"))
    options = RunOptions(principal="tester", model_overrides={"default": spec})
    return run_workflow(compiled(path), {}, store=store, options=options), store


def payloads(store: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.kind == kind]


def test_an_anthropic_model_run_on_an_openai_server_sends_no_anthropic_parameters_and_costs_nothing_known(
    tmp_path: Path, server: OpenAIServer
) -> None:
    """Before: `top_k` and `thinking` went to the OpenAI server (which would refuse them), and the answer
    was priced at the anthropic model's prices."""
    server.reply("A draft.", usage=(1000, 1000))
    result, store = run(tmp_path, flow(tmp_path), f"openai:test-model@{server.url}")
    assert result.status == "completed", result.error
    (request,) = server.requests
    assert request["temperature"] == 0
    assert "top_k" not in request and "thinking" not in request
    (called,) = payloads(store, result.run_id, "model.called")
    assert called["params"] == {"temperature": 0}
    (completed,) = payloads(store, result.run_id, "model.completed")
    assert completed["cost"] is None and completed["usage"] == {"input_tokens": 1000, "output_tokens": 1000}
    usage = next(iter(payloads(store, result.run_id, "run.completed")))["usage"]
    assert usage["cost"] is None and usage["tokens"] == 2000


WORKFLOW_BUDGET = """\
guardrails:
  - {id: spend, limits: {max_cost: 0.5}}
"""


def test_a_cost_budget_over_a_model_whose_prices_were_dropped_refuses_the_run(
    tmp_path: Path, server: OpenAIServer
) -> None:
    server.reply("A draft.")
    with pytest.raises(RunSetupError) as refused:
        run(tmp_path, flow(tmp_path, WORKFLOW_BUDGET), f"openai:test-model@{server.url}")
    assert str(refused.value) == (
        "model 'default': its prices in the workflow are those of anthropic:claude-x, not of --model "
        f"openai:test-model@{server.url}, so the cost of its calls is unknown and the max_cost budget "
        "'spend' of the workflow, which counts step 'draft', could not count it; declare that model with "
        "its prices in the workflow file to run it under the budget"
    )
    assert server.requests == []
    assert open_store(str(tmp_path / "charter.db")).runs() == []


def test_the_cli_says_so_and_exits_2(tmp_path: Path, server: OpenAIServer) -> None:
    flow(tmp_path, WORKFLOW_BUDGET)
    proc = charter("run", "flow.yaml", "--model", f"default=openai:test-model@{server.url}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the max_cost budget 'spend' of the workflow, which counts step 'draft', could not count it" in (
        proc.stderr
    )
    assert proc.stderr.startswith("error: model 'default': its prices in the workflow are those of")
    assert server.requests == [] and not list(tmp_path.glob("charter.db*"))


@pytest.mark.parametrize(
    ("guardrails", "polish"),
    [
        # on another step, which calls no model
        (
            "",
            POLISH_TOOL.replace(
                "    steps:\n", "    guardrails: [{id: spend, limits: {max_cost: 0.5}}]\n    steps:\n"
            ),
        ),
        # at workflow level, but only within another step
        ("guardrails:\n  - {id: spend, limits: {max_cost: 0.5}, steps: [polish]}\n", POLISH_TOOL),
        # a tool budget
        ("guardrails:\n  - {id: spend, limits: {max_cost: 0.5}, tools: ['*']}\n", POLISH_TOOL),
    ],
)
def test_a_cost_budget_that_counts_no_call_of_that_model_does_not_refuse(
    tmp_path: Path, server: OpenAIServer, guardrails: str, polish: str
) -> None:
    server.reply("A draft.")
    result, _ = run(tmp_path, flow(tmp_path, guardrails, polish), f"openai:test-model@{server.url}")
    assert result.status == "completed", result.error


def test_a_step_cost_budget_around_the_model_step_refuses(tmp_path: Path, server: OpenAIServer) -> None:
    path = flow(tmp_path)
    text = path.read_text().replace(
        '  - id: draft\n    llm: {prompt: "Draft it."}\n',
        "  - id: drafting\n    guardrails: [{id: step-spend, limits: {max_cost: 1}}]\n    steps:\n"
        '      - id: draft\n        llm: {prompt: "Draft it."}\n',
    )
    path.write_text(text)
    with pytest.raises(
        RunSetupError, match="the max_cost budget 'step-spend' of step 'drafting', which counts"
    ):
        run(tmp_path, path, f"openai:test-model@{server.url}")


def test_the_same_model_at_another_url_keeps_its_prices_and_its_budget(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the endpoint moves (a proxy, a local mirror): the declared prices still price the calls, and
    the budget trips on them."""
    monkeypatch.setenv("CHARTER_TEST_MODEL_KEY", "sk-test-key-123")
    path = flow(tmp_path, "guardrails:\n  - {id: spend, limits: {max_cost: 0.01}}\n")
    path.write_text(
        path.read_text().replace(
            "provider: anthropic\n    model: claude-x", "provider: openai\n    model: test-model"
        )
    )
    server.reply("A draft.", usage=(1000, 1000))  # 3.0 + 15.0: over the budget
    result, store = run(tmp_path, path, f"openai:test-model@{server.url}")
    assert result.status == "failed" and result.error["code"] == "guardrail", result.error
    assert "cost 18 exceeds max_cost 0.01" in result.error["message"]
    (completed,) = payloads(store, result.run_id, "model.completed")
    assert completed["cost"] == 18.0


def test_a_scripted_stand_in_is_priced_as_the_declared_model_under_its_budget(tmp_path: Path) -> None:
    path = flow(tmp_path, "guardrails:\n  - {id: spend, limits: {max_cost: 0.01}}\n")
    script = tmp_path / "r.yaml"
    script.write_text(
        "responses:\n  - {step: draft, text: d, usage: {input_tokens: 1000, output_tokens: 0}}\n"
    )
    result, store = run(tmp_path, path, f"scripted:{script}")
    assert result.status == "failed" and "cost 3 exceeds max_cost 0.01" in result.error["message"]
    (called,) = payloads(store, result.run_id, "model.called")
    assert called["provider"] == "scripted"


def test_the_cli_reports_the_tokens_of_an_overridden_model_but_no_cost(
    tmp_path: Path, server: OpenAIServer
) -> None:
    flow(tmp_path)
    server.reply("A draft.", usage=(1000, 1000))
    spec = f"default=openai:test-model@{server.url}"
    proc = charter("run", "flow.yaml", "--model", spec, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run_json(proc)["output"] == {"text": "A draft."}
    assert "model usage: 1 calls, 1000 input + 1000 output tokens, " in proc.stderr
    assert "cost" not in proc.stderr  # at the anthropic model's prices it was "cost 18.000000"
