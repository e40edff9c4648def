"""CH501 (spec §10.2): a step that uses a tool no grant of its identity can allow.

The compiler decides it from what is known before the run, exactly as `interpreter.authz` decides a call:
a grant's `to` and `tools`, its `actions` against the tool's action (`action`, else `effect`), its
`resources` against the tool's `resource` (none, a plain string, or an expression), and whether a deny
grant has a `when`. `test_compile_time_agrees_with_run_time` checks both directions over a grid: every
CH501 is a tool no call of which run time allows, and every tool without one has a call it allows.
"""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

import pytest

from dsl.compiler import compile_workflow
from dsl.diagnostics import Diagnostic, Severity
from dsl.expr import from_cel
from dsl.loader import load_text
from dsl.validate import validate
from interpreter.authz import Authorizer

HEAD = """\
charter: "1.0"
name: grants
models: {default: {provider: openai, model: gpt-4.1-mini}}
"""


def check(text: str) -> list[Diagnostic]:
    doc, diags = load_text(HEAD + textwrap.dedent(text), "<string>")
    assert doc is not None and not diags, diags
    workflow, shape = validate(doc)
    assert workflow is not None, shape
    return compile_workflow(workflow, doc)[1]


def ch501(diags: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.code == "CH501"]


def only_ch501(diags: list[Diagnostic]) -> Diagnostic:
    found = ch501(diags)
    assert len(found) == 1, diags
    assert found[0].severity is Severity.ERROR
    return found[0]


# --- what is reported, where, and why -------------------------------------------------------------------


def test_actions_that_exclude_the_tools_effect() -> None:
    d = only_ch501(
        check("""\
        tools:
          echo: {python: "m:echo", effect: read}
        identities:
          svc: {kind: service}
        grants:
          - {id: act, to: svc, tools: [echo], actions: [write]}
        steps:
          - {id: e1, tool: echo, identity: svc}
        """)
    )
    assert (d.line, d.column) == (11, 20)  # the step's `tool` value
    assert "grant 'act' (line 9) allows only actions [write]; tool 'echo' is a read" in d.message
    assert "add 'read' to the `actions` of grant 'act'" in (d.hint or "")


def test_actions_that_exclude_the_tools_declared_action() -> None:
    d = only_ch501(
        check("""\
        tools:
          pay: {python: "m:pay", effect: write, action: pay}
        identities:
          bot: {kind: agent, roles: [billing]}
        grants:
          - {id: writes, to: "role:billing", tools: ["*"], actions: [write]}
        steps:
          - {id: a, agent: {identity: bot, tools: [pay], prompt: go}}
        """)
    )
    assert (d.line, d.column) == (11, 44)  # the agent's tools[0]
    assert "allows only actions [write]; tool 'pay' has action 'pay'" in d.message
    assert "(roles: billing)" in d.message


def test_resources_for_a_tool_without_resource() -> None:
    d = only_ch501(
        check("""\
        tools:
          echo: {python: "m:echo", effect: read}
        identities:
          svc: {kind: service}
        grants:
          - {id: res, to: svc, tools: [echo], resources: ["order/*"]}
        steps:
          - {id: e1, tool: echo, identity: svc}
        """)
    )
    assert "grant 'res' (line 9) allows only resources [order/*]; tool 'echo' declares no `resource`" in (
        d.message
    )


@pytest.mark.parametrize(
    ("resource", "why"),
    [
        ('"invoice/all"', "the resource of tool 'echo' is always 'invoice/all'"),
        ("7", "tool 'echo' has a `resource` that is not a string"),
        ("{id: 1}", "tool 'echo' has a `resource` that is not a string"),
    ],
)
def test_resources_that_a_constant_resource_never_matches(resource: str, why: str) -> None:
    d = only_ch501(
        check(f"""\
        tools:
          echo: {{python: "m:echo", effect: read, resource: {resource}}}
        identities:
          svc: {{kind: service}}
        grants:
          - {{id: res, to: svc, tools: [echo], resources: ["order/*"]}}
        steps:
          - {{id: e1, tool: echo, identity: svc}}
        """)
    )
    assert why in d.message


def test_every_grant_that_names_the_tool_says_why() -> None:
    d = only_ch501(
        check("""\
        tools:
          echo: {python: "m:echo", effect: read}
        identities:
          svc: {kind: service}
        grants:
          - {id: act, to: svc, tools: [echo], actions: [write]}
          - {id: res, to: svc, tools: ["e*"], resources: ["order/*"]}
        steps:
          - {id: e1, tool: echo, identity: svc}
        """)
    )
    assert "grant 'act' (line 9)" in d.message and "grant 'res' (line 10)" in d.message


