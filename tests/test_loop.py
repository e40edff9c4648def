"""interpreter.loop: the event loop of a run always closes, even around a task that ignores cancellation."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from interpreter.loop import run_coroutine


async def _leaves_a_stubborn_task() -> int:
    async def stubborn() -> None:  # like a task stuck in CPython gh-103847: cancelling it never ends it
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    return 7


def test_a_task_that_ignores_cancellation_cannot_keep_the_loop_open() -> None:
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_coroutine(_leaves_a_stubborn_task(), grace=0.1))
    )
    worker.start()
    worker.join(timeout=60)  # asyncio.run would wait for the stubborn task for ever
    assert not worker.is_alive()
    assert outcome == [7]


def test_the_result_and_the_errors_of_the_coroutine_come_through() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_coroutine(fails())
    assert run_coroutine(asyncio.sleep(0, result="ok")) == "ok"


def test_signal_handlers_are_restored_after_a_run() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    run_coroutine(asyncio.sleep(0))
    with pytest.raises(ValueError):
        run_coroutine(fails())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_run_from_inside_a_running_loop_is_refused_clearly() -> None:
    async def caller() -> None:
        run_coroutine(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="cannot be run from inside a running event loop"):
        asyncio.run(caller())
