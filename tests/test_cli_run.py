"""The `charter` run commands as a user runs them: real processes, a real SQLite file, exit codes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fixtures.charter_cli import REPO, charter_cmd, child_env
from fixtures.charter_cli import project_charter as charter

EXAMPLES = REPO / "examples"
APPROVAL_INPUT = json.dumps(
    {
        "employee": "ann",
        "items": [{"category": "travel", "amount": 900}, {"category": "hotel", "amount": 300}],
    }
)

TOOLS = """
import json, os

def effect(name, log):
    with open(log, "a") as f:
        f.write(json.dumps({"effect": name}) + "\\n")
    if os.environ.get("H10_CRASH_AT") == name:
        os._exit(9)  # a crash in the middle of the run, right after the side effect
    return name.upper()
"""


def run_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(proc.stdout)


def test_run_example_prints_output_and_progress(tmp_path: Path) -> None:
    proc = charter("run", str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == 360.5
    assert "✓ totals" in proc.stderr and "priced" in proc.stderr
    assert (tmp_path / "charter.db").exists()


def test_run_json_db_option_runs_log_verify_replay(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    proc = charter(
        "run", str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", "--json", "--db", str(db),
        "--durability", "full", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = run_json(proc)
    assert result["status"] == "completed" and result["error"] is None and result["output"]["count"] == 4
    run_id = result["run_id"]
    listed = charter("runs", "--db", str(db), cwd=tmp_path)
    assert run_id in listed.stdout and "completed" in listed.stdout
    log = charter("log", run_id, "--db", str(db), cwd=tmp_path)
    assert "run.started" in log.stdout and "run.completed" in log.stdout
    log_json = charter("log", run_id, "--json", "--db", str(db), cwd=tmp_path)
    events = [json.loads(line) for line in log_json.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    verify = charter("verify", run_id, "--db", str(db), cwd=tmp_path)
    assert verify.returncode == 0 and "intact" in verify.stdout
    replay = charter("replay", run_id, "--db", str(db), cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_exit_codes_for_bad_input_file_and_module(tmp_path: Path) -> None:
    bad_input = charter("run", str(EXAMPLES / "approval.yaml"), "--input", '{"items": 3}', cwd=tmp_path)
    assert bad_input.returncode == 2 and "input" in bad_input.stderr
    not_json = charter("run", str(EXAMPLES / "approval.yaml"), "--input", "{nope", cwd=tmp_path)
    assert not_json.returncode == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text('charter: "1.0"\nname: broken\nsteps: 3\n')
    assert charter("run", str(broken), cwd=tmp_path).returncode == 2
    flow, log = _crashy(tmp_path)
    refused = charter("run", str(flow), cwd=tmp_path)
    assert refused.returncode == 2 and "not allowed" in refused.stderr
    assert not log.exists()
    assert "Traceback" not in refused.stderr + bad_input.stderr
    nobody = charter("run", str(EXAMPLES / "approval.yaml"), "--as", " ", cwd=tmp_path)
    assert nobody.returncode == 2 and "--as needs a name" in nobody.stderr
    no_approver = charter("approve", "01NOSUCHRUN", "gate", "--as", "", cwd=tmp_path)
    assert no_approver.returncode == 2 and "--as needs the name" in no_approver.stderr


@pytest.mark.parametrize("given", ["NaN", '{"a": NaN}', '{"a": [Infinity]}'])
def test_an_input_json_cannot_hold_is_refused_as_not_json(tmp_path: Path, given: str) -> None:
    """Python's json reads NaN and Infinity; JSON has no such numbers, and the log could not keep them.
    The run is refused as such (a NaN, unequal to itself, once read as a declared secret)."""
    flow = tmp_path / "echo.yaml"
    flow.write_text(
        'charter: "1.0"\nname: echo\noutput: {x: "${{ input }}"}\nsteps:\n  - {id: a, if: "false", fail: {message: no}}\n'
    )
    proc = charter("run", str(flow), "--input", given, "--db", str(tmp_path / "c.db"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "the input is not JSON" in proc.stderr and "secret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_what_cannot_be_set_up_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    """A python tool that does not load, or a model that cannot be built, exits 2 and creates no run."""
    routing = (EXAMPLES / "routing.yaml").read_text(encoding="utf-8")
    flow = tmp_path / "routing.yaml"
    flow.write_text(
        routing.replace("examples.tools:lookup_invoice", "examples.tools:lookup_invoices").replace(
            "examples.tools:search", "examples.tools:searches"
        )
    )
    (tmp_path / "routing.responses.yaml").write_text((EXAMPLES / "routing.responses.yaml").read_text())
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["examples.*"]\n')
    line = next(n for n, text in enumerate(flow.read_text().splitlines(), 1) if "lookup_invoices" in text)
    ticket = json.dumps({"message": "Why was I charged twice on INV-1002?"})
    no_function = charter("run", str(flow), "--input", ticket, cwd=tmp_path)
    assert no_function.returncode == 2, no_function.stderr
    assert f"routing.yaml:{line}:" in no_function.stderr
    assert "cannot load examples.tools:lookup_invoices: AttributeError" in no_function.stderr
    assert "cannot load examples.tools:searches" in no_function.stderr  # every problem at once
    for model, message in [
        ("default=bogus:x", "unknown provider 'bogus'"),
        ("default=scripted:missing.yaml", "the responses file does not exist"),
        ("default=openai:gpt-4.1-mini", "no API key: set OPENAI_API_KEY"),
    ]:
        refused = charter(
            "run", str(EXAMPLES / "routing.yaml"), "--model", model, "--input", ticket, cwd=tmp_path
        )
        assert refused.returncode == 2 and "model 'default': " in refused.stderr, refused.stderr
        assert message in refused.stderr and "Traceback" not in refused.stderr
    assert not list(tmp_path.glob("charter.db*"))  # nothing was written, not even an empty log


def _approve_then_ask(flow: Path) -> Path:
    """A workflow that waits for ann's approval, then asks its (scripted) model."""
    flow.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: approve-then-ask
            models: {default: {provider: scripted, responses: answers.yaml}}
            identities: {ann: {kind: user}}
            steps:
              - {id: ok, approval: {message: "go?", approvers: [ann]}}
              - {id: ask, llm: {prompt: "hello"}}
            output: {said: "${{ steps.ask.output }}"}
            """
        )
    )
    (flow.parent / "answers.yaml").write_text("responses:\n  - {step: ask, text: hi}\n")
    return flow


def test_a_run_continued_where_its_model_cannot_be_set_up_stays_resumable(tmp_path: Path) -> None:
    flow = _approve_then_ask(tmp_path / "ask.yaml")
    waiting = charter("run", str(flow), "--json", cwd=tmp_path)
    assert waiting.returncode == 3, waiting.stderr
    assert run_json(waiting)["status"] == "waiting" and run_json(waiting)["pending"] == ["ok"]
    run_id = run_json(waiting)["run_id"]
    bogus = ("--model", "default=bogus:x")
    approved = charter("approve", run_id, "ok", "--as", "ann", *bogus, cwd=tmp_path)
    assert approved.returncode == 2, approved.stderr
    assert "the decision was recorded, but run" in approved.stderr
    assert "unknown provider 'bogus'" in approved.stderr and f"charter resume {run_id}" in approved.stderr
    again = charter("resume", run_id, *bogus, cwd=tmp_path)
    assert again.returncode == 2 and "unknown provider 'bogus'" in again.stderr
    listed = json.loads(charter("runs", "--json", cwd=tmp_path).stdout)[0]
    assert (listed["status"], listed["waiting_at"]) == ("waiting", ["ok"])
    assert (
        f"{run_id}  waiting" in (table := charter("runs", cwd=tmp_path).stdout) and "(waits at ok)" in table
    )
    done = charter("resume", run_id, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_json(done)["output"] == {"said": "hi"}


def test_a_parent_whose_child_cannot_continue_here_stays_resumable(tmp_path: Path) -> None:
    _approve_then_ask(tmp_path / "child.yaml")
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        'charter: "1.0"\nname: parent\nsteps:\n  - {id: sub, workflow: {path: child.yaml}}\n'
        'output: {child: "${{ steps.sub.output.said }}"}\n'
    )
    waiting = charter("run", str(parent), "--json", cwd=tmp_path)
    assert waiting.returncode == 3, waiting.stderr
    child = next(
        r
        for r in json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
        if r["workflow"] == "approve-then-ask"
    )
    assert (
        charter(
            "approve", child["run_id"], "ok", "--as", "ann", "--model", "default=bogus:x", cwd=tmp_path
        ).returncode
        == 2
    )
    # the parent continues into its child, which cannot build its model here: both stay resumable
    refused = charter("resume", run_json(waiting)["run_id"], "--model", "default=bogus:x", cwd=tmp_path)
    assert refused.returncode == 2 and "unknown provider 'bogus'" in refused.stderr, refused.stderr
    statuses = {
        r["workflow"]: r["status"] for r in json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
    }
    assert "failed" not in statuses.values(), statuses
    done = charter("resume", run_json(waiting)["run_id"], "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_json(done)["output"] == {"child": "hi"}


def test_a_scripted_re_ask_names_why_the_model_was_asked_again(tmp_path: Path) -> None:
    answers = (EXAMPLES / "routing.responses.yaml").read_text(encoding="utf-8")
    script = tmp_path / "answers.yaml"
    script.write_text(answers.replace("intent: billing", "intent: money"), encoding="utf-8")
    ticket = json.dumps({"message": "Why was I charged twice on INV-1002?"})
    proc = charter(
        "run", str(EXAMPLES / "routing.yaml"), "--model", f"default=scripted:{script}", "--input", ticket,
        "--allow-module", "examples.*", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "no scripted response for step 'classify' turn 2" in proc.stderr
    assert (
        "does not match the required JSON schema: the answer at `intent`: 'money' is not one of"
        in proc.stderr
    )


def test_a_reader_that_leaves_early_does_not_end_the_run(tmp_path: Path) -> None:
    """`charter run ... 2>&1 | head -1`: the progress display loses its pipe, the run goes on."""
    (tmp_path / "naps.py").write_text(
        "import time\n\ndef nap(n: int) -> int:\n    time.sleep(0.2)\n    return n\n"
    )
    flow = tmp_path / "naps.yaml"
    flow.write_text(
        'charter: "1.0"\nname: naps\ntools:\n  nap: {python: "naps:nap", effect: read}\nsteps:\n'
        + "".join(f"  - {{id: n{i}, tool: nap, args: {{n: {i}}}}}\n" for i in range(3))
    )
    env = child_env({"CHARTER_DB": str(tmp_path / "charter.db"), "PYTHONPATH": str(tmp_path)}, allow="naps")
    proc = subprocess.Popen(
        charter_cmd("run", str(flow)), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("▶ n0".encode())
    proc.stdout.close()  # as `head -1` does
    assert proc.wait(timeout=60) == 141
    (row,) = json.loads(charter("runs", "--json", cwd=tmp_path).stdout)
    assert row["status"] == "completed", row


def test_what_a_tool_prints_goes_to_stderr_never_into_the_output(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["chatty"]\n')
    (tmp_path / "chatty.py").write_text(
        "print('loading chatty')\n\n\ndef hello(n: int) -> int:\n    print('debug: hello', n)\n    return n + 1\n"
    )
    (tmp_path / "flow.yaml").write_text(
        'charter: "1.0"\nname: chatty\ntools:\n  hello: {python: "chatty:hello", effect: read}\n'
        'steps:\n  - {id: h, tool: hello, args: {n: 1}}\noutput: {n: "${{ steps.h.output }}"}\n'
    )
    for extra in (["--json"], []):
        proc = charter("run", "flow.yaml", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)  # stdout is the output document alone
        assert (out["output"] if extra else out) == {"n": 2}
        assert "debug: hello 1" in proc.stderr
    newest = json.loads(charter("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]
    replay = charter("replay", newest, "--json", cwd=tmp_path)  # loads the module: its print too
    assert replay.returncode == 0 and json.loads(replay.stdout)["ok"] is True, replay.stdout
    assert "loading chatty" in replay.stderr


def test_a_log_locked_by_another_process_exits_4_at_open(tmp_path: Path) -> None:
    db = tmp_path / "charter.db"
    first = charter(
        "run", str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode = DELETE")  # out of WAL: an exclusive lock keeps readers out
        holder.execute("BEGIN EXCLUSIVE")
        proc = charter("runs", cwd=tmp_path)  # waits out the busy timeout (5 s), then gives up
    finally:
        holder.close()
    assert proc.returncode == 4, proc.stderr
    assert "is locked by another connection" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_run_exits_1(tmp_path: Path) -> None:
    flow = tmp_path / "failing.yaml"
    flow.write_text(
        'charter: "1.0"\nname: failing\nsteps:\n  - {id: stop, fail: {message: "no way", code: nope}}\n'
    )
    proc = charter("run", str(flow), "--json", cwd=tmp_path)
    assert proc.returncode == 1
    assert run_json(proc)["error"]["code"] == "nope" and "no way" in proc.stderr
    # resuming a finished run runs nothing and says how to run it again
    run_id = run_json(proc)["run_id"]
    again = charter("resume", run_id, cwd=tmp_path)
    assert again.returncode == 1
    assert (
        f"already failed: nothing to continue; to run it again from a step: charter run FILE --from {run_id}@stop"
        in again.stderr
    )


def test_approval_across_processes(tmp_path: Path) -> None:
    first = charter(
        "run", str(EXAMPLES / "approval.yaml"), "--input", APPROVAL_INPUT, "--allow-module", "examples.*", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 3, first.stderr
    run_id = run_json(first)["run_id"]
    assert f"charter approve {run_id} finance_ok --as NAME --claims FILE" in first.stderr  # a role decides
    wrong = charter("approve", run_id, "nowhere", "--as", "bob", cwd=tmp_path)
    assert wrong.returncode == 2 and "finance_ok" in wrong.stderr
    unverified = charter(
        "approve", run_id, "finance_ok", "--as", "bob", "--allow-module", "examples.*", cwd=tmp_path
    )
    assert unverified.returncode == 2 and "--claims" in unverified.stderr  # fail closed: who is bob?
    posing = charter("approve", run_id, "finance_ok", "--as", "role:finance", cwd=tmp_path)
    assert posing.returncode == 2 and "names a role" in posing.stderr
    (tmp_path / "bob.json").write_text('{"roles": "finance"}')  # a string, not a list: says so
    malformed = charter("approve", run_id, "finance_ok", "--as", "bob", "--claims", "bob.json", cwd=tmp_path)
    assert malformed.returncode == 2 and "claims 'roles' must be a list" in malformed.stderr
    (tmp_path / "bob.json").write_text('{"roles": ["finance"]}')
    done = charter(
        "approve", run_id, "finance_ok", "--as", "bob", "--claims", "bob.json", "--reason", "receipts ok",
        "--allow-module", "examples.*", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run_json(done)["output"] == {"booking": "EXP-ANN-120000", "total": 1200.0}
    log = charter("log", run_id, "--json", cwd=tmp_path)
    decided = [json.loads(line) for line in log.stdout.splitlines() if '"approval.decided"' in line]
    assert decided[0]["payload"]["by"] == "bob" and decided[0]["payload"]["reason"] == "receipts ok"
    assert charter("verify", run_id, cwd=tmp_path).returncode == 0


def test_deny_exits_1(tmp_path: Path) -> None:
    first = charter(
        "run", str(EXAMPLES / "approval.yaml"), "--input", APPROVAL_INPUT, "--allow-module", "examples.*", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    run_id = run_json(first)["run_id"]
    (tmp_path / "bob.json").write_text('{"roles": ["finance"]}')
    denied = charter(
        "approve", run_id, "finance_ok", "--as", "bob", "--claims", "bob.json", "--deny",
        "--allow-module", "examples.*", cwd=tmp_path,
    )  # fmt: skip
    assert denied.returncode == 1 and "denied by bob" in denied.stderr


def _crashy(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "h10_cli_tools.py").write_text(TOOLS)
    log = tmp_path / "effects.jsonl"
    flow = tmp_path / "crashy.yaml"
    steps = "\n".join(
        f'  - {{id: {n}, tool: effect, args: {{name: {n}, log: "{log}"}}}}' for n in ("a", "b", "c", "d")
    )
    flow.write_text(
        textwrap.dedent(
            """\
            charter: "1.0"
            name: crashy
            tools:
              effect: {python: "h10_cli_tools:effect", effect: write}
            steps:
            """
        )
        + steps
        + '\noutput: {all: "${{ [steps.a.output, steps.b.output, steps.c.output, steps.d.output] }}"}\n'
    )
    return flow, log


def test_crash_then_resume_completes_without_repeating(tmp_path: Path) -> None:
    flow, log = _crashy(tmp_path)
    crashed = charter(
        "run", str(flow), "--allow-module", "h10_cli_tools", cwd=tmp_path, env={"H10_CRASH_AT": "c"}
    )
    assert crashed.returncode == 9
    db = sqlite3.connect(tmp_path / "charter.db")
    run_id, status = db.execute("SELECT run_id, status FROM runs").fetchone()
    assert status == "running"
    listed = charter("runs", cwd=tmp_path)  # running, but nobody executes it: it says what to do
    assert "(interrupted: no process executes it; charter resume it)" in listed.stdout, listed.stdout
    assert json.loads(charter("runs", "--json", cwd=tmp_path).stdout)[0]["interrupted"] is True
    resumed = charter("resume", run_id, "--allow-module", "h10_cli_tools", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert run_json(resumed)["output"] == {"all": ["A", "B", "C", "D"]}
    effects = [json.loads(line)["effect"] for line in log.read_text().splitlines()]
    assert effects == ["a", "b", "c", "c", "d"]  # completed once; the in-flight one at most twice
    assert charter("verify", run_id, cwd=tmp_path).returncode == 0
    again = charter("resume", run_id, "--json", cwd=tmp_path)
    assert again.returncode == 0 and run_json(again)["status"] == "completed"
    assert json.loads(charter("runs", "--json", cwd=tmp_path).stdout)[0]["interrupted"] is False


def test_fork_from_a_node(tmp_path: Path) -> None:
    flow, log = _crashy(tmp_path)
    first = charter("run", str(flow), "--allow-module", "h10_cli_tools", "--json", cwd=tmp_path)
    run_id = run_json(first)["run_id"]
    log.write_text("")
    forked = charter(
        "run", str(flow), "--from", f"{run_id}@c", "--allow-module", "h10_cli_tools", "--json", cwd=tmp_path
    )
    assert forked.returncode == 0, forked.stderr
    assert run_json(forked)["run_id"] != run_id
    assert [json.loads(line)["effect"] for line in log.read_text().splitlines()] == ["c", "d"]
    usage = charter("run", str(flow), "--from", "no-at-sign", cwd=tmp_path)
    assert usage.returncode == 2


def test_replay_with_an_edited_file_reports_the_node(tmp_path: Path) -> None:
    flow, _ = _crashy(tmp_path)
    first = charter("run", str(flow), "--allow-module", "h10_cli_tools", "--json", cwd=tmp_path)
    run_id = run_json(first)["run_id"]
    edited = tmp_path / "edited.yaml"
    edited.write_text(flow.read_text().replace("{name: c,", "{name: cc,"))
    replay = charter("replay", run_id, "--file", str(edited), cwd=tmp_path)
    assert replay.returncode == 1
    assert "divergence at c" in replay.stdout and '"cc"' in replay.stdout


def test_verify_detects_tampering(tmp_path: Path) -> None:
    flow, _ = _crashy(tmp_path)
    run_id = run_json(charter("run", str(flow), "--allow-module", "h10_cli_tools", "--json", cwd=tmp_path))[
        "run_id"
    ]
    db = sqlite3.connect(tmp_path / "charter.db")
    db.execute("UPDATE events SET payload = '{\"x\":1}' WHERE run_id = ? AND seq = 3", (run_id,))
    db.commit()
    verify = charter("verify", run_id, cwd=tmp_path)
    assert verify.returncode == 1 and "seq 3" in verify.stdout


def test_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    commands = (["resume", "NOPE"], ["log", "NOPE"], ["verify", "NOPE"], ["replay", "NOPE"], ["runs"])
    # no event log yet: said so, and none is created by reading, nor by `wake` (a mistyped --db)
    for command in (*commands, ["wake"]):
        proc = charter(*command, cwd=tmp_path)
        assert proc.returncode == 2 and "no event log at" in proc.stderr, proc.stderr
        assert not (tmp_path / "charter.db").exists()
    flow = str(EXAMPLES / "approval.yaml")
    waiting = charter("run", flow, "--input", APPROVAL_INPUT, "--allow-module", "examples.*", cwd=tmp_path)
    assert waiting.returncode == 3, waiting.stderr
    for command in commands[:-1]:
        proc = charter(*command, cwd=tmp_path)
        assert proc.returncode == 2 and "NOPE" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["run", "runs", "log", "resume", "replay", "approve", "verify", "wake"])
def test_help(command: str, tmp_path: Path) -> None:
    proc = charter(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Usage" in proc.stdout


@pytest.mark.parametrize(
    "command",
    ["validate", "schema", "graph", "run", "runs", "log", "resume", "replay", "approve", "verify", "explain"]
    + ["wake"],
)
def test_every_command_help_shows_an_example(command: str, tmp_path: Path) -> None:
    proc = charter(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Example" in proc.stdout and "charter " + command in proc.stdout


def test_a_run_continued_keeps_the_models_it_was_started_with(tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        'charter: "1.0"\nname: keeps\nmodels:\n  default: {provider: scripted, responses: file.yaml}\n'
        "steps:\n  - {id: gate, approval: {message: go?}}\n  - {id: ask, llm: {prompt: hi}}\n"
        'output: {said: "${{ steps.ask.output }}"}\n'
    )
    (tmp_path / "file.yaml").write_text("responses:\n  - {step: ask, text: from the file}\n")
    (tmp_path / "other.yaml").write_text("responses:\n  - {step: ask, text: from the override}\n")
    started = charter("run", "flow.yaml", "--model", "default=scripted:other.yaml", "--json", cwd=tmp_path)
    assert started.returncode == 3, started.stderr
    done = charter("approve", run_json(started)["run_id"], "gate", "--as", "ann", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_json(done)["output"] == {"said": "from the override"}


def test_a_run_refused_before_it_starts_leaves_no_empty_log(tmp_path: Path) -> None:
    refused = charter("run", str(EXAMPLES / "tools_pipeline.yaml"), cwd=tmp_path)  # module not allowed
    assert refused.returncode == 2 and "not allowed" in refused.stderr
    assert not list(tmp_path.glob("charter.db*"))
    ran = charter("run", str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", cwd=tmp_path)
    assert ran.returncode == 0 and (tmp_path / "charter.db").exists()
    again = charter("run", str(EXAMPLES / "tools_pipeline.yaml"), cwd=tmp_path)  # an existing log stays
    assert again.returncode == 2 and (tmp_path / "charter.db").exists()


def test_explain_of_a_node_that_did_not_run_lists_those_that_did(tmp_path: Path) -> None:
    ran = charter(
        "run", str(EXAMPLES / "tools_pipeline.yaml"), "--allow-module", "examples.*", "--json", cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    proc = charter(
        "explain", run_json(ran)["run_id"], "--node", "priced/body/price", cwd=tmp_path
    )  # no index
    assert proc.returncode == 2
    assert "has no events at node 'priced/body/price'; nodes that ran: " in proc.stderr
    assert "priced[0]/body/price" in proc.stderr


def test_json_refusals_are_a_result_document_on_stdout(tmp_path: Path) -> None:
    """A script reading `--json` from stdout gets a document for a refusal too, never empty stdout."""
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text('charter: "1.0"\nname: bad\nsteps:\n  - id: a\n    set: {x: 1}\n', encoding="utf-8")
    proc = charter("run", str(invalid), "--json", cwd=tmp_path)
    assert proc.returncode == 2 and "CH211" in proc.stderr
    refused = run_json(proc)
    assert refused["status"] == "refused" and refused["run_id"] is None and refused["output"] is None
    (diag,) = refused["error"]["diagnostics"]
    assert (diag["code"], diag["line"], diag["column"]) == ("CH211", 5, 11)
    assert not (tmp_path / "charter.db").exists()

    bad_input = charter(
        "run", str(EXAMPLES / "approval.yaml"), "--input", '{"employee": 1}', "--json", cwd=tmp_path
    )
    assert bad_input.returncode == 2
    assert run_json(bad_input)["error"]["code"] == "invalid"
    assert "input schema" in run_json(bad_input)["error"]["message"]

    unknown = charter("resume", "01NOSUCHRUN", "--json", cwd=tmp_path)
    assert unknown.returncode == 2 and run_json(unknown)["run_id"] == "01NOSUCHRUN"
    assert "no run" in run_json(unknown)["error"]["message"]

    without_json = charter("run", str(invalid), cwd=tmp_path)
    assert without_json.returncode == 2 and without_json.stdout == ""


def test_a_log_changed_by_hand_is_not_continued_decided_or_forked(tmp_path: Path) -> None:
    """Resume, approve and fork act on what the log says happened: one that fails `verify` (here a
    tool's recorded result edited) is refused with exit 2, and nothing is added to it."""
    expense = json.dumps({"employee": "ann", "items": [{"category": "travel", "amount": 5000}]})
    flow = str(EXAMPLES / "approval.yaml")
    waiting = charter("run", flow, "--input", expense, "--json", "--allow-module", "examples.*", cwd=tmp_path)
    assert waiting.returncode == 3, waiting.stderr
    run_id = run_json(waiting)["run_id"]
    db = tmp_path / "charter.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, '5000', '50') WHERE run_id = ? AND kind = ?",
            (run_id, "tool.completed"),
        )
    conn.close()
    before = len(events_of(db, run_id))
    claims = tmp_path / "finance.json"
    claims.write_text('{"roles": ["finance"]}')
    commands = [
        ("approve", run_id, "finance_ok", "--as", "bob", "--claims", str(claims)),
        ("resume", run_id),
        ("run", flow, "--from", f"{run_id}@finance_ok"),
    ]
    for command in commands:
        refused = charter(*command, "--allow-module", "examples.*", cwd=tmp_path)
        assert refused.returncode == 2, (command, refused.stderr)
        assert f"run {run_id}: its log fails verification at seq" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert len(events_of(db, run_id)) == before
    assert json.loads(charter("runs", "--json", cwd=tmp_path).stdout)[0]["status"] == "waiting"


