"""Agent and llm steps (spec §13.2, §13.3): model calls, the tool-calling loop, structured output.

One execution of a step is a `StepCall`. It renders the step's instructions and prompt with the
compiled `Prompt.render` over the CEL-evaluated `vars` (nothing else is visible to a template), then asks
the model. An agent offers only the step's tools; each tool call the model makes goes through the
guard hooks and authorization (when the run has a guard), argument validation and the one tool-calling
path (`interpreter.tool_calls.logged_call`), and its result or error is returned to the model as the call's
result. A request for a tool the step does not list is refused and the model is told.

Every model call is a `model.called` event (provider, model, parameters, the messages, the tools
offered) and a `model.completed` event (the answer, its tool calls, usage, cost, latency), keyed by
(attempt, call) within the node. The answer's guard hooks (model.output, and output_schema and
agent.output for a final answer) run before `model.completed` is written, so the log records the answer
as the step uses it: with every `redact` match masked (spec/event-log.md). Resume reuses a recorded
answer instead of calling again, and replay takes every answer from the log; both run the hooks again
on it, which decide as they did live (masked text does not match again). Neither needs the network, a
key or even the provider.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpreter import store as s
from interpreter.enforcement import EscalationKeys, EscalationRequired, as_recorded, guardrail_error
from interpreter.providers import (
    Message,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelTimeoutError,
    ToolSpec,
    compute_cost,
    parse_model_spec,
    provider_factory,
    resolve_config,
)
from interpreter.providers.base import NOT_JSON, parse_structured
from interpreter.providers.scripted import ScriptedProvider
from interpreter.runtime import RunSetupError, StepError, idempotency_key
from interpreter.tool_calls import logged_call, replayed_call
from interpreter.tools import mcp_tool_info, run_resources, validate_args

_NOT_ACCEPTED = "Your answer was not accepted; answer again."
# --------------------------------------------------------------------------------------------------
# Usage accounting


@dataclass
class Usage:
    """Model consumption: per run (live counters on the run's `AgentRuntime`) or summed from a log."""

    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None  # None while no call had declared prices
    latency_ms: float = 0.0

    def add(self, input_tokens: int, output_tokens: int, cost: float | None, latency_ms: float) -> None:
        self.model_calls += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if cost is not None:
            self.cost = round((self.cost or 0.0) + cost, 12)  # as budgets sum it (guardrails.Budget)
        self.latency_ms += latency_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_calls": self.model_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens": self.input_tokens + self.output_tokens,
            "cost": round(self.cost, 8) if self.cost is not None else None,
            "latency_ms": round(self.latency_ms, 3),
        }


def usage_of_events(events: Iterable[Any]) -> Usage:
    """The model usage of a run, summed over its `model.completed` events (what `charter log` shows)."""
    total = Usage()
    for event in events:
        if event.kind != s.MODEL_COMPLETED or not isinstance(event.payload, dict):
            continue
        usage = event.payload.get("usage") or {}
        total.add(
            int(usage.get("input_tokens", 0)),
            int(usage.get("output_tokens", 0)),
            event.payload.get("cost"),
            float(event.payload.get("duration_ms", 0.0)),
        )
    return total


def usage_of(ex: Any) -> dict[str, Any]:
    """The model usage of the whole run (for the run.completed payload): the calls recorded before
    this execution (a resumed run's earlier ones) plus the live calls it made."""
    total = Usage()
    for rec in ex.records.values():
        for call in rec.models.values():
            done = call.completed
            if done is not None:
                usage = done.get("usage") or {}
                total.add(
                    int(usage.get("input_tokens", 0)),
                    int(usage.get("output_tokens", 0)),
                    done.get("cost"),
                    float(done.get("duration_ms", 0.0)),
                )
    rt = getattr(ex, "agent_runtime", None)
    if rt is not None and not ex.replaying:
        live = rt.usage
        total.model_calls += live.model_calls
        total.input_tokens += live.input_tokens
        total.output_tokens += live.output_tokens
        total.latency_ms += live.latency_ms
        if live.cost is not None:
            total.cost = round((total.cost or 0.0) + live.cost, 12)
    return total.to_dict()


# --------------------------------------------------------------------------------------------------
# Per-run state: providers are built on the first live call (replay never builds one)


@dataclass
class _Model:
    provider: Any
    name: str  # provider name, e.g. "openai"
    model: str | None
    parameters: dict[str, Any]
    prices: Any


