"""Pydantic models of the Charter workflow language, version 1.0 (the root is `Workflow`).

The models are the single source of truth for the language's shape: `dsl.schema` generates the published
JSON Schema from them (field descriptions become editor hover text), `dsl.validate` maps their errors to
CH1xx diagnostics, and the compiler walks them. Every model is frozen and rejects unknown fields.

Where expressions stand
-----------------------
Every field that holds an expression carries an `ExprField` marker in its `Annotated` metadata (and
`"x-charter-expr"` in the JSON Schema), so that the compiler finds them all by walking the model
(`iter_expressions` does exactly that). There are three kinds:

- `cel` (type `CelExpr`): a bare CEL condition that must type-check to bool. Fields: step `if`, switch
  case `when`, loop `until`, guardrail `check`, grant `when`.
- `value` (type `Value`): any JSON value; every string inside it is a template: a string that is exactly
  `${{ expr }}` evaluates to the typed value of `expr`, a string with `${{ expr }}` inside is interpolation
  and yields a string, `$${{` stands for a literal `${{`. Fields: workflow `output` and `vars`, step `output`,
  tool step `args`, `set`, for_each `in`, agent/llm `vars` and `on_behalf_of`, workflow step `input`, `fail`
  and `approval` messages, guardrail `message`, HTTP tool `url`/`headers`/`query`/`json`/`body`, MCP `env`,
  tool `resource`.
- `prompt` (type `Prompt`): a Jinja2 template rendered in a sandbox with StrictUndefined over the step's
  `vars` (which CEL computed first). Fields: agent/llm `instructions` and `prompt`. One pass only.

Durations (`Duration`) are strings such as "500ms", "30s", "5m", "1h30m", "2d"; `parse_duration` converts them.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

LANGUAGE_VERSION = "1.0"

# --- expression markers ------------------------------------------------------------------------------


class ExprKind(StrEnum):
    CEL = "cel"  # bare CEL, must be bool
    VALUE = "value"  # JSON value whose strings may hold ${{ }}
    PROMPT = "prompt"  # Jinja2 template


@dataclass(frozen=True)
class ExprField:
    """Annotated marker: the field holds expressions of this kind."""

    kind: ExprKind


def _cel_string(value: Any) -> Any:
    # YAML turns `if: true` into a bool; CEL source is text, so say so instead of a generic type error.
    if isinstance(value, bool):
        raise PydanticCustomError(
            "cel_type",
            "must be a CEL expression string, not the YAML boolean {value} (quote it: '{text}')",
            {"value": str(value).lower(), "text": str(value).lower()},
        )
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("cel_type", "must be a CEL expression, not an empty string", {})
    return value


CelExpr = Annotated[
    str,
    BeforeValidator(_cel_string),
    ExprField(ExprKind.CEL),
    WithJsonSchema({"type": "string", "minLength": 1, "x-charter-expr": "cel"}),
]
Value = Annotated[Any, ExprField(ExprKind.VALUE), WithJsonSchema({"x-charter-expr": "value"})]
Prompt = Annotated[
    str, ExprField(ExprKind.PROMPT), WithJsonSchema({"type": "string", "x-charter-expr": "prompt"})
]

# --- scalar types ----------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration string ("1h30m" -> 5400.0). Raises ValueError on a malformed string."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _check_duration(value: Any) -> Any:
    hint = "write a number with a unit: ms, s, m, h or d, e.g. '30s', '5m', '1h30m'"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("duration", "must be a duration string; {hint}", {"hint": hint})
    if isinstance(value, int | float):
        raise PydanticCustomError(
            "duration", "must be a duration string with a unit, e.g. '{n}s', not the number {n}", {"n": value}
        )
    if not _DURATION_RE.match(value):
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration; {hint}", {"value": value, "hint": hint}
        )
    if parse_duration(value) <= 0:
        raise PydanticCustomError("duration", "must be longer than zero", {})
    return value


Duration = Annotated[
    str,
    BeforeValidator(_check_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: numbers with units ms, s, m, h, d, e.g. '30s', '5m', '1h30m'.",
        }
    ),
]


def _check_json_schema(value: dict[str, Any]) -> dict[str, Any]:
    """check_schema, then every `$ref` must resolve within the schema (`dsl.schema_refs`). The error's
    `path` (within the schema) is where `dsl.validate` places the diagnostic."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from dsl.schema_refs import broken_refs

    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        path, reason = tuple(exc.absolute_path), exc.message
    else:
        broken = broken_refs(value)
        if not broken:
            return value
        more = len(broken) - 1
        path, reason = broken[0].path, broken[0].reason + (f" (and {more} more)" if more else "")
    where = "/".join(str(p) for p in path)
    raise PydanticCustomError(
        "json_schema",
        "is not a valid JSON Schema{where}: {reason}",
        {"where": f" (at '{where}')" if where else "", "reason": reason, "path": list(path)},
    )


