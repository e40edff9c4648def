"""Which Python modules a workflow's `python:` tools may import (DESIGN.md §7).

A workflow file is data, not code: a shared file naming `os:system` must not become code execution.
Modules are allowed by `--allow-module M` (M itself and its submodules, or a glob such as `pkg.*`),
by `CHARTER_ALLOW_MODULES` (comma separated), or by `[tool.charter] allow-modules = [...]` in the
pyproject.toml of the current directory — the project the person runs Charter from. A pyproject.toml
that travels with a workflow file (beside it, or above it) is NOT trusted: whoever shares the file
could otherwise allow `os:system` for it. Nothing is imported before the check passes.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path


class PolicyError(Exception):
    """A python tool names a module that no allow-list permits."""


@dataclass(frozen=True, slots=True)
class Allowance:
    pattern: str
    root: Path | None  # directory of the pyproject.toml that allowed it (its modules import from there)


@dataclass(frozen=True, slots=True)
class ModulePolicy:
    allowances: tuple[Allowance, ...]
    roots: tuple[Path, ...]  # import roots, in order of preference

    def allowance_for(self, module: str) -> Allowance | None:
        return next((a for a in self.allowances if _matches(a.pattern, module)), None)

    def check(self, module: str, tool: str) -> Allowance:
        allowance = self.allowance_for(module)
        if allowance is None:
            raise PolicyError(
                f"tool '{tool}': module '{module}' is not allowed; allow it with --allow-module {module} "
                f"(or CHARTER_ALLOW_MODULES, or [tool.charter] allow-modules in pyproject.toml)"
            )
        return allowance

    def import_roots(self, allowance: Allowance) -> list[Path]:
        return list(dict.fromkeys([*(p for p in [allowance.root] if p is not None), *self.roots]))


def _matches(pattern: str, module: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern or module.startswith(pattern + ".")


def _pyproject_allowances(directory: Path) -> tuple[Path, list[str]] | None:
    path = directory / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    modules = data.get("tool", {}).get("charter", {}).get("allow-modules", [])
    return (directory, [m for m in modules if isinstance(m, str)]) if isinstance(modules, list) else None


def project_root(workflow_file: str | os.PathLike[str] | None) -> Path | None:
    """The nearest ancestor directory of the workflow file holding a pyproject.toml."""
    if workflow_file is None:
        return None
    start = Path(workflow_file).resolve().parent
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return None


def build_policy(
    allow_modules: tuple[str, ...] | list[str], workflow_file: str | os.PathLike[str] | None
) -> ModulePolicy:
    """Collect every allowance that applies to a run of `workflow_file` started in the current directory."""
    allowances = [Allowance(m, None) for m in allow_modules if m]
    env = os.environ.get("CHARTER_ALLOW_MODULES", "")
    allowances += [Allowance(m.strip(), None) for m in env.split(",") if m.strip()]
    cwd = Path.cwd()
    found = _pyproject_allowances(cwd)
    if found is not None:
        allowances += [Allowance(m, found[0]) for m in found[1]]
    # The project you run from comes first: a module of an allowed name that a shared workflow file
    # brings along (beside it, or in its own project) must not replace the project's. The file's
    # folders are searched last, for a module only they hold (the file's own tools, in the project).
    roots: list[Path] = [cwd]
    root = project_root(workflow_file)
    if root is not None:
        roots.append(root)
    if workflow_file is not None:
        roots.append(Path(workflow_file).resolve().parent)
    return ModulePolicy(tuple(allowances), tuple(dict.fromkeys(roots)))
