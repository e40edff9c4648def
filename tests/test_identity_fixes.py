"""Identity, grants and escalation fixes from the security review of the identity layer (s8): an
approval covers one attempt of a retried step, delegation in a child run keeps the principal, an
`on_behalf_of` that names nobody fails closed, a child run cannot rebind a name its parent granted,
`principal` means the run's principal in grants as in guardrails, a principal is never an agent, and
a secret is masked in its percent-encoded forms too. Real `charter` processes on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import describe, run_json, tool_project
from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import project_events as events
from fixtures.charter_cli import tool_calls as calls


def project(tmp_path: Path, files: dict[str, str], answers: list[dict[str, Any]] | None = None) -> None:
    """A project folder: the logged tools as module `idtools`, the workflow files, scripted answers."""
    tool_project(tmp_path, "idtools")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    if answers is not None:
        (tmp_path / "answers.yaml").write_text(json.dumps({"responses": answers}))


def run(tmp_path: Path, file: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = charter("run", file, "--json", *extra, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc.returncode, (run_json(proc) if proc.stdout.strip() else {})


def approve(tmp_path: Path, run_id: str, node: str) -> tuple[int, dict[str, Any]]:
    proc = charter("approve", run_id, node, "--as", "sup", "--json", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc.returncode, (run_json(proc) if proc.stdout.strip() else {})


def child_run(tmp_path: Path, parent: str) -> str:
    db = sqlite3.connect(tmp_path / "charter.db")
    try:
        (child,) = db.execute("SELECT run_id FROM runs WHERE parent_run_id = ?", [parent]).fetchone()
    finally:
        db.close()
    return str(child)


# --- 1. an escalation approval covers one attempt of a retried step ---------------------------------

RETRIED_TOOL = """\
charter: "1.0"
name: retried-tool
tools:
  tick: {python: "idtools:tick", effect: write}
guardrails:
  - {id: cap, on: tool.input, tools: [tick], check: 'args.n <= 1', action: escalate, message: "tick"}
steps:
  - id: g
    retry: {attempts: 3, on: [failed], backoff: {initial: 1ms}}
    steps:
      - {id: t, tool: tick, args: {n: 5}}
      - {id: f, fail: {message: "downstream failed"}}
"""


def test_an_approval_covers_one_attempt_of_a_retried_group(tmp_path: Path) -> None:
    """One approval, one call: every new attempt of the retried group asks again at the same node,
    and the request says which attempt it is for. The finished run replays from its log."""
    project(tmp_path, {"wf.yaml": RETRIED_TOOL})
    code, result = run(tmp_path, "wf.yaml")
    assert code == 3 and result["pending"] == ["g/body/t"], result
    run_id = result["run_id"]
    for attempt in (2, 3):
        code, result = approve(tmp_path, run_id, "g/body/t")
        assert code == 3 and result["pending"] == ["g/body/t"], result  # asked again, not allowed
        assert len(calls(tmp_path)) == attempt - 1  # one call per approval, never more
    code, result = approve(tmp_path, run_id, "g/body/t")
    assert code == 1 and result["error"]["message"] == "downstream failed", result
    assert calls(tmp_path) == [{"tool": "tick", "n": 5}] * 3
    requests = events(tmp_path, run_id, "approval.requested")
    assert [r["data"].get("attempts") for r in requests] == [None, {"g": 2}, {"g": 3}]
    assert len(events(tmp_path, run_id, "approval.decided")) == 3
    replay = charter("replay", run_id, cwd=tmp_path)
    assert replay.returncode == 0, describe(replay)


RETRIED_AGENT = """\
charter: "1.0"
name: retried-agent
models:
  default: {provider: scripted, responses: answers.yaml}
tools:
  tick:
    python: "idtools:tick"
    args: {type: object, required: [n], properties: {n: {type: integer}}}
    effect: write
identities:
  bot: {kind: agent}
grants:
  - {id: bot-tick, to: bot, tools: [tick]}