class AgentRuntime:
    def __init__(self, ex: Any) -> None:
        self.ex = ex
        self.models: dict[str, _Model] = {}
        self.usage = Usage()
        self._lock = asyncio.Lock()

    async def model(self, name: str) -> _Model:
        async with self._lock:  # parallel branches asking at once build one provider
            built = self.models.get(name)
            if built is None:
                built = self.models[name] = self._build(name)
                run_resources(self.ex).closers.append(built.provider.close)
                self._skip_recorded(name, built.provider)
            return built

    def _build(self, name: str) -> _Model:
        ex = self.ex
        try:
            config, provider = build_model(ex.graph, name, ex.options.model_overrides, ex.secrets, ex.file)
        except (ModelError, ValueError) as exc:
            raise StepError("model", str(exc), type="ModelError", retryable=False) from None
        model = config.model or getattr(provider, "model", None)  # the scripted provider names itself
        return _Model(provider, config.provider, model, dict(config.parameters), config.prices)

    def _skip_recorded(self, name: str, provider: Any) -> None:
        """A resumed or forked run takes earlier answers from the log; a scripted provider must skip the
        entries those answers used, so that the next live call gets the next entry."""
        mark = getattr(provider, "mark_used", None)
        if mark is None:
            return
        for rec in self.ex.records.values():
            for call in rec.models.values():
                done = call.completed
                if done is not None and done.get("model_name", "default") == name:
                    mark(done.get("step", ""), int(done.get("turn", 1)))


def build_model(
    graph: Any, name: str, overrides: dict[str, str], secrets: dict[str, str], file: str | None
) -> tuple[Any, Any]:
    """The provider configuration and provider of the workflow's model `name`, a `--model` override
    applied. Raises ModelError (or ValueError) when it cannot be set up."""
    declared = graph.workflow.models.get(name)
    override: Any = overrides.get(name)
    if declared is None and override is None:
        known = ", ".join(sorted(graph.workflow.models)) or "none"
        raise ValueError(f"no model named '{name}' is declared (models: {known})")
    if isinstance(override, str):
        override = parse_model_spec(override)
    base_dir = Path(file).parent if file else Path.cwd()
    config = resolve_config(declared, override, secrets=secrets, base_dir=base_dir)
    return config, provider_factory(config.provider)(config)


# A model key shorter than this is a placeholder for a local server ("dummy"), not a credential:
# masking it would blank that word wherever the log has it.
_MASKED_KEY_LENGTH = 8


async def check_models(
    graph: Any, overrides: dict[str, str], secrets: dict[str, str], file: str | None
) -> dict[str, str]:
    """Every model a step of the workflow asks for can be set up: its provider exists, its key is there,
    its responses file loads. Checked before a run starts, so that a wrong `--model` or a missing key is
    refused at once (RunSetupError) rather than found by the first model call, halfway through the run.
    Returns the API keys the models use, by model name: the log masks them like declared secrets (a
    provider may echo its key in an error)."""
    used = {spec.model for node in graph.nodes() if (spec := _model_step(node)) is not None}
    keys: dict[str, str] = {}
    steps: _Steps | None = None
    for name in sorted(used):
        try:
            config, provider = build_model(graph, name, overrides, secrets, file)
        except (ModelError, ValueError) as exc:
            raise RunSetupError(f"model '{name}': {exc}") from None
        try:
            if "prices" in config.dropped:
                _check_cost_budgets(graph, name, overrides.get(name), config)
            if isinstance(provider, ScriptedProvider):
                steps = steps or _run_steps(graph, file)
                if steps.complete:
                    provider.check_steps(steps.model)
        except ModelError as exc:
            raise RunSetupError(f"model '{name}': {exc}") from None
        finally:
            await provider.close()
        if config.api_key and len(config.api_key) >= _MASKED_KEY_LENGTH:
            keys[f"model {name}"] = config.api_key
    return keys


def _model_step(node: Any) -> Any:
    return getattr(node.step, node.kind, None) if node.kind in ("agent", "llm") else None


def _check_cost_budgets(graph: Any, name: str, override: Any, config: Any) -> None:
    """A model whose declared prices a `--model` override dropped (they were another model's) has calls
    of unknown cost: a `max_cost` budget over a step that uses it could not count them, and would let
    them through as free. Refused (RunSetupError) before the run starts, naming the budget."""
    for node in graph.nodes():
        spec = _model_step(node)
        if spec is None or spec.model != name:
            continue
        for declared_by, rule in graph.cost_budgets(node):
            where = "the workflow" if declared_by is None else f"step '{declared_by.id}'"
            declared = graph.workflow.models.get(name)
            was = (
                f"{declared.provider}:{declared.model}"
                if declared is not None and declared.model
                else f"the {getattr(declared, 'provider', 'declared')} model"
            )
            now = override if isinstance(override, str) else f"{config.provider}:{config.model}"
            raise RunSetupError(
                f"model '{name}': its prices in the workflow are those of {was}, not of --model {now}, "
                f"so the cost of its calls is unknown and the max_cost budget '{rule.id}' of {where}, "
                f"which counts step '{node.id}', could not count it; declare that model with its prices "
                "in the workflow file to run it under the budget"
            )