JsonSchema = Annotated[
    dict[str, Any],
    AfterValidator(_check_json_schema),
    WithJsonSchema({"type": "object", "description": "A JSON Schema (draft 2020-12)."}),
]


def _check_regex(value: str) -> str:
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is reported as a diagnostic, not on stderr
    try:
        re2.compile(value, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PydanticCustomError(
            "regex", "is not a valid RE2 regular expression: {reason}", {"reason": reason}
        ) from None
    return value


RegexPattern = Annotated[str, AfterValidator(_check_regex), Field(min_length=1)]

IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
GLOB_PATTERN = r"^[A-Za-z0-9_.*?\[\]!-]+$"
PRINCIPAL_PATTERN = r"^(role:)?[A-Za-z_][A-Za-z0-9_.-]*$"
PYTHON_TARGET_PATTERN = (
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)

Ident = Annotated[str, Field(pattern=IDENT_PATTERN)]  # usable as a CEL identifier
Name = Annotated[str, Field(pattern=NAME_PATTERN)]  # models, identities, grant and guardrail ids
ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]  # what a model sees as a function name
ToolGlob = Annotated[str, Field(pattern=GLOB_PATTERN)]
PrincipalRef = Annotated[str, Field(pattern=PRINCIPAL_PATTERN)]  # identity name or role:NAME

Hook = Literal[
    "run.input", "model.input", "model.output", "tool.select", "tool.input", "tool.output", "agent.output"
]
HOOKS: tuple[str, ...] = typing.get_args(Hook)


class Base(BaseModel):
    # strict: "5" is not 5 and "yes" is not true, exactly as the JSON Schema says.
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, populate_by_name=True, defer_build=True
    )


def _rule(
    message: str, at: tuple[str | int, ...] = (), *, at_key: bool = False, **ctx: Any
) -> PydanticCustomError:
    """A cross-field rule broken (CH109). `at` is the path, inside the object validated, of the node the
    rule is about (YAML keys: `schema`, not `schema_`), `at_key` to point at that key rather than at its
    value: pydantic places a model validator's error at the whole object, `dsl.validate` then places the
    diagnostic at the offending key or value (spec §17.2). Without `at`, it stays at the object (a rule
    about something missing has nothing else to point at)."""
    return PydanticCustomError("charter_rule", message, {**ctx, **_at(at, at_key)})


def _at(at: tuple[str | int, ...], at_key: bool) -> dict[str, Any]:
    """The context entries that tell `dsl.validate` where inside the object an error belongs."""
    return {"at": list(at), "at_key": at_key} if at else {}


def _exactly_one(obj: BaseModel, names: tuple[str, ...]) -> None:
    """`names` are attribute names; a trailing underscore marks an alias (schema_ -> schema). With
    several present the error points at the second key (the first one is taken as meant); with none,
    at the object."""
    present = [n.rstrip("_") for n in names if getattr(obj, n) is not None]
    if len(present) != 1:
        raise PydanticCustomError(
            "one_of",
            "must have exactly one of {options} (found {found})",
            {
                "options": ", ".join(n.rstrip("_") for n in names),
                "found": ", ".join(present) or "none",
                **_at(tuple(present[1:2]), True),
            },
        )


# --- guardrails ----------------------------------------------------------------------------------------