guardrails:
  - {id: cap, on: tool.input, tools: [tick], check: 'args.n <= 1', action: escalate, message: "tick"}
steps:
  - id: g
    retry: {attempts: 2, on: [failed], backoff: {initial: 1ms}}
    steps:
      - id: s
        agent: {identity: bot, tools: [tick], prompt: "tick"}
      - {id: f, fail: {message: "downstream failed"}}
"""

TICK_TWICE = [
    {"step": "s", "turn": 1, "tool_calls": [{"name": "tick", "args": {"n": 5}}]},
    {"step": "s", "turn": 2, "text": "done"},
] * 2


def test_an_agent_in_a_retried_group_asks_again_and_a_fork_does_too(tmp_path: Path) -> None:
    project(tmp_path, {"wf.yaml": RETRIED_AGENT}, TICK_TWICE)
    code, result = run(tmp_path, "wf.yaml")
    assert code == 3 and result["pending"] == ["g/body/s"], result
    run_id = result["run_id"]
    code, result = approve(tmp_path, run_id, "g/body/s")
    assert code == 3 and result["pending"] == ["g/body/s"], result  # the second attempt asks again
    assert len(calls(tmp_path)) == 1
    code, result = approve(tmp_path, run_id, "g/body/s")
    assert code == 1, result
    assert len(calls(tmp_path)) == 2
    replay = charter("replay", run_id, cwd=tmp_path)
    assert replay.returncode == 0, describe(replay)
    # a fork from the failing step reuses the first attempt, and its second attempt asks again
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": TICK_TWICE[:2]}))
    code, fork = run(tmp_path, "wf.yaml", "--from", f"{run_id}@g/body/f")
    assert code == 3 and fork["pending"] == ["g/body/s"], fork
    assert len(calls(tmp_path)) == 2


def test_an_agent_steps_own_retry_asks_again_each_attempt_and_replays(tmp_path: Path) -> None:
    # The agent's own `retry` (not a group's): each attempt's call is a new call, and replay finds each
    # attempt's approval in the log (the approval is tied to the attempt, not to a call number).
    own_retry = RETRIED_AGENT.replace(
        """  - id: g
    retry: {attempts: 2, on: [failed], backoff: {initial: 1ms}}
    steps:
      - id: s
        agent: {identity: bot, tools: [tick], prompt: "tick"}
      - {id: f, fail: {message: "downstream failed"}}""",
        """  - id: s
    retry: {attempts: 2, on: [max_turns], backoff: {initial: 1ms}}
    agent: {identity: bot, tools: [tick], prompt: "tick", max_turns: 2}""",
    )
    assert own_retry != RETRIED_AGENT
    small = {"step": "s", "turn": 2, "tool_calls": [{"name": "tick", "args": {"n": 0}}]}  # asks no one
    project(tmp_path, {"wf.yaml": own_retry}, [TICK_TWICE[0], small] * 2)
    code, result = run(tmp_path, "wf.yaml")
    assert code == 3 and result["pending"] == ["s"], result
    run_id = result["run_id"]
    code, result = approve(tmp_path, run_id, "s")
    assert code == 3 and result["pending"] == ["s"], result  # the second attempt asks again
    code, result = approve(tmp_path, run_id, "s")
    assert code == 1 and result["error"]["code"] == "max_turns", result
    assert [c["n"] for c in calls(tmp_path)] == [5, 5]  # the last turn's call is past max_turns
    replay = charter("replay", run_id, cwd=tmp_path)
    assert replay.returncode == 0, describe(replay)


# --- 2. delegation in a child run keeps the principal -------------------------------------------------

PARENT_AGENT = """\
charter: "1.0"
name: parent
models:
  default: {provider: scripted, responses: answers.yaml}
tools:
  sub: {workflow: child.yaml, effect: write}
  admin: {python: "idtools:admin", effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-all, to: bot, tools: ["*"]}
steps:
  - id: s
    agent: {identity: bot, tools: [sub], prompt: "do it"}
