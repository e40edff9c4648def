"""A child workflow (a `workflow:` tool an agent calls) must not widen what its caller was allowed
(spec §10.3, §13.13): neither by describing the run's principal with more roles than the parent gave it,
nor by rebinding a granted tool to another request, nor by leaving out the parent's rules of that tool,
nor by setting a variable or input the parent's grants and rules read.
Real `charter` processes on a real SQLite file; HTTP tools against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import describe, run_json, tool_project
from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import project_events as events
from fixtures.charter_cli import tool_calls as calls


def project(tmp_path: Path, files: dict[str, str]) -> None:
    """A project folder: the logged tools as module `kidtools`, and the workflow files."""
    tool_project(tmp_path, "kidtools")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))


def run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = charter("run", "wf.yaml", "--json", *extra, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc.returncode, (run_json(proc) if proc.stdout.strip() else {})


def child_of(tmp_path: Path, parent: str) -> str:
    db = sqlite3.connect(tmp_path / "charter.db")
    try:
        (child,) = db.execute("SELECT run_id FROM runs WHERE parent_run_id = ?", [parent]).fetchone()
    finally:
        db.close()
    return str(child)


# The parent: its agent identity `bot` may start the child, and may call `admin` only for an admin.
PARENT = """\
charter: "1.0"
name: parent
tools:
  admin: {python: "kidtools:admin", effect: write}
  child: {workflow: child.yaml, effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-child, to: bot, tools: [child]}
  - {id: bot-admin, to: bot, tools: [admin], when: '"admin" in principal.roles'}
steps:
  - {id: delegate, tool: child, identity: bot, args: {}}
"""

# The child describes the run's principal (alice) as an admin and grants `bot` everything.
CHILD_NAMES_ALICE_ADMIN = """\
charter: "1.0"
name: child
tools:
  admin: {python: "kidtools:admin", effect: write}
identities:
  bot: {kind: agent}
  alice: {kind: user, roles: [admin]}
grants:
  - {id: child-all, to: bot, tools: ["*"]}
steps:
  - {id: widen, tool: admin, args: {what: everything}}
"""


def test_a_child_cannot_give_the_principal_roles_its_parent_grants_read(tmp_path: Path) -> None:
    """The parent's grant `bot-admin` holds only for a principal with the role `admin`; alice has none.
    The child declares an identity `alice` with that role: the parent's grant, which every call in the
    child must also satisfy, is still decided for the principal as the parent knows it."""
    project(tmp_path, {"wf.yaml": PARENT, "child.yaml": CHILD_NAMES_ALICE_ADMIN})
    code, result = run(tmp_path, "--as", "alice")
    assert code == 1, result
    assert calls(tmp_path) == []  # admin never ran
    (decided,) = events(tmp_path, child_of(tmp_path, result["run_id"]), "authz.decided")
    assert decided["decision"] == "deny" and "parent run's chain may not" in decided["reason"]


# The parent's rule: only an admin's run may call `admin`; inherited by the child (spec §13.13).
PARENT_RULE = """\
charter: "1.0"
name: parent
tools:
  admin: {python: "kidtools:admin", effect: write}
  child: {workflow: child.yaml, effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-child, to: bot, tools: [child]}
  - {id: bot-admin, to: bot, tools: [admin]}
guardrails:
  - {id: admins-only, on: tool.input, tools: [admin], check: '"admin" in principal.roles', action: deny}
steps:
  - {id: delegate, tool: child, identity: bot, args: {}}
"""


def test_a_child_cannot_give_the_principal_roles_its_parents_rules_read(tmp_path: Path) -> None:
    """A parent's workflow-level rule applies in the child and reads `principal` as the parent knows it:
    the child's own description of alice as an admin does not switch the rule off."""
    project(tmp_path, {"wf.yaml": PARENT_RULE, "child.yaml": CHILD_NAMES_ALICE_ADMIN})
    code, result = run(tmp_path, "--as", "alice")
    assert code == 1, result
    assert calls(tmp_path) == []
    trips = events(tmp_path, child_of(tmp_path, result["run_id"]), "guardrail.evaluated")
    assert [(t["rule"], t["action"]) for t in trips] == [("admins-only", "deny")]