def test_a_deny_without_when_wins_over_allows() -> None:
    d = only_ch501(
        check("""\
        tools:
          danger: {python: "m:danger", effect: write}
        identities:
          bot: {kind: agent}
        grants:
          - {id: bot-all, to: bot, tools: ["*"]}
          - {id: never, to: bot, tools: [danger], effect: deny}
        steps:
          - {id: t, tool: danger, identity: bot}
        """)
    )
    assert "deny grant 'never' (line 10) denies every call of it by identity 'bot'" in d.message


def test_a_deny_without_when_whose_actions_or_resource_cover_the_tool() -> None:
    diags = check("""\
    tools:
      danger: {python: "m:danger", effect: write}
      order: {python: "m:order", effect: read, resource: "order/1"}
    identities:
      bot: {kind: agent}
    grants:
      - {id: bot-all, to: bot, tools: ["*"]}
      - {id: no-writes, to: bot, tools: ["*"], actions: [write], effect: deny}
      - {id: no-orders, to: bot, tools: ["*"], resources: ["order/*"], effect: deny}
    steps:
      - {id: a, agent: {identity: bot, tools: [danger, order], prompt: go}}
    """)
    found = ch501(diags)
    assert len(found) == 2, diags
    assert "deny grant 'no-writes'" in found[0].message and "'danger'" in found[0].message
    assert "deny grant 'no-orders'" in found[1].message and "'order'" in found[1].message


@pytest.mark.parametrize(
    "grants",
    [
        # a condition may hold: the allow can allow, the deny may not match
        '[{id: g, to: bot, tools: [echo], actions: [read], when: "args.ok == true"}]',
        '[{id: g, to: bot, tools: [echo]}, {id: d, to: bot, tools: [echo], effect: deny, when: "true"}]',
        # a deny whose actions or resources do not cover the tool never matches it
        "[{id: g, to: bot, tools: [echo]}, {id: d, to: bot, tools: [echo], effect: deny, actions: [write]}]",
        '[{id: g, to: bot, tools: [echo]}, {id: d, to: bot, tools: [echo], effect: deny, resources: ["x/*"]}]',
        # a deny with resources and a resource that only a call decides may not match
        '[{id: g, to: bot, tools: [dyn]}, {id: d, to: bot, tools: [dyn], effect: deny, resources: ["o/*"]}]',
        # a resource that only a call decides may match, a constant one that does matches
        '[{id: g, to: bot, tools: [dyn], resources: ["o/*"]}]',
        '[{id: g, to: bot, tools: [const], resources: ["o/*"], actions: [write]}]',
        "[{id: g, to: bot, tools: [echo], actions: [read, write]}]",
    ],
)
def test_grants_that_can_allow_are_not_reported(grants: str) -> None:
    tool = "dyn" if "[dyn]" in grants else "const" if "[const]" in grants else "echo"
    diags = check(f"""\
    tools:
      echo: {{python: "m:echo", effect: read}}
      dyn: {{python: "m:dyn", effect: read, resource: "o/${{{{ args.id }}}}"}}
      const: {{python: "m:c", effect: write, resource: "o/1"}}
    identities:
      bot: {{kind: agent}}
    grants: {grants}
    steps:
      - {{id: a, agent: {{identity: bot, tools: [{tool}], prompt: go}}}}
    """)
    assert ch501(diags) == [], diags


def test_no_grant_names_the_tool_keeps_its_message() -> None:
    d = only_ch501(
        check("""\
        tools:
          echo: {python: "m:echo", effect: read}
        identities:
          bot: {kind: agent}
        grants:
          - {id: g, to: bot, tools: ["x*"]}
          - {id: other, to: someone, tools: [echo]}
        steps:
          - {id: t, tool: echo, identity: bot}
        """)
    )
    assert "no allow grant of identity 'bot' covers it" in d.message


# --- compile time agrees with run time -----------------------------------------------------------------