"""

DELEGATING_CHILD = """\
charter: "1.0"
name: child
input: {type: object}
models:
  default: {provider: scripted, responses: answers.yaml}
tools:
  admin: {python: "idtools:admin", effect: write}
identities:
  bot: {kind: agent}
  cbot: {kind: agent}
grants:
  - {id: c-bot, to: bot, tools: ["*"]}
  - {id: c-cbot, to: cbot, tools: ["*"]}
steps:
  - id: c
    agent:
      identity: cbot
      on_behalf_of: "${{ run.principal }}"
      tools: [admin]
      prompt: "go"
"""

CHILD_CALLS_ADMIN = [
    {"step": "s", "turn": 1, "tool_calls": [{"name": "sub", "args": {}}]},
    {"step": "s", "turn": 2, "text": "done"},
    {"step": "c", "turn": 1, "tool_calls": [{"name": "admin", "args": {"what": "x"}}]},
    {"step": "c", "turn": 2, "text": "done"},
]


def test_acting_for_the_principal_in_a_child_run_adds_the_principal_to_the_parents_chain(
    tmp_path: Path,
) -> None:
    """The parent's agent acts for nobody; the child's acts for the run's principal, who holds no grant:
    the call is checked against every party, the principal included, and denied."""
    project(tmp_path, {"wf.yaml": PARENT_AGENT, "child.yaml": DELEGATING_CHILD}, CHILD_CALLS_ADMIN)
    code, result = run(tmp_path, "wf.yaml", "--as", "alice")
    assert code == 0, result
    assert calls(tmp_path) == []  # admin never ran
    (decided,) = events(tmp_path, child_run(tmp_path, result["run_id"]), "authz.decided")
    assert decided["decision"] == "deny", decided
    assert decided["actor_chain"] == ["user:alice", "agent:bot", "agent:cbot"]
    assert decided["principal"] == "alice" and "user:alice" in decided["reason"]


# --- 3. an on_behalf_of that names nobody fails closed ------------------------------------------------

DELEGATED = """\
charter: "1.0"
name: delegated
input: {type: object}
models:
  default: {provider: scripted, responses: answers.yaml}
tools:
  admin: {python: "idtools:admin", effect: write}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-all, to: bot, tools: [admin]}
steps:
  - id: s
    agent:
      identity: bot
      on_behalf_of: 'ON_BEHALF_OF'
      tools: [admin]
      prompt: "do it"
"""

ADMIN_ONCE = [
    {"step": "s", "turn": 1, "tool_calls": [{"name": "admin", "args": {"what": "x"}}]},
    {"step": "s", "turn": 2, "text": "done"},
]


def test_on_behalf_of_null_fails_the_step_instead_of_using_the_agents_own_grants(tmp_path: Path) -> None:
    project(tmp_path, {"wf.yaml": DELEGATED.replace("ON_BEHALF_OF", "${{ input.user }}")}, ADMIN_ONCE)
    code, result = run(tmp_path, "wf.yaml", "--input", '{"user": null}')
    assert code == 1, result
    error = result["error"]
    assert error["code"] == "unauthorized" and error["step"] == "s", error
    assert error["message"].startswith("agent step 's': on_behalf_of evaluated to null"), error
    assert calls(tmp_path) == []
    assert events(tmp_path, result["run_id"], "model.called") == []  # refused before the model is asked
    # a principal the step does name still delegates: alice holds no grant, so the call is denied
    code, result = run(tmp_path, "wf.yaml", "--input", '{"user": "alice"}', "--as", "alice")
    assert code == 0 and calls(tmp_path) == [], result
    (decided,) = events(tmp_path, result["run_id"], "authz.decided")
    assert decided["actor_chain"] == ["user:alice", "agent:bot"] and decided["decision"] == "deny"


def test_on_behalf_of_a_list_is_a_step_error_naming_the_step(tmp_path: Path) -> None:
    project(tmp_path, {"wf.yaml": DELEGATED.replace("ON_BEHALF_OF", '${{ ["alice"] }}')}, ADMIN_ONCE)
    code, result = run(tmp_path, "wf.yaml", "--as", "alice")
    assert code == 1, result
    error = result["error"]
    assert (error["code"], error["step"], error["type"]) == ("expression", "s", "ExpressionError"), error
    assert error["message"] == (
        "agent step 's': on_behalf_of must evaluate to an identity name (a string), not list"
    )
    assert calls(tmp_path) == []


# --- 4. a child run cannot rebind a tool name its parent granted ----------------------------------------

REBIND_PARENT = """\
charter: "1.0"
name: parent
tools:
  echo: {python: "idtools:echo", effect: read}
  leaf: {workflow: kids/leaf.yaml, effect: read}
  sub_ok: {workflow: kids/same.yaml, effect: read}
  sub_bad: {workflow: kids/rebinds.yaml, effect: read}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-tools, to: bot, tools: [echo, leaf, sub_ok, sub_bad]}
