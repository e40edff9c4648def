"""`charter replay`: every model-free example run replays (exit 0); an edited workflow or tool code makes
replay exit 1 and name the node where the recorded run and the new code part ways."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from fixtures.charter_cli import ENGINE, FIXTURES, REPO, charter, child_env, describe, run_json, run_rows

pytestmark = pytest.mark.skipif(not ENGINE.exists(), reason="interpreter/engine.py not written yet")

EXAMPLES = REPO / "examples"
ENV = child_env(allow="examples.tools,tests.fixtures.*")
PIPELINE = EXAMPLES / "tools_pipeline.yaml"


def _names(text: str, node_path: str) -> bool:
    """True when `node_path` appears in `text` as a whole path, not inside a longer one."""
    return re.search(r"(?<![\w/\[\]-])" + re.escape(node_path) + r"(?![\w/\[\]-])", text) is not None


def _run(file: Path, db: Path, inputs: object = None, env: dict[str, str] = ENV, cwd: Path = REPO):
    args = ["run", str(file), "--db", str(db), "--json"]
    if inputs is not None:
        args += ["--input", json.dumps(inputs)]
    return charter(*args, env=env, cwd=cwd)


def _replay(run_id: str, db: Path, file: Path | None = None, env: dict[str, str] = ENV, cwd: Path = REPO):
    args = ["replay", run_id, "--db", str(db)] + (["--file", str(file)] if file else [])
    return charter(*args, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    db = tmp_path_factory.mktemp("pipeline") / "c.db"
    proc = _run(PIPELINE, db)
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    assert doc["output"]["count"] == 4 and doc["output"]["total"] > 0
    return doc["run_id"], db


def test_tools_pipeline_replays(pipeline_run: tuple[str, Path]) -> None:
    run_id, db = pipeline_run
    proc = _replay(run_id, db)
    assert proc.returncode == 0, describe(proc)


def test_replay_calls_no_tool(pipeline_run: tuple[str, Path]) -> None:
    # replay is offline: without the tools' module allowed (or importable) it still reproduces the run
    run_id, db = pipeline_run
    proc = _replay(run_id, db, env=child_env())
    assert proc.returncode == 0, describe(proc)


def test_unchanged_copy_with_a_new_comment_replays(pipeline_run: tuple[str, Path], tmp_path: Path) -> None:
    run_id, db = pipeline_run
    edited = tmp_path / "same.yaml"
    edited.write_text(
        "# reformatted, same behaviour\n" + PIPELINE.read_text(encoding="utf-8"), encoding="utf-8"
    )
    proc = _replay(run_id, db, edited)
    assert proc.returncode == 0, describe(proc)


EDITS = [
    # (old text, new text, node path replay must name)
    (
        'args: {lines: "${{ steps.priced.output }}"}',
        'args: {lines: "${{ [steps.priced.output[0]] }}"}',
        "totals",
    ),
    ("if: size(vars.lines) == 0", "if: size(vars.lines) > 0", "nothing_to_do"),
    ('args: {page: "${{ index }}"}', 'args: {page: "${{ index + 1 }}"}', "collect[0]/body/page"),
]


@pytest.mark.parametrize(("old", "new", "node"), EDITS, ids=[e[2] for e in EDITS])
def test_edited_workflow_diverges_at_the_edited_node(
    pipeline_run: tuple[str, Path], tmp_path: Path, old: str, new: str, node: str
) -> None:
    run_id, db = pipeline_run
    source = PIPELINE.read_text(encoding="utf-8")
    assert old in source, "the example changed; update this test"
    edited = tmp_path / "edited.yaml"
    edited.write_text(source.replace(old, new), encoding="utf-8")
    proc = _replay(run_id, db, edited)
    assert proc.returncode == 1, describe(proc)
    assert _names(proc.stdout + proc.stderr, node), f"replay must name {node}\n" + describe(proc)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("node", ["priced", "priced[2]/body/price", "totals"])
def test_a_forked_run_replays(pipeline_run: tuple[str, Path], node: str) -> None:
    """The steps a fork took from its original run did not run in it: replay takes them from the log."""
    run_id, db = pipeline_run
    fork = charter("run", str(PIPELINE), "--db", str(db), "--from", f"{run_id}@{node}", "--json", env=ENV)
    assert fork.returncode == 0, describe(fork)
    proc = _replay(run_json(fork)["run_id"], db)
    assert proc.returncode == 0, describe(proc)
    assert "reproduced" in proc.stdout


def test_a_switch_that_now_chooses_another_case_diverges_at_the_switch(tmp_path: Path) -> None:
    routing = EXAMPLES / "routing.yaml"
    first = _run(routing, tmp_path / "c.db", {"message": "Why was I charged twice on INV-1002?"})
    assert first.returncode == 0, describe(first)
    edited = tmp_path / "routing.yaml"
    shutil.copy(EXAMPLES / "routing.responses.yaml", tmp_path)
    edited.write_text(routing.read_text(encoding="utf-8").replace("confidence >= 0.5", "confidence >= 0.95"))
    proc = _replay(run_json(first)["run_id"], tmp_path / "c.db", edited)
    assert proc.returncode == 1, describe(proc)
    assert proc.stdout.splitlines()[0] == (
        "divergence at route: the switch now chooses default; the run chose case-0 "
        '(`steps.classify.output.intent == "billing" && steps.classify.output.confidence >= 0.5`)'
    )


def test_replay_api_reports_the_divergent_node(pipeline_run: tuple[str, Path], tmp_path: Path) -> None:
    from dsl.frontend import compile_file
    from interpreter import replay_run
    from interpreter.store import open_store

    run_id, db = pipeline_run
    old, new, node = EDITS[0]
    edited = tmp_path / "edited.yaml"
    edited.write_text(PIPELINE.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    graph, _ = compile_file(edited)
    assert graph is not None
    store = open_store(db)
    try:
        same = replay_run(run_id, store=store)
        assert same.ok and same.divergence is None and same.events_checked > 0
        result = replay_run(run_id, store=store, graph=graph)
    finally:
        store.close()
    assert not result.ok
    assert result.divergence is not None and result.divergence.node_path == node


def test_approval_example_replays_after_approval(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    items = [{"category": "travel", "amount": 1200}, {"category": "food", "amount": 30.5}]
    proc = _run(EXAMPLES / "approval.yaml", db, {"employee": "dana", "items": items})
    assert proc.returncode == 3, describe(proc)
    run_id = run_json(proc)["run_id"]
    claims = tmp_path / "carol.json"
    claims.write_text('{"roles": ["finance"]}')
    approve = charter(
        "approve", run_id, "finance_ok", "--as", "carol", "--claims", str(claims), "--db", str(db), env=ENV
    )
    assert approve.returncode == 0, describe(approve)
    assert _replay(run_id, db).returncode == 0
    # and a small report that needs no approval
    small = _run(
        EXAMPLES / "approval.yaml", db, {"employee": "lee", "items": [{"category": "food", "amount": 12}]}
    )
    assert small.returncode == 0, describe(small)
    replay = _replay(run_json(small)["run_id"], db)
    assert replay.returncode == 0, describe(replay)


@pytest.mark.parametrize("flow", ["crash_flow.yaml", "trycatch_flow.yaml", "timeout_flow.yaml"])
def test_fixture_runs_replay(tmp_path: Path, flow: str) -> None:
    db = tmp_path / "c.db"
    proc = _run(FIXTURES / flow, db)
    assert proc.returncode == 0, describe(proc)
    replay = _replay(run_json(proc)["run_id"], db)
    assert replay.returncode == 0, describe(replay)


# --- edited tool code ------------------------------------------------------------------------------------

TOOLS = """
def double(x: int) -> int:
    return x * 2


