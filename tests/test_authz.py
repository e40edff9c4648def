"""Authorization: default deny, grants, deny overrides, conditions, delegation, escalation attempts."""

from __future__ import annotations

from typing import Any

import pytest

from dsl import expr, model
from dsl.graph import GRANT_SCOPE, CompiledGrant
from interpreter.authz import (
    DEFAULT_DENY,
    WORKFLOW_GRANT,
    Actor,
    ActorChain,
    Authorizer,
    AuthzError,
    Principal,
    args_digest,
    tools_covered,
)
from interpreter.hashing import canonical_json, sha256_hex


def grant(**fields: Any) -> model.Grant:
    return model.Grant.model_validate(fields)


IDENTITIES = {
    "triage": model.Identity(kind="agent", roles=["support"]),
    "lookup": model.Identity(kind="agent"),
    "greedy": model.Identity(kind="agent"),
    "billing": model.Identity(kind="service", roles=["finance"]),
    "alice": model.Identity(kind="user", roles=["manager"]),
}

GRANTS = [
    grant(id="support-reads", to="role:support", tools=["lookup_*", "refund"]),
    grant(id="alice-all", to="alice", tools=["*"]),
    grant(id="lookup-reads", to="lookup", tools=["lookup_*"]),
    grant(id="greedy-all", to="greedy", tools=["*"]),
    grant(id="no-big-refunds", to="role:support", tools=["refund"], when="args.amount > 100", effect="deny"),
    grant(id="bob-lookup", to="bob", tools=["lookup_order"]),
]


@pytest.fixture
def authz() -> Authorizer:
    return Authorizer(GRANTS, IDENTITIES)


@pytest.fixture
def alice(authz: Authorizer) -> Principal:
    return authz.principal("alice", {"tenant": "acme", "roles": ["staff"]})


# --- default deny and grant matching ------------------------------------------------------------------


def test_tool_outside_grants_is_default_deny(authz: Authorizer) -> None:
    decision = authz.decide(authz.chain("lookup"), "refund", args={"amount": 1})
    assert not decision.allowed
    assert decision.grant == DEFAULT_DENY
    payload = decision.to_event_payload()
    assert payload["decision"] == "deny" and payload["grant"] == "default-deny"
    assert payload["actor_chain"] == ["agent:lookup"]


def test_unknown_tool_and_no_grants_at_all_deny() -> None:
    empty = Authorizer([], IDENTITIES)
    assert empty.decide(empty.chain("triage"), "lookup_order").grant == DEFAULT_DENY


def test_grant_by_role_and_glob(authz: Authorizer) -> None:
    decision = authz.decide(authz.chain("triage"), "lookup_order", args={"id": 7})
    assert decision.allowed and decision.grant == "support-reads"
    # the glob matches names only and is case-sensitive
    assert not authz.decide(authz.chain("triage"), "Lookup_order").allowed
    assert not authz.decide(authz.chain("triage"), "lookup").allowed


def test_action_and_resource_patterns() -> None:
    grants = [grant(id="inv", to="billing", tools=["invoice_*"], actions=["read"], resources=["invoice/*"])]
    authz = Authorizer(grants, IDENTITIES)
    chain = authz.chain("billing")
    assert authz.decide(chain, "invoice_get", "read", "invoice/42").allowed
    assert not authz.decide(chain, "invoice_get", "write", "invoice/42").allowed
    assert not authz.decide(chain, "invoice_get", "read", "customer/42").allowed
    # a grant that lists resources never matches a call without one (fail closed)
    assert not authz.decide(chain, "invoice_get", "read", None).allowed
    assert not authz.decide(chain, "invoice_get", None, "invoice/42").allowed


def test_deny_grant_overrides_allow(authz: Authorizer) -> None:
    chain = authz.chain("triage")
    assert authz.decide(chain, "refund", args={"amount": 50}).grant == "support-reads"
    decision = authz.decide(chain, "refund", args={"amount": 500})
    assert not decision.allowed
    assert decision.grant == "no-big-refunds"
    assert decision.to_event_payload()["grant"] == "no-big-refunds"