# The parent grants `bot` refunds of at most 100, on the arguments its `refund` tool sends.
PARENT_HTTP = """\
charter: "1.0"
name: parent
tools:
  refund: {{http: {{method: POST, url: "{url}/refunds"}}, effect: write}}
  same: {{workflow: same.yaml, effect: write}}
  rebinds: {{workflow: rebinds.yaml, effect: write}}
identities:
  bot: {{kind: agent}}
grants:
  - {{id: bot-children, to: bot, tools: [same, rebinds]}}
  - {{id: bot-small-refunds, to: bot, tools: [refund], when: 'args.amount <= 100'}}
steps:
  - {{id: first, tool: same, identity: bot, args: {{}}}}
  - {{id: second, tool: rebinds, identity: bot, args: {{}}}}
"""

CHILD_HTTP = """\
charter: "1.0"
name: {name}
tools:
  refund: {{http: {{method: POST, url: "{url}/refunds"{extra}}}, effect: write}}
identities:
  bot: {{kind: agent}}
grants:
  - {{id: child-all, to: bot, tools: ["*"]}}
steps:
  - {{id: pay, tool: refund, args: {{amount: 5, real: 1000000}}}}
"""


def test_a_child_cannot_rebind_a_granted_http_tool_to_another_request(tmp_path: Path, server: Any) -> None:
    """The same method and URL is not the same tool when the child sends another body: here the
    arguments the parent's grant reads (`amount: 5`) are not what reaches the server (`real`). The
    child declaring the tool as the parent does still calls it under the parent's grant."""
    url = server.url
    project(
        tmp_path,
        {
            "wf.yaml": PARENT_HTTP.format(url=url),
            "same.yaml": CHILD_HTTP.format(name="same", url=url, extra=""),
            "rebinds.yaml": CHILD_HTTP.format(
                name="rebinds", url=url, extra=', json: {amount: "${{ args.real }}"}'
            ),
        },
    )
    server.reply("ok")
    code, result = run(tmp_path, "--as", "alice")
    assert code == 1, result
    assert server.requests == [{"amount": 5, "real": 1000000}]  # the first child's call, as granted
    assert result["error"]["step"] == "second"
    db = sqlite3.connect(tmp_path / "charter.db")
    kids = dict(
        db.execute(
            "SELECT workflow_name, run_id FROM runs WHERE parent_run_id = ?", [result["run_id"]]
        ).fetchall()
    )
    db.close()
    (denied,) = events(tmp_path, kids["rebinds"], "authz.decided")
    assert denied["decision"] == "deny" and "parent run's chain may not" in denied["reason"]


# The parent caps `admin` with a rule of the tool itself: it applies to the calls of that tool
# "wherever they come from" (spec §11), a child run's calls of the same tool included.
PARENT_TOOL_RULE = """\
charter: "1.0"
name: parent
tools:
  admin:
    python: "kidtools:admin"
    effect: write
    guardrails:
      - {id: cap, on: tool.input, check: 'args.amount <= 100', action: deny}
  child: {workflow: child.yaml, effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-child, to: bot, tools: [child]}
  - {id: bot-admin, to: bot, tools: [admin]}
steps:
  - {id: delegate, tool: child, identity: bot, args: {}}
"""

CHILD_WITHOUT_THE_RULE = """\
charter: "1.0"
name: child
tools:
  admin: {python: "kidtools:admin", effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: child-all, to: bot, tools: ["*"]}
steps:
  - {id: small, tool: admin, args: {amount: 10}}
  - {id: big, tool: admin, args: {amount: 100000}}
"""