class Limits(Base):
    """Budgets. At workflow level they count the whole run; on a step, each execution of that step; on a
    tool, the calls of that tool."""

    max_tool_calls: int | None = Field(None, ge=1, description="Most tool calls in total.")
    max_calls_per_tool: int | None = Field(None, ge=1, description="Most calls of any single tool.")
    max_model_calls: int | None = Field(None, ge=1, description="Most model calls in total.")
    max_tokens: int | None = Field(None, ge=1, description="Most model tokens (input + output).")
    max_cost: float | None = Field(
        None, gt=0, description="Most model cost, from the models' declared prices."
    )
    timeout: Duration | None = Field(None, description="Most wall-clock time.")
    max_repeated_calls: int | None = Field(
        None, ge=1, description="Most consecutive calls of the same tool with the same arguments."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Limits:
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise _rule("must set at least one budget ({fields})", fields=", ".join(type(self).model_fields))
        return self


class Escalation(Base):
    """Who decides an escalated guardrail and how long the run waits."""

    approvers: list[PrincipalRef] = Field(
        default_factory=list, description="Identities or `role:NAME` allowed to decide; empty means anyone."
    )
    timeout: Duration | None = Field(None, description="How long to wait; on timeout the call is denied.")


class Guardrail(Base):
    """A rule checked at a hook point. Exactly one of `check`, `regex`, `schema`, `limits`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": [k]} for k in ("check", "regex", "schema", "limits")]}
    )

    id: Name = Field(description="Unique id of the rule; it names the rule in events and `charter explain`.")
    description: str | None = Field(None, description="What the rule protects against.")
    on: Hook | None = Field(
        None,
        description="Hook point: run.input, model.input, model.output, tool.select, tool.input, tool.output, "
        "agent.output. Required except for `limits` budgets, which count everything.",
    )
    tools: list[ToolGlob] | None = Field(None, description="Only for these tools (names or globs).")
    steps: list[Ident] | None = Field(None, description="Only within these steps (ids).")
    check: CelExpr | None = Field(
        None,
        description="CEL condition that must hold; false is a violation. Variables: tool, args, result, output, "
        "identity, principal, usage, history, input, vars, run.",
    )
    regex: RegexPattern | None = Field(
        None,
        description="RE2 pattern searched in every string of the payload at the hook; a match is a violation "
        "(with action redact, the matches are masked).",
    )
    schema_: JsonSchema | None = Field(
        None, alias="schema", description="JSON Schema the payload must satisfy."
    )
    limits: Limits | None = Field(None, description="Budgets; exceeding one is a violation.")
    action: Literal["deny", "escalate", "retry", "redact", "warn"] = Field(
        "deny",
        description="What a violation does (strictest wins): deny halts the run or rejects the call; escalate "
        "waits for an approval; retry re-asks the model with the message; redact masks regex matches; warn "
        "only records.",
    )
    mode: Literal["enforce", "observe"] = Field(
        "enforce", description="observe records violations without acting."
    )
    message: Value | None = Field(None, description="Explanation given to the model, approvers and the log.")
    max_retries: int | None = Field(
        None, ge=1, le=20, description="With action retry: re-asks before denying (2)."
    )
    escalation: Escalation | None = Field(None, description="With action escalate: approvers and timeout.")

    @model_validator(mode="after")
    def _consistent(self) -> Guardrail:
        _exactly_one(self, ("check", "regex", "schema_", "limits"))
        if self.limits is None and self.on is None:
            raise _rule("needs 'on': the hook point where the check runs ({hooks})", hooks=", ".join(HOOKS))
        if self.limits is not None and self.on is not None:
            raise _rule("is a budget: remove 'on' (budgets count every call)", ("on",), at_key=True)
        if self.limits is not None and self.action not in ("deny", "escalate", "warn"):
            raise _rule(
                "is a budget: action must be deny, escalate or warn, not {action}",
                ("action",),
                action=self.action,
            )
        if self.action == "redact" and self.regex is None:
            raise _rule("uses action redact, which needs a 'regex' whose matches are masked", ("action",))
        if self.max_retries is not None and self.action != "retry":
            raise _rule(
                "sets 'max_retries' but its action is {action}, not retry",
                ("max_retries",),
                at_key=True,
                action=self.action,
            )
        if self.escalation is not None and self.action != "escalate":
            raise _rule(
                "sets 'escalation' but its action is {action}, not escalate",
                ("escalation",),
                at_key=True,
                action=self.action,
            )
        return self


# --- models, tools, identities, grants -----------------------------------------------------------------


class Prices(Base):
    """Prices of a model, for cost accounting and `max_cost` budgets."""

    input_per_1k: float = Field(ge=0, description="Price of 1,000 input tokens.")
    output_per_1k: float = Field(ge=0, description="Price of 1,000 output tokens.")


class LanguageModel(Base):
    """A language model. Keys never stand in the file: they come from an environment variable or a secret."""

    provider: Annotated[str, Field(pattern=NAME_PATTERN)] = Field(
        description="openai (any OpenAI-compatible endpoint: OpenAI, Ollama, vLLM, llama.cpp, LM Studio), "
        "anthropic, scripted (canned answers from a file, for tests and demos), or a plugin provider's name."
    )
    model: str | None = Field(
        None, min_length=1, description="Model name at the provider, e.g. gpt-4.1-mini."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Provider parameters passed through, e.g. temperature, max_tokens."
    )
    base_url: str | None = Field(
        None, min_length=1, description="Endpoint base URL, e.g. http://localhost:11434/v1."
    )
    api_key_env: str | None = Field(
        None, pattern=IDENT_PATTERN, description="Environment variable holding the key."
    )
    api_key_secret: Ident | None = Field(None, description="Name of a declared secret holding the key.")
    responses: str | None = Field(
        None, min_length=1, description="scripted provider: responses file, relative to the workflow file."
    )
    prices: Prices | None = Field(None, description="Prices per 1,000 tokens, for cost accounting.")
    timeout: Duration | None = Field(None, description="Timeout of one call.")

    @model_validator(mode="after")
    def _consistent(self) -> LanguageModel:
        if self.provider == "scripted" and self.responses is None:
            raise _rule(
                "uses the scripted provider, which needs 'responses' (a responses file)", ("provider",)
            )
        if self.provider in ("openai", "anthropic"):
            if self.responses is not None:
                raise _rule(
                    "sets 'responses', which only the scripted provider reads", ("responses",), at_key=True
                )
            if self.model is None:
                raise _rule(
                    "needs 'model' (the model's name at {provider})", ("provider",), provider=self.provider
                )
        if self.api_key_env is not None and self.api_key_secret is not None:
            raise _rule(
                "sets both 'api_key_env' and 'api_key_secret'; keep one", ("api_key_secret",), at_key=True
            )
        return self


class HttpTool(Base):
    """An HTTP request. `url`, `headers`, `query`, `json` and `body` may use ${{ args.X }} and ${{ secrets.X }}."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = Field(
        "POST", description="HTTP method."
    )
    url: Value = Field(description="URL, e.g. https://billing.example/refunds/${{ args.id }}.")
    headers: dict[str, Value] = Field(default_factory=dict, description="Request headers.")
    query: dict[str, Value] = Field(default_factory=dict, description="Query parameters.")
    json_: Value | None = Field(
        None, alias="json", description="JSON body (default for POST/PUT/PATCH: the args)."
    )
    body: Value | None = Field(None, description="Raw text body.")
    timeout: Duration | None = Field(None, description="Request timeout.")

    @model_validator(mode="after")
    def _one_body(self) -> HttpTool:
        if self.json_ is not None and self.body is not None:
            raise _rule("sets both 'json' and 'body'; keep one", ("body",), at_key=True)
        return self


