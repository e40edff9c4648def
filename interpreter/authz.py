"""Authorization of tool calls: principals, actor chains, grants. Pure and synchronous, no I/O.

Rules (DESIGN.md §6, issue 6):

- **Default deny.** A party may call a tool only if an `allow` grant for it matches; a matching `deny`
  grant overrides every allow.
- A grant applies to a party when its `to` is the party's id or `role:NAME` for one of its roles. It
  matches a call when its tool globs match the tool *name* (`fnmatch`, case-sensitive, no paths), its
  `actions` (if any) contain the call's action, its `resources` globs (if any) match the call's
  resource (a call without a resource never matches a grant that lists resources), and its `when`
  condition (if any) evaluates to `true`.
- A call of a tool that declares a `resource` the call cannot give (it does not evaluate, or not to a
  string: an argument of another type, one left out) fails closed like a `when` that errors: it matches
  no *allow* grant that lists resources, and *every deny* grant that lists resources.
- **Fail closed.** A `when` that errors or yields a non-bool makes an *allow* grant not match, and makes
  a *deny* grant match (either way the call is denied). Arguments that are not JSON are denied.
- **Delegation.** An `ActorChain` is the principal (or first identity) followed by each party acting on
  behalf of the one before it. A call is allowed only if *every* party in the chain is allowed
  (intersection); a sub-agent or child workflow appends to its parent's chain, so it can only narrow.
- The chain with no acting identity (a workflow tool step without `identity`) is the workflow itself,
  which the language trusts: allowed with grant `workflow`, still recorded as a decision.
- **Claims** live only in `Principal`, built by the host (`--as`/`--claims` or the API). `args`, model
  output and tool results are bound only as `args`; nothing in them can change the principal.

Condition bindings: `args`, `tool`, `action`, `resource`, `principal` (the chain's principal as
`{**claims, id, kind, roles, claims}` — reserved keys win over claims —, else the run's principal the
caller passes, as guardrails see it (spec §11.1, §15), else null), `identity` (the party whose grant is being evaluated: `{id, kind, roles}`), and whatever the
caller passes in `bindings` (`input`, `vars`, `run`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dsl import expr, model
from interpreter.hashing import NotCanonicalizable, canonical_json, sha256_hex
from interpreter.runtime import kind_of

DEFAULT_DENY = "default-deny"
WORKFLOW_GRANT = "workflow"


class AuthzError(ValueError):
    """Bad input to the authorization layer (an unknown identity, malformed claims)."""


# --- parties -------------------------------------------------------------------------------------------


_NOT_A_PERSON = {
    "role:": "names a role, not a person",
    "system:": "is a name the runtime decides as, not a person's",
    "agent:": "names an agent, not a person",
    "workflow:": "names a workflow, not a person",
}


def person_name(text: str) -> str:
    """The name of a person (or service) as the CLI takes it (`--as`): `user:alice` is `alice`. A name
    of a kind of subject the runtime names itself (a role, its own decisions, a party of a chain) is
    refused: it would be mistaken for one of them."""
    name = text.strip().removeprefix("user:")
    for prefix, why in _NOT_A_PERSON.items():
        if name.startswith(prefix):
            raise AuthzError(f"'{text}' {why}")
    if not name:
        raise AuthzError("a person needs a name")
    return name


def not_a_person(name: str, identities: Mapping[str, Any], workflow: str) -> str | None:
    """Why `name` (a person's name, from `person_name`) cannot decide an approval, a human decision
    (spec §13.11), when `identities` (a workflow's) declare it as an agent or a service; else None."""
    declared = identities.get(name)
    kind = getattr(declared, "kind", None)
    if declared is None or kind == "user":
        return None
    article = "an" if str(kind)[:1] in ("a", "e", "i", "o", "u") else "a"
    return (
        f"'{name}' may not decide: it is the name of {article} {kind} identity of workflow '{workflow}', "
        f"and an approval is a person's decision (approve --as PERSON), never {article} {kind}'s"
    )


@dataclass(frozen=True)
class Principal:
    """Whom the run acts for. Built only by the host: `charter run --as ID --claims FILE` or the API."""

    id: str
    roles: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False)
    kind: str = "user"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise AuthzError("a principal needs a non-empty string id")
        if not all(isinstance(r, str) and r for r in self.roles):
            raise AuthzError("principal roles must be non-empty strings")
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @classmethod
    def from_claims(cls, id: str, claims: Mapping[str, Any] | None = None, kind: str = "user") -> Principal:  # noqa: A002
        """A principal from `--as ID` and a claims object; `roles` in the claims become its roles."""
        claims = dict(claims or {})
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise AuthzError("claims 'roles' must be a list of non-empty strings")
        try:
            canonical_json(claims)
        except NotCanonicalizable as exc:
            raise AuthzError(f"claims must be JSON: {exc}") from None
        return cls(id=id, roles=tuple(roles), claims=claims, kind=kind)

    @property
    def sub(self) -> str:
        return f"{self.kind}:{self.id}"

    def to_binding(self) -> dict[str, Any]:
        claims = dict(self.claims)
        return {**claims, "id": self.id, "kind": self.kind, "roles": list(self.roles), "claims": claims}


@dataclass(frozen=True)
class Actor:
    """A declared identity acting (an agent, a service, or a user identity of the workflow)."""

    id: str
    kind: str = "agent"
    roles: tuple[str, ...] = ()

    @property
    def sub(self) -> str:
        return f"{self.kind}:{self.id}"

    def to_binding(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "roles": list(self.roles)}


Party = Principal | Actor


@dataclass(frozen=True)
class ActorChain:
    """Who acts: `links[0]` is the subject (the principal, or the first identity when nobody is acted
    for); each later link acts on behalf of the one before it. The last link is the party calling."""

    links: tuple[Party, ...] = ()

    @property
    def principal(self) -> Principal | None:
        first = self.links[0] if self.links else None
        return first if isinstance(first, Principal) else None

    @property
    def actor(self) -> Party | None:
        return self.links[-1] if self.links else None

    def delegate(self, actor: Actor) -> ActorChain:
        """The chain of `actor` acting on behalf of this chain (a sub-agent, a child workflow)."""
        return ActorChain((*self.links, actor))

    def to_act_claim(self) -> dict[str, Any] | None:
        """RFC 8693 shape: `sub` is the subject, `act` the party acting now, nested `act` earlier ones.

        principal alice -> agent triage -> agent lookup gives
        {"sub": "user:alice", "act": {"sub": "agent:lookup", "act": {"sub": "agent:triage"}}}.
        """
        if not self.links:
            return None
        claim: dict[str, Any] = {"sub": self.links[0].sub}
        act: dict[str, Any] | None = None
        for party in self.links[1:]:  # oldest first; each newer party wraps the older ones
            act = {"sub": party.sub, **({"act": act} if act else {})}
        if act:
            claim["act"] = act
        return claim

    def subs(self) -> list[str]:
        return [p.sub for p in self.links]


# --- decisions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One authorization decision, returned as data; the engine writes it as an `authz.decided` event."""

    allowed: bool
    grant: str  # the grant that allowed (the calling party's), the deny grant, "default-deny", "workflow"
    reason: str
    args_digest: str
    tool: str
    action: str | None
    resource: str | None
    chain: ActorChain
    grants_by_party: tuple[tuple[str, str], ...] = ()  # (sub, grant id or default-deny) per link

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"

    def actor(self) -> dict[str, Any] | None:
        """The value of the event row's `actor` column."""
        return self.chain.to_act_claim()

    def to_event_payload(self) -> dict[str, Any]:
        principal = self.chain.principal
        return {
            "principal": principal.id if principal else None,
            "actor_chain": self.chain.subs(),
            "tool": self.tool,
            "action": self.action,
            "resource": self.resource,
            "args_digest": self.args_digest,
            "decision": self.decision,
            "grant": self.grant,
            "grants": [{"sub": sub, "grant": grant} for sub, grant in self.grants_by_party],
            "reason": self.reason,
        }


def args_digest(args: Any) -> str:
    """sha256 (hex) of the canonical JSON of the arguments; NotCanonicalizable if they are not JSON."""
    return sha256_hex(canonical_json(args))


# --- grants --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    grant: model.Grant
    when: Any  # compiled Program, or None
    when_error: str | None = None  # a `when` that did not compile: fails closed at every use


def _compile_when(grant: model.Grant, program: Any) -> _Rule:
    if grant.when is None or program is not None:
        return _Rule(grant, program)
    try:
        return _Rule(grant, expr.compile(grant.when))
    except expr.ExpressionError as exc:
        return _Rule(grant, None, f"condition does not compile: {exc}")


def _glob_match(patterns: Iterable[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _applies_to(grant: model.Grant, party: Party) -> bool:
    if grant.to.startswith("role:"):
        return grant.to[5:] in party.roles
    return grant.to == party.id


def _scope_matches(
    grant: model.Grant, tool: str, action: str | None, resource: str | None, unknown: bool = False
) -> bool:
    """Whether the grant's tools, actions and resources cover the call. `unknown`: the tool declares a
    resource the call could not give: a deny grant that lists resources covers it (fail closed)."""
    if not _glob_match(grant.tools, tool):
        return False
    if grant.actions is not None and (action is None or action not in grant.actions):
        return False
    if grant.resources is not None and unknown:
        return grant.effect == "deny"
    if grant.resources is not None and (resource is None or not _glob_match(grant.resources, resource)):
        return False
    return True


@dataclass(frozen=True)
class _LinkResult:
    allowed: bool
    grant: str
    reason: str


class Authorizer:
    """Decides tool calls from a workflow's identities and grants (compiled `when` programs optional:
    plain `model.Grant`s get their `when` compiled here, unchecked)."""

    def __init__(
        self,
        grants: Sequence[Any] = (),
        identities: Mapping[str, model.Identity] | None = None,
    ) -> None:
        rules: list[_Rule] = []
        for item in grants:
            if isinstance(item, model.Grant):
                rules.append(_compile_when(item, None))
            else:  # dsl.graph.CompiledGrant (duck-typed: .grant, .when)
                rules.append(_compile_when(item.grant, item.when))
        self._rules = tuple(rules)
        self._identities = dict(identities or {})

    @classmethod
    def from_graph(cls, graph: Any) -> Authorizer:
        return cls(graph.grants, graph.workflow.identities)

    # -- building chains --

    def actor(self, name: str) -> Actor:
        """The declared identity `name` as an Actor; AuthzError if it is not declared."""
        identity = self._identities.get(name)
        if identity is None:
            raise AuthzError(f"unknown identity '{name}'")
        return Actor(id=name, kind=identity.kind, roles=tuple(identity.roles))

    def principal(self, id: str, claims: Mapping[str, Any] | None = None) -> Principal:  # noqa: A002
        """The run's principal from `--as`/`--claims`. When the id is also a declared user or service
        identity, that identity's roles are added (the workflow author granted them)."""
        base = Principal.from_claims(id, claims)
        declared = self._identities.get(id)
        if declared is None or declared.kind == "agent":
            return base
        roles = tuple(dict.fromkeys((*base.roles, *declared.roles)))
        return Principal(id=base.id, roles=roles, claims=base.claims, kind=declared.kind)

    def chain(self, identity: str, on_behalf_of: ActorChain | Principal | str | None = None) -> ActorChain:
        """The chain for `identity` acting (optionally) on behalf of a chain, a principal or an identity
        name (an agent step's evaluated `on_behalf_of`)."""
        actor = self.actor(identity)
        if on_behalf_of is None:
            return ActorChain((actor,))
        if isinstance(on_behalf_of, ActorChain):
            return on_behalf_of.delegate(actor)
        if isinstance(on_behalf_of, Principal):
            return ActorChain((on_behalf_of, actor))
        return ActorChain((self.actor(on_behalf_of), actor))

    # -- deciding --

    def decide(
        self,
        chain: ActorChain,
        tool: str,
        action: str | None = None,
        resource: str | None = None,
        args: Any = None,
        bindings: Mapping[str, Any] | None = None,
        principal: Principal | None = None,
        resource_error: str | None = None,
    ) -> Decision:
        """Allow or deny one call. Never raises for bad arguments or conditions: it denies.
        `principal` is the run's principal: what `principal` means in a `when` when the chain delegates
        for no one (an agent on its own grants, a tool step's identity), as in guardrails.
        `resource_error`: why the call has no resource although its tool declares one (fail closed)."""
        args = {} if args is None else args
        try:
            digest = args_digest(args)
        except NotCanonicalizable as exc:
            return Decision(False, DEFAULT_DENY, f"arguments are not JSON: {exc}", "", tool, action,
                            resource, chain)  # fmt: skip

        def done(allowed: bool, grant: str, reason: str, per: Sequence[tuple[str, str]] = ()) -> Decision:
            return Decision(allowed, grant, reason, digest, tool, action, resource, chain, tuple(per))

        acting = [p for p in chain.links if isinstance(p, Actor)]
        if not acting:
            if chain.links:  # a principal alone never holds tools: agents and services act
                return done(False, DEFAULT_DENY, "no identity acts: a principal alone cannot call tools")
            return done(True, WORKFLOW_GRANT, "the workflow itself calls the tool (no identity): trusted")

        base = self._base_bindings(chain, tool, action, resource, args, bindings, principal)
        results = [
            (party, self._decide_link(party, tool, action, resource, base, resource_error))
            for party in chain.links
        ]
        per = [(party.sub, r.grant) for party, r in results]
        denied = [(party, r) for party, r in results if not r.allowed]
        if denied:
            # name an explicit deny grant rather than default-deny when both happened
            party, r = next(((p, r) for p, r in denied if r.grant != DEFAULT_DENY), denied[0])
            return done(False, r.grant, f"{party.sub}: {r.reason}", per)
        last = results[-1][1]
        return done(True, last.grant, "every party in the chain is allowed", per)

    def _base_bindings(
        self,
        chain: ActorChain,
        tool: str,
        action: str | None,
        resource: str | None,
        args: Any,
        bindings: Mapping[str, Any] | None,
        run_principal: Principal | None = None,
    ) -> dict[str, Any]:
        base: dict[str, Any] = {"input": None, "vars": None, "run": None}
        base.update(bindings or {})
        principal = chain.principal or run_principal
        # set last: nothing the caller (or a model, through args) passes can replace these
        base.update(
            args=args,
            tool=tool,
            action=action,
            resource=resource,
            principal=principal.to_binding() if principal else None,
        )
        return base

    def _decide_link(
        self,
        party: Party,
        tool: str,
        action: str | None,
        resource: str | None,
        base: dict[str, Any],
        resource_error: str | None = None,
    ) -> _LinkResult:
        unknown = resource_error is not None
        applicable = [
            r
            for r in self._rules
            if _applies_to(r.grant, party) and _scope_matches(r.grant, tool, action, resource, unknown)
        ]
        if not applicable:
            return _LinkResult(False, DEFAULT_DENY, f"no grant covers tool '{tool}'")
        bindings: dict[str, Any] | str
        try:  # converted once per party; a value CEL cannot hold fails every condition closed
            bindings = _cel_bindings({**base, "identity": party.to_binding()})
        except Exception as exc:  # noqa: BLE001
            bindings = f"bindings are not CEL values: {exc}"
        for rule in applicable:
            if rule.grant.effect != "deny":
                continue
            holds, error = _condition(rule, bindings)
            if holds or error:
                why = f" (condition failed closed: {error})" if error else ""
                if unknown and rule.grant.resources is not None:
                    why += f" (resources failed closed: {resource_error})"
                return _LinkResult(False, rule.grant.id, f"deny grant '{rule.grant.id}' matches{why}")
        errors: list[str] = []
        for rule in applicable:
            if rule.grant.effect != "allow":
                continue
            holds, error = _condition(rule, bindings)
            if holds:
                return _LinkResult(True, rule.grant.id, f"grant '{rule.grant.id}'")
            if error:
                errors.append(f"grant '{rule.grant.id}': {error}")
        detail = "; ".join(errors) if errors else "no grant's condition holds"
        return _LinkResult(False, DEFAULT_DENY, f"no grant allows tool '{tool}' ({detail})")

    # -- compile time --

    def tools_covered(self, identity: str, tool: str) -> bool:
        """Could `identity` ever call `tool`? True when some allow grant for it (by name or role) names
        the tool, and no unconditional deny grant (no when/actions/resources) does."""
        declared = self._identities.get(identity)
        party = Actor(
            identity, declared.kind if declared else "agent", tuple(declared.roles) if declared else ()
        )
        return tools_covered(self._rules_as_grants(), party, tool)

    def _rules_as_grants(self) -> list[model.Grant]:
        return [r.grant for r in self._rules]


def tools_covered(grants: Iterable[model.Grant], party: Party, tool: str) -> bool:
    """Compile-time coverage check shared with the compiler (see `Authorizer.tools_covered`)."""
    allowed = False
    for grant in grants:
        if not _applies_to(grant, party) or not _glob_match(grant.tools, tool):
            continue
        if grant.effect == "deny":
            if grant.when is None and grant.actions is None and grant.resources is None:
                return False
        else:
            allowed = True
    return allowed


def _condition(rule: _Rule, bindings: dict[str, Any] | str) -> tuple[bool, str | None]:
    """(holds, error): the grant's `when`, true when absent; any failure is an error (fail closed).
    `bindings` is the CEL bindings, or the reason they could not be built."""
    if rule.when_error is not None:
        return False, rule.when_error
    if rule.when is None:
        return True, None
    if isinstance(bindings, str):
        return False, bindings
    try:
        value = rule.when.evaluate(bindings)
    except expr.EvaluationError as exc:
        return False, f"condition error: {exc}"
    except Exception as exc:  # noqa: BLE001 - fail closed on anything, never crash the run
        return False, f"condition error: {type(exc).__name__}: {exc}"
    if value is True:
        return True, None
    if value is False:
        return False, None
    return False, f"condition yielded {kind_of(value)}, not bool"


def _cel_bindings(bindings: Mapping[str, Any]) -> dict[str, Any]:
    return {name: expr.to_cel(value) for name, value in bindings.items()}


__all__ = [
    "DEFAULT_DENY",
    "WORKFLOW_GRANT",
    "Actor",
    "ActorChain",
    "AuthzError",
    "Authorizer",
    "Decision",
    "Principal",
    "args_digest",
    "tools_covered",
]
