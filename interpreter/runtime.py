"""Types shared by the engine, the step runners and the tool layer: options, results and the errors
that travel through a run."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from interpreter.policy import PolicyError


class RunSetupError(Exception):
    """A run cannot start: bad input, a disallowed module, a missing secret, an unknown run or node.
    The CLI exits 2 for these."""


class InputError(RunSetupError):
    """The run input does not match the workflow's input schema."""


class SetupPolicyError(RunSetupError, PolicyError):
    """A python tool's module is not allowed (found before the run starts)."""


def error_text(error: Mapping[str, Any]) -> str:
    """An error object as a person reads it: its message, after the place in the file it names
    (`details.at`, e.g. of a run-time expression error) -- kept out of the message, which replay
    compares, so that the same workflow replayed from another path still reproduces."""
    details = error.get("details")
    at = details.get("at") if isinstance(details, dict) else None
    return f"{at}: {error.get('message')}" if at else str(error.get("message"))


class StepError(Exception):
    """A step failed. `code` is what `retry.on` and `catch` match: timeout, tool, http, model, expression,
    denied, cancelled, unsupported, workflow, or a `fail` step's own code. `retryable`: whether a `retry`
    without `on` repeats it (one whose `on` lists the code always does, unless the error is `final`)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        type: str = "StepError",  # noqa: A002 - the error object's member name
        category: str | None = None,
        retryable: bool = True,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.type = type
        self.category = category
        self.retryable = retryable
        self.details = details
        self.step: str | None = None
        self.node_path: str | None = None
        self.final = False  # never retried, even when `retry.on` lists its code

    @property
    def halts_run(self) -> bool:
        """A spent workflow-level budget: no `catch` inside the run handles it (spec §11.3)."""
        return isinstance(self.details, dict) and bool(self.details.get("halts_run"))

    def kinds(self) -> set[str]:
        return {self.code} | ({self.category} if self.category else set())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "step": self.step,
            "node_path": self.node_path,
        }
        if self.category:
            out["category"] = self.category
        if self.details is not None:
            out["details"] = self.details
        if self.final:  # replay must not retry what the run did not (`retry.on` listing its code)
            out["final"] = True
        return out

    def binding(self) -> dict[str, Any]:
        """What `catch` sees as its `as` variable."""
        return {"code": self.code, "message": self.message, "step": self.step}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepError:
        err = cls(
            str(data.get("code") or "failed"),
            str(data.get("message") or ""),
            type=str(data.get("type") or "StepError"),
            category=data.get("category"),
            retryable=bool(data.get("retryable", True)),
            details=data.get("details"),
        )
        err.step, err.node_path = data.get("step"), data.get("node_path")
        err.final = data.get("final") is True
        return err


class Suspend(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The run waits for people: raised by approval steps, collected by composite steps."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__(", ".join(pending))
        self.pending = pending


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """What the CLI shows live. kind: run (a run starts or continues; `detail` is its id), started,
    completed, failed, skipped, retrying, waiting, item, held (a child run that another process
    executes: this one waits for it)."""

    kind: str
    node_path: str
    step_kind: str = ""
    detail: Any = None


@dataclass
class RunOptions:
    principal: str | None = None
    claims: dict[str, Any] | None = None
    allow_modules: tuple[str, ...] = ()
    # "full" also switches the store to fsync per commit (for good: a store never weakens it for a run).
    durability: Literal["normal", "full"] = "normal"
    progress: Callable[[ProgressEvent], None] | None = None
    model_overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    run_id: str
    status: Literal["completed", "failed", "waiting", "cancelled", "running"]
    output: Any
    error: dict[str, Any] | None
    pending: list[str] = field(default_factory=list)  # node paths waiting for approval

    def to_dict(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "status": self.status, "output": self.output, "error": self.error}
        if self.status == "waiting":
            out["pending"] = list(self.pending)  # what to pass to `charter approve RUN NODE`
        return out


@dataclass
class Divergence:
    node_path: str
    expected: Any
    got: Any
    reason: str


@dataclass
class ReplayResult:
    """`events_checked`: the recorded run's events, when it was reproduced; on a divergence, the
    recorded results (tool calls, model calls, step outcomes) compared before it."""

    run_id: str
    ok: bool
    divergence: Divergence | None
    events_checked: int


class ReplayCutOff(BaseException):  # noqa: N818 - control flow of replay
    """Replay of a call the recorded run cut off with the timeout of `at` (a step's path; "" the run's):
    it ends the enclosing attempts at once, up to that step, which fails with its recorded timeout.
    A BaseException, like the cancellation it stands for: no `catch` or retry inside sees it."""

    def __init__(self, at: str) -> None:
        super().__init__(at)
        self.at = at


class Diverged(Exception):  # noqa: N818 - control flow of replay
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.reason)
        self.divergence = divergence


# The retried steps a node runs inside: (path, attempt) of each ancestor in an attempt after its first.
# A child's idempotency key names them, so that a retried group's calls are new calls (spec §12.4).
OUTER_ATTEMPTS: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar(
    "charter_outer_attempts", default=()
)


# The groups (`parallel`, `for_each`) a node runs in, each as an event that is set once the group is
# decided (a branch or item failed, a join is met). Their tasks are cancelled when the group's step
# sees it; until then a task that was already running starts no further step (spec §13.5, §13.6).
HALTS: contextvars.ContextVar[tuple[asyncio.Event, ...]] = contextvars.ContextVar("charter_halts", default=())


def idempotency_key(run_id: str, path: str, attempt: int, *more: int) -> str:
    """run id / node path / attempt (/ call number), then `+PATH@ATTEMPT` for each retried ancestor."""
    key = "/".join([run_id, path, str(attempt), *map(str, more)])
    return key + "".join(f"+{outer}@{n}" for outer, n in OUTER_ATTEMPTS.get() if outer != path)


def kind_of(value: Any) -> str:
    """A value's type as the workflow's author knows it (CEL's names: string, map, uint, not Python's)."""
    from dsl.expr.functions import type_name

    return "null" if value is None else type_name(value)