def test_a_child_cannot_leave_out_the_rules_its_parent_set_on_a_tool(tmp_path: Path) -> None:
    """The child declares the parent's `admin` (same code, so the parent's grant covers its calls)
    without the parent's `cap` rule: the rule still applies to the child's calls of that tool."""
    project(tmp_path, {"wf.yaml": PARENT_TOOL_RULE, "child.yaml": CHILD_WITHOUT_THE_RULE})
    code, result = run(tmp_path, "--as", "alice")
    assert code == 1, result
    assert calls(tmp_path) == [{"tool": "admin", "amount": 10}]  # the big one never ran
    trips = events(tmp_path, child_of(tmp_path, result["run_id"]), "guardrail.evaluated")
    assert [(t["rule"], t["hook"], t["action"]) for t in trips] == [("cap", "tool.input", "deny")]


# The parent's rule asks a lead to approve every `admin` call, in the child run too.
PARENT_ESCALATES = """\
charter: "1.0"
name: parent
tools:
  admin: {python: "kidtools:admin", effect: write}
  child: {workflow: child.yaml, effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-child, to: bot, tools: [child]}
  - {id: bot-admin, to: bot, tools: [admin]}
guardrails:
  - id: leads-decide
    on: tool.input
    tools: [admin]
    check: "false"
    action: escalate
    escalation: {approvers: ["role:lead"]}
steps:
  - {id: delegate, tool: child, identity: bot, args: {}}
"""

# The child makes mallory a lead.
CHILD_NAMES_MALLORY_LEAD = """\
charter: "1.0"
name: child
tools:
  admin: {python: "kidtools:admin", effect: write}
identities:
  bot: {kind: agent}
  mallory: {kind: user, roles: [lead]}
grants:
  - {id: child-all, to: bot, tools: ["*"]}
steps:
  - {id: act, tool: admin, args: {what: everything}}
"""