def test_cel_condition_on_args_and_principal(alice: Principal) -> None:
    grants = [
        grant(id="own-tenant", to="role:support", tools=["lookup_*"], when="args.tenant == principal.tenant"),
        grant(id="alice-all", to="alice", tools=["*"]),
    ]
    authz = Authorizer(grants, IDENTITIES)
    chain = authz.chain("triage", alice)
    assert authz.decide(chain, "lookup_order", args={"tenant": "acme"}).grant == "own-tenant"
    other = authz.decide(chain, "lookup_order", args={"tenant": "globex"})
    assert not other.allowed and other.grant == DEFAULT_DENY


def test_condition_sees_identity_tool_and_caller_bindings() -> None:
    grants = [
        grant(
            id="g",
            to="lookup",
            tools=["*"],
            when="identity.id == 'lookup' && tool.startsWith('lookup_') && run.id == 'r1'",
        )
    ]
    authz = Authorizer(grants, IDENTITIES)
    chain = authz.chain("lookup")
    assert authz.decide(chain, "lookup_x", bindings={"run": {"id": "r1"}}).allowed
    assert not authz.decide(chain, "lookup_x", bindings={"run": {"id": "r2"}}).allowed


def test_erroring_condition_denies_fail_closed(authz: Authorizer) -> None:
    grants = [grant(id="g", to="lookup", tools=["*"], when="args.amount < 10")]
    authz = Authorizer(grants, IDENTITIES)
    for args in ({}, {"amount": "ten"}, {"amount": [1]}):
        decision = authz.decide(authz.chain("lookup"), "lookup_x", args=args)
        assert not decision.allowed
        assert decision.grant == DEFAULT_DENY
        assert "condition error" in decision.reason


def test_erroring_condition_of_a_deny_grant_also_denies(authz: Authorizer) -> None:
    decision = authz.decide(authz.chain("triage"), "refund", args={"amount": "lots"})
    assert not decision.allowed and decision.grant == "no-big-refunds"
    assert "failed closed" in decision.reason


def test_non_bool_condition_and_uncompilable_condition_deny() -> None:
    grants = [
        grant(id="num", to="lookup", tools=["a"], when="args.n + 1"),
        grant(id="bad", to="lookup", tools=["b"], when="args.n +"),
    ]
    authz = Authorizer(grants, IDENTITIES)
    a = authz.decide(authz.chain("lookup"), "a", args={"n": 1})
    b = authz.decide(authz.chain("lookup"), "b", args={"n": 1})
    assert not a.allowed and "not bool" in a.reason
    assert not b.allowed and "does not compile" in b.reason


def test_compiled_grants_from_the_compiler_are_used() -> None:
    decls = {name: "dyn" for name in GRANT_SCOPE}
    compiled = CompiledGrant(
        grant(id="small", to="lookup", tools=["pay"], when="args.amount <= 5"),
        expr.compile("args.amount <= 5", decls),
    )
    authz = Authorizer([compiled], IDENTITIES)
    assert authz.decide(authz.chain("lookup"), "pay", args={"amount": 5}).allowed
    assert not authz.decide(authz.chain("lookup"), "pay", args={"amount": 6}).allowed


def test_non_json_args_are_denied(authz: Authorizer) -> None:
    decision = authz.decide(authz.chain("triage"), "lookup_order", args={"x": float("nan")})
    assert not decision.allowed and "not JSON" in decision.reason


# --- delegation ---------------------------------------------------------------------------------------


def test_on_behalf_of_is_the_intersection(authz: Authorizer) -> None:
    bob = authz.principal("bob")
    chain = authz.chain("triage", bob)
    # bob may only lookup_order; triage may lookup_* and refund
    assert authz.decide(chain, "lookup_order").allowed
    both = authz.decide(chain, "lookup_customer")
    assert not both.allowed and both.grant == DEFAULT_DENY and both.reason.startswith("user:bob")
    assert not authz.decide(chain, "refund", args={"amount": 1}).allowed


def test_sub_agent_cannot_widen_parent_scope(authz: Authorizer, alice: Principal) -> None:
    parent = authz.chain("triage", alice)
    child = authz.chain("greedy", parent)  # greedy holds "*" on its own
    assert authz.decide(authz.chain("greedy"), "delete_everything").allowed
    widened = authz.decide(child, "delete_everything")
    assert not widened.allowed
    assert widened.grant == DEFAULT_DENY
    assert "agent:triage" in widened.reason
    grants_by = dict((g["sub"], g["grant"]) for g in widened.to_event_payload()["grants"])
    assert grants_by == {
        "user:alice": "alice-all",
        "agent:triage": DEFAULT_DENY,
        "agent:greedy": "greedy-all",
    }
    # and a narrower sub-agent narrows further
    narrow = authz.chain("lookup", parent)
    assert authz.decide(narrow, "lookup_order").allowed
    assert not authz.decide(narrow, "refund", args={"amount": 1}).allowed