class McpTool(Base):
    """A tool served by an MCP server, started over stdio (`command`) or reached over HTTP (`url`)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["command"]}, {"required": ["url"]}]})

    command: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, description="Server command and arguments (stdio), e.g. [docs-server, --stdio]."
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+\S*$",
        description="Streamable-HTTP endpoint of the server, e.g. http://127.0.0.1:8000/mcp.",
    )
    tool: str | None = Field(
        None, min_length=1, description="Tool name on the server (default: this tool's name)."
    )
    env: dict[str, Value] = Field(default_factory=dict, description="Environment of a stdio server.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpTool:
        _exactly_one(self, ("command", "url"))
        return self


class Tool(Base):
    """A tool that steps and agents call. Exactly one of `python`, `http`, `mcp`, `workflow`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": [k]} for k in ("python", "http", "mcp", "workflow")]}
    )

    description: str | None = Field(None, description="What the tool does; models read it.")
    python: str | None = Field(
        None,
        pattern=PYTHON_TARGET_PATTERN,
        description="Python callable 'module:function'; imported at run time only from allowed modules.",
    )
    http: HttpTool | None = Field(None, description="An HTTP request.")
    mcp: McpTool | None = Field(None, description="A tool of an MCP server.")
    workflow: str | None = Field(
        None,
        min_length=1,
        description="Another workflow file (relative path) run as a tool; its input is the args.",
    )
    args: JsonSchema | None = Field(
        None, description="JSON Schema of the arguments (python tools default to their type hints)."
    )
    effect: Literal["read", "write"] = Field(
        description="read: no side effects; write: changes something (replay, retries and guardrails take care)."
    )
    action: str | None = Field(
        None, min_length=1, description="Action name for grants (default: the effect)."
    )
    resource: Value | None = Field(
        None,
        description="Resource a call touches, for grants' resource patterns, e.g. 'invoice/${{ args.id }}'.",
    )
    timeout: Duration | None = Field(None, description="Timeout of one call.")
    guardrails: list[Guardrail] = Field(default_factory=list, description="Rules for the calls of this tool.")

    @model_validator(mode="after")
    def _one_kind(self) -> Tool:
        _exactly_one(self, ("python", "http", "mcp", "workflow"))
        for i, rule in enumerate(self.guardrails):
            if rule.on is not None and not rule.on.startswith("tool."):
                raise _rule(
                    "has guardrail '{id}' on {hook}; a tool's own rules hook tool.select, tool.input or "
                    "tool.output (put other hooks at workflow or step level)",
                    ("guardrails", i, "on"),
                    id=rule.id,
                    hook=rule.on,
                )
        return self


class Identity(Base):
    """Who acts: an agent, a user or a service. Identities hold grants; everything else is denied."""

    kind: Literal["agent", "user", "service"] = Field(description="agent, user or service.")
    roles: list[Name] = Field(default_factory=list, description="Roles, matched by grants to `role:NAME`.")
    description: str | None = Field(None, description="Who this is.")