def events_of(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq FROM events WHERE run_id = ?", (run_id,)).fetchall()
    conn.close()
    return rows


def test_the_input_can_come_from_standard_input(tmp_path: Path) -> None:
    expense = json.dumps({"employee": "al", "items": [{"category": "food", "amount": 12.5}]})
    proc = subprocess.run(
        charter_cmd("run", str(EXAMPLES / "approval.yaml"), "--input-file", "-", "--allow-module", "examples.*"),
        input=expense, cwd=tmp_path, env=child_env({"CHARTER_DB": str(tmp_path / "charter.db")}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"booking": "EXP-AL-1250", "total": 12.5}


def test_an_approval_refused_by_a_locked_log_records_nothing_and_can_be_given_again(tmp_path: Path) -> None:
    """Exit 4 from `approve` means another process is in the way; when it kept the log locked (longer
    than the 5 s busy timeout), --json says refused/busy, nothing was recorded, and approving again
    once the lock is gone works."""
    import threading

    (tmp_path / "pyproject.toml").write_text('[tool.charter]\nallow-modules = ["examples.*"]\n')
    (tmp_path / "bob.json").write_text('{"roles": ["finance"]}')
    waiting = charter(
        "run", str(EXAMPLES / "approval.yaml"), "--input", APPROVAL_INPUT, "--json", cwd=tmp_path
    )
    assert waiting.returncode == 3, waiting.stderr
    run_id = json.loads(waiting.stdout)["run_id"]
    db = tmp_path / "charter.db"
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(60)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        approve = ("approve", run_id, "finance_ok", "--as", "bob", "--claims", "bob.json", "--json")
        refused = charter(*approve, cwd=tmp_path)
    finally:
        release.set()
        holder.join()
    assert refused.returncode == 4, refused.stderr
    doc = json.loads(refused.stdout)
    assert doc["status"] == "refused" and doc["error"]["code"] == "busy", doc
    with sqlite3.connect(db) as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM events WHERE run_id = ?", (run_id,))]
    assert "approval.decided" not in kinds and kinds[-1] == "run.waiting"
    again = charter(*approve, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_runs_limit_below_one_is_a_usage_error_not_an_empty_list(tmp_path: Path) -> None:
    flow = tmp_path / "one.yaml"
    flow.write_text('charter: "1.0"\nname: one\nsteps:\n  - {id: a, if: "false", fail: {message: no}}\n')
    db = str(tmp_path / "c.db")
    assert charter("run", str(flow), "--db", db, cwd=tmp_path).returncode == 0
    proc = charter("runs", "--limit", "0", "--db", db, cwd=tmp_path)
    assert proc.returncode == 2 and "--limit" in proc.stderr and "no runs" not in proc.stderr + proc.stdout