steps:
  - {id: ok, tool: sub_ok, identity: bot, args: {}}
  - {id: bad, tool: sub_bad, identity: bot, args: {}}
"""


def child_file(name: str, body: str) -> str:
    """A child workflow that grants `bot` every tool it declares in `body`."""
    head = f"""\
charter: "1.0"
name: {name}
input: {{type: object}}
identities:
  bot: {{kind: agent}}
grants:
  - {{id: child-grants-bot-everything, to: bot, tools: ["*"]}}
"""
    return head + body


SAME_CHILD = child_file(
    "same",
    """\
tools:
  echo: {python: "idtools:echo", effect: read, description: "the parent's echo, described anew"}
  leaf: {workflow: leaf.yaml, effect: read}
steps:
  - {id: e, tool: echo, args: {from: same}}
  - {id: l, tool: leaf, args: {}}
""",
)

LEAF = child_file(
    "leaf",
    """\
tools:
  echo: {python: "idtools:echo", effect: read}
steps:
  - {id: e, tool: echo, args: {from: leaf}}
""",
)

REBINDING_CHILD = child_file(
    "rebinds",
    """\
tools:
  echo: {python: "idtools:admin", effect: write}
steps:
  - {id: e, tool: echo, args: {from: rebinds}}
""",
)


def test_a_child_run_cannot_rebind_a_tool_name_its_parent_granted(tmp_path: Path) -> None:
    """The parent grants bot `echo` (a read). A child that means the same tool by it (the same python
    ref; a workflow path written relative to its own folder) may call it under that grant; a child
    that binds `echo` to other code is denied, and the decision says why."""
    (tmp_path / "kids").mkdir()
    files = {
        "wf.yaml": REBIND_PARENT,
        "kids/same.yaml": SAME_CHILD,
        "kids/leaf.yaml": LEAF,
        "kids/rebinds.yaml": REBINDING_CHILD,
    }
    project(tmp_path, files)
    code, result = run(tmp_path, "wf.yaml")
    assert code == 1 and result["error"]["step"] == "bad", result
    assert calls(tmp_path) == [{"tool": "echo", "from": "same"}, {"tool": "echo", "from": "leaf"}]
    db = sqlite3.connect(tmp_path / "charter.db")
    try:
        rows = db.execute("SELECT run_id, workflow_name FROM runs WHERE parent_run_id IS NOT NULL").fetchall()
    finally:
        db.close()
    children = {name: run_id for run_id, name in rows}
    (denied,) = events(tmp_path, children["rebinds"], "authz.decided")
    assert denied["decision"] == "deny" and denied["grant"] == "default-deny"
    assert "parent run's chain may not" in denied["reason"]
    assert "python idtools:echo (action read)" in denied["reason"]
    assert "python idtools:admin (action write)" in denied["reason"]
    assert [d["decision"] for d in events(tmp_path, children["same"], "authz.decided")] == ["allow"] * 2


# --- 5. `principal` is the run's principal in grants as in guardrails; a principal is never an agent ----

PRINCIPAL_GRANT = """\
charter: "1.0"
name: principal-grant
tools:
  echo: {python: "idtools:echo", effect: read}