class Grant(Base):
    """Permission for an identity or role to call tools. Default deny; deny grants override allows."""

    id: Name = Field(description="Unique id; authorization events name the grant that decided.")
    to: PrincipalRef = Field(
        description="An identity name, or `role:NAME` for every identity with that role."
    )
    tools: list[ToolGlob] = Field(min_length=1, description="Tool names or globs, e.g. [lookup_*].")
    actions: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, description="Actions covered (a tool's action defaults to its effect); default all."
    )
    resources: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, description="Resource glob patterns covered, e.g. ['invoice/*']; default all."
    )
    when: CelExpr | None = Field(None, description="CEL condition over args, principal, run, tool.")
    effect: Literal["allow", "deny"] = Field("allow", description="allow, or deny (overrides allows).")
    description: str | None = Field(None, description="Why this permission exists.")


# --- steps ---------------------------------------------------------------------------------------------


class Backoff(Base):
    """Exponential backoff between attempts."""

    initial: Duration = Field("1s", description="Delay before the second attempt.")
    max: Duration = Field("1m", description="Longest delay.")
    multiplier: float = Field(2.0, ge=1, description="Factor applied to the delay after each attempt.")


class Retry(Base):
    """Run a failed step again."""

    attempts: int = Field(ge=1, le=100, description="Total attempts, including the first.")
    backoff: Backoff = Field(default_factory=Backoff, description="Delays between attempts.")
    jitter: bool = Field(True, description="Randomize delays (full jitter) so retries do not align.")
    on: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="Error kinds or codes to retry (default all): timeout, tool, model, http, guardrail, or a "
        "`fail` step's code.",
    )


class StepBase(Base):
    """Fields every step has."""

    id: Ident = Field(description="Unique step id; later steps read `steps.<id>.output`.")
    name: str | None = Field(None, description="Human-readable name.")
    description: str | None = Field(None, description="What the step is for.")
    if_: CelExpr | None = Field(
        None, alias="if", description="CEL condition; the step is skipped when false."
    )
    retry: Retry | None = Field(None, description="Retry policy on failure.")
    timeout: Duration | None = Field(None, description="Time limit of the step (each attempt).")
    output: Value | None = Field(
        None,
        description="The step's output instead of its natural result, which is available here as `result`.",
    )
    guardrails: list[Guardrail] = Field(
        default_factory=list, description="Rules for this step and its children."
    )


class AgentSpec(Base):
    """A tool-calling loop under an identity, with bounded turns and optional structured output."""

    identity: Name | None = Field(
        None, description="Identity the agent acts as; its grants decide tool calls."
    )
    on_behalf_of: Value | None = Field(
        None,
        description="Principal the agent acts for (identity name, or e.g. ${{ run.principal }}); the agent then "
        "holds only what both may do.",
    )
    model: Name = Field("default", description="Name of a model in `models`.")
    instructions: Prompt | None = Field(None, description="System instructions (Jinja2 over `vars`).")
    prompt: Prompt = Field(description="The task (Jinja2 over `vars`).")
    vars: dict[Ident, Value] = Field(
        default_factory=dict, description="Variables of the templates, computed with ${{ }} before rendering."
    )
    tools: list[ToolName] = Field(
        default_factory=list, description="Tools the agent may choose from (and no others)."
    )
    max_turns: int = Field(10, ge=1, le=1000, description="Most model turns before the step fails.")
    output_schema: JsonSchema | None = Field(
        None, description="JSON Schema of the final answer; it is parsed as JSON and validated."
    )
    max_retries: int = Field(
        2, ge=0, le=20, description="Re-asks when the answer does not fit output_schema."
    )

    @model_validator(mode="after")
    def _identity_for_tools(self) -> AgentSpec:
        if self.tools and self.identity is None:
            raise _rule(
                "lists tools, so it needs an 'identity' whose grants allow them", ("tools",), at_key=True
            )
        return self


class LlmSpec(Base):
    """One model call, optionally with structured output."""

    model: Name = Field("default", description="Name of a model in `models`.")
    instructions: Prompt | None = Field(None, description="System instructions (Jinja2 over `vars`).")
    prompt: Prompt = Field(description="The request (Jinja2 over `vars`).")
    vars: dict[Ident, Value] = Field(
        default_factory=dict, description="Template variables, computed with ${{ }}."
    )
    output_schema: JsonSchema | None = Field(None, description="JSON Schema of the answer (parsed as JSON).")
    max_retries: int = Field(
        2, ge=0, le=20, description="Re-asks when the answer does not fit output_schema."
    )


