"""The invalid-file corpus: every file in tests/invalid/ must produce the diagnostics it announces.

Adding a case needs no code: create `tests/invalid/<CODE>-<slug>.yaml` whose first lines are comments

    # expect: CH201 line 12
    # expect: CH305 line 14 col 9      (col is optional; several expect lines are allowed)

Lines count from the top of the file, comment lines included. The file name's code must be among the
expected codes, and every code in `dsl.diagnostics.CODES` must be exercised by some file (except the
few that no file in a directory can produce, listed in `NOT_IN_CORPUS` with the reason).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from dsl.diagnostics import CODES, Diagnostic
from dsl.loader import load_file

CORPUS = Path(__file__).parent / "invalid"
EXPECT = re.compile(r"#\s*expect:\s*(CH\d{3})\s+line\s+(\d+)(?:\s+col\s+(\d+))?\s*$")
NAME = re.compile(r"(CH\d{3})-[a-z0-9-]+\.ya?ml")

NOT_IN_CORPUS = {
    "CH001": "a missing or unreadable file cannot live in the corpus (tests/test_loader.py covers it)",
    "CH002": "a file over the size limit would bloat the repository (tests/test_loader.py covers it)",
    "CH100": "the catch-all for pydantic error kinds that dsl.validate has no specific code for; every "
    "error a workflow file can cause today maps to a specific CH1xx code",
    "CH299": "an internal compiler error is a bug; no valid input should produce it (tests/test_compiler.py)",
}


def _stages_exist() -> bool:
    return all(
        importlib.util.find_spec(m) is not None for m in ("dsl.frontend", "dsl.validate", "dsl.compiler")
    )


# The full front end once every stage exists; until then the loader alone runs the CH0xx files.
# To force one or the other, replace the right-hand side by True or False.
FULL_FRONT_END = True


def diagnose(path: Path) -> list[Diagnostic]:
    if FULL_FRONT_END:
        from dsl.frontend import check_file

        return check_file(path)
    return load_file(path)[1]


def expectations(path: Path) -> list[tuple[str, int, int | None]]:
    found: list[tuple[str, int, int | None]] = []
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("#"):
                break
            match = EXPECT.match(line)
            if match:
                code, lineno, col = match.groups()
                found.append((code, int(lineno), int(col) if col else None))
    return found


CASES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_corpus_file_reports_expected_diagnostics(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name}: no '# expect: CODE line N' comment at the top"
    if not FULL_FRONT_END and not all(code.startswith("CH0") for code, _, _ in expected):
        pytest.skip(
            "needs dsl.frontend.check_file with every stage; only CH0xx files run on the loader alone"
        )
    diags = diagnose(path)
    shown = "\n".join(f"  {d.code} line {d.line} col {d.column}: {d.message}" for d in diags) or "  (none)"
    for code, line, col in expected:
        hits = [d for d in diags if d.code == code and d.line == line and (col is None or d.column == col)]
        where = f"line {line}" + (f" col {col}" if col else "")
        assert hits, f"{path.name}: expected {code} at {where}; got:\n{shown}"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_corpus_file_is_well_named(path: Path) -> None:
    match = NAME.fullmatch(path.name)
    assert match, f"{path.name}: name it <CODE>-<slug>.yaml, e.g. CH201-unknown-step.yaml"
    codes = {code for code, _, _ in expectations(path)}
    assert match.group(1) in codes, f"{path.name}: the file name's code is not among its expect lines"
    unknown = codes - CODES.keys()
    assert not unknown, f"{path.name}: codes not registered in dsl.diagnostics.CODES: {sorted(unknown)}"


def test_every_registered_code_has_a_corpus_file() -> None:
    covered = {code for path in CASES for code, _, _ in expectations(path)}
    missing = sorted(CODES.keys() - covered - NOT_IN_CORPUS.keys())
    assert not missing, f"codes without a file in tests/invalid/: {missing}"