identities:
  svc: {kind: service}
  bot: {kind: agent}
grants:
  - {id: svc-for-alice, to: svc, tools: [echo], when: 'principal.id == "alice"'}
  - {id: bot-echo, to: bot, tools: [echo]}
guardrails:
  - {id: seen, on: tool.input, check: 'principal.id == "alice"', action: warn}
steps:
  - {id: t, tool: echo, identity: svc, args: {text: a}}
"""


def test_principal_in_a_grant_condition_is_the_runs_principal(tmp_path: Path) -> None:
    """A tool step under a service identity acts for nobody, yet `principal` in its grant's `when` is
    the run's principal, as the guardrail at the same call sees it."""
    project(tmp_path, {"wf.yaml": PRINCIPAL_GRANT})
    code, result = run(tmp_path, "wf.yaml", "--as", "alice")
    assert code == 0, result
    assert calls(tmp_path) == [{"tool": "echo", "text": "a"}]
    (decided,) = events(tmp_path, result["run_id"], "authz.decided")
    assert (decided["decision"], decided["grant"], decided["run_principal"]) == (
        "allow",
        "svc-for-alice",
        "alice",
    )
    assert events(tmp_path, result["run_id"], "guardrail.evaluated") == []  # the rule held too
    code, result = run(tmp_path, "wf.yaml", "--as", "bob")
    assert code == 1 and result["error"]["code"] == "unauthorized", result
    assert len(calls(tmp_path)) == 1