class AgentStep(StepBase):
    """Run an agent. Output: its final answer (text, or the object matching output_schema)."""

    agent: AgentSpec = Field(description="The agent.")


class LlmStep(StepBase):
    """Call a model once. Output: its answer (text, or the object matching output_schema)."""

    llm: LlmSpec = Field(description="The model call.")


class ToolStep(StepBase):
    """Call a tool. Output: its result."""

    tool: ToolName = Field(description="Name of a tool in `tools`.")
    args: dict[str, Value] = Field(default_factory=dict, description="Arguments.")
    identity: Name | None = Field(
        None, description="Identity the call is authorized as (default: the workflow itself, trusted)."
    )


class Case(Base):
    """A route of a switch: `when` (CEL) or `default: true`, and the steps to run."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["when"]}, {"required": ["default"]}]}
    )

    when: CelExpr | None = Field(None, description="CEL condition; the first true case runs.")
    default: Literal[True] | None = Field(None, description="The route taken when no case matches (last).")
    steps: list[Step] = Field(description="Steps of this route.")

    @model_validator(mode="after")
    def _when_or_default(self) -> Case:
        if (self.when is None) == (self.default is None):
            found = "both" if self.when is not None else "neither"
            at: tuple[str, ...] = ("default",) if found == "both" else ()
            raise _rule(
                "must have either 'when' or 'default: true' (found {found})", at, at_key=True, found=found
            )
        return self


def _check_cases(cases: list[Case]) -> list[Case]:
    defaults = [i for i, c in enumerate(cases) if c.default]
    if len(defaults) > 1:  # at the second one: the first is taken as meant
        raise _rule("has {n} default cases; keep one", (defaults[1], "default"), at_key=True, n=len(defaults))
    if defaults and defaults[0] != len(cases) - 1:
        raise _rule(
            "has its default case at position {i}; put it last",
            (defaults[0], "default"),
            at_key=True,
            i=defaults[0],
        )
    return cases


class SwitchStep(StepBase):
    """Route by condition. Output: the output of the last step of the route taken (null when none)."""

    switch: Annotated[list[Case], AfterValidator(_check_cases)] = Field(
        min_length=1, description="Cases in order; the first whose `when` holds runs, else the default."
    )


def _branches_tag(value: Any) -> str:
    return "#map" if isinstance(value, dict) else "#list"


class ParallelSpec(Base):
    """Branches that run at the same time."""

    branches: Annotated[
        Annotated[list[list[Step]], Field(min_length=1), Tag("#list")]
        | Annotated[dict[Ident, list[Step]], Field(min_length=1), Tag("#map")],
        Discriminator(_branches_tag),
    ] = Field(description="A list of step lists, or a mapping from branch name to step list.")
    join: Literal["all", "any", "first-n"] = Field(
        "all", description="all: wait for every branch; any: the first to finish; first-n: the first `n`."
    )
    n: int | None = Field(None, ge=1, description="With join first-n: how many branches to wait for.")
    on_failure: Literal["fail", "continue"] = Field(
        "fail",
        description="fail: a failed branch fails the step (others are cancelled); continue: keep going.",
    )

    @model_validator(mode="after")
    def _n_with_first_n(self) -> ParallelSpec:
        if self.join == "first-n" and self.n is None:
            raise _rule("uses join first-n, which needs 'n'", ("join",))
        if self.join != "first-n" and self.n is not None:
            raise _rule("sets 'n', which only join first-n uses", ("n",), at_key=True)
        count = len(self.branches)
        if self.n is not None and self.n > count:
            raise _rule("waits for n={n} branches but has only {count}", ("n",), n=self.n, count=count)
        return self


class ParallelStep(StepBase):
    """Run branches concurrently. Output: the branches' outputs (a list, or a mapping by name)."""

    parallel: ParallelSpec = Field(description="The branches and how to join them.")


class ForEachSpec(Base):
    """Run steps for every item of a list."""

    in_: Value = Field(alias="in", description="The list, e.g. ${{ input.sources }}.")
    as_: Ident = Field("item", alias="as", description="Variable holding the current item.")
    index_as: Ident = Field("index", description="Variable holding the current 0-based index.")
    concurrency: int = Field(1, ge=1, le=1000, description="Items processed at the same time.")
    steps: list[Step] = Field(min_length=1, description="Steps run for each item.")


class ForEachStep(StepBase):
    """Fan out over a list. Output: the list of each item's last step output, in input order."""

    for_each: ForEachSpec = Field(description="The list and the steps.")


class LoopSpec(Base):
    """Repeat steps until a condition holds, at most max_iterations times."""

    steps: list[Step] = Field(
        min_length=1, description="Steps of one iteration; `index` is the iteration (0-based)."
    )
    until: CelExpr | None = Field(None, description="CEL condition checked after each iteration; true stops.")
    max_iterations: int = Field(ge=1, le=100_000, description="Upper bound on iterations.")


