"""Enforcement: one `RunGuard` per run joins the pure policy logic (authz.py, guardrails.py, redact.py)
to the event log. The engine creates it (`Execution.guard`); step runners and the agent loop call it.

What it adds to the pure layer:
- the run's principal, built only from `--as`/`--claims` (or the host's API) and, in a child run, the
  parent's actor chain, which the child can only narrow;
- an `authz.decided` event for every decision and a `guardrail.evaluated` event for every trip or error;
- the guardrail levels of a call: workflow rules, then the rules of every enclosing step, then the
  tool's own rules, each level with its budget (run, step execution, tool) that lives as long as the run;
  a call is counted in them when its check passes, before it is made (`check`), so that concurrent
  calls cannot all pass one limit and a call counts whatever its outcome (spec §11.4);
- escalations: a verdict `escalate` raises `EscalationRequired`; the engine turns it into a durable
  approval request at the step's node path (the n-th of one step execution at `<path>/escalation[n]`,
  see `EscalationKeys`); once decided, the same check of the same call in the same attempts of the
  steps around it passes (approved) or denies; a new attempt of a retried step around it asks again;
- step errors with the codes of spec Appendix A: `guardrail` (a rule, an escalation denied, a budget),
  `unauthorized` (the grants);
- masking: declared secrets never reach the log in clear (`mask`).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from interpreter import store as s
from interpreter.authz import (
    DEFAULT_DENY,
    Actor,
    ActorChain,
    Authorizer,
    AuthzError,
    Decision,
    Principal,
)
from interpreter.guardrails import (
    PAYLOAD_OF,
    Budget,
    GuardrailEvent,
    GuardrailSet,
    RetryLedger,
    Verdict,
    View,
)
from interpreter.records import build_records, request_expired
from interpreter.redact import MASK, compile_pattern, mask_everywhere
from interpreter.runtime import OUTER_ATTEMPTS, StepError, kind_of
from interpreter.spending import charge, ended, finished_around, model_usage, spent, within
from interpreter.timing import Segment, began_at, execution_time, segments

Emit = Callable[[str, str, Any, dict[str, Any] | None], None]

# `RunGuard.chain_for` without `on_behalf_of`: the step delegates nothing (null is a value that does).
NOT_DELEGATED: Any = object()

# The chain a tool call runs under, for a child workflow started by that call (a workflow tool or step).
CURRENT_CHAIN: contextvars.ContextVar[ActorChain | None] = contextvars.ContextVar(
    "charter_chain", default=None
)


class EscalationRequired(Exception):  # noqa: N818 - a control-flow signal the engine handles
    """A guardrail escalated: the engine records a durable approval request at `key` and the run waits."""

    def __init__(
        self,
        verdict: Verdict,
        key: str,
        hook: str,
        *,
        requested: bool = False,
        fingerprint: str | None = None,
        attempts: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(verdict.message or "approval required")
        self.verdict = verdict
        self.key = key  # the node path the approval is requested at (`charter approve RUN KEY`)
        self.hook = hook
        self.requested = requested  # already pending in the log: just wait
        self.fingerprint = fingerprint  # which call is approved: the hook, the tool and its payload
        # ... in which attempts of the retried steps around it (and of its own step): `enclosing_attempts`
        self.attempts = dict(attempts or {})

    def request_payload(self) -> dict[str, Any]:
        esc = dict(self.verdict.escalation or {})
        payload: dict[str, Any] = {
            "message": esc.get("message") or self.verdict.message or "approval required",
            "approvers": list(esc.get("approvers") or []),
            "data": {
                "guardrail": esc.get("rule"),
                "hook": self.hook,
                "rules": list(self.verdict.rules),
                "fingerprint": self.fingerprint,
            },
        }
        if self.attempts:  # only in a retried attempt: a first attempt's request reads as it always did
            payload["data"]["attempts"] = dict(self.attempts)
        if esc.get("generation"):  # a rule inherited from the run that many levels up
            payload["data"]["declared_above"] = esc["generation"]
        timeout = esc.get("timeout_s")
        if timeout:
            at = datetime.now(UTC) + timedelta(seconds=float(timeout))
            payload["expires_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as every time in the log
        return payload


CREDENTIAL_CLAIMS = frozenset({"token", "access_token", "id_token", "refresh_token", "password", "secret",
                               "api_key", "authorization"})  # fmt: skip
# The same names as letters and digits only, and the endings that make a name a credential's, whatever
# its spelling: `AccessToken` (Cognito), `accessToken` (MSAL), `X-Auth-Token`, `client_secret`.
_CREDENTIAL_NAMES = frozenset({"authorization", "cookie", "setcookie", "credentials", "apikey", "passwd"})
_CREDENTIAL_ENDINGS = ("token", "secret", "password", "apikey", "privatekey")


def _credential(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    name = re.sub(r"[^a-z0-9]", "", key.lower())
    return key.lower() in CREDENTIAL_CLAIMS or name in _CREDENTIAL_NAMES or name.endswith(_CREDENTIAL_ENDINGS)


def claims_without_credentials(claims: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Claims as the run keeps them: a credential handed in with the claims (the principal's own token)
    is dropped, at any depth and in any spelling of its name, so it can reach neither the log, nor a
    condition, nor a tool. Tools get credentials for the identity that acts from `secrets`."""
    if claims is None:
        return None
    return _without_credentials(claims)


def _without_credentials(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_credentials(v) for k, v in value.items() if not _credential(k)}
    if isinstance(value, list):
        return [_without_credentials(v) for v in value]
    return value


def guardrail_error(message: str, *, details: Any = None) -> StepError:
    """The step error of a guardrail that denied (a rule, a denied or timed-out escalation, a budget):
    code `guardrail` (spec Appendix A), never retried."""
    return StepError(
        "guardrail", message, type="GuardrailDenied", category="guardrail", retryable=False, details=details
    )


def unauthorized_error(message: str, *, details: Any = None) -> StepError:
    """The step error of a call the grants deny (or an identity that may not act): code `unauthorized`."""
    return StepError(
        "unauthorized", message, type="Unauthorized", category="authz", retryable=False, details=details
    )


# The first contract named one error for both; a guardrail denial is what its callers raise with it
# (the engine's run.input gate), so it keeps that meaning.
policy_error = guardrail_error