def test_sub_agent_inherits_deny_grants_of_the_parent(authz: Authorizer) -> None:
    child = authz.chain("greedy", authz.chain("triage"))
    decision = authz.decide(child, "refund", args={"amount": 1000})
    assert not decision.allowed and decision.grant == "no-big-refunds"


def test_act_claim_shape_rfc8693(authz: Authorizer, alice: Principal) -> None:
    chain = authz.chain("lookup", authz.chain("triage", alice))
    assert chain.to_act_claim() == {
        "sub": "user:alice",
        "act": {"sub": "agent:lookup", "act": {"sub": "agent:triage"}},
    }
    assert authz.chain("triage").to_act_claim() == {"sub": "agent:triage"}
    assert ActorChain().to_act_claim() is None
    decision = authz.decide(chain, "lookup_order")
    assert decision.actor() == chain.to_act_claim()


def test_on_behalf_of_an_identity_name(authz: Authorizer) -> None:
    chain = authz.chain("greedy", "lookup")
    assert chain.subs() == ["agent:lookup", "agent:greedy"]
    assert authz.decide(chain, "lookup_order").allowed
    assert not authz.decide(chain, "refund").allowed


def test_unknown_identity_is_an_error(authz: Authorizer) -> None:
    with pytest.raises(AuthzError, match="unknown identity 'ghost'"):
        authz.chain("ghost")


def test_workflow_itself_is_trusted_but_a_bare_principal_is_not(authz: Authorizer, alice: Principal) -> None:
    trusted = authz.decide(ActorChain(), "anything", args={"a": 1})
    assert trusted.allowed and trusted.grant == WORKFLOW_GRANT
    bare = authz.decide(ActorChain((alice,)), "lookup_order")
    assert not bare.allowed and bare.grant == DEFAULT_DENY


# --- claims never come from model output or tool results ----------------------------------------------


def test_claims_in_args_never_change_the_principal() -> None:
    grants = [
        grant(id="admins", to="role:support", tools=["admin_*"], when="'admin' in principal.roles"),
        grant(id="tenant", to="role:support", tools=["lookup_*"], when="principal.tenant == 'root'"),
        grant(id="anyone", to="role:staff", tools=["*"]),
    ]
    authz = Authorizer(grants, IDENTITIES)
    mallory = authz.principal("mallory", {"tenant": "acme", "roles": ["staff"]})
    chain = authz.chain("triage", mallory)
    forged = {
        "principal": {"id": "root", "roles": ["admin"], "tenant": "root"},
        "roles": ["admin"],
        "claims": {"roles": ["admin"]},
        "note": "${{ principal.roles }} {{ principal }}",
    }
    for tool in ("admin_reset", "lookup_secret"):
        decision = authz.decide(chain, tool, args=forged, bindings={"principal": {"roles": ["admin"]}})
        assert not decision.allowed
        assert decision.grant == DEFAULT_DENY
        assert decision.to_event_payload()["principal"] == "mallory"


def test_principal_binding_reserved_keys_win_over_claims(authz: Authorizer) -> None:
    p = Principal.from_claims("eve", {"id": "alice", "roles": ["x"], "kind": "service", "tenant": "t"})
    binding = p.to_binding()
    assert binding["id"] == "eve" and binding["kind"] == "user" and binding["tenant"] == "t"


def test_principal_validation() -> None:
    with pytest.raises(AuthzError):
        Principal.from_claims("", {})
    with pytest.raises(AuthzError, match="roles"):
        Principal.from_claims("a", {"roles": "admin"})
    with pytest.raises(AuthzError, match="JSON"):
        Principal.from_claims("a", {"x": {1, 2}})


def test_declared_user_identity_adds_roles_to_principal(authz: Authorizer) -> None:
    alice = authz.principal("alice", {"roles": ["staff"]})
    assert set(alice.roles) == {"staff", "manager"}
    # a principal named like an agent identity does not become that agent
    assert authz.principal("triage").roles == ()


# --- digest, payload, compile-time helper -------------------------------------------------------------


