"""The examples in the language specification are tested, and its diagnostics table is current.

Rules (spec/charter-1.0.md, "About this document"):

- every fenced block tagged ```yaml is a complete workflow (its first line that is not a comment starts
  with `charter:`); it must validate clean, or, when the block is preceded by `<!-- expect: CH201 -->`,
  produce exactly that code;
- blocks tagged ```yaml-fragment are illustrations and are not validated;
- a block preceded by `<!-- file: NAME -->` is written under that name next to the others (for files
  that examples refer to, such as a child workflow or a scripted-responses file);
- a ```yaml block preceded by `<!-- output: JSON -->` (and optionally `<!-- input: JSON -->`, default
  `{}`) is also run, offline, with that input: it must complete with exactly that output. Only examples
  that need no tool module, network or key can be run (set, fail, control flow, a scripted model).

The diagnostics table between `<!-- codes:begin -->` and `<!-- codes:end -->` is generated from
`dsl.diagnostics.CODES`; `python tests/test_spec_examples.py --write-codes` regenerates it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so that `python tests/test_spec_examples.py` finds the packages
    sys.path.insert(0, str(ROOT))

SPEC = ROOT / "spec" / "charter-1.0.md"
README = ROOT / "spec" / "README.md"

_FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[ \t]*$")
_DIRECTIVE = re.compile(r"^<!--\s*(expect|file|input|output):\s*(.+?)\s*-->$")
_CODES_BEGIN = "<!-- codes:begin -->"
_CODES_END = "<!-- codes:end -->"


@dataclass(frozen=True)
class Block:
    tag: str
    text: str
    line: int  # 1-based line of the opening fence
    expect: str | None
    file: str | None
    input: str | None = None  # JSON text: the run's input (`<!-- input: ... -->`)
    output: str | None = None  # JSON text: the output the run must complete with

    @property
    def complete(self) -> bool:
        for raw in self.text.splitlines():
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                return stripped.startswith("charter:")
        return False

    @property
    def name(self) -> str:
        return self.file or f"example-line-{self.line}.yaml"


def extract_blocks(markdown: str) -> list[Block]:
    """Every fenced block with the directives (HTML comments) on the lines just above it."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        start, tag = i, match.group(1)
        directives = _directives_above(lines, start)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        blocks.append(
            Block(
                tag,
                "\n".join(body) + "\n",
                start + 1,
                directives.get("expect"),
                directives.get("file"),
                directives.get("input"),
                directives.get("output"),
            )
        )
        i += 1
    return blocks


def _directives_above(lines: list[str], fence: int) -> dict[str, str]:
    found: dict[str, str] = {}
    j = fence - 1
    while j >= 0:
        text = lines[j].strip()
        match = _DIRECTIVE.match(text)
        if match:
            found.setdefault(match.group(1), match.group(2))
        elif text:
            break
        j -= 1
    return found


def spec_blocks() -> list[Block]:
    return extract_blocks(SPEC.read_text(encoding="utf-8"))


def yaml_blocks() -> list[Block]:
    return [b for b in spec_blocks() if b.tag == "yaml"]


def run_blocks() -> list[Block]:
    """The examples that are run: those that state the output they complete with."""
    return [b for b in yaml_blocks() if b.output is not None]