def _halting(budgets: tuple[tuple[str, int], ...], rules: tuple[str, ...]) -> dict[str, Any]:
    """What a spent budget stops (spec §11.3, §13.13). A workflow-level budget halts its run: no catch
    inside it handles the error. A budget a child run inherited halts the child, and the runs up to the
    one that declared it (`halts_ancestors` of them): all of them if workflow-level there; if it was on
    a step, the run that declared it sees its step fail (as any step-level budget makes it fail)."""
    halts_run = any(level == "workflow" or generation > 0 for level, generation in budgets)
    ancestors = max((g if level == "workflow" else g - 1 for level, g in budgets), default=0)
    return {
        "rules": list(rules),
        "budget": True,
        "halts_run": halts_run,
        "halts_ancestors": max(ancestors, 0),
    }


class ToolRules(NamedTuple):
    """The rules a run above declared on one of its tools (`guardrails:` of the tool): they apply to
    the calls of that tool wherever they come from (spec §11), a child run's calls of a tool its file
    declares as the same tool (`tool_target`) included."""

    name: str
    target: tuple[Any, ...]  # `tool_target` of the declaration, in the declaring file
    rules: tuple[Any, ...]  # the compiled rules
    declared: View  # what the rules read of the declaring run: its principal, input, vars and run
    generation: int  # 1: the parent's; 2: the grandparent's...


class Inherited(NamedTuple):
    """What a child run inherits of its parent's guardrails (`RunGuard.rules_for_child`)."""

    rules: GuardrailSet
    step_ids: tuple[str, ...]
    secret_values: frozenset[str]  # masked in the child's log as in the parent's
    # What the parent's rules read of the parent: its principal as it knows it, its input, vars and run
    declared: View | None = None
    tool_rules: tuple[ToolRules, ...] = ()  # the rules of the tools of the runs above


class Outer(NamedTuple):
    """A run above this one, as a child run's calls must also satisfy it: its authorizer, the chain
    that started the child, and what its tool names mean (its declarations, and the folder its
    `workflow` paths are relative to), so that its grants are asked only about the tools they were
    written for."""

    authorizer: Authorizer
    chain: ActorChain
    tools: Mapping[str, Any]  # name -> dsl.model.Tool, as the parent's file declares them
    folder: Path | None  # the parent file's folder; None: not known (a graph compiled from stored text)
    # The parent run's principal, as its grants read it: a child file that declares an identity of the
    # principal's name (with roles, another kind) describes it for its own grants only.
    principal: Principal | None = None
    # The parent run's input, vars and run, as its grants' `when` read them (not the child's).
    declared: View | None = None


def tool_target(tool: Any, name: str, folder: Path | None) -> tuple[Any, ...]:
    """What a tool declaration names, for deciding whether two files mean the same tool by a name:
    its kind and target (a python ref; an http method and url; an mcp server and tool; a workflow
    file, resolved against `folder` when known) and what grants decide on (its action and its
    resource). Descriptions, schemas, timeouts and rules may differ: grants do not read them.

    What the call sends besides its arguments is part of the target too: an http request's headers,
    query and body (a child that sends `json: {amount: "${{ args.real }}"}` to the same url makes
    another request than the one whose arguments the parent's grant reads), an mcp server's `env`
    (its credentials)."""
    if tool.python is not None:
        target: tuple[Any, ...] = ("python", tool.python)
    elif tool.http is not None:
        http = tool.http
        target = ("http", http.method, _plain(http.url))
        sends = {"headers": http.headers or None, "query": http.query or None, "json": http.json_,
                 "body": http.body}  # fmt: skip
        target += tuple(f"{k}={_plain(v)}" for k, v in sends.items() if v is not None)
    elif tool.mcp is not None:
        server = tuple(tool.mcp.command) if tool.mcp.command is not None else tool.mcp.url
        target = ("mcp", server, tool.mcp.tool or name)
        if tool.mcp.env:
            target += (f"env={_plain(tool.mcp.env)}",)
    elif tool.workflow is not None:
        where = str((folder / tool.workflow).resolve()) if folder is not None else tool.workflow
        target = ("workflow", where)
    else:  # pragma: no cover - the schema requires one kind
        target = ("unknown",)
    return (*target, tool.action or tool.effect, _plain(tool.resource))


def _plain(value: Any) -> Any:
    """A declared value as comparable data (a template is compared as the text it was written as)."""
    from interpreter.hashing import NotCanonicalizable, canonical_json

    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return canonical_json(value)
    except NotCanonicalizable:
        return repr(value)


def _folder_of(graph: Any) -> Path | None:
    file = getattr(graph, "file", None)
    if not isinstance(file, str) or not file or file.startswith("<"):
        return None
    return Path(file).resolve().parent