class LoopStep(StepBase):
    """Loop. Output: the last step output of the last iteration."""

    loop: LoopSpec = Field(description="The loop.")


class SetStep(StepBase):
    """Assign workflow variables (`vars.<name>`). Output: the assigned values."""

    set: dict[Ident, Value] = Field(min_length=1, description="Variable name -> value.")


class Catch(Base):
    """Steps that run when the try steps fail."""

    as_: Ident = Field("error", alias="as", description="Variable holding the error {code, message, step}.")
    steps: list[Step] = Field(description="Steps run on failure.")


class TrySpec(Base):
    """Steps whose failure is handled."""

    steps: list[Step] = Field(min_length=1, description="Steps to try.")
    catch: Catch = Field(description="What to do on failure.")


class TryStep(StepBase):
    """Handle failures. Output: the last output of the try steps, or of the catch steps after a failure."""

    try_: TrySpec = Field(alias="try", description="The steps and the handler.")


class FailSpec(Base):
    """Stop with an error."""

    message: Value = Field(description="Error message (may interpolate ${{ }}).")
    code: Ident = Field("failed", description="Error code, matched by retry `on` and visible to catch.")


class FailStep(StepBase):
    """Fail the run (or the enclosing try)."""

    fail: FailSpec = Field(description="The error.")


class ApprovalSpec(Base):
    """A durable human decision: the run waits (the process may exit) until `charter approve`."""

    message: Value = Field(description="What is asked (may interpolate ${{ }}).")
    approvers: list[PrincipalRef] = Field(
        default_factory=list, description="Identities or `role:NAME` allowed to decide; empty means anyone."
    )
    timeout: Duration | None = Field(None, description="How long to wait.")
    on_timeout: Literal["deny", "approve"] = Field(
        "deny", description="Decision taken when the timeout passes."
    )


class ApprovalStep(StepBase):
    """Wait for approval. Output: {approved, by, reason, at}; a denial fails the step with code `denied`."""

    approval: ApprovalSpec = Field(description="The request.")


class WorkflowCall(Base):
    """Another workflow, run as a child run linked to this one."""

    path: str = Field(min_length=1, description="Workflow file, relative to this file.")
    input: dict[str, Value] = Field(default_factory=dict, description="The child's input.")


class WorkflowStep(StepBase):
    """Run another workflow. Output: its output."""

    workflow: WorkflowCall = Field(description="The workflow and its input.")


class SequenceStep(StepBase):
    """A group of steps run in order (so that `if`, `retry`, `timeout` apply to all). Output: the last one's."""

    steps: list[Step] = Field(min_length=1, description="The steps.")


STEP_KINDS: dict[str, type[StepBase]] = {
    "agent": AgentStep,
    "llm": LlmStep,
    "tool": ToolStep,
    "switch": SwitchStep,
    "parallel": ParallelStep,
    "for_each": ForEachStep,
    "loop": LoopStep,
    "set": SetStep,
    "try": TryStep,
    "fail": FailStep,
    "approval": ApprovalStep,
    "workflow": WorkflowStep,
    "steps": SequenceStep,
}
STEP_TAGS = {f"#{kind}" for kind in STEP_KINDS}
UNION_TAGS = STEP_TAGS | {"#list", "#map"}


def step_kinds_present(value: Any) -> list[str]:
    """The step-kind keys present in a raw step mapping."""
    return [k for k in STEP_KINDS if k in value] if isinstance(value, dict) else []


def _step_tag(value: Any) -> str | None:
    # The kind is the key present. None (no kind, several, not a mapping) becomes a
    # `union_tag_not_found` error that dsl.validate turns into one clear CH105 diagnostic.
    if isinstance(value, BaseModel):
        return next(f"#{k}" for k, cls in STEP_KINDS.items() if isinstance(value, cls))
    kinds = step_kinds_present(value)
    return f"#{kinds[0]}" if len(kinds) == 1 else None


Step = Annotated[
    Union[tuple(Annotated[cls, Tag(f"#{kind}")] for kind, cls in STEP_KINDS.items())],  # noqa: UP007
    Discriminator(_step_tag),
]


