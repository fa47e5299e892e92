"""Signals in async work: a stop asked for while a request is in flight ends it cleanly.

The CLI turns SIGTERM and SIGHUP into KeyboardInterrupt, as Ctrl-C is. Raised from a signal
handler inside an asyncio task, that interrupt escapes the task (asyncio then prints the task's
traceback as it shuts down); so async work that the CLI runs watches the signals itself,
cancels what it was doing, and raises the KeyboardInterrupt once its loop has closed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio

__all__ = ["STOP_SIGNALS", "handlers_kept", "run_until_stopped"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
T = TypeVar("T")


def run_until_stopped(work: Callable[[], Awaitable[T]], *, watch: bool) -> T:
    """`anyio.run(work)`; with `watch`, a stop signal cancels it, and KeyboardInterrupt (named
    after the signal) is raised once the loop has closed. Signals can only be watched from the
    main thread: elsewhere `work` simply runs."""
    if not watch or threading.current_thread() is not threading.main_thread():
        return anyio.run(work, backend="asyncio")
    received: list[signal.Signals] = []
    done: list[T] = []

    async def watched() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_signal, group.cancel_scope, received)
            done.append(await work())
            group.cancel_scope.cancel()

    with handlers_kept(signal.SIGTERM, signal.SIGHUP):
        anyio.run(watched, backend="asyncio")
    if received or not done:
        raise KeyboardInterrupt(received[0].name if received else "cancelled")
    return done[0]


async def _cancel_on_signal(scope: anyio.CancelScope, received: list[signal.Signals]) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            received.append(signal.Signals(signum))
            scope.cancel()
            return


@contextmanager
def handlers_kept(*signals: signal.Signals) -> Iterator[None]:
    """asyncio resets a signal it handled to the default (death, for SIGTERM) when its loop
    ends: give back the handlers that were there before."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