def test_a_principal_named_after_an_agent_identity_is_refused(tmp_path: Path) -> None:
    project(tmp_path, {"wf.yaml": PRINCIPAL_GRANT})
    proc = charter("run", "wf.yaml", "--as", "bot", cwd=tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert "principal 'bot' is the name of an agent identity of workflow 'principal-grant'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert calls(tmp_path) == []


# --- 6. a secret is masked in its percent-encoded forms too ---------------------------------------------

SECRET = "s3cr/et+key== x"  # base64 characters and a space: each URL encoding writes it differently


def test_every_url_encoding_of_a_secret_is_masked() -> None:
    from urllib.parse import quote, quote_plus

    from interpreter.enforcement import RunGuard
    from interpreter.redact import MASK, mask_matches

    pattern = RunGuard._secrets_pattern(frozenset({SECRET}))
    forms = [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        quote(SECRET, safe="").lower(),
    ]
    assert len(set(forms)) == len(forms)
    for form in forms:
        assert mask_matches(f"GET http://h/api/{form}/x", pattern, MASK)[0] == f"GET http://h/api/{MASK}/x"


HTTP_SECRET = """\
charter: "1.0"
name: http-secret
secrets: [API_KEY]
tools:
  status:
    http: {method: GET, url: "http://127.0.0.1:PORT/api/${{ secrets.API_KEY }}/x"}
    effect: read
steps:
  - id: t
    try:
      steps:
        - {id: fetch, tool: status}
      catch:
        steps:
          - {id: c, fail: {message: "E: ${{ error.message }}"}}
"""


def test_a_secret_percent_encoded_in_an_http_url_never_reaches_the_log_or_the_output(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on: the call fails, its message names the URL
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    project(tmp_path, {"wf.yaml": HTTP_SECRET.replace("PORT", str(port))})
    proc = charter("run", "wf.yaml", "--json", cwd=tmp_path, env={"API_KEY": SECRET})
    assert proc.returncode == 1, describe(proc)
    message = run_json(proc)["error"]["message"]
    assert f"http://127.0.0.1:{port}/api/[REDACTED]/x" in message, message
    encoded = "s3cr%2Fet%2Bkey%3D%3D%20x"
    assert encoded not in proc.stdout + proc.stderr
    logged = b"".join(p.read_bytes() for p in tmp_path.glob("charter.db*"))  # the WAL too, if kept
    assert encoded.encode() not in logged and b"s3cr" not in logged


def test_a_child_continued_on_its_own_keeps_the_tools_it_shares_with_its_parent(tmp_path: Path) -> None:
    # The parent declares `t` relative to its folder, the child relative to its own: the same file.
    # Continued by `charter approve CHILD`, the parent's declarations are read from the log and must
    # resolve against the parent file's folder, not the current directory.
    (tmp_path / "sub").mkdir()
    project(
        tmp_path,
        {
            "top.yaml": """\
                charter: "1.0"
                name: top
                tools:
                  m: {workflow: sub/mid.yaml, effect: read}
                  t: {workflow: sub/leaf.yaml, effect: read}
                identities: {bot: {kind: agent}}
                grants: [{id: bot-mt, to: bot, tools: [m, t]}]
                steps:
                  - {id: mid, tool: m, identity: bot}
                output: {mid: "${{ steps.mid.output }}"}
                """,
            "sub/mid.yaml": """\
                charter: "1.0"
                name: mid
                tools:
                  t: {workflow: leaf.yaml, effect: read}
                identities: {bot: {kind: agent}}
                grants: [{id: bot-t, to: bot, tools: [t]}]
                steps:
                  - {id: gate, approval: {message: go?}}
                  - {id: call, tool: t, identity: bot}
                output: {leaf: "${{ steps.call.output }}"}
                """,
            "sub/leaf.yaml": """\
                charter: "1.0"
                name: leaf
                vars: {v: 0}
                steps:
                  - {id: one, set: {v: 1}}
                output: {v: "${{ vars.v }}"}
                """,
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, waiting = run(tmp_path, "top.yaml")
    assert code == 3, waiting
    mid = child_run(tmp_path, waiting["run_id"])
    proc = charter(
        "approve", mid, "gate", "--as", "sup", "--json", "--db", str(tmp_path / "charter.db"), cwd=elsewhere
    )
    assert proc.returncode == 0, describe(proc)
    assert run_json(proc)["output"] == {"mid": {"leaf": {"v": 1}}}


def test_as_names_a_person_user_prefix_or_not_and_never_a_role_or_the_runtime(tmp_path: Path) -> None:
    project(
        tmp_path,
        {"gate.yaml": 'charter: "1.0"\nname: gate\nsteps:\n  - {id: ok, approval: {message: go?}}\n'},
    )
    for reserved in ("role:lead", "system:timeout", "agent:bot", "workflow:gate", "user:role:lead"):
        proc = charter("run", "gate.yaml", "--as", reserved, cwd=tmp_path)
        assert proc.returncode == 2 and f"--as: '{reserved}' " in proc.stderr, (reserved, proc.stderr)
    code, waiting = run(tmp_path, "gate.yaml", "--as", "user:carol")
    assert code == 3, waiting
    started = events(tmp_path, waiting["run_id"], "run.started")
    db = sqlite3.connect(tmp_path / "charter.db")
    try:
        (principal,) = db.execute(
            "SELECT principal FROM runs WHERE run_id = ?", [waiting["run_id"]]
        ).fetchone()
        actor = json.loads(
            db.execute(
                "SELECT actor FROM events WHERE run_id = ? AND seq = 1", [waiting["run_id"]]
            ).fetchone()[0]
        )
    finally:
        db.close()
    assert principal == "carol" and actor == {"sub": "user:carol"} and started
    proc = charter("approve", waiting["run_id"], "ok", "--as", "user:sup", "--json", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    (decided,) = [e for e in events(tmp_path, waiting["run_id"], "approval.decided")]
    assert decided["by"] == "sup"
    db = sqlite3.connect(tmp_path / "charter.db")
    try:
        (actor_json,) = db.execute(
            "SELECT actor FROM events WHERE run_id = ? AND kind = 'approval.decided'", [waiting["run_id"]]
        ).fetchone()
    finally:
        db.close()
    assert json.loads(actor_json) == {"sub": "user:sup"}
