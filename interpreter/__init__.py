"""Charter's back end: the durable interpreter and its event log (DESIGN.md §5).

The engine is imported lazily so that `import interpreter` (and `charter --version`) stays fast.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run_workflow": "interpreter.engine",
    "resume_run": "interpreter.engine",
    "replay_run": "interpreter.replay",
    "fork_run": "interpreter.engine",
    "decide_approval": "interpreter.approvals",
    "cancel": "interpreter.cancel",
    "INTERPRETER_VERSION": "interpreter.engine",
    "RunOptions": "interpreter.runtime",
    "RunResult": "interpreter.runtime",
    "Divergence": "interpreter.runtime",
    "ReplayResult": "interpreter.runtime",
    "ProgressEvent": "interpreter.runtime",
    "InputError": "interpreter.runtime",
    "RunSetupError": "interpreter.runtime",
    "StepError": "interpreter.runtime",
    "PolicyError": "interpreter.policy",
    "register_step_runner": "interpreter.steps",
    "STEP_RUNNERS": "interpreter.steps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'interpreter' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
