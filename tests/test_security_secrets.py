"""A declared secret never reaches the event log nor what `charter log`/`explain` print (spec §9), in
whatever shape it comes back: as the key of an object an HTTP API answers with, too. Real `charter`
processes on a real SQLite file, a real HTTP server on 127.0.0.1 (the `server` fixture)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import describe, run_json, tool_project
from fixtures.charter_cli import project_charter as charter

TOKEN = "tok-KEYED-5512-secret"
ENV = {"API_TOKEN": TOKEN}


def project(tmp_path: Path, workflow: str) -> None:
    tool_project(tmp_path, "secrettools")
    (tmp_path / "wf.yaml").write_text(textwrap.dedent(workflow))


def log_bytes(folder: Path) -> bytes:
    """Every byte the store wrote: the SQLite file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in folder.glob("charter.db*"))


def test_a_secret_as_the_key_of_an_answer_never_reaches_the_log(tmp_path: Path, server: Any) -> None:
    """An API that reports usage per key answers `{"usage": {"<the token>": 42}}`: the token is masked
    in the keys of what the log keeps (the tool's result, the step's and the run's output), so neither
    the file nor `charter log`, `explain` or the run's printed output hold it."""
    server.answers.append((200, {"usage": {TOKEN: 42}, "plan": "pro"}))
    project(
        tmp_path,
        f"""\
        charter: "1.0"
        name: usage
        secrets: [API_TOKEN]
        tools:
          usage:
            http:
              method: POST
              url: "{server.url}/usage"
              headers: {{Authorization: "Bearer ${{{{ secrets.API_TOKEN }}}}"}}
            effect: read
        steps:
          - {{id: fetch, tool: usage}}
        output:
          calls: "${{{{ steps.fetch.output.usage }}}}"
          keys: "${{{{ size(steps.fetch.output.usage) }}}}"
        """,
    )
    ran = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=ENV)
    assert ran.returncode == 0, describe(ran)
    assert server.headers[0]["authorization"] == f"Bearer {TOKEN}"  # the call had the secret
    result = run_json(ran)
    assert result["output"] == {"calls": {"[REDACTED]": 42}, "keys": 1}
    assert TOKEN not in ran.stdout + ran.stderr
    assert TOKEN.encode() not in log_bytes(tmp_path)
    for command in (
        ("log", result["run_id"]),
        ("log", result["run_id"], "--json"),
        ("explain", result["run_id"]),
    ):
        shown = charter(*command, cwd=tmp_path, env=ENV)
        assert shown.returncode == 0, describe(shown)
        assert TOKEN not in shown.stdout + shown.stderr, command
    verified = charter("verify", result["run_id"], cwd=tmp_path)
    assert verified.returncode == 0, describe(verified)


def test_keys_that_mask_alike_stay_apart() -> None:
    from interpreter.redact import mask_secrets

    value = {"a-SEC": 1, "b-SEC": 2, "[REDACTED]": 3, "deep": [{"SEC": "SEC"}], 4: "x"}
    assert mask_secrets(value, ["a-SEC", "b-SEC", "SEC"]) == {
        "[REDACTED]#2": 1,
        "[REDACTED]#3": 2,
        "[REDACTED]": 3,
        "deep": [{"[REDACTED]": "[REDACTED]"}],
        4: "x",
    }


def test_the_principals_own_tokens_in_its_claims_never_reach_the_log(tmp_path: Path) -> None:
    """Claims handed in with `--claims` are often an identity provider's answer: Cognito's
    `AuthenticationResult` (`AccessToken`, `IdToken`, `RefreshToken`), MSAL's `accessToken`, or a
    token response nested under a key. The principal's own credentials are dropped whatever their
    spelling or depth (a tool gets credentials for the identity that acts, from `secrets`); the other
    claims stay, for grants and rules to read."""
    project(
        tmp_path,
        """\
        charter: "1.0"
        name: claims
        tools:
          echo: {python: "secrettools:echo", effect: read}
        identities:
          bot: {kind: service}
        grants:
          - {id: bot-echo, to: bot, tools: [echo], when: 'principal.tenant == "acme"'}
        steps:
          - {id: e, tool: echo, identity: bot, args: {who: "${{ run.principal }}"}}
        """,
    )
    tokens = ["cog-ACCESS-1", "cog-ID-2", "cog-REFRESH-3", "msal-ACCESS-4", "nested-ID-5", "x-auth-6"]
    claims = {
        "roles": ["staff"],
        "tenant": "acme",
        "AccessToken": tokens[0],
        "IdToken": tokens[1],
        "RefreshToken": tokens[2],
        "accessToken": tokens[3],
        "oidc": {"id_token": tokens[4], "token_type": "Bearer"},
        "X-Auth-Token": tokens[5],
    }
    (tmp_path / "claims.json").write_text(json.dumps(claims))
    ran = charter("run", "wf.yaml", "--json", "--as", "alice", "--claims", "claims.json", cwd=tmp_path)
    assert ran.returncode == 0, describe(ran)
    run_id = run_json(ran)["run_id"]
    shown = charter("explain", run_id, cwd=tmp_path)
    assert shown.returncode == 0, describe(shown)
    written = log_bytes(tmp_path).decode("utf-8", "replace") + ran.stdout + ran.stderr + shown.stdout
    assert [t for t in tokens if t in written] == []
    assert "acme" in written and "Bearer" in written  # the claims that are not credentials are kept


