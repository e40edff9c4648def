"""Running the asyncio core from synchronous callers, so that Ctrl-C and SIGTERM always stop it promptly.

`asyncio.run` has two gaps for a command-line interpreter:
- SIGTERM is not handled at all (the process dies without releasing the run's lease or closing what
  the run opened), while SIGINT cancels the run cleanly. Here both do the same: the run's task is
  cancelled, its `finally` blocks run, and `Interrupted` carries the signal out to the caller.
- on the way out it waits, without a limit, for every task left over to finish its cancellation. A task
  cancelled while the loop spawns a subprocess never does (CPython gh-103847, an MCP server being started
  when Ctrl-C comes): the process hung. Here left-over tasks get `SHUTDOWN_GRACE` seconds, then are
  abandoned. What a run committed is in the log either way; `charter resume` continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import signal
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

SHUTDOWN_GRACE = 3.0

# The signals received while `run_coroutine` runs, for the code of the run's task to read.
_RECEIVED: contextvars.ContextVar[list[int]] = contextvars.ContextVar("charter_signals")


def interrupted_by() -> str | None:
    """The signal (SIGINT, SIGTERM) that is stopping the run this task belongs to, if one is: a run
    cancelled without one was cut off by its caller (or, a child run, by its parent's timeout or join)."""
    received = _RECEIVED.get(None)
    return signal.Signals(received[0]).name if received else None


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT or SIGTERM); `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_coroutine(main: Coroutine[Any, Any, T], *, grace: float = SHUTDOWN_GRACE) -> T:
    """Run `main` on a new event loop and close the loop, waiting at most `grace` seconds for left-over
    tasks. Raises `Interrupted` when SIGINT or SIGTERM stopped it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        main.close()
        raise RuntimeError(
            "a workflow cannot be run from inside a running event loop; call it from a thread "
            "(e.g. `await asyncio.to_thread(run_workflow, ...)`)"
        )
    runner = asyncio.Runner()
    received: list[int] = []
    tasks: list[asyncio.Task[Any]] = []

    async def tracked() -> T:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        _RECEIVED.set(received)
        with _noting_sigint(runner, received):
            return await main

    try:
        with _terminate_like_interrupt(received, tasks):
            return runner.run(tracked())
    except KeyboardInterrupt:
        raise Interrupted(received[0] if received else signal.SIGINT) from None
    except asyncio.CancelledError:
        if received:  # cancelled by our SIGTERM handler (SIGINT ignored: no Runner handler to do it)
            raise Interrupted(received[0]) from None
        raise
    finally:
        _close(runner.get_loop(), grace)


@contextlib.contextmanager
def _terminate_like_interrupt(received: list[int], tasks: list[asyncio.Task[Any]]) -> Iterator[None]:
    """Within the block, SIGTERM does what SIGINT does (the Runner's handler: cancel the main task, then
    a second signal interrupts at once). Only in the main thread, and only where SIGTERM has its default
    handler and SIGINT its default or none (a shell starts background jobs with SIGINT ignored: SIGTERM
    must still stop them cleanly); a caller that handles signals itself keeps its handlers."""
    if threading.current_thread() is not threading.main_thread() or not (
        signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_IGN)
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        yield
        return

    def on_terminate(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)  # the Runner's while `main` runs, else the default
        if callable(handler):
            handler(signal.SIGINT, frame)
        elif len(received) > 1 or not tasks or tasks[0].done():  # a second signal: at once
            raise KeyboardInterrupt
        else:  # SIGINT ignored, so the Runner installed no handler: cancel the run's task as it would
            tasks[0].get_loop().call_soon_threadsafe(tasks[0].cancel)  # wakes the loop from its wait

    signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _noting_sigint(runner: asyncio.Runner, received: list[int]) -> Iterator[None]:
    """While the Runner's SIGINT handler is in place (it cancels the run's task), note the signal in
    `received` too, then hand it on; put the Runner's handler back after, which it then removes."""
    handler = signal.getsignal(signal.SIGINT)
    if not (
        threading.current_thread() is threading.main_thread()
        and isinstance(handler, functools.partial)
        and getattr(handler.func, "__self__", None) is runner
    ):
        yield
        return

    def noting(signum: int, frame: Any) -> None:
        received.append(signum)
        handler(signum, frame)

    signal.signal(signal.SIGINT, noting)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is noting:
            signal.signal(signal.SIGINT, handler)


def _close(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        stuck = loop.run_until_complete(asyncio.wait(tasks, timeout=grace))[1] if tasks else ()
        for task in stuck:  # abandoned on purpose: no "Task was destroyed but it is pending!" at exit
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        if not stuck:  # a stuck task's async generators and threads cannot be closed from here
            loop.run_until_complete(loop.shutdown_asyncgens())
            with contextlib.suppress(TimeoutError):  # e.g. a getaddrinfo that hangs
                loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), grace))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
