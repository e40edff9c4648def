"""Live progress on stderr shows when `llm` and `agent` steps start (▶), as for tool steps, so that a
slow model call does not leave the terminal silent. A real `charter` process with the offline scripted
model, a real SQLite log."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fixtures.charter_cli import charter, describe

FLOW = """\
    charter: "1.0"
    name: s9-progress
    models: {default: {provider: scripted, responses: answers.yaml}}
    identities: {helper_agent: {kind: agent}}
    steps:
      - {id: ask, llm: {prompt: "hello"}}
      - id: each
        for_each:
          in: "${{ [1] }}"
          as: n
          steps:
            - {id: helper, agent: {identity: helper_agent, prompt: "help with {{ n }}", vars: {n: "${{ n }}"}}}
    output: {said: "${{ steps.ask.output }}"}
    """

ANSWERS = """\
    responses:
      - {step: ask, text: hi}
      - {step: helper, turn: 1, text: done}
    """


def test_llm_and_agent_steps_show_when_they_start(tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(textwrap.dedent(FLOW))
    (tmp_path / "answers.yaml").write_text(textwrap.dedent(ANSWERS))
    proc = charter("run", "flow.yaml", "--db", str(tmp_path / "s9.db"), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    marks = [line.split(" (")[0] for line in proc.stderr.splitlines() if line[:1] in "▶✓"]
    assert marks == ["▶ ask", "✓ ask", "▶ each[0]/body/helper", "✓ each[0]/body/helper", "✓ each"], (
        proc.stderr
    )