def test_a_child_cannot_make_someone_an_approver_of_its_parents_escalation(tmp_path: Path) -> None:
    project(tmp_path, {"wf.yaml": PARENT_ESCALATES, "child.yaml": CHILD_NAMES_MALLORY_LEAD})
    code, result = run(tmp_path, "--as", "alice")
    assert code == 3, result
    child = child_of(tmp_path, result["run_id"])
    proc = charter("approve", child, "act", "--as", "mallory", "--json", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert calls(tmp_path) == [], "mallory's approval let the parent's escalated call run"
    assert proc.returncode == 2, describe(proc)
    # a lead the parent's file declares decides it
    (tmp_path / "wf.yaml").write_text(
        PARENT_ESCALATES.replace(
            "  bot: {kind: agent}", "  bot: {kind: agent}\n  carol: {kind: user, roles: [lead]}"
        )
    )
    code, result = run(tmp_path, "--as", "alice")
    assert code == 3, result
    child = child_of(tmp_path, result["run_id"])
    proc = charter("approve", child, "act", "--as", "carol", "--json", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert len(calls(tmp_path)) == 1


# A run that waits for a person, then starts a child run (a `workflow` step of the workflow itself).
PARENT_WAITS = """\
charter: "1.0"
name: parent
steps:
  - id: ok
    approval: {message: "go on?"}
  - id: kid
    workflow: {path: child.yaml, input: {}}
"""

CHILD_FOR_LEADS = """\
charter: "1.0"
name: child
tools:
  admin: {python: "kidtools:admin", effect: write}
identities:
  svc: {kind: service}
grants:
  - {id: leads-only, to: svc, tools: [admin], when: '"lead" in principal.roles'}
steps:
  - {id: act, tool: admin, identity: svc, args: {who: "${{ run.principal }}"}}
"""


def test_a_child_started_after_an_approval_acts_for_the_runs_principal(tmp_path: Path) -> None:
    """alice's run waits for bob's approval, then starts a child whose grant holds only for a lead.
    bob is a lead; alice is not: the child acts for alice, and is refused."""
    project(tmp_path, {"wf.yaml": PARENT_WAITS, "child.yaml": CHILD_FOR_LEADS})
    (tmp_path / "bob.json").write_text('{"roles": ["lead"]}')
    code, result = run(tmp_path, "--as", "alice")
    assert code == 3, result
    proc = charter("approve", result["run_id"], "ok", "--as", "bob", "--claims", "bob.json", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    db = sqlite3.connect(tmp_path / "charter.db")
    principals = dict(db.execute("SELECT workflow_name, principal FROM runs").fetchall())
    db.close()
    assert calls(tmp_path) == [], f"the child ran admin for {principals['child']}, with bob's roles"
    assert principals == {"parent": "alice", "child": "alice"}


# The parent's http tool picks the calling identity's credentials (spec §8.2): `bot` may refund with
# BOT_TOKEN; `billing` is declared, and granted nothing.
PARENT_CREDENTIALS = """\
charter: "1.0"
name: parent
secrets: [BOT_TOKEN, BILLING_TOKEN]
tools:
  refund:
    http:
      url: "{url}/refunds"
      headers: {{Authorization: "Bearer ${{{{ secrets[identity.upperAscii() + '_TOKEN'] }}}}"}}
    effect: write
  child: {{workflow: child.yaml, effect: write}}
identities:
  bot: {{kind: agent}}
  billing: {{kind: service}}
grants:
  - {{id: bot-child, to: bot, tools: [child]}}
  - {{id: bot-refund, to: bot, tools: [refund]}}
steps:
  - {{id: delegate, tool: child, identity: bot, args: {{}}}}
"""

# The child declares the same tool and calls it under an identity of its own choosing.
CHILD_CALLS_AS = """\
charter: "1.0"
name: child
secrets: [{secret}]
tools:
  refund:
    http:
      url: "{url}/refunds"
      headers: {{Authorization: "Bearer ${{{{ secrets[identity.upperAscii() + '_TOKEN'] }}}}"}}
    effect: write
identities:
  bot: {{kind: agent}}{declared}
grants:
  - {{id: child-all, to: bot, tools: ["*"]}}
  - {{id: child-it, to: {identity}, tools: ["*"]}}
steps:
  - {{id: pay, tool: refund, identity: {identity}, args: {{amount: 5}}}}
"""

TOKENS = {
    "BOT_TOKEN": "bot-token-1234567",
    "BILLING_TOKEN": "billing-token-7654321",
    "TREASURER_TOKEN": "t-555555",
}


@pytest.mark.parametrize(
    ("identity", "kind"), [("billing", "service"), ("treasurer", "service"), ("bot", "agent")]
)
def test_a_child_cannot_pick_the_credentials_its_parents_tool_sends(
    tmp_path: Path, server: Any, identity: str, kind: str
) -> None:
    """The parent's grant lets `bot` refund with bot's credentials. A child started by bot calls the
    same tool under an identity of its own (`billing`, which the parent never granted the tool; or
    `treasurer`, which the parent does not know): the identity picks the credentials the request
    carries, so the parent's grants must allow that identity too. Refused, nothing is sent. As `bot`,
    which the parent grants the tool, the call is made with bot's credentials."""
    declared = "" if identity == "bot" else f"\n  {identity}: {{kind: {kind}}}"
    secret = f"{identity.upper()}_TOKEN"
    child = CHILD_CALLS_AS.format(url=server.url, identity=identity, declared=declared, secret=secret)
    project(tmp_path, {"wf.yaml": PARENT_CREDENTIALS.format(url=server.url), "child.yaml": child})
    server.reply("ok")
    proc = charter("run", "wf.yaml", "--json", "--as", "alice", cwd=tmp_path, env=TOKENS)
    assert "Traceback" not in proc.stderr, describe(proc)
    if identity == "bot":
        assert proc.returncode == 0, describe(proc)
        assert [h["authorization"] for h in server.headers] == ["Bearer bot-token-1234567"]
        return
    assert proc.returncode == 1, describe(proc)
    assert server.headers == []  # no request was made
    (denied,) = events(tmp_path, child_of(tmp_path, run_json(proc)["run_id"]), "authz.decided")
    assert denied["decision"] == "deny" and "parent run's chain may not" in denied["reason"]


# The parent's grant reads its own `vars`: `bot` may call `admin` only in admin mode. The variable is
# the parent's: a child file that declares a variable of the same name widens nothing.
PARENT_READS_VARS = """\
charter: "1.0"
name: parent
tools:
  admin: {{python: "kidtools:admin", effect: write}}
  child: {{workflow: child.yaml, effect: write}}
identities:
  bot: {{kind: agent}}
vars: {{mode: user}}
grants:
  - {{id: bot-child, to: bot, tools: [child]}}
  - {{id: bot-admin, to: bot, tools: [admin], when: 'vars.mode == "admin" && input.level > 2'}}
steps:
  - {{id: mode, set: {{mode: {mode}}}}}
  - {{id: delegate, tool: child, identity: bot, args: {{level: 5}}}}
"""

CHILD_SETS_VARS = """\
charter: "1.0"
name: child
tools:
  admin: {{python: "kidtools:admin", effect: write}}
identities:
  bot: {{kind: agent}}
vars: {{mode: {mode}}}
input: {{type: object}}
grants:
  - {{id: child-all, to: bot, tools: ["*"]}}
steps:
{wait}  - {{id: act, tool: admin, args: {{what: everything}}}}
"""

WAIT = "  - {id: ok, approval: {message: go on?}}\n"


@pytest.mark.parametrize(
    ("parent_mode", "level", "child_mode", "allowed"),
    [("user", 3, "admin", False), ("admin", 1, "admin", False), ("admin", 3, "user", True)],
    ids=["child-sets-the-variable", "child-has-the-input", "parent-set-it"],
)
@pytest.mark.parametrize("waits", [False, True], ids=["at-once", "after-an-approval"])
def test_a_parents_grant_reads_the_parents_vars_and_input_not_the_childs(
    tmp_path: Path, parent_mode: str, level: int, child_mode: str, allowed: bool, waits: bool
) -> None:
    """`vars` and `input` in the parent's grant are the parent's (the child's input has level 5). After
    an approval the child is continued with the parent rebuilt from its log: its vars are then the
    initial ones with the `set` steps the log records applied."""
    project(
        tmp_path,
        {
            "wf.yaml": PARENT_READS_VARS.format(mode=parent_mode),
            "child.yaml": CHILD_SETS_VARS.format(mode=child_mode, wait=WAIT if waits else ""),
        },
    )
    code, result = run(tmp_path, "--input", json.dumps({"level": level}))
    if waits:
        assert code == 3, result
        proc = charter("approve", child_of(tmp_path, result["run_id"]), "ok", "--as", "bob", cwd=tmp_path)
        assert "Traceback" not in proc.stderr, describe(proc)
        code = proc.returncode
    assert code == (0 if allowed else 1)
    assert len(calls(tmp_path)) == (1 if allowed else 0)
    decided = events(tmp_path, child_of(tmp_path, result["run_id"]), "authz.decided")
    assert decided[-1]["decision"] == ("allow" if allowed else "deny"), decided


# The parent's rule on `admin` reads its own `vars` too.
PARENT_RULE_READS_VARS = """\
charter: "1.0"
name: parent
tools:
  admin: {python: "kidtools:admin", effect: write}
  child: {workflow: child.yaml, effect: write}
identities:
  bot: {kind: agent}
vars: {mode: user}
grants:
  - {id: bot-all, to: bot, tools: [child, admin]}
guardrails:
  - {id: admin-mode, on: tool.input, tools: [admin], check: 'vars.mode == "admin"', action: deny}
steps:
  - {id: delegate, tool: child, identity: bot, args: {}}
"""


def test_a_parents_rule_reads_the_parents_vars_not_the_childs(tmp_path: Path) -> None:
    child = CHILD_SETS_VARS.format(mode="admin", wait="")
    project(tmp_path, {"wf.yaml": PARENT_RULE_READS_VARS, "child.yaml": child})
    code, result = run(tmp_path)
    assert code == 1, result
    assert calls(tmp_path) == []
    trips = events(tmp_path, child_of(tmp_path, result["run_id"]), "guardrail.evaluated")
    assert [(t["rule"], t["action"]) for t in trips] == [("admin-mode", "deny")]
