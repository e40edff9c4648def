"""The front end as one call: path -> load -> validate -> compile -> (ExecutionGraph, diagnostics)."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from dsl.diagnostics import Diagnostic, Severity

# A file found in a directory is a workflow when it declares the language version: a `charter` key at
# the start of a line (block style, after a byte-order mark too) or in a flow mapping, quoted or not.
_DECLARES_CHARTER = re.compile(r"""(?:^\ufeff?|[{,]\s*)["']?charter["']?\s*:""", re.MULTILINE)


def find_workflow_files(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories and glob patterns. Returns (files, patterns that matched nothing).

    Files named explicitly are always checked; files found in directories or by globs only when they
    declare `charter:` (so a repository's other YAML files are left alone).
    """
    found: dict[Path, None] = {}
    missing: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            workflows = [c for c in sorted(path.rglob("*")) if _is_workflow(c)]
            if not workflows:  # a mistyped or emptied folder must not pass CI having checked nothing
                missing.append(raw)
            found.update(dict.fromkeys(workflows))
        else:
            workflows: list[Path] = []
            for match in (Path(m) for m in sorted(glob.glob(raw, recursive=True))):
                if match.is_file() and _is_workflow(match):
                    workflows.append(match)
                elif match.is_dir():
                    workflows.extend(c for c in sorted(match.rglob("*")) if _is_workflow(c))
            if not workflows:
                missing.append(raw)
            found.update(dict.fromkeys(workflows))
    return list(found), missing


def _is_workflow(path: Path) -> bool:
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return False
    return _DECLARES_CHARTER.search(head) is not None


def compile_file(path: str | os.PathLike[str]):  # -> tuple[ExecutionGraph | None, list[Diagnostic]]
    """Load, validate and compile one file. Never raises for anything the file contains."""
    from dsl.compiler import compile_workflow
    from dsl.loader import load_file
    from dsl.validate import validate

    doc, diags = load_file(path)
    if doc is None or _has_errors(diags):
        return None, diags
    workflow, shape = validate(doc)
    diags += shape
    if workflow is None or _has_errors(shape):
        return None, diags
    graph, compile_diags = compile_workflow(workflow, doc)
    return graph, diags + compile_diags


def check_file(path: str | os.PathLike[str]) -> list[Diagnostic]:
    """Every diagnostic of one file, sorted by position."""
    return sorted(compile_file(path)[1])


def check_files(paths: Iterable[str | os.PathLike[str]]) -> list[Diagnostic]:
    """Every diagnostic of every file, in file order."""
    return [d for p in paths for d in check_file(p)]


def _has_errors(diags: list[Diagnostic]) -> bool:
    return any(d.severity == Severity.ERROR for d in diags)
