"""The README's workflow sample is a valid Charter file (what a newcomer copies first must work)."""

from __future__ import annotations

import re
from pathlib import Path

from dsl.frontend import check_file

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_workflow_samples_validate(tmp_path: Path) -> None:
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S) if "\ncharter:" in b]
    assert blocks, "the README shows no workflow"
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme_{i}.yaml"
        path.write_text(block)
        assert check_file(path) == [], block