def inc(x: int) -> int:
    return x + 1
"""

FLOW = """
charter: "1.0"
name: code-change
tools:
  double: {python: "replaytools:double", effect: read}
  inc: {python: "replaytools:inc", effect: read}
steps:
  - id: one
    tool: double
    args: {x: 3}
  - id: two
    tool: inc
    args: {x: "${{ steps.one.output }}"}
output:
  result: "${{ steps.two.output }}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose pyproject.toml allows its own tool module."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.charter]\nallow-modules = ["replaytools"]\n', encoding="utf-8"
    )
    (tmp_path / "replaytools.py").write_text(textwrap.dedent(TOOLS), encoding="utf-8")
    (tmp_path / "flow.yaml").write_text(FLOW, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("old", "new", "node"),
    [("return x + 1", "return x + 2", "two"), ("return x * 2", "return x * 3", "one")],
    ids=["inc", "double"],
)
def test_edited_tool_code_diverges_at_its_step(project: Path, old: str, new: str, node: str) -> None:
    env, db = child_env(), project / "c.db"
    proc = _run(project / "flow.yaml", db, env=env, cwd=project)
    assert proc.returncode == 0, describe(proc)
    doc = run_json(proc)
    assert doc["output"] == {"result": 7}
    assert _replay(doc["run_id"], db, env=env, cwd=project).returncode == 0
    tools = project / "replaytools.py"
    tools.write_text(tools.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    shutil.rmtree(project / "__pycache__", ignore_errors=True)
    proc = _replay(doc["run_id"], db, env=env, cwd=project)
    assert proc.returncode == 1, describe(proc)
    assert _names(proc.stdout + proc.stderr, node), f"replay must name {node}\n" + describe(proc)


CHILD = """\
charter: "1.0"
name: child
input: {type: object}
vars: {y: 0}
steps:
  - {id: double, set: {y: "${{ input.x * 2 }}"}}
output: {y: "${{ vars.y }}"}
"""
KID = """\
charter: "1.0"
name: kid
steps:
  - {id: kid, workflow: {path: child.yaml, input: {x: 21}}}
output: {y: "${{ steps.kid.output.y }}"}
"""


def test_a_child_workflow_with_another_input_or_content_diverges_at_its_step(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "kid.yaml").write_text(KID)
    ran = _run(tmp_path / "kid.yaml", tmp_path / "c.db", cwd=tmp_path)
    assert ran.returncode == 0 and run_json(ran)["output"] == {"y": 42}, describe(ran)
    run_id = run_json(ran)["run_id"]
    (tmp_path / "child.yaml").write_text("# a comment changes nothing it does\n" + CHILD)
    assert _replay(run_id, tmp_path / "c.db", cwd=tmp_path).returncode == 0
    (tmp_path / "edited.yaml").write_text(KID.replace("x: 21", "x: 22"))
    other_input = _replay(run_id, tmp_path / "c.db", tmp_path / "edited.yaml", cwd=tmp_path)
    assert other_input.returncode == 1, describe(other_input)
    assert other_input.stdout.startswith("divergence at kid: the input of child workflow child.yaml differs")
    (tmp_path / "child.yaml").write_text(CHILD.replace("input.x * 2", "input.x * 3"))
    other_child = _replay(run_id, tmp_path / "c.db", cwd=tmp_path)
    assert other_child.returncode == 1, describe(other_child)
    assert other_child.stdout.startswith("divergence at kid: child workflow child.yaml changed")


RACE = """\
charter: "1.0"
name: race
tools:
  timed: {python: "tests.fixtures.conc_tools:timed", effect: read}
steps:
  - id: race
    parallel:
      join: first-n
      n: 2
      branches:
        - [{id: a, tool: timed, args: {log: LOG, name: a, hold: 0.01}}]
        - [{id: b, tool: timed, args: {log: LOG, name: b, hold: 0.2}}]
        - [{id: c, tool: timed, args: {log: LOG, name: c, hold: 3}}]
output: {r: "${{ steps.race.output }}"}
"""


@pytest.mark.parametrize("edit", [("n: 2", "n: 1"), ("join: first-n\n      n: 2", "join: all")])
def test_a_join_that_now_keeps_other_branches_diverges_and_never_hangs(
    tmp_path: Path, edit: tuple[str, str]
) -> None:
    race = RACE.replace("LOG", str(tmp_path / "t.jsonl"))
    (tmp_path / "race.yaml").write_text(race)
    ran = _run(tmp_path / "race.yaml", tmp_path / "c.db")
    assert ran.returncode == 0, describe(ran)
    assert run_json(ran)["output"] == {"r": [{"name": "a"}, {"name": "b"}, None]}
    assert _replay(run_json(ran)["run_id"], tmp_path / "c.db").returncode == 0
    (tmp_path / "edited.yaml").write_text(race.replace(*edit))
    proc = _replay(run_json(ran)["run_id"], tmp_path / "c.db", tmp_path / "edited.yaml")  # 30 s timeout
    assert proc.returncode == 1, describe(proc)
    assert proc.stdout.startswith("divergence at race: the join of parallel 'race' changed")


def test_a_step_the_recording_never_reached_is_named_so_and_long_values_are_cut(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "kid.yaml").write_text(KID)
    ran = _run(tmp_path / "kid.yaml", tmp_path / "c.db", cwd=tmp_path)
    assert ran.returncode == 0, describe(ran)
    long = "x" * 1000
    (tmp_path / "other.yaml").write_text(
        f'charter: "1.0"\nname: other\nvars: {{v: ""}}\nsteps:\n  - {{id: fresh, set: {{v: "{long}"}}}}\n'
    )
    proc = _replay(run_json(ran)["run_id"], tmp_path / "c.db", tmp_path / "other.yaml", cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == "divergence at fresh: the recorded run never got to this step"
    assert lines[2].startswith("  got:      ") and lines[2].endswith("characters; --json shows all)")
    assert len(lines[2]) < 500
    whole = charter(
        "replay", run_json(ran)["run_id"], "--db", str(tmp_path / "c.db"), "--file", str(tmp_path / "other.yaml"),
        "--json", env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(whole.stdout)["divergence"]["got"]["output"] == {"v": long}


def test_a_child_that_redacts_its_input_replays_and_its_other_input_still_counts(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        CHILD.replace(
            "vars: {y: 0}",
            "vars: {y: 0}\nguardrails:\n  - {id: no-mail, on: run.input, regex: '[a-z]+@[a-z]+[.]com', action: redact}",
        )
    )
    kid = KID.replace("input: {x: 21}", 'input: {x: 21, note: "mail ann@example.com"}')
    (tmp_path / "kid.yaml").write_text(kid)
    ran = _run(tmp_path / "kid.yaml", tmp_path / "c.db", cwd=tmp_path)
    assert ran.returncode == 0, describe(ran)
    run_id = run_json(ran)["run_id"]
    assert _replay(run_id, tmp_path / "c.db", cwd=tmp_path).returncode == 0  # the masked note stands for it
    (tmp_path / "edited.yaml").write_text(kid.replace("x: 21", "x: 22"))
    edited = _replay(run_id, tmp_path / "c.db", tmp_path / "edited.yaml", cwd=tmp_path)
    assert edited.returncode == 1 and "the input of child workflow child.yaml differs" in edited.stdout


def test_a_run_whose_budget_a_child_run_spent_replays(tmp_path: Path) -> None:
    # The child's call counted in the parent's budget live; replay counts the recorded child too, so the
    # parent's own call is refused again, as it was.
    (tmp_path / "kid.yaml").write_text(
        'charter: "1.0"\nname: kid\ntools:\n  echo: {python: "tests.fixtures.conc_tools:echo", effect: read}\n'
        "steps:\n  - {id: t1, tool: echo, args: {value: 1}}\n"
    )
    (tmp_path / "parent.yaml").write_text(
        'charter: "1.0"\nname: parent\ntools:\n  echo: {python: "tests.fixtures.conc_tools:echo", effect: read}\n'
        "guardrails:\n  - {id: run-budget, limits: {max_tool_calls: 1}}\n"
        "steps:\n  - {id: sub, workflow: {path: kid.yaml}}\n  - {id: p, tool: echo, args: {value: 2}}\n"
    )
    ran = _run(tmp_path / "parent.yaml", tmp_path / "c.db")
    assert ran.returncode == 1 and "exceeds max_tool_calls 1" in run_json(ran)["error"]["message"], describe(
        ran
    )
    proc = _replay(run_json(ran)["run_id"], tmp_path / "c.db")
    assert proc.returncode == 0, describe(proc)
    # The child replayed on its own: its call counts in the parent's budget once, as it did live (not
    # once from its recorded log and once more as the replay meets it).
    (kid,) = [r for r in run_rows(tmp_path / "c.db") if r["parent_run_id"]]
    alone = _replay(kid["run_id"], tmp_path / "c.db")
    assert alone.returncode == 0, describe(alone)


def test_replay_tries_once_to_load_a_tool_module_it_may_not_import(tmp_path: Path, monkeypatch) -> None:
    """Replay validates a python tool's arguments when its module may be loaded; one that may not is
    tried once per tool, not once per call (it used to cost a failed import check at every step)."""
    from bench import bench_engine
    from dsl.frontend import compile_file
    from interpreter import RunOptions, engine, replay_run, run_workflow
    from interpreter.store import open_store

    flow = tmp_path / "loop.yaml"
    flow.write_text(bench_engine.loop_yaml(6), encoding="utf-8")
    graph, diags = compile_file(flow)
    assert graph is not None, [str(d) for d in diags]
    store = open_store(tmp_path / "c.db")
    try:
        run = run_workflow(
            graph, {}, store=store, options=RunOptions(allow_modules=(bench_engine.TOOL_MODULE,))
        )
        assert run.status == "completed", run.error
        loads: list[str] = []
        real = engine.resolve_python

        def counting(name: str, target: str, policy: object) -> object:
            loads.append(name)
            return real(name, target, policy)  # type: ignore[arg-type]

        monkeypatch.setattr(engine, "resolve_python", counting)
        result = replay_run(run.run_id, store=store)  # the module is not allowed here
        allowed = replay_run(
            run.run_id, store=store, options=RunOptions(allow_modules=(bench_engine.TOOL_MODULE,))
        )
    finally:
        store.close()
    assert result.ok and allowed.ok, (result.divergence, allowed.divergence)
    assert loads == ["noop", "noop"]  # once by the replay that may not load it, once by the one that may