# Tools: every combination of effect, declared action and resource (none, a matching and a non-matching
# constant, a non-string, one a call decides).
_RESOURCES: dict[str, str | None] = {
    "none": None,
    "match": '"order/1"',
    "other": '"invoice/1"',
    "number": "5",
    "dynamic": '"${{ args.res }}"',
}
_TOOLS = [
    (f"t_{effect}_{action or 'x'}_{res}", effect, action, res)
    for effect, action, res in itertools.product(("read", "write"), (None, "approve"), _RESOURCES)
]
# Allow grants: with or without actions, resources, a condition. Deny grants likewise, or none.
_ALLOWS = [
    {"actions": actions, "resources": resources, "when": when}
    for actions, resources, when in itertools.product(
        (None, ["read"], ["write"], ["approve"], []), (None, ["order/*"]), (None, "args.ok == true")
    )
]
_DENIES = [
    None,
    {},
    {"actions": ["write"]},
    {"actions": ["approve", "read"]},
    {"resources": ["order/*"]},
    {"resources": ["invoice/*"], "actions": ["read"]},
    {"when": "args.no == true"},
]
# Calls: the arguments decide the conditions and a dynamic resource.
_CALLS = [
    {"ok": ok, "no": no, "res": res}
    for ok, no, res in itertools.product((True, False), (True, False), ("order/1", "invoice/1"))
]


def _grant_yaml(grant_id: str, effect: str, extra: dict[str, Any]) -> str:
    fields = [f"id: {grant_id}", "to: bot", 'tools: ["t_*"]', f"effect: {effect}"]
    for key, value in extra.items():
        if value is None:
            continue
        if key == "when":
            fields.append(f'when: "{value}"')
        else:
            fields.append(f"{key}: [{', '.join(value)}]")
    return "  - {" + ", ".join(fields) + "}\n"


def _workflow(allow: dict[str, Any], deny: dict[str, Any] | None, with_step: bool) -> str:
    tools = "".join(
        f'  {name}: {{python: "m:f", effect: {effect}'
        + (f", action: {action}" if action else "")
        + (f", resource: {_RESOURCES[res]}" if _RESOURCES[res] else "")
        + "}\n"
        for name, effect, action, res in _TOOLS
    )
    grants = _grant_yaml("allow", "allow", allow)
    if deny is not None:
        grants += _grant_yaml("deny", "deny", deny)
    names = ", ".join(name for name, *_ in _TOOLS)
    steps = (
        f"  - {{id: a, agent: {{identity: bot, tools: [{names}], prompt: go}}}}\n"
        if with_step
        else "  - {id: a, set: {x: 1}}\n"
    )
    return f"tools:\n{tools}identities:\n  bot: {{kind: agent}}\ngrants:\n{grants}vars: {{x: 0}}\nsteps:\n{steps}"


def _runtime_allows(text: str) -> set[str]:
    """The tools some call of which run time allows to `bot`: `Authorizer.decide` with the resource
    bound as `RunGuard._resource` binds it (the tool's compiled `resource`, a string or none)."""
    doc, _ = load_text(HEAD + text, "<string>")
    assert doc is not None
    workflow, _ = validate(doc)
    assert workflow is not None
    graph, diags = compile_workflow(workflow, doc)
    assert graph is not None, diags
    authorizer = Authorizer.from_graph(graph)
    chain = authorizer.chain("bot")
    allowed: set[str] = set()
    for name, spec in workflow.tools.items():
        action = spec.action or spec.effect
        value = graph.tools[name].values.get("resource")
        for args in _CALLS:
            resource = None
            if value is not None:
                out = from_cel(value.evaluate({"args": args}))
                resource = out if isinstance(out, str) else None
            if authorizer.decide(chain, name, action, resource, args).allowed:
                allowed.add(name)
                break
    return allowed


@pytest.mark.parametrize("deny", _DENIES, ids=repr)
def test_compile_time_agrees_with_run_time(deny: dict[str, Any] | None) -> None:
    for allow in _ALLOWS:
        reported = {
            name
            for d in ch501(check(_workflow(allow, deny, with_step=True)))
            for name, *_ in _TOOLS
            if f"tool '{name}'" in d.message
        }
        allowed = _runtime_allows(_workflow(allow, deny, with_step=False))
        everything = {name for name, *_ in _TOOLS}
        context = f"allow={allow} deny={deny}"
        assert not reported & allowed, f"CH501 for tools run time allows: {reported & allowed}; {context}"
        # Complete too, except where it would take comparing globs: a resource that a call decides, an
        # allow and a deny that both list `resources` (only `order/1` is allowed here, and the deny
        # denies it). The compiler keeps that as "can allow": never a CH501 that a run contradicts.
        undecided = (
            {name for name, *_, res in _TOOLS if res == "dynamic"}
            if deny is not None and "resources" in deny and allow["resources"] is not None
            else set()
        )
        missed = everything - reported - allowed - undecided
        assert not missed, f"no CH501 for tools run time never allows: {missed}; {context}"