def _id(block: Block) -> str:
    return f"line{block.line}" + (f"-{block.expect}" if block.expect else "")


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All examples written into one directory, so that relative file references between them resolve."""
    directory = tmp_path_factory.mktemp("spec-examples")
    for block in spec_blocks():
        if block.tag in ("yaml", "yaml-fragment") and (block.tag == "yaml" or block.file):
            (directory / block.name).write_text(block.text, encoding="utf-8")
    return directory


# --- the document's own rules ------------------------------------------------------------------------


def test_spec_has_examples() -> None:
    blocks = yaml_blocks()
    assert len(blocks) >= 20
    assert any(b.expect for b in blocks), "the spec shows at least one invalid example"


@pytest.mark.parametrize("block", yaml_blocks(), ids=_id)
def test_yaml_blocks_are_complete_workflows(block: Block) -> None:
    assert block.complete, (
        f"spec line {block.line}: a ```yaml block must be a whole workflow starting with `charter:`; "
        "tag fragments ```yaml-fragment"
    )


def test_run_directives_are_well_formed() -> None:
    runs = run_blocks()
    assert len(runs) >= 5, "the spec runs its offline examples"
    for block in spec_blocks():
        if block.input is not None or block.output is not None:
            assert block.tag == "yaml" and not block.expect, (
                f"spec line {block.line}: input/output directives belong above a valid ```yaml example"
            )
            assert block.output is not None, f"spec line {block.line}: an input without the output to expect"
            json.loads(block.output)
            json.loads(block.input or "{}")


def test_expected_codes_are_registered() -> None:
    known = all_codes()
    unknown = sorted({b.expect for b in yaml_blocks() if b.expect and b.expect not in known})
    assert not unknown, f"the spec expects codes no stage defines: {unknown}"


# --- shape: loader + validate (must pass now) -----------------------------------------------------------


def _shape_codes(path: Path) -> list[str]:
    from dsl.loader import load_file
    from dsl.validate import validate

    doc, diags = load_file(path)
    if doc is not None and not any(d.severity == "error" for d in diags):
        diags = diags + validate(doc)[1]
    return [d.code for d in diags]


@pytest.mark.parametrize("block", yaml_blocks(), ids=_id)
def test_example_shape(block: Block, example_dir: Path) -> None:
    codes = _shape_codes(example_dir / block.name)
    if block.expect and block.expect[:3] in ("CH0", "CH1"):
        assert set(codes) == {block.expect}, f"spec line {block.line}: expected {block.expect}, got {codes}"
    else:
        assert codes == [], f"spec line {block.line}: {codes}"


# --- the whole front end (check_file) ------------------------------------------------------------------


def _compiler_available() -> bool:
    try:
        import dsl.compiler  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("block", yaml_blocks(), ids=_id)
def test_example_check_file(block: Block, example_dir: Path) -> None:
    if not _compiler_available():
        pytest.skip("dsl.compiler is not there yet")
    from dsl.diagnostics import format_text
    from dsl.frontend import check_file

    diags = check_file(example_dir / block.name)
    shown = format_text(diags)
    if block.expect:
        assert {d.code for d in diags} == {block.expect}, f"spec line {block.line}:\n{shown}"
    else:
        assert diags == [], f"spec line {block.line}:\n{shown}"


# --- running the offline examples ---------------------------------------------------------------------


@pytest.mark.parametrize("block", run_blocks(), ids=_id)
def test_example_runs(block: Block, example_dir: Path, tmp_path: Path) -> None:
    from dsl.frontend import compile_file
    from interpreter import RunOptions, run_workflow
    from interpreter.store import open_store

    graph, diags = compile_file(example_dir / block.name)
    assert graph is not None, f"spec line {block.line}: {[str(d) for d in diags]}"
    store = open_store(str(tmp_path / "charter.db"))
    try:
        result = run_workflow(
            graph, json.loads(block.input or "{}"), store=store, options=RunOptions(principal="spec-reader")
        )
    finally:
        store.close()
    assert result.status == "completed", f"spec line {block.line}: {result.status} {result.error}"
    assert result.output == json.loads(block.output or "null"), f"spec line {block.line}"


# --- the diagnostics table --------------------------------------------------------------------------------

_STAGES = {
    "CH0": "loader",
    "CH1": "shape",
    "CH2": "references",
    "CH3": "expressions",
    "CH4": "graph",
    "CH5": "identity",
}


def all_codes() -> dict[str, str]:
    """Every registered diagnostic code: `dsl.diagnostics.CODES`, sorted."""
    from dsl.diagnostics import CODES

    return dict(sorted(CODES.items()))


def codes_table() -> str:
    rows = ["| code | stage | meaning |", "|---|---|---|"]
    for code, title in all_codes().items():
        meaning = title.replace("|", "\\|")
        rows.append(f"| `{code}` | {_STAGES.get(code[:3], '?')} | {meaning} |")
    return "\n".join(rows)


def _table_in(markdown: str) -> str:
    start = markdown.index(_CODES_BEGIN) + len(_CODES_BEGIN)
    return markdown[start : markdown.index(_CODES_END)].strip()


def test_codes_table_is_current() -> None:
    assert _table_in(SPEC.read_text(encoding="utf-8")) == codes_table(), (
        "the diagnostics table in spec/charter-1.0.md is stale; run "
        "`python tests/test_spec_examples.py --write-codes`"
    )


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    missing = [t for t in local if not (README.parent / t).exists()]
    assert not missing, f"spec/README.md links to missing files: {missing}"


def write_codes() -> None:
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(_CODES_BEGIN) + len(_CODES_BEGIN)
    end = text.index(_CODES_END)
    SPEC.write_text(text[:start] + "\n" + codes_table() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-codes"]:
        write_codes()
        print(f"updated the diagnostics table in {SPEC.relative_to(ROOT)}")
    else:
        print("usage: python tests/test_spec_examples.py --write-codes", file=sys.stderr)
        sys.exit(2)