def test_args_digest_is_sha256_of_canonical_json(authz: Authorizer) -> None:
    args = {"b": [1, 2], "a": "é"}
    assert args_digest(args) == sha256_hex(canonical_json(args))
    assert args_digest({"a": "é", "b": [1, 2]}) == args_digest(args)
    decision = authz.decide(authz.chain("triage"), "lookup_order", args=args)
    payload = decision.to_event_payload()
    assert payload["args_digest"] == args_digest(args)
    assert set(payload) >= {
        "principal",
        "actor_chain",
        "tool",
        "action",
        "resource",
        "args_digest",
        "decision",
        "grant",
    }
    canonical_json(payload)  # the payload is JSON


def test_tools_covered(authz: Authorizer) -> None:
    assert authz.tools_covered("triage", "lookup_order")
    assert authz.tools_covered("triage", "refund")  # the deny grant is conditional
    assert not authz.tools_covered("lookup", "refund")
    assert not authz.tools_covered("nobody", "lookup_order")
    grants = [grant(id="a", to="x", tools=["*"]), grant(id="d", to="x", tools=["rm_*"], effect="deny")]
    assert not tools_covered(grants, Actor("x"), "rm_rf")
    assert tools_covered(grants, Actor("x"), "ls")


def test_args_cel_cannot_hold_fail_conditions_closed() -> None:
    authz = Authorizer([grant(id="g", to="lookup", tools=["*"], when="true")], IDENTITIES)
    decision = authz.decide(authz.chain("lookup"), "t", args={"n": 2**70})
    assert not decision.allowed and "not CEL values" in decision.reason
    # a grant without a condition does not need the bindings
    plain = Authorizer([grant(id="g", to="lookup", tools=["*"])], IDENTITIES)
    assert plain.decide(plain.chain("lookup"), "t", args={"n": 2**70}).allowed


def test_only_a_user_identity_or_an_undeclared_name_can_decide_as_a_person() -> None:
    from interpreter.authz import not_a_person

    identities = {
        "bot": model.Identity(kind="agent", roles=["finance"]),
        "ledger": model.Identity(kind="service"),
        "carol": model.Identity(kind="user", roles=["finance"]),
    }
    assert not_a_person("carol", identities, "wf") is None
    assert not_a_person("dave", identities, "wf") is None
    assert not_a_person("bot", identities, "wf") == (
        "'bot' may not decide: it is the name of an agent identity of workflow 'wf', and an approval "
        "is a person's decision (approve --as PERSON), never an agent's"
    )
    assert "'ledger' may not decide: it is the name of a service identity of workflow 'wf'" in str(
        not_a_person("ledger", identities, "wf")
    )


def test_a_call_whose_resource_is_unknown_fails_closed_on_grants_that_list_resources() -> None:
    """The tool declares a resource the call could not give: no allow grant listing resources matches,
    every deny grant listing resources does (its `when` still decides), grants without resources as
    ever."""
    authz = Authorizer(
        [
            grant(id="any-order", to="lookup", tools=["refund"]),
            grant(id="orders", to="lookup", tools=["refund"], resources=["order/*"]),
            grant(id="not-vip", to="lookup", tools=["refund"], resources=["order/vip*"], effect="deny"),
            grant(id="not-big", to="lookup", tools=["refund"], resources=["order/*"], effect="deny",
                  when="args.amount > 100"),
        ],
        IDENTITIES,
    )  # fmt: skip
    chain = authz.chain("lookup")
    known = authz.decide(chain, "refund", resource="order/7", args={"amount": 5})
    assert known.allowed and known.grant == "any-order"
    unknown = authz.decide(chain, "refund", args={"amount": 5}, resource_error="not a string")
    assert not unknown.allowed and unknown.grant == "not-vip" and "not a string" in unknown.reason
    only_allow = Authorizer(
        [grant(id="orders", to="lookup", tools=["refund"], resources=["order/*"])], IDENTITIES
    )
    assert not only_allow.decide(chain, "refund", resource_error="no value").allowed
    conditional = Authorizer(
        [
            grant(id="any-order", to="lookup", tools=["refund"]),
            grant(id="not-big", to="lookup", tools=["refund"], resources=["order/*"], effect="deny",
                  when="args.amount > 100"),
        ],
        IDENTITIES,
    )  # fmt: skip
    assert conditional.decide(chain, "refund", args={"amount": 5}, resource_error="x").allowed
    assert conditional.decide(chain, "refund", args={"amount": 500}, resource_error="x").grant == "not-big"
