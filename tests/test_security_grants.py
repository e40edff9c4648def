"""Grants fail closed on what a model controls: a `deny` grant that lists resources still denies a call
whose resource the tool's `resource` cannot give (the model sent an argument of another type, or left
it out). Real `charter` processes on a real SQLite file, the `scripted` model provider."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from fixtures.charter_cli import describe, run_json, tool_project
from fixtures.charter_cli import project_charter as charter
from fixtures.charter_cli import project_events as events
from fixtures.charter_cli import tool_calls as calls


def project(tmp_path: Path, workflow: str, answers: list[dict[str, Any]]) -> None:
    tool_project(tmp_path, "granttools")
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(workflow))
    (tmp_path / "answers.yaml").write_text(json.dumps({"responses": answers}))


def run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = charter("run", "wf.yaml", "--json", *extra, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc.returncode, (run_json(proc) if proc.stdout.strip() else {})


# `bot` may close accounts, except the ones the deny grant names by resource.
ACCOUNTS = """\
charter: "1.0"
name: accounts
models:
  default: {provider: scripted, responses: answers.yaml}
tools:
  close: {python: "granttools:admin", effect: write, resource: "${{ args.account }}"}
  close_in: {python: "granttools:admin", effect: write, resource: "bank/${{ args.account.id }}"}
identities:
  bot: {kind: agent}
grants:
  - {id: bot-close, to: bot, tools: [close, close_in]}
  - {id: not-the-vault, to: bot, tools: [close], resources: ["1000"], effect: deny}
  - {id: not-the-bank, to: bot, tools: [close_in], resources: ["bank/*"], effect: deny}
steps:
  - id: act
    agent: {identity: bot, tools: [close, close_in], prompt: "Close the accounts."}
output: {answer: "${{ steps.act.output }}"}
"""


def _turns(*args: tuple[str, Any]) -> list[dict[str, Any]]:
    answers = [
        {"step": "act", "turn": i, "tool_calls": [{"name": name, "args": a}]}
        for i, (name, a) in enumerate(args, 1)
    ]
    return [*answers, {"step": "act", "turn": len(args) + 1, "text": "done"}]


def test_a_deny_grant_on_resources_holds_when_the_resource_cannot_be_computed(tmp_path: Path) -> None:
    """The model asks for account 1000 as a string (denied by `not-the-vault`), then as the number 1000
    (the tool's resource is then no string) and `close_in` with an account that is no object (its
    resource does not evaluate): a deny grant listing resources fails closed, as one whose `when`
    errors does, and no call is made."""
    project(
        tmp_path,
        ACCOUNTS,
        _turns(("close", {"account": "1000"}), ("close", {"account": 1000}), ("close_in", {"account": "x"})),
    )
    code, result = run(tmp_path, "--as", "alice")
    assert code == 0, result
    assert calls(tmp_path) == []
    decided = [
        (d["tool"], d["decision"], d["grant"]) for d in events(tmp_path, result["run_id"], "authz.decided")
    ]
    assert decided == [
        ("close", "deny", "not-the-vault"),
        ("close", "deny", "not-the-vault"),
        ("close_in", "deny", "not-the-bank"),
    ]
    reasons = [d["reason"] for d in events(tmp_path, result["run_id"], "authz.decided")]
    assert "resource" in reasons[1] and "resource" in reasons[2]


def test_an_http_request_is_built_from_the_arguments_the_grants_decided_on(
    tmp_path: Path, server: Any
) -> None:
    """The grant and the rule read the call's `args` ({amount: 5}); the request must send those, not the
    item of a `for_each` that happens to be named `args` ({amount: 1000000})."""
    server.reply("ok")
    tool_project(tmp_path, "granttools")
    (tmp_path / "wf.yaml").write_text(
        textwrap.dedent(
            f"""\
            charter: "1.0"
            name: loop
            tools:
              refund:
                http: {{method: POST, url: "{server.url}/refunds", json: {{amount: "${{{{ args.amount }}}}"}}}}
                effect: write
            identities:
              bot: {{kind: agent}}
            grants:
              - {{id: bot-small-refunds, to: bot, tools: [refund], when: 'args.amount <= 100'}}
            guardrails:
              - {{id: cap, on: tool.input, tools: [refund], check: 'args.amount <= 100'}}
            steps:
              - id: each
                for_each:
                  in: "${{{{ input.refunds }}}}"
                  as: args
                  steps:
                    - {{id: pay, tool: refund, identity: bot, args: {{amount: 5}}}}
            """
        )
    )
    code, result = run(tmp_path, "--input", json.dumps({"refunds": [{"amount": 1000000}]}))
    assert server.requests[-1:] != [{"amount": 1000000}], (
        "the request sent the loop item, not the call's args"
    )
    assert code == 0 and server.requests == [{"amount": 5}], result