@dataclass(frozen=True)
class _Steps:
    """The agent and llm steps of a run's tree, by id, which a scripted responses file answers.
    `complete` is false when a workflow of the tree could not be compiled (its steps are not known, so
    an entry is not taken for a typo of another step)."""

    model: frozenset[str]
    complete: bool


# The steps of the runs above a child run, set while a run is set up (`check_models`): a responses file
# given on the command line answers the parent's steps and its children's, and a child run set up in
# the parent's execution knows the parent's steps for what they are.
_ABOVE: contextvars.ContextVar[_Steps | None] = contextvars.ContextVar("charter_run_steps", default=None)


def _run_steps(graph: Any, file: str | None) -> _Steps:
    """The agent and llm steps of this workflow, of every workflow it starts (`workflow` steps and tools,
    compiled from their files, and so on down), and of the runs above it in this process."""
    from dsl import diagnostics
    from dsl.frontend import compile_file

    model: set[str] = set()
    complete = True
    seen: set[Path] = set()
    todo: list[tuple[Any, Path]] = [(graph, Path(file).resolve() if file else Path.cwd() / "<workflow>")]
    while todo:
        current, where = todo.pop()
        if where in seen:
            continue
        seen.add(where)
        children = [t.workflow for t in current.workflow.tools.values() if t.workflow is not None]
        for node in current.nodes():
            if node.kind in ("agent", "llm"):
                model.add(node.id)
            elif node.kind == "workflow":
                children.append(node.step.workflow.path)
        for relative in children:
            path = (where.parent / relative).resolve()  # as a child run finds it (steps.child_run)
            child, diags = compile_file(path)
            if child is None or any(d.severity == diagnostics.Severity.ERROR for d in diags):
                complete = False  # the child run fails with its own error; its steps are not known
                continue
            todo.append((child, path))
    above = _ABOVE.get()
    if above is not None:
        model |= above.model
        complete = complete and above.complete
    steps = _Steps(frozenset(model), complete)
    _ABOVE.set(steps)
    return steps


def runtime(ex: Any) -> AgentRuntime:
    rt = getattr(ex, "agent_runtime", None)
    if rt is None:
        rt = ex.agent_runtime = AgentRuntime(ex)
    return rt


# --------------------------------------------------------------------------------------------------
# The step runners


@dataclass
class _Next:
    """What an answer leads to, decided before the answer is written to the log."""

    tools: bool = False  # run its tool calls, then ask again
    value: Any = None  # the step's output (a final answer)
    feedback: str | None = None  # ask again with this message (not a new turn)
    error: BaseException | None = None  # raised once the answer is in the log


async def run_agent(ex: Any, node: Any, scope: Any, path: str, attempt: int) -> Any:
    return await StepCall(ex, node, scope, path, attempt, node.step.agent, is_agent=True).run()


async def run_llm(ex: Any, node: Any, scope: Any, path: str, attempt: int) -> Any:
    return await StepCall(ex, node, scope, path, attempt, node.step.llm, is_agent=False).run()