@pytest.mark.parametrize(
    ("answer", "seen"),
    [
        # the call's error names the request's url, with the key in its query
        ((503, {"error": "busy"}), "HTTP 503"),
        # the API echoes the key it was called with
        ((200, {"found": "acme", "called_with": f"key={TOKEN}"}), "acme"),
    ],
    ids=["error", "echo"],
)
def test_what_the_model_reads_of_a_call_holds_the_secret_masked(
    tmp_path: Path, server: Any, answer: tuple[int, Any], seen: str
) -> None:
    """An API that takes its key in the query (`?key=...`): the agent passes the call's error or result
    on to the model, a third party. The message the model reads holds the key masked, as the log does."""
    server.call_tools(("lookup", {"q": "acme"}))
    server.answers.append(answer)  # the tool's request
    server.reply("Done.")
    project(
        tmp_path,
        f"""\
        charter: "1.0"
        name: keyed
        secrets: [API_TOKEN]
        models:
          default: {{provider: openai, model: test-model, base_url: "{server.url}"}}
        tools:
          lookup:
            http: {{method: POST, url: "{server.url}/lookup?key=${{{{ secrets.API_TOKEN }}}}"}}
            effect: read
        identities:
          bot: {{kind: agent}}
        grants:
          - {{id: bot-lookup, to: bot, tools: [lookup]}}
        steps:
          - id: ask
            agent: {{identity: bot, tools: [lookup], prompt: "Look acme up."}}
        output: {{answer: "${{{{ steps.ask.output }}}}"}}
        """,
    )
    ran = charter("run", "wf.yaml", "--json", cwd=tmp_path, env=ENV)
    assert ran.returncode == 0, describe(ran)
    assert server.paths[1].endswith(f"/lookup?key={TOKEN}")  # the request had the key
    (tool_message,) = [m for m in server.requests[2]["messages"] if m["role"] == "tool"]
    assert seen in tool_message["content"] and "[REDACTED]" in tool_message["content"]
    assert TOKEN not in json.dumps(server.requests[2])
    assert TOKEN.encode() not in log_bytes(tmp_path)


CARD = "4111 1111 1111 1111"


def test_a_value_a_rule_redacts_is_not_quoted_by_another_rules_error(tmp_path: Path) -> None:
    """The model puts a card number where the total belongs. `no-cards` masks it in the answer; `cap`
    cannot convert the text to a number, and CEL's error quotes the text: the reason logged for `cap`,
    and the step's error, must not bring back what `no-cards` masked."""
    project(
        tmp_path,
        """\
        charter: "1.0"
        name: totals
        models:
          default: {provider: scripted, responses: answers.yaml}
        guardrails:
          - {id: no-cards, on: agent.output, regex: '\\b(?:\\d[ -]?){13,16}\\b', action: redact}
          - {id: cap, on: agent.output, check: 'double(output.total) < 1000.0', action: deny}
        steps:
          - id: sum
            agent:
              prompt: "Total the order."
              output_schema: {type: object, required: [total], properties: {total: {type: string}}}
        """,
    )
    (tmp_path / "answers.yaml").write_text(
        json.dumps({"responses": [{"step": "sum", "turn": 1, "json": {"total": f"paid by {CARD}"}}]})
    )
    ran = charter("run", "wf.yaml", "--json", cwd=tmp_path)
    assert ran.returncode == 1, describe(ran)
    result = run_json(ran)
    assert result["error"]["code"] == "guardrail"
    assert CARD not in ran.stdout + ran.stderr
    assert CARD.encode() not in log_bytes(tmp_path)
    shown = charter("explain", result["run_id"], cwd=tmp_path)
    assert CARD not in shown.stdout