class EscalationKeys:
    """Where the escalations of one step execution are asked (`charter approve RUN KEY`).

    The log keeps one pending request per node path, and an agent step can escalate many times (a
    tool step up to three: tool.select, tool.input, tool.output). So the first escalation of an
    execution is asked at the step's node path and the n-th at `<path>/escalation[n]`: each keeps its
    own request and decision, and a resumed or replayed execution, which meets them in the same order,
    finds each one where it was asked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.settled = 0

    def next(self) -> str:
        return self.path if self.settled == 0 else f"{self.path}/escalation[{self.settled + 1}]"

    def seen(self, verdict: Verdict) -> None:
        if verdict.escalation is not None and verdict.action != "escalate":  # decided: the next is new
            self.settled += 1


# --- serialising chains (a child run records its parent's chain to rebuild it on resume) -----------------


def chain_to_json(chain: ActorChain) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for party in chain.links:
        kind = "principal" if isinstance(party, Principal) else "actor"
        out.append({"type": kind, "id": party.id, "kind": party.kind, "roles": list(party.roles)})
    return out


def chain_from_json(data: Any, claims: Mapping[str, Any] | None) -> ActorChain | None:
    if not isinstance(data, list):
        return None
    links: list[Principal | Actor] = []
    for item in data:
        if not isinstance(item, dict):
            return None
        roles = tuple(item.get("roles") or ())
        if item.get("type") == "principal":
            links.append(Principal(str(item["id"]), roles, dict(claims or {}), str(item.get("kind", "user"))))
        else:
            links.append(Actor(str(item["id"]), str(item.get("kind", "agent")), roles))
    return ActorChain(tuple(links))


# --- the guard -----------------------------------------------------------------------------------------


class RunGuard:
    """Authorization, guardrails, budgets and masking of one run (see the module docstring)."""

    def __init__(
        self,
        graph: Any,
        *,
        principal: str,
        claims: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        emit: Emit | None = None,
        state: Callable[[], Mapping[str, Any]] | None = None,
        parent_chain: ActorChain | None = None,
        approvals: Mapping[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] | None = None,
        outer: tuple[Outer, ...] = (),
        inherited: Inherited | None = None,
    ) -> None:
        self.graph = graph
        from interpreter.runtime import RunSetupError

        self.authorizer = Authorizer.from_graph(graph)
        try:
            self.principal = self.authorizer.principal(principal, claims_without_credentials(claims))
        except AuthzError as exc:
            raise RunSetupError(f"principal '{principal}': {exc}") from None
        declared = graph.workflow.identities.get(self.principal.id)
        if declared is not None and declared.kind == "agent":
            # A principal is whom the run acts for; an agent acts in agent steps, for a principal. A
            # principal named after an agent would hold that agent's grants by name but not its roles:
            # neither the one nor the other, so the run does not start (spec §10.3).
            raise RunSetupError(
                f"principal '{principal}' is the name of an agent identity of workflow "
                f"'{graph.workflow.name}': a run acts for a person or a service (--as NAME), and an "
                "agent acts for it in an agent step, never as its principal"
            )
        self.workflow_actor = Actor(graph.workflow.name, "workflow")
        # The workflow itself acts when a tool step names no identity; in a child run it acts within
        # the parent's chain (so it can only narrow what the parent's caller held).
        self.base_chain = parent_chain if parent_chain is not None else ActorChain(())
        self.parent_chain = parent_chain
        # The parent runs' authorizers with the chain that started this run: every call here must also
        # be allowed there, so a child file cannot widen its caller's scope by granting itself more.
        self.outer = outer
        self._emit = emit
        self.pending: list[tuple[str, str, Any, dict[str, Any] | None]] = []  # before the sink exists
        self.state = state or (lambda: {})
        # A child run masks its parent's secrets too: a value the parent holds never reaches the log.
        self.secret_values = frozenset(v for v in (secrets or {}).values() if isinstance(v, str) and v) | (
            inherited.secret_values if inherited is not None else frozenset()
        )
        self._secret_regex = self._secrets_pattern(self.secret_values)
        self.run_budget = Budget()
        # A child run: the rules (and budgets, shared) of its parent's workflow and of the steps around
        # the call come first; this workflow's rules add to them, never replace them (spec §13.13).
        self._inherited_ids = inherited.step_ids if inherited is not None else ()
        self._inherited_tool_rules = inherited.tool_rules if inherited is not None else ()
        self._workflow = (
            inherited.rules.for_child(inherited.declared).extend(
                graph.guardrails, level="workflow", budget=self.run_budget
            )
            if inherited is not None
            else GuardrailSet(graph.guardrails, level="workflow", budget=self.run_budget)
        )
        self._tool_budgets: dict[str, Budget] = {}
        self._step_budgets: dict[str, Budget] = {}  # by step execution (`_execution`)
        # by node path, tool and the attempts of the retried steps around it (`OUTER_ATTEMPTS`)
        self._sets: dict[tuple[str, str | None, Attempts], tuple[GuardrailSet, tuple[str, ...]]] = {}
        # The last tool call counted at its check at each (node path, tool), with each budget's state
        # before it, so that a call that is not made after all can be taken back (`release_tool_call`).
        self._reserved: dict[tuple[str, str], tuple[tuple[Budget, ...], list[Any]]] = {}
        self._attempts_now: Attempts = ()  # restored: the attempts the continued run is in
        self._continued: Mapping[str, Any] | None = None  # restored: the records it continues from
        # A workflow without a single rule at any level (the common case) skips rule lookup entirely.
        self._has_rules = bool(
            self._workflow.rules
            or any(getattr(node, "guardrails", ()) for node in graph.nodes())
            or any(getattr(t, "guardrails", ()) for t in (graph.tools or {}).values())
            or self._inherited_tool_rules
        )
        self.history: list[dict[str, Any]] = []
        self.approvals = dict(approvals or {})  # key -> (requested payload, decided payload)

    # -- wiring

    @staticmethod
    def _secrets_pattern(values: frozenset[str]) -> Any:
        import re2

        literals = sorted(secret_forms(values), key=len, reverse=True)
        return compile_pattern("|".join(re2.escape(v) for v in literals)) if literals else None

    def attach(self, emit: Emit) -> None:
        """Write events through `emit` from now on, starting with those held before the run existed."""
        self._emit = emit
        held, self.pending = self.pending, []
        for kind, path, payload, actor in held:
            emit(kind, path, payload, actor)

    def decide(self, key: str, payload: dict[str, Any], actor: dict[str, Any]) -> Any:
        """Record a decision on a pending escalation; the engine replaces this with one that yields
        to a decision someone made meanwhile (`Execution.decide`)."""
        self._write(s.APPROVAL_DECIDED, key, payload, actor)
        return payload

    def _write(self, kind: str, path: str, payload: Any, actor: dict[str, Any] | None) -> None:
        payload = self.mask(payload)
        if self._emit is None:
            self.pending.append((kind, path, payload, actor))
        else:
            self._emit(kind, path, payload, actor)

    def outer_for_child(self, chain: ActorChain) -> tuple[Outer, ...]:
        """What a child run started under `chain` must also satisfy."""
        tools = self.graph.workflow.tools or {}
        outer = Outer(self.authorizer, chain, tools, _folder_of(self.graph), self.principal, self.declared)
        return (*self.outer, outer)

    def declared(self) -> dict[str, Any]:
        """What this run's rules and grants read of it where a child run evaluates them: its principal
        as this run knows it, and its own input, vars and run now."""
        return {**self.state(), "principal": self.principal.to_binding()}

    def rules_for_child(self, node_path: str) -> Inherited:
        """The rules a child run started at `node_path` inherits: this run's workflow-level rules and
        those of the steps around the call, with their budgets (the child's calls count in them)."""
        rules, step_ids = self._set_for(node_path, None)
        folder, declared = _folder_of(self.graph), self.graph.workflow.tools or {}
        own = tuple(
            ToolRules(
                name, tool_target(declared[name], name, folder), tuple(compiled.guardrails), self.declared, 1
            )
            for name, compiled in (self.graph.tools or {}).items()
            if compiled.guardrails and name in declared
        )
        above = tuple(r._replace(generation=r.generation + 1) for r in self._inherited_tool_rules)
        return Inherited(rules, step_ids, self.secret_values, self.declared, own + above)

    def run_actor(self) -> dict[str, Any]:
        """The event `actor` of the run's own transitions: the principal (within a parent's chain)."""
        claim = self.base_chain.to_act_claim() if self.base_chain.links else None
        return claim or {"sub": self.principal.sub}

    # -- identities

    def chain_for(
        self,
        identity: str | None,
        on_behalf_of: Any = NOT_DELEGATED,
        parent: ActorChain | None = None,
        *,
        where: str = "on_behalf_of",
    ) -> ActorChain:
        """The chain a call runs under. No identity: the workflow itself (within a parent run's chain).
        `parent` (a sub-agent's caller) or the run's parent chain can only be narrowed by appending.
        `on_behalf_of` (leave it out when the step has none) is the value the step's field evaluated
        to: it must name the run's principal or a declared identity, never anyone else, and a value that
        names nobody fails the step rather than let the agent act on its own grants (fail closed).
        `where` names the field in errors (e.g. "agent step 's': on_behalf_of")."""
        if identity is None:
            return parent if parent is not None else self.base_chain
        try:
            actor = self.authorizer.actor(identity)
        except AuthzError as exc:
            raise unauthorized_error(str(exc)) from None
        if parent is not None:
            return parent.delegate(actor)
        if on_behalf_of is None:
            # Set, but null (e.g. `${{ input.user }}` without a user): the step said the agent acts for
            # someone and named nobody. Acting on the agent's own grants instead would widen it.
            raise unauthorized_error(
                f"{where} evaluated to null: it names no principal, and the agent acts for someone "
                "only when that someone is named"
            )
        if on_behalf_of is not NOT_DELEGATED and not isinstance(on_behalf_of, str):
            raise StepError(
                "expression",
                f"{where} must evaluate to an identity name (a string), not {kind_of(on_behalf_of)}",
                type="ExpressionError",
                retryable=False,
            )
        base = self.base_chain
        if isinstance(on_behalf_of, str):
            if on_behalf_of in (self.principal.id, self.principal.sub):
                # The principal joins the chain unless it is in it already (a parent that acted on its
                # behalf). A parent chain without it (a parent agent acting for nobody) keeps every link
                # and gains the principal as the subject: delegation only ever narrows (spec §10.3), so
                # dropping it would check the call against fewer parties than the step names.
                if not any(isinstance(p, Principal) and p.id == self.principal.id for p in base.links):
                    base = ActorChain((self.principal, *base.links))
            elif on_behalf_of in self.graph.workflow.identities:
                base = base.delegate(self.authorizer.actor(on_behalf_of))
            else:
                raise unauthorized_error(
                    f"{where} '{on_behalf_of}' is neither the run's principal "
                    f"('{self.principal.id}') nor a declared identity"
                )
        return base.delegate(actor)

    # -- authorization

    def authorize_tool(
        self,
        chain: ActorChain,
        tool: str,
        args: dict[str, Any],
        node_path: str,
        *,
        bindings: Mapping[str, Any],
    ) -> Decision:
        """Decide one call and write `authz.decided` (always, allowed or not)."""
        spec = self.graph.workflow.tools.get(tool)
        action = (spec.action or spec.effect) if spec is not None else None
        resource, resource_error = self._resource(tool, args, bindings)
        cel_bindings = {k: bindings.get(k) for k in ("input", "vars", "run")}
        # `principal` in a grant's `when` is the run's principal, as in guardrails (spec §11.1, §15),
        # whether or not the chain acts on its behalf.
        run_principal = self.principal
        decision = self.authorizer.decide(
            chain, tool, action, resource, args, cel_bindings, run_principal, resource_error
        )
        for outer in self.outer if decision.allowed and spec is not None else ():
            if not outer.chain.links:  # the parent workflow itself started this run: it trusts it
                continue
            # The parent's grants were written for the parent's tools: they decide about a call here
            # only if this name means the same tool there, else a child file could rebind a granted
            # name (`echo`) to other code and run it under the parent's grant (spec §13.13).
            upstream = self._same_tool(outer, tool, spec)
            asked = _credential_chain(outer, chain, tool, spec) if upstream is None else outer.chain
            if isinstance(asked, Decision):
                upstream = asked
            if upstream is None:
                above = outer.declared() if outer.declared is not None else {}
                upstream = outer.authorizer.decide(
                    asked,
                    tool,
                    action,
                    resource,
                    args,
                    {k: above.get(k) for k in ("input", "vars", "run")},
                    outer.principal or run_principal,
                    resource_error,
                )
            if not upstream.allowed:
                decision = Decision(
                    False, upstream.grant, f"the parent run's chain may not: {upstream.reason}",
                    decision.args_digest, tool, action, resource, chain, decision.grants_by_party,
                )  # fmt: skip
                break
        if spec is None:
            decision = Decision(False, DEFAULT_DENY, f"unknown tool '{tool}'", decision.args_digest, tool,
                                action, resource, chain)  # fmt: skip
        payload = decision.to_event_payload()
        if not chain.links:
            payload["principal"] = self.principal.id
            payload["actor_chain"] = [self.principal.sub, self.workflow_actor.sub]
        elif payload["principal"] is None:
            payload["run_principal"] = self.principal.id
        self._write(s.AUTHZ_DECIDED, node_path, payload, self.actor_of(chain))
        return decision

    def _same_tool(self, outer: Outer, tool: str, spec: Any) -> Decision | None:
        """None when `tool` means the same tool in the parent run as here; else the parent's denial."""
        theirs = outer.tools.get(tool)
        if theirs is None:
            why = f"its workflow declares no tool '{tool}', so none of its grants was written for this one"
        else:
            ours_target = tool_target(spec, tool, _folder_of(self.graph))
            their_target = tool_target(theirs, tool, outer.folder)
            if ours_target == their_target:
                return None
            why = (
                f"its workflow's tool '{tool}' is {_describe_target(their_target)}, this run's is "
                f"{_describe_target(ours_target)}: its grants for that name do not cover another tool"
            )
        return Decision(False, DEFAULT_DENY, why, "", tool, None, None, outer.chain)

    def actor_of(self, chain: ActorChain) -> dict[str, Any]:
        """The event `actor` of what `chain` does (an authorization, a tool call): the chain as a nested
        `act` claim; the workflow acting for the principal when the chain has no links."""
        if not chain.links:
            return {"sub": self.principal.sub, "act": {"sub": self.workflow_actor.sub}}
        return chain.to_act_claim() or {"sub": self.principal.sub}

    def _resource(self, tool: str, args: Any, bindings: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The call's resource, and why it has none although its tool declares one (else None): then
        grants that list resources fail closed (no allow grant matches, every deny grant does)."""
        compiled = (self.graph.tools or {}).get(tool)
        value = compiled.values.get("resource") if compiled is not None else None
        if value is None:
            return None, None
        try:
            from dsl.expr import from_cel

            out = value.evaluate({**bindings, "args": args}) if not value.constant else value.evaluate({})
            out = from_cel(out)
        except Exception as exc:  # noqa: BLE001 - no resource: fail closed
            return None, f"the tool's resource does not evaluate ({type(exc).__name__})"
        if not isinstance(out, str):
            return None, f"the tool's resource is {kind_of(out)}, not a string"
        return out, None

    # -- guardrails

    def check(
        self,
        hook: str,
        context: dict[str, Any],
        node_path: str,
        *,
        node: Any = None,
        tool: str | None = None,
        ledger: RetryLedger | None = None,
        keys: EscalationKeys | None = None,
        occurrence: str | None = None,
    ) -> Verdict:
        """Evaluate every rule of every level at `hook`; write its events; settle escalations.

        Raises `EscalationRequired` for `escalate` (unless the approval at the key was granted: then the
        verdict is allow; a denied or expired approval gives `deny`; either keeps `.escalation`). The key
        is `keys.next()` (the step execution's next escalation), else `node_path`. `occurrence` names
        the call within the execution (an agent's model call and tool call index): an approval covers
        that call only, not a later identical one. A spent budget raises the `guardrail` step error."""
        if tool is None:
            tool = context.get("tool") if isinstance(context.get("tool"), str) else None
        if not self._has_rules:
            payload = context["payload"] if "payload" in context else context.get(PAYLOAD_OF.get(hook, ""))
            self._count(hook, node_path, tool, context.get("args"), self._workflow)
            return Verdict("allow", value=payload)
        rules, step_ids = self._set_for(node_path, tool)
        if not rules.rules:  # nothing to evaluate at this place
            payload = context["payload"] if "payload" in context else context.get(PAYLOAD_OF.get(hook, ""))
            self._count(hook, node_path, tool, context.get("args"), rules)
            return Verdict("allow", value=payload)
        full = {**self.state(), "principal": self.principal.to_binding(), "history": self.history}
        full.update(context)
        if tool is not None:
            full.setdefault("tool", tool)
        verdict = rules.evaluate(hook, full, step_ids=step_ids, ledger=ledger)
        final = verdict
        try:
            if verdict.action == "escalate":
                key = keys.next() if keys is not None else node_path
                final = self._settle_escalation(
                    verdict, key, hook, _fingerprint(hook, tool, context, occurrence), enclosing_attempts()
                )
                if keys is not None:
                    keys.seen(final)
        finally:  # the trips are logged before the approval request they cause
            for event in verdict.events:
                self._write(s.GUARDRAIL_EVALUATED, node_path, self._event_payload(event, final), None)
        if final.action == "deny" and final.budgets:
            # A spent budget does not come back: the step stops here (a model told "no" would only
            # ask again until its turns run out), with the budget as the reason.
            raise guardrail_error(
                final.message or "budget exceeded", details=_halting(final.budgets, final.rules)
            )
        if final.allowed:  # the call goes ahead: counted now, before any other check can pass
            args = final.value if hook == "tool.input" and final.redacted else context.get("args")
            self._count(hook, node_path, tool, args, rules)
        return final

    def _count(self, hook: str, node_path: str, tool: str | None, args: Any, rules: GuardrailSet) -> None:
        """Count the call whose check just passed at `hook` in every budget of its levels. It happens in
        the same synchronous step as the check (no await between them), so calls that start together
        (for_each, parallel branches, agents side by side) each see the ones before: with a limit of N,
        the call N + 1 is refused (spec §11.4). A tool call is counted whatever its outcome: made, it may
        have acted. Tokens and cost follow the answer (`record_model_call`)."""
        if hook == "tool.input" and tool is not None:
            budgets = rules.budgets
            before = [b.tool_call_state() for b in budgets]
            rules.record_tool_call(tool, args)
            self._reserved[(node_path, tool)] = (budgets, before)
        elif hook == "model.input":
            rules.record_model_call(0, 0, 0.0)

    def release_tool_call(self, node_path: str, tool: str) -> None:
        """Take back the count of the call last checked at `node_path` for `tool`: it was refused
        before it was made (its arguments hold a masked secret, `tool_calls.logged_call`)."""
        reserved = self._reserved.pop((node_path, tool), None)
        if reserved is not None:
            for budget, before in zip(*reserved, strict=True):
                budget.undo_tool_call(tool, before)

    def mask_tool_args(self, node_path: str, tool: str, args: Any) -> Any:
        """`args` with the `tool.input` redact rules for `tool` applied, each masking rule an event: the
        arguments inside a model's answer are logged (`model.completed`) before the call reaches its
        `tool.input` hook, and must not reach the log in clear."""
        return self._mask_only("tool.input", node_path, tool, args)

    def mask_tool_error(self, node_path: str, tool: str, err: StepError) -> None:
        """A failed call's message may quote what the tool read: the `tool.output` redact rules mask it
        (in place) before it is logged or shown to a model, as they would have masked the result. So
        are the run's secrets: the message names an http request's url (a key in its query), and an
        agent passes the message on to its model, a third party the log's masking does not cover."""
        err.message = self.mask(self._mask_only("tool.output", node_path, tool, err.message))

    def _mask_only(self, hook: str, node_path: str, tool: str, value: Any) -> Any:
        if not self._has_rules:
            return value
        rules, step_ids = self._set_for(node_path, tool)
        masked, events = rules.mask_only(hook, value, tool=tool, step_ids=step_ids)
        for event in events:
            payload = event.to_event_payload()
            payload["verdict"] = "redact"
            self._write(s.GUARDRAIL_EVALUATED, node_path, payload, None)
        return masked

    @staticmethod
    def _event_payload(event: GuardrailEvent, verdict: Verdict) -> dict[str, Any]:
        payload = event.to_event_payload()
        payload["verdict"] = verdict.action
        return payload

    def _settle_escalation(
        self, verdict: Verdict, key: str, hook: str, fingerprint: str, attempts: Mapping[str, int]
    ) -> Verdict:
        """The verdict once the escalation at `key` is settled: approved (allow), denied or timed out
        (deny), or still to be asked (EscalationRequired). The decision at `key` settles this check only
        when it was asked for this call (`fingerprint`) in these `attempts` (spec §11.3: an approval
        covers the one call it was asked for, and a call in a new attempt of a retried step is a new
        call, §8, §12.4)."""
        requested, decided = self.approvals.get(key, (None, None))
        data = requested.get("data") if isinstance(requested, dict) else None
        if requested is None or (
            isinstance(data, dict)
            and (
                data.get("fingerprint") not in (None, fingerprint)
                or not _same_attempts(data.get("attempts"), attempts)
            )
        ):
            # nothing asked yet here, an approval of another call (an agent step makes several), or of
            # this call in an earlier attempt of a step around it: ask (again)
            raise EscalationRequired(verdict, key, hook, fingerprint=fingerprint, attempts=attempts)
        if decided is None:
            if request_expired(requested):
                decided = {"decision": "denied", "by": "system:timeout", "reason": "the approval timed out"}
                decided = self.decide(key, decided, {"sub": "system:timeout"})
                self.approvals[key] = (requested, decided)
            else:
                raise EscalationRequired(verdict, key, hook, requested=True)
        if decided.get("decision") == "approved":
            return Verdict("allow", verdict.rules, f"approved by {decided.get('by')}", verdict.value,
                           verdict.redacted, verdict.events, verdict.escalation, verdict.budgets)  # fmt: skip
        why = f": {decided['reason']}" if decided.get("reason") else ""
        return Verdict("deny", verdict.rules, f"escalation denied by {decided.get('by')}{why}", verdict.value,
                       verdict.redacted, verdict.events, verdict.escalation, verdict.budgets)  # fmt: skip

    def _set_for(self, node_path: str, tool: str | None) -> tuple[GuardrailSet, tuple[str, ...]]:
        attempts = OUTER_ATTEMPTS.get()  # a new attempt of a step around the call: a new execution
        key = (node_path, tool, attempts)
        cached = self._sets.get(key)
        if cached is not None:
            return cached
        rules = self._workflow
        ids: list[str] = list(self._inherited_ids)  # a parent rule's `steps:` names the parent's steps
        for runtime, node in self._ancestors(node_path):
            ids.append(node.id)
            own = getattr(node, "guardrails", ())
            if own:
                budget = self._step_budgets.setdefault(_execution(runtime, attempts), Budget())
                rules = rules.extend(own, level="step", budget=budget)
        compiled = (self.graph.tools or {}).get(tool) if tool else None
        if compiled is not None and compiled.guardrails:
            rules = rules.extend(
                compiled.guardrails, level="tool", budget=self._tool_budgets.setdefault(tool, Budget())
            )
        spec = (self.graph.workflow.tools or {}).get(tool) if tool else None
        above = [r for r in self._inherited_tool_rules if r.name == tool] if spec is not None else []
        if above:  # the rules a run above set on this tool, when this file declares the same tool
            target = tool_target(spec, tool, _folder_of(self.graph))
            for item in above:
                if item.target == target:
                    rules = rules.extend(
                        item.rules,
                        level="tool",
                        budget=self._tool_budgets.setdefault(tool, Budget()),
                        declared=item.declared,
                        generation=item.generation,
                    )
        self._sets[key] = (rules, tuple(ids))
        return self._sets[key]

    def _ancestors(self, node_path: str) -> list[tuple[str, Any]]:
        """(runtime path, node) of every step enclosing `node_path`, outermost first, itself included."""
        from interpreter.engine import static_path

        out: list[tuple[str, Any]] = []
        parts = node_path.split("/") if node_path else []
        for i in range(1, len(parts) + 1):
            runtime = "/".join(parts[:i])
            try:
                out.append((runtime, self.graph.node(static_path(runtime))))
            except KeyError:
                continue
        return out

    # -- budgets and history

    def record_tool_call(
        self, tool: str, args: dict[str, Any], *, node_path: str | None = None, result: Any = None
    ) -> None:
        """A tool call that returned (or failed, for an agent): into `history`. Its budgets counted it
        when its tool.input check passed (`_count`), before it was made."""
        if node_path is not None:
            self._reserved.pop((node_path, tool), None)
        if self._has_rules:  # only rules read it: a run without any keeps no copy of every result
            self.history.append({"kind": "tool", "tool": tool, "args": args, "result": result})

    def record_model_call(
        self, input_tokens: int, output_tokens: int, cost: float, *, node_path: str | None = None
    ) -> None:
        """The tokens and cost of a model call that answered, in the budgets its model.input check
        counted it in (the same levels: the same node path in the same attempts)."""
        use_step = node_path is not None and self._has_rules
        rules = self._set_for(node_path, None)[0] if use_step else self._workflow  # type: ignore[arg-type]
        rules.add_model_usage(input_tokens, output_tokens, cost)
        if self._has_rules:
            self.history.append(_model_call(input_tokens, output_tokens, cost))

    def restore(self, events: Any, records: Mapping[str, Any]) -> None:
        """A continued run's budgets and history start from what its log says was spent (`spending`):
        the run's, each tool's, and the own budget of each step execution with limits around the calls,
        except the calls the continued run will meet again and count then. Wall time is execution time
        (interpreter.timing): the run's since it started, a step's since its first event, neither
        counting the pauses."""
        events = list(events)
        spans = segments(events)
        self.run_budget.started -= execution_time(spans)
        enclosing = self._restore_step_budgets(events, spans) if self._has_rules else {}
        self._continued = records
        for event in spent(events, records):
            budgets = [self.run_budget, *enclosing.get(event.seq, ())]
            payload = event.payload if isinstance(event.payload, dict) else {}
            if event.kind == s.TOOL_CALLED:  # a tool's budget counts this run's calls, not a child run's
                tool, args = str(payload.get("tool")), payload.get("args")
                budgets.append(self._tool_budgets.setdefault(tool, Budget()))
                seen = {"kind": "tool", "tool": tool, "args": args, "result": None}
            else:
                seen = _model_call(*model_usage(payload)) if event.kind == s.MODEL_COMPLETED else None
            for budget in budgets:
                charge(budget, event)
            if seen is not None and self._has_rules:  # only rules read the history
                self.history.append(seen)

    def restore_child(self, events: Any, at: str) -> None:
        """What a run started at `at` (a child, or a run below it) spent, in this run's budget and in
        those of the step executions with limits around `at` (in the attempts `restore` found), as it
        counted live. Only a child this continued run continues meets calls again and counts them then:
        one that ended, or whose step will not run again (or any, in replay), spent all its log records."""
        events = list(events)
        around = [r for r, node in self._ancestors(at) if _has_limits(node)] if self._has_rules else []
        budgets = [
            self.run_budget,
            *(self._step_budgets.setdefault(_execution(r, self._attempts_now), Budget()) for r in around),
        ]
        parent = self._continued
        continued = parent is not None and not ended(events) and not finished_around(at, parent)
        for event in spent(events, build_records(events) if continued else None):
            for budget in budgets:
                charge(budget, event)

    def _restore_step_budgets(self, events: list[Any], spans: list[Segment]) -> dict[int, list[Budget]]:
        """The own budgets of the step executions with limits that enclose each logged event (by its
        seq; keyed as `_set_for` keys them, with the attempts of the retried steps around it as the
        log's `step.retrying` events give them), each one's clock set back by the execution time since
        the execution began: its earliest logged moment (an event with a duration began that long
        before its `ts`, which is when it was committed)."""
        enclosing: dict[int, list[Budget]] = {}
        owners: dict[str, list[str]] = {}  # node path -> runtime paths of the steps with limits around it
        attempts: dict[str, int] = {}  # runtime path -> its attempt now, past the first (OUTER_ATTEMPTS)
        began: dict[str, float] = {}
        for event in events:
            path = event.node_path
            if not path:
                continue
            if path not in owners:
                owners[path] = [runtime for runtime, node in self._ancestors(path) if _has_limits(node)]
            if owners[path]:
                now = tuple(attempts.items())
                keys = [_execution(runtime, now) for runtime in owners[path]]
                enclosing[event.seq] = [self._step_budgets.setdefault(k, Budget()) for k in keys]
                at = began_at(event)
                for k in keys:
                    began[k] = min(began.get(k, at), at)
            if event.kind == s.STEP_RETRYING:  # the next attempt: a new execution of it and what it holds
                attempts = {p: n for p, n in attempts.items() if not within(p, path)}
                payload = event.payload if isinstance(event.payload, dict) else {}
                attempts[path] = int(payload.get("attempt", 1)) + 1
        for key, at in began.items():
            self._step_budgets[key].started -= execution_time(spans, since=at)
        self._attempts_now = tuple(attempts.items())
        return enclosing

    def usage(self) -> dict[str, Any]:
        return self.run_budget.usage()

    # -- masking

    def mask(self, value: Any) -> Any:
        """`value` with every declared secret's text masked (applied to everything the log receives),
        in the keys of its objects too."""
        if self._secret_regex is None:
            return value
        return mask_everywhere(value, self._secret_regex, MASK)[0]


# --- the tool-step path (steps.run_tool; the agent loop uses the RunGuard methods directly) --------------


def secret_forms(values: frozenset[str]) -> set[str]:
    """Each secret value and the forms a URL gives it: an `http` tool percent-encodes what it puts after
    the host (`s3cr/et+key==` -> `s3cr%2Fet%2Bkey%3D%3D`), and that URL reaches error messages and the
    log. Both the strict encoding (`quote`, nothing safe) and the common ones (`/` kept; `quote_plus`,
    a space as `+`) are masked, in upper- and lower-case hex, since a server or a library may echo
    either."""
    from urllib.parse import quote, quote_plus

    forms: set[str] = set()
    for value in values:
        for encoded in (value, quote(value, safe=""), quote(value), quote_plus(value)):
            forms.add(encoded)
            forms.add(_lower_hex(encoded))
    return forms


def _lower_hex(text: str) -> str:
    """`text` with its percent-escapes in lower-case hex (`%2F` -> `%2f`); other characters unchanged."""
    import re

    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


_IDENTITY = re.compile(r"\bidentity\b")


def _reads_identity(tool: Any) -> bool:
    """Whether an http tool's request reads `identity` (to pick that identity's credentials)."""
    http = getattr(tool, "http", None)
    if http is None:
        return False
    sent = (http.url, http.headers or None, http.query or None, http.json_, http.body)
    return any(v is not None and _IDENTITY.search(str(_plain(v))) for v in sent)


def _credential_chain(outer: Outer, chain: ActorChain, tool: str, spec: Any) -> ActorChain | Decision:
    """The chain the parent's grants decide a call of this run under: the one that started this run,
    and, when an identity of this run calls an http tool that reads `identity`, that identity as the
    parent declares it: the tool picks the credentials the request carries by the caller's name (spec
    §8.2), and a child file names its identities as it likes (`billing`, to send BILLING_TOKEN). A name
    the parent does not declare is denied: none of its grants gives that identity's credentials."""
    acting = chain.actor
    own = isinstance(acting, Actor) and len(chain.links) > len(outer.chain.links)
    if not own or not _reads_identity(spec):
        return outer.chain
    assert isinstance(acting, Actor)
    try:
        return outer.chain.delegate(outer.authorizer.actor(acting.id))
    except AuthzError:
        why = (
            f"tool '{tool}' sends the credentials of the identity that calls it, and its workflow "
            f"declares no identity '{acting.id}': none of its grants gives that identity's credentials"
        )
        return Decision(False, DEFAULT_DENY, why, "", tool, None, None, outer.chain)


def _describe_target(target: tuple[Any, ...]) -> str:
    """`tool_target` as people read it: `python stools:echo (action read)`, `http POST https://x/r
    json={"amount":"${{ args.real }}"} (action write)`."""
    *what, action, resource = target
    text = " ".join(str(part) for part in what)
    return f"{text} (action {action}" + (f", resource {resource})" if resource is not None else ")")


def _model_call(input_tokens: int, output_tokens: int, cost: float) -> dict[str, Any]:
    """A model call as `history` shows it to rules."""
    return {"kind": "model", "input_tokens": input_tokens, "output_tokens": output_tokens, "cost": cost}


def _who(chain: ActorChain) -> str:
    return " on behalf of ".join(reversed(chain.subs())) if chain.links else "the workflow"


def enforce_tool_input(
    guard: RunGuard,
    chain: ActorChain,
    tool: str,
    args: dict[str, Any],
    node_path: str,
    *,
    node: Any = None,
    bindings: Mapping[str, Any],
    keys: EscalationKeys | None = None,
) -> dict[str, Any]:
    """Run the tool.select rules, authorize the call, run the tool.input rules (the agent's order, spec
    §13.3); returns the arguments to call with (redacted when a rule says so). A rule that denies is a
    `guardrail` step error, the grants denying an `unauthorized` one; an escalation raises
    EscalationRequired."""
    context = {"tool": tool, "args": args, "identity": _identity(chain)}
    _allowed(guard.check("tool.select", context, node_path, node=node, tool=tool, keys=keys))
    decision = guard.authorize_tool(chain, tool, args, node_path, bindings=bindings)
    if not decision.allowed:
        raise unauthorized_error(
            f"tool '{tool}' denied to {_who(chain)} ({decision.grant}): {decision.reason}",
            details={"grant": decision.grant, "tool": tool},
        )
    verdict = _allowed(guard.check("tool.input", context, node_path, node=node, tool=tool, keys=keys))
    return verdict.value if verdict.redacted and isinstance(verdict.value, dict) else args


def _allowed(verdict: Verdict) -> Verdict:
    """The verdict, when the call may go on; deny, or retry (no model to re-ask in a tool step), fails."""
    if not verdict.allowed:
        raise guardrail_error(
            verdict.message or "refused by a guardrail", details={"rules": list(verdict.rules)}
        )
    return verdict


def enforce_tool_output(
    guard: RunGuard,
    chain: ActorChain,
    tool: str,
    args: dict[str, Any],
    result: Any,
    node_path: str,
    *,
    node: Any = None,
    keys: EscalationKeys | None = None,
) -> Verdict:
    """Count the call, then run the tool.output rules. The caller logs `verdict.value` (redacted when
    a rule masked it), then acts: not allowed -> `guardrail` error; escalate is raised from here."""
    guard.record_tool_call(tool, args, node_path=node_path, result=result)
    context = {"tool": tool, "args": args, "result": result, "identity": _identity(chain)}
    verdict = guard.check("tool.output", context, node_path, node=node, tool=tool, keys=keys)
    if not verdict.redacted:
        verdict = Verdict(verdict.action, verdict.rules, verdict.message, result, False, verdict.events)
    return verdict


def withheld(verdict: Verdict) -> dict[str, Any] | None:
    """What `tool.completed` records of a tool.output verdict that kept the result from its caller
    (`as_recorded` reads it back)."""
    if verdict.action in ("deny", "retry"):
        return {"rules": list(verdict.rules), "message": verdict.message}
    return None


def as_recorded(verdict: Verdict, completed: Mapping[str, Any]) -> Verdict:
    """The tool.output verdict on a result read back from the log, no weaker than the recording's: the
    logged result is already masked, and a rule that matched what a `redact` rule masked would not match
    it again (resume and replay must decide as the run did)."""
    recorded = completed.get("withheld")
    if not isinstance(recorded, dict) or verdict.action in ("deny", "retry", "escalate"):
        return verdict
    rules, message = tuple(recorded.get("rules") or ()), recorded.get("message")
    return Verdict("deny", rules, message, verdict.value, verdict.redacted, verdict.events)


def _identity(chain: ActorChain) -> dict[str, Any] | None:
    actor = chain.actor
    return actor.to_binding() if isinstance(actor, Actor) else None


def _fingerprint(hook: str, tool: str | None, context: Mapping[str, Any], occurrence: str | None) -> str:
    from interpreter.hashing import NotCanonicalizable, canonical_json, sha256_hex

    payload = context["payload"] if "payload" in context else context.get(PAYLOAD_OF.get(hook, ""))
    what = [hook, tool, payload] if occurrence is None else [hook, tool, payload, occurrence]
    try:
        return sha256_hex(canonical_json(what))
    except NotCanonicalizable:
        return sha256_hex(repr(what))


def enclosing_attempts() -> dict[str, int]:
    """The attempts of the steps around the call now being checked that are past their first (the
    runtime path of each, its own step's included): what its idempotency key carries as `+PATH@K` and
    `/ATTEMPT` (runtime.idempotency_key), so that an approval is tied to the same notion of "this call"."""
    return dict(OUTER_ATTEMPTS.get())


def _same_attempts(recorded: Any, now: Mapping[str, int]) -> bool:
    """Whether an approval asked in the `recorded` attempts (a request's `data.attempts`; absent: every
    step around it in its first) settles a call made in the attempts `now`.

    The same attempts: yes. Earlier ones: no, a new attempt asks again. Later ones can only be met when
    the log is executed again from the start (`charter replay`): its records keep only the last attempt
    of a retried step's children, which stands in for each earlier attempt, as its recorded tool results
    do; a live or continued run only moves forward (it continues the attempt its log ends in)."""
    if recorded is not None and not (
        isinstance(recorded, dict) and all(type(v) is int for v in recorded.values())
    ):
        return False  # not what this runtime records: ask again rather than guess
    before = dict(recorded or {})
    if before == dict(now):
        return True
    # the enclosing steps' runtime paths are prefixes of one another: shorter is further out
    paths = sorted(set(before) | set(now), key=len)
    return tuple(before.get(p, 1) for p in paths) > tuple(now.get(p, 1) for p in paths)


Attempts = tuple[tuple[str, int], ...]  # (runtime path, attempt) of retried steps, as OUTER_ATTEMPTS

_LAST_INDEX = re.compile(r"\[\d+\]$")


def _execution(runtime: str, attempts: Attempts) -> str:
    """The key of one execution of the step a runtime path prefix stands for (spec §11.4: a step budget
    counts "each execution of that step with its children"). `l[2]` is an iteration of the loop `l`,
    so all the iterations (or items) of one execution of `l` share `l`; an execution of `l` inside the
    iteration 1 of an outer loop is `outer[1]/l`. A new attempt of the step, or of a retried step
    around it, is a new execution: the key names those attempts (`+PATH@N`, outermost first)."""
    path = _LAST_INDEX.sub("", runtime)
    tries = sorted(((p, n) for p, n in attempts if within(path, p)), key=lambda a: len(a[0]))
    return path + "".join(f"+{p}@{n}" for p, n in tries)


def _has_limits(node: Any) -> bool:
    """Whether a step has a budget of its own (a rule with `limits`; compiled rules wrap the model's)."""
    rules = getattr(node, "guardrails", ())
    return any(getattr(getattr(r, "guardrail", r), "limits", None) is not None for r in rules)


def approvals_from_records(
    records: Mapping[str, Any],
) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Escalation approvals already in the log (requests whose data names a guardrail), by node path."""
    out: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
    for path, rec in records.items():
        requested = rec.approval_requested[0] if rec.approval_requested else None
        data = requested.get("data") if isinstance(requested, dict) else None
        if isinstance(data, dict) and data.get("guardrail"):
            decided = rec.approval_decided[0] if rec.approval_decided else None
            out[path] = (requested, decided)
    return out


__all__ = [
    "CURRENT_CHAIN",
    "NOT_DELEGATED",
    "Outer",
    "ToolRules",
    "tool_target",
    "enforce_tool_input",
    "enforce_tool_output",
    "EscalationKeys",
    "EscalationRequired",
    "guardrail_error",
    "unauthorized_error",
    "RunGuard",
    "approvals_from_records",
    "chain_from_json",
    "chain_to_json",
    "policy_error",
    "secret_forms",
]