class StepCall:
    """One execution (attempt) of an agent or llm step."""

    def __init__(self, ex: Any, node: Any, scope: Any, path: str, attempt: int, spec: Any, *, is_agent: bool):
        self.ex, self.node, self.scope, self.path, self.attempt = ex, node, scope, path, attempt
        self.spec = spec
        self.is_agent = is_agent
        self.what = f"{'agent' if is_agent else 'llm'} step '{node.id}'"
        self.guard = ex.guard  # every execution has one (the run's identities, grants, rules)
        self.ledger = _ledger()
        self.keys = EscalationKeys(path)  # each escalation of this execution is asked (and kept) apart
        self.calls = 0  # model calls so far (the scripted provider's "turn")
        self.turns = 0  # model turns that count against max_turns (re-asks do not)
        self.reasks = 0  # re-asks because the answer did not fit output_schema
        self.tool_calls = 0
        self.messages: list[Message] = []
        self.identity: str | None = getattr(spec, "identity", None)
        self.chain: Any = None
        self.actor: dict[str, Any] | None = {"sub": self.identity} if self.identity else ex.actor
        self.tools: dict[str, ToolSpec] = {}
        self.rec = ex.records.get(path)

    # -- the loop

    async def run(self) -> Any:
        self.messages = self._render()
        if self.is_agent:
            self.tools = {name: await self._tool_spec(name) for name in self.spec.tools}
            self._identity_chain()
        reasking = False
        while True:
            if not reasking:  # a re-ask (schema, guardrail retry) is not a new turn
                self.turns += 1
            response, then = await self._ask()
            if then.error is not None:
                raise then.error
            reasking = then.feedback is not None
            if then.feedback is not None:
                self._reask(response, then.feedback)
            elif then.tools:
                self._check_turns(response)
                await self._use_tools(response)
            else:
                return then.value

    def _check_turns(self, response: ModelResponse) -> None:
        max_turns = self.spec.max_turns
        if self.turns >= max_turns:  # the tools of the last turn are not run: nobody would read them
            asked = ", ".join(c.name for c in response.tool_calls)
            raise StepError(
                "max_turns",
                f"{self.what} did not answer within max_turns={max_turns} turns (it still asked for {asked})",
                type="AgentError",
            )

    def _screen(self, response: ModelResponse) -> tuple[ModelResponse, _Next]:
        """Run the model.output rules on an answer and, for a final answer, output_schema and the
        agent.output rules, before the answer is written to the log. Returns the answer as the log records
        it and the step uses it (every `redact` match masked) and what it leads to; an error found here
        is returned, to be raised once the answer is recorded (resume then reuses it)."""
        context = {"output": self._answer(response), "tool_calls": _calls(response)}
        try:
            verdict = self._check("model.output", context)
        except EscalationRequired as esc:
            return self._masked(response, esc.verdict), _Next(error=esc)
        except StepError as err:  # a spent budget
            return response, _Next(error=err)
        response = self._masked(response, verdict)
        if verdict.action == "retry":
            return response, _Next(feedback=verdict.message or _NOT_ACCEPTED)
        if verdict.action == "deny":
            return response, _Next(error=self._denied(verdict))
        if response.tool_calls and self.is_agent:
            return response, _Next(tools=True)
        if response.tool_calls:  # an llm step offers no tool: this is no answer, not an empty one
            asked = ", ".join(c.name for c in response.tool_calls)
            what = (
                f"{self.what}: the model asked for tools ({asked}) instead of answering; an llm step has none"
            )
            return response, _Next(error=StepError("model", what, type="ModelError"))
        try:
            return self._final(response)
        except StepError as err:
            return response, _Next(error=err)

    def _final(self, response: ModelResponse) -> tuple[ModelResponse, _Next]:
        """A final answer: the step's output, or a re-ask (the answer does not fit output_schema, or an
        agent.output rule said retry); agent.output redaction masks the answer the log records too."""
        schema = self.spec.output_schema
        if schema is None:
            value: Any = response.text or ""
        else:
            value, problem = self._validate(response, schema)
            if problem is not None:
                self.reasks += 1
                if self.reasks > self.spec.max_retries:
                    raise StepError(
                        "model",
                        f"{self.what}: the answer did not fit output_schema after "
                        f"{self.spec.max_retries} re-ask(s): {problem}",
                        type="ModelError",
                    )
                feedback = (
                    f"Your answer does not match the required JSON schema: {problem}. "
                    "Answer again with only the JSON value."
                )
                return response, _Next(feedback=feedback)
        if not self.is_agent:
            return response, _Next(value=value)
        try:
            verdict = self._check("agent.output", {"output": value})
        except EscalationRequired as esc:
            return self._masked(response, esc.verdict), _Next(error=esc)
        response = self._masked(response, verdict)
        if verdict.redacted:
            value = verdict.value
        if verdict.action == "retry":
            return response, _Next(feedback=verdict.message or _NOT_ACCEPTED)
        if verdict.action == "deny":
            return response, _Next(error=self._denied(verdict))
        return response, _Next(value=value)

    def _mask_tool_args(self, response: ModelResponse) -> ModelResponse:
        """The answer with each tool call's arguments masked by that tool's `tool.input` redact rules.
        The step goes on with the masked answer (as with model.output redaction), so the log, the next
        turn's messages, the tool and a resume or replay all see the same arguments."""
        if not (response.tool_calls or response.skipped_tool_calls):
            return response
        from dataclasses import replace

        def masked(calls: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(
                replace(c, arguments=self.guard.mask_tool_args(self.path, c.name, c.arguments)) for c in calls
            )

        # Calls left out with a final answer are in the log too: masked like the ones that run.
        return replace(
            response,
            tool_calls=masked(response.tool_calls),
            skipped_tool_calls=masked(response.skipped_tool_calls),
        )

    def _masked(self, response: ModelResponse, verdict: Any) -> ModelResponse:
        """The answer with a hook's redaction applied (its payload is the answer: text or object)."""
        if not verdict.redacted:
            return response
        return _redacted(response, verdict.value, self.spec.output_schema)

    def _render(self) -> list[Message]:
        from dsl.templates import PromptRenderError

        variables = self.ex.evaluate(self.node.values.get("vars"), self.scope, f"{self.what}: vars") or {}
        # Keys in a fixed order: a value read back from the log (resume, replay) renders as it did live.
        variables = _sorted(variables)
        messages = []
        try:
            instructions = self.node.prompts.get("instructions")
            if instructions is not None:
                messages.append(Message("system", instructions.render(variables)))
            messages.append(Message("user", self.node.prompts["prompt"].render(variables)))
        except PromptRenderError as exc:
            raise StepError(
                "expression",
                f"{self.what}: the prompt does not render: {exc}",
                type="TemplateError",
                retryable=False,
            ) from None
        return messages

    async def _tool_spec(self, name: str) -> ToolSpec:
        """What the model sees of a tool: its description and argument schema. An MCP tool that declares
        no `args` is described by its server (started now; replay needs no description)."""
        tool = self.ex.graph.workflow.tools[name]
        if tool.args is None and tool.mcp is not None and not self.ex.replaying:
            info = await mcp_tool_info(self.ex, name, tool, self.scope, path=self.path)
            return ToolSpec(name, tool.description or info.description, dict(info.input_schema))
        schema = self.ex.tool_schema(name) or {"type": "object", "properties": {}}
        return ToolSpec(name, tool.description or "", dict(schema))

    def _identity_chain(self) -> None:
        field = self.node.values.get("on_behalf_of")
        if field is None:  # the step acts for nobody: the agent's own grants (within a parent's chain)
            self.chain = self.guard.chain_for(self.identity)
        else:  # a value the step set, null included: the guard refuses one that names nobody
            where = f"{self.what}: on_behalf_of"
            on_behalf_of = self.ex.evaluate(field, self.scope, where)
            self.chain = self.guard.chain_for(self.identity, on_behalf_of, where=where)
        claim = self.chain.to_act_claim() if self.chain is not None else None
        if claim:
            self.actor = claim

    def _answer(self, response: ModelResponse) -> Any:
        """The answer as the model.output rules see it: its JSON value under an output_schema (null for
        the JSON `null`), else its text; a turn that only calls tools said nothing: "" (a check on the
        text must not fail on null)."""
        if self.spec.output_schema is not None and not response.tool_calls:
            value = _structured(response)
            if value is not NOT_JSON:
                return value
        return response.text or ""

    def _validate(self, response: ModelResponse, schema: dict[str, Any]) -> tuple[Any, str | None]:
        value = _structured(response)
        if value is NOT_JSON:
            return None, "the answer is not JSON"
        if isinstance(value, dict) and s.BLOB_REF_KEY in value:  # the step's output could not be logged
            return (
                value,
                f"the answer is an object with the key {s.BLOB_REF_KEY!r}, which the event log reserves",
            )
        from interpreter import schemas

        problems = schemas.errors(schema, value)
        return value, (schemas.describe(problems, "the answer") if problems else None)

    def _reask(self, response: ModelResponse, feedback: str) -> None:
        self.messages.append(Message("assistant", response.text or "", thinking=response.thinking))
        self.messages.append(Message("user", feedback))

    # -- guard hooks

    def _check(
        self, hook: str, context: dict[str, Any], tool: str | None = None, occurrence: str | None = None
    ) -> Any:
        """Run a guard hook; the caller acts on the verdict. An escalation
        propagates as EscalationRequired, a spent budget as the `guardrail` step error. `occurrence`
        names the call within the attempt (default: this model call) so an approval covers that call
        only; the attempt itself is the request's `data.attempts` (the guard's `enclosing_attempts`), so
        that replay finds each attempt's approval where the recording has it."""
        context = {"identity": self._identity_binding(), **context}
        return self.guard.check(
            hook,
            context,
            self.path,
            node=self.node,
            tool=tool,
            ledger=self.ledger,
            keys=self.keys,
            occurrence=occurrence or str(self.calls),
        )

    def _denied(self, verdict: Any) -> StepError:
        """The step error of a rule that denied where nothing is offered to a model to choose again."""
        why = _refusal(verdict).removeprefix("refused: ")
        return guardrail_error(f"{self.what}: {why}", details={"rules": list(verdict.rules)})

    def _identity_binding(self) -> dict[str, Any] | None:
        actor = self.chain.actor if self.chain is not None else None
        to_binding = getattr(actor, "to_binding", None)
        return to_binding() if to_binding is not None and getattr(actor, "kind", None) != "user" else None

    # -- model calls

    async def _ask(self) -> tuple[ModelResponse, _Next]:
        self.calls += 1
        verdict = self._check("model.input", {"messages": [m.to_record() for m in self.messages]})
        if verdict.action in ("deny", "retry"):  # nothing to re-ask before the call
            raise self._denied(verdict)
        if verdict.redacted and isinstance(verdict.value, list):
            self.messages = [_masked(old, m) for m, old in zip(verdict.value, self.messages, strict=True)]
        request = ModelRequest(
            messages=tuple(self.messages),
            tools=tuple(self.tools.values()),
            response_schema=self.spec.output_schema,
            step=self.node.id,
            turn=self.calls,
        )
        return await self._complete(request)

    def _count(self, response: ModelResponse, cost: float | None, latency: float, *, live: bool) -> None:
        """Usage and budgets, before the answer's hooks (a model.output budget sees this call)."""
        if live:  # answers taken from the log are counted from the log (usage_of)
            runtime(self.ex).usage.add(
                response.usage.input_tokens, response.usage.output_tokens, cost, latency
            )
        self.guard.record_model_call(
            response.usage.input_tokens, response.usage.output_tokens, cost or 0.0, node_path=self.path
        )

    async def _complete(self, request: ModelRequest) -> tuple[ModelResponse, _Next]:
        """The answer to a request, screened (`_screen`): from the log (replay, resume, where it was
        recorded screened) or from the provider (screened, then recorded)."""
        ex, path = self.ex, self.path
        messages = [m.to_record() for m in request.messages]
        logged = self.guard.mask(messages)
        recorded = self.rec.models.get((self.attempt, self.calls)) if self.rec is not None else None
        if ex.replaying or (recorded is not None and recorded.completed is not None):
            if ex.replaying:
                response, cost, latency = await self._replayed(recorded, logged)
            else:
                done = recorded.completed
                response, cost, latency = (
                    ModelResponse.from_record(done.get("response") or {}),
                    done.get("cost"),
                    0.0,
                )
            self._count(response, cost, latency, live=False)
            screened = self._screen(response)
            if not ex.replaying:
                _refuse_masked(self, screened[1], recorded.completed)
            return screened
        model = await runtime(ex).model(self.spec.model)
        # The provider is a third party the log's masking does not cover: it gets the messages as the log
        # records them, a declared secret masked (one a prompt's vars read, one a tool's result echoed).
        request = _with_model(request, model, messages=logged)
        ids = {"attempt": self.attempt, "call": self.calls, "step": self.node.id, "turn": self.calls}
        ex.emit(
            s.MODEL_CALLED,
            path,
            {
                "provider": model.name,
                "model": model.model,
                "model_name": self.spec.model,
                **ids,
                "messages": logged,
                "tools": list(self.tools),
                "params": model.parameters,
                "response_schema": request.response_schema,
            },
            self.actor,
        )
        await ex.durable()  # the steps this call follows are committed (durability "full")
        # ...and what this execution did since its last answer: the results of the tool calls the model
        # is about to read (a crash during a long model call must not make resume call them again) and
        # this call itself, in flight, before the provider is paid.
        await ex.commit_write()
        t0 = time.perf_counter()
        try:
            response = await model.provider.complete(request)
        except ModelError as exc:
            raise StepError(
                "timeout" if isinstance(exc, ModelTimeoutError) else "model",  # retry.on: [timeout] applies
                f"{self.what}: {exc}",
                type="ModelError",
                category="model",  # and [model] still does
                retryable=exc.retryable,
                details=exc.to_record(),
            ) from None
        latency = response.latency_ms or (time.perf_counter() - t0) * 1000
        # Used as the log will give it back (sorted keys), so resume and replay see the same answer.
        response = ModelResponse.from_record(_sorted(response.to_record()))
        cost = compute_cost(response.usage, model.prices)
        self._count(response, cost, latency, live=True)
        response = self._mask_tool_args(response)  # tool.input redaction of the arguments, before the log
        response, then = self._screen(response)  # redaction before the log
        answer = response.to_record()
        logged_answer = self.guard.mask(answer)
        completed = {
            "provider": model.name,
            "model": response.model or model.model,
            "model_name": self.spec.model,
            **ids,
            "response": logged_answer,
            "usage": response.usage.to_record(),
            "cost": cost,
            "duration_ms": latency,
        }
        if logged_answer.get("thinking") != answer.get("thinking"):
            completed["thinking_masked"] = True  # what the log keeps cannot be sent back (_reused)
        if logged_answer.get("tool_calls") != answer.get("tool_calls"):
            completed["tool_args_masked"] = True  # nor can those calls be made from the log
        ex.emit(s.MODEL_COMPLETED, path, completed, self.actor)
        ex.commit()  # an answer costs money and time: durable before it is used, so resume reuses it
        return response, then

    async def _replayed(
        self, recorded: Any, logged: list[dict[str, Any]]
    ) -> tuple[ModelResponse, float | None, float]:
        ex, path = self.ex, self.path
        ex.checked += 1
        if recorded is None or recorded.called is None:
            ex.diverge(
                path,
                None,
                {"call": self.calls, "messages": logged},
                "this model call is not in the recorded run",
            )
        if recorded.called.get("messages") != logged:
            ex.diverge(path, recorded.called.get("messages"), logged, "the messages sent to the model differ")
        done = recorded.completed
        if done is None:
            error = self.rec.attempt_errors.get(self.attempt) if self.rec is not None else None
            if error:
                raise StepError.from_dict(error)
            await ex.cut_off(path, self.attempt)  # cut off by a timeout or a sibling that won the join
        assert done is not None
        return (
            ModelResponse.from_record(done.get("response") or {}),
            done.get("cost"),
            float(done.get("duration_ms", 0.0)),
        )

    # -- tool calls

    async def _use_tools(self, response: ModelResponse) -> None:
        # The answer's opaque thinking blocks go back with it: a provider may refuse the turn without them.
        self.messages.append(
            Message(
                "assistant", response.text or "", tool_calls=response.tool_calls, thinking=response.thinking
            )
        )
        for i, call in enumerate(response.tool_calls, 1):
            content, is_error = await self._use_tool(call, f"{self.calls}.{i}")
            self.messages.append(
                Message("tool", content, tool_call_id=call.id, name=call.name, is_error=is_error)
            )

    async def _use_tool(self, call: Any, occurrence: str) -> tuple[str, bool]:
        name, args = call.name, dict(call.arguments)
        if call.error is not None:
            return (
                f"error: the arguments for {name} are not a JSON object ({call.error}); call it again",
                True,
            )
        if name not in self.tools:
            have = ", ".join(self.tools) or "none"
            return f"error: there is no tool named {name!r} available to you; your tools: {have}", True
        refused = self._tool_hook("tool.select", {"tool": name, "args": args}, name, occurrence)
        if refused is not None:
            return refused, True
        decision = self.guard.authorize_tool(
            self.chain, name, args, self.path, bindings=self.ex.bindings(self.scope)
        )
        if not decision.allowed:
            return (
                f"refused: {self.identity or 'this agent'} is not authorized to call {name} ({decision.reason})",
                True,
            )
        try:
            validate_args(name, self.ex.tool_schema(name), args, self.ex.schema_cache)
        except StepError as err:
            return f"error: {err.message}; fix the arguments and call it again", True
        if s.BLOB_REF_KEY in args:  # the call's events could not be logged: not made, the model is told
            return (
                f"error: invalid arguments for {name}: the argument name {s.BLOB_REF_KEY!r} is reserved; "
                "fix the arguments and call it again",
                True,
            )
        verdict = self._check("tool.input", {"tool": name, "args": args}, name, occurrence)
        if verdict.action in ("deny", "retry"):
            return _refusal(verdict), True
        if verdict.action == "redact":
            args = verdict.value
        self.tool_calls += 1
        result, error, verdict = await self._invoke(name, args, self.tool_calls, call.id, occurrence)
        self.guard.record_tool_call(name, args, node_path=self.path, result=result)
        if error is not None:
            return f"error: {error.message}", True
        if verdict.action in ("deny", "retry"):
            return "refused: the result was withheld: " + _refusal(verdict).removeprefix("refused: "), True
        # A secret in a result (a server echoing a token) reaches the model provider no more than the log:
        # masked in the value, before JSON escapes a quote or a backslash in it and the text no longer
        # holds the secret as it is.
        masked = self.guard.mask(result)
        return masked if isinstance(masked, str) else _json(masked), False

    def _screen_result(self, name: str, args: dict[str, Any], result: Any, occurrence: str) -> Any:
        """The tool.output rules' verdict on a result; its `value` is the result as the log and the model
        see it (every `redact` match masked). An escalation propagates."""
        return self._check("tool.output", {"tool": name, "args": args, "result": result}, name, occurrence)

    def _tool_hook(self, hook: str, context: dict[str, Any], tool: str, occurrence: str) -> str | None:
        verdict = self._check(hook, context, tool, occurrence)
        if verdict.action in ("deny", "retry"):
            return _refusal(verdict)
        return None

    async def _invoke(
        self, name: str, args: dict[str, Any], n: int, call_id: str, occurrence: str
    ) -> tuple[Any, StepError | None, Any]:
        """Call a tool for the model through the shared tool path, with the normal tool events. Returns
        the result after the tool.output rules (what `tool.completed` records: a secret they mask
        never reaches the log), the call's error, and the rules' verdict."""
        ex, path, attempt = self.ex, self.path, self.attempt
        recorded = self.rec.agent_tools.get((attempt, n)) if self.rec is not None else None
        if ex.replaying:
            try:
                completed = await replayed_call(ex, path, attempt, recorded, name, args)
            except StepError as err:
                return None, err, None
            verdict = self._screen_result(name, args, completed.get("result"), occurrence)
            return verdict.value, None, as_recorded(verdict, completed)
        if (
            recorded is not None
            and recorded.called is not None
            and recorded.called.get("tool") == name  # the numbering may differ: never another tool's result
            and recorded.called.get("args") == args
        ):
            if recorded.completed is not None:  # resume: the result is in the log (already screened)
                verdict = self._screen_result(name, args, recorded.completed.get("result"), occurrence)
                return verdict.value, None, as_recorded(verdict, recorded.completed)
            failed = (recorded.failed or {}).get("error")
            if failed and failed.get("code") != "cancelled":
                return None, StepError.from_dict(failed), None
        key = idempotency_key(ex.run_id, path, attempt, n)
        try:
            verdict = await logged_call(
                ex,
                name,
                args,
                path=path,
                ids={
                    "tool": name,
                    "attempt": attempt,
                    "call": n,
                    "tool_call_id": call_id,
                    "idempotency_key": key,
                },
                step_id=self.node.id,
                chain=self.chain,
                identity=self.identity,
                scope=self.scope,
                actor=self.actor,
                child_path=f"{path}/call[{n}]",
                screen=lambda result: self._screen_result(name, args, result, occurrence),
            )
        except StepError as err:
            return None, err, None
        return verdict.value, None, verdict


# --------------------------------------------------------------------------------------------------
# Helpers


def _ledger() -> Any:
    from interpreter.guardrails import RetryLedger

    return RetryLedger()


def _sorted(value: Any) -> Any:
    """`value` with every object's keys in sorted order (as the event log stores them)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _structured(response: ModelResponse) -> Any:
    """The JSON value of an answer, None for the JSON `null`, or NOT_JSON: a provider's `structured` is
    None for both a null answer and none, which the answer's text tells apart."""
    return response.structured if response.structured is not None else parse_structured(response.text)


def _calls(response: ModelResponse) -> list[dict[str, Any]]:
    return [c.to_record() for c in response.tool_calls]


def _refusal(verdict: Any) -> str:
    why = verdict.message or f"denied by guardrail {', '.join(verdict.rules) or '?'}"
    return f"refused: {why}"


def _redacted(response: ModelResponse, value: Any, schema: Any) -> ModelResponse:
    from dataclasses import replace

    if schema is not None and response.structured is not None:
        return replace(response, structured=value, text=json.dumps(value))
    return replace(response, text=value if isinstance(value, str) else json.dumps(value))


def _with_model(request: ModelRequest, model: _Model, *, messages: list[dict[str, Any]]) -> ModelRequest:
    """The request as the provider gets it: its model's name, and each message with the text and tool
    arguments of `messages` (their records as logged, secrets masked); what identifies things (roles,
    tool call ids and names, thinking blocks) stays as it was (`_masked`)."""
    from dataclasses import replace

    sent = tuple(_masked(message, record) for message, record in zip(request.messages, messages, strict=True))
    return replace(request, model=model.model, messages=sent)


def _refuse_masked(step: StepCall, then: _Next, completed: dict[str, Any]) -> None:
    """A resumed answer that held a declared secret where the log keeps it masked cannot be used as the
    run used it: its thinking goes back to the provider only unchanged, its tool calls would be made
    with `[REDACTED]` for the secret. Only a final answer (nothing sent back, nothing called) goes on."""
    where = [
        what
        for flag, what in (("thinking_masked", "thinking"), ("tool_args_masked", "tool call arguments"))
        if completed.get(flag)
    ]
    if where and (then.tools or then.feedback):
        raise StepError(
            "model",
            f"{step.what}: cannot continue from the log: the {' and '.join(where)} of model call "
            f"{step.calls} contained a declared secret, which the log keeps masked; run the step again: "
            f"charter run FILE --from {shlex.quote(f'{step.ex.run_id}@{step.path}')}",
            type="ModelError",
            retryable=False,
        )


def _masked(message: Message, record: Any) -> Message:
    """`message` with what a model.input rule masked in its record: its text and its tool calls'
    arguments. What identifies things stays as it was, whatever a rule matched in it: the role, the
    tool call ids (masked alike, two calls' results could no longer be told apart, and a provider
    refuses the turn), the tool names, and the thinking blocks (the provider checks their signatures and
    refuses the turn if one changed; the model wrote them itself)."""
    from dataclasses import replace

    calls = record.get("tool_calls") or ()
    content = record.get("content", message.content)
    return replace(
        message,
        content=content if isinstance(content, str) else message.content,
        tool_calls=tuple(
            replace(call, arguments=dict(masked.get("arguments") or {}))
            for call, masked in zip(message.tool_calls, calls, strict=True)
        ),
    )