class Workflow(Base):
    """A Charter workflow file."""

    model_config = ConfigDict(title="Charter workflow")

    charter: Literal["1.0"] = Field(description='Version of the Charter language: "1.0".')
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name of the workflow.")
    description: str | None = Field(None, description="What the workflow does.")
    input: JsonSchema | None = Field(
        None, description="JSON Schema of the run's input (`input` in expressions)."
    )
    output: dict[str, Value] = Field(
        default_factory=dict, description="The run's output: name -> value, e.g. ${{ steps.report.output }}."
    )
    vars: dict[Ident, Value] = Field(
        default_factory=dict,
        description="Workflow variables (`vars.<name>`), initial values; `set` changes them.",
    )
    timeout: Duration | None = Field(None, description="Time limit of the whole run.")
    models: dict[Name, LanguageModel] = Field(
        default_factory=dict, description="Models by name; agent and llm steps use `default` unless they say."
    )
    tools: dict[ToolName, Tool] = Field(default_factory=dict, description="Tools by name.")
    secrets: list[Ident] = Field(
        default_factory=list,
        description="Names of secrets (`secrets.<NAME>`); values come from the environment.",
    )
    identities: dict[Name, Identity] = Field(default_factory=dict, description="Identities by name.")
    grants: list[Grant] = Field(default_factory=list, description="Permissions of identities and roles.")
    guardrails: list[Guardrail] = Field(default_factory=list, description="Rules for the whole run.")
    steps: list[Step] = Field(min_length=1, description="The steps, run in order.")


# Models build their validators lazily (defer_build): one build of the whole tree on first use, instead of
# one per class at import (which cost ~0.4 s of every CLI start).


# --- walking expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExprSite:
    """One expression-bearing string: where it stands (YAML path), its kind, its text, and its owner."""

    path: tuple[str | int, ...]
    kind: ExprKind
    text: str
    owner: BaseModel
    field: str


def iter_expressions(node: BaseModel) -> Iterator[ExprSite]:
    """Every expression string in a model tree, in document order. For `value` fields every string leaf
    is yielded (the compiler decides which hold `${{ }}`)."""
    yield from _walk_model(node, ())


@functools.cache
def model_fields_by_key(cls: type[BaseModel]) -> dict[str, tuple[str, Any, tuple[Any, ...]]]:
    """YAML key -> (attribute name, resolved annotation, Annotated metadata) of a model's fields.

    With deferred building, pydantic leaves annotations that mention `Step` as ForwardRefs on the nested
    classes; resolve them here against this module so walkers see real types."""
    out: dict[str, tuple[str, Any, tuple[Any, ...]]] = {}
    for name, info in cls.model_fields.items():
        tp = info.annotation
        if isinstance(tp, typing.ForwardRef):
            tp = eval(tp.__forward_arg__, globals())  # noqa: S307 - our own annotation text, not input
        out[info.alias or name] = (name, tp, tuple(info.metadata))
    return out


def _walk_model(node: BaseModel, path: tuple[str | int, ...]) -> Iterator[ExprSite]:
    for key, (name, tp, metadata) in model_fields_by_key(type(node)).items():
        value = getattr(node, name)
        if value is None:
            continue
        # pydantic unwraps a field's top-level Annotated into its metadata; the marker may be there.
        marker = next((m for m in metadata if isinstance(m, ExprField)), None)
        if marker is not None:
            yield from _strings(value, marker.kind, (*path, key), node, key)
        else:
            yield from _walk(value, tp, (*path, key), node, key)


def _walk(
    value: Any, tp: Any, path: tuple[str | int, ...], owner: BaseModel, field: str
) -> Iterator[ExprSite]:
    origin = typing.get_origin(tp)
    if value is None:
        return
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        marker = next((m for m in meta if isinstance(m, ExprField)), None)
        if marker is not None:
            yield from _strings(value, marker.kind, path, owner, field)
        else:
            yield from _walk(value, base, path, owner, field)
    elif isinstance(value, BaseModel):
        yield from _walk_model(value, path)
    elif origin in (Union, UnionType):
        arm = next((a for a in typing.get_args(tp) if _accepts(a, value)), None)
        if arm is not None:
            yield from _walk(value, arm, path, owner, field)
    elif isinstance(value, list):
        item_tp = typing.get_args(tp)[0] if origin is list else Any
        for i, item in enumerate(value):
            yield from _walk(item, item_tp, (*path, i), owner, field)
    elif isinstance(value, dict):
        value_tp = typing.get_args(tp)[1] if origin is dict else Any
        for k, item in value.items():
            yield from _walk(item, value_tp, (*path, k), owner, field)


def _accepts(tp: Any, value: Any) -> bool:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    base = typing.get_origin(tp) or tp
    if tp is type(None):
        return value is None
    if base is Any or not isinstance(base, type):
        return True
    return isinstance(value, base)


def _strings(
    value: Any, kind: ExprKind, path: tuple[str | int, ...], owner: BaseModel, field: str
) -> Iterator[ExprSite]:
    if isinstance(value, str):
        yield ExprSite(path, kind, value, owner, field)
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _strings(item, kind, (*path, k), owner, field)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, kind, (*path, i), owner, field)
