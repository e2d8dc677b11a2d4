"""Event-loop helpers shared by the engines and their streams: the loop check, the
wake-up signal their waiting pushes use, and a callback run once per loop iteration.

An engine and its streams are driven from the loop the engine started on: their
futures, locks and queues belong to it. Awaiting one of their coroutines on
another loop (``asyncio.run`` in a second thread, say) would wait for a wake-up
that never comes, so it is refused at once with :class:`WrongEventLoopError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prevad_rx._errors import WrongEventLoopError

__all__: list[str] = []  # internal to the engine and its streams


def require_loop(loop: asyncio.AbstractEventLoop | None, method: str) -> None:
    """Raise :class:`WrongEventLoopError` unless the running loop is ``loop`` (None: unbound)."""
    if loop is None:
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not loop:
        where = "outside any event loop" if running is None else "on another event loop"
        raise WrongEventLoopError(
            f"{method} was called {where}: an engine and its streams belong to the loop "
            "the engine started on; from another thread, use "
            "asyncio.run_coroutine_threadsafe(..., that_loop)"
        )


class Signal:
    """Wakes every waiter on each notify; waiters re-check their own condition.

    Waiters wait on bare futures of the running loop (cheaper than an
    ``asyncio.Event`` per round: a flush per live packet waits once each)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # a cancelled waiter is done
                    waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):  # notify() may have taken it already
                    self._waiters.remove(waiter)
                raise


class IterationEnd:
    """Runs ``callback`` at the end of the current loop iteration, once however often it
    is asked for in it (one ``call_soon``): what accumulates during the iteration (a
    stream's pushes, records for a pipe) then leaves as one batch. Calling the callback
    directly in between is fine; the pending run then finds less to do."""

    __slots__ = ("_callback", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        self._loop = loop
        self._callback = callback
        self._pending = False

    def request(self) -> None:
        if not self._pending:
            self._pending = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._pending = False
        self._callback()
