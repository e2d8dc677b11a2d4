"""Deadlines for backend calls: a call that overruns its deadline is given up.

A worker registers each backend call with :meth:`Watchdog.begin` before it
starts and ends it with :meth:`Watchdog.end` when it returns. One daemon
thread, started with the first call, sleeps until the nearest deadline (a call
wakes it only if its deadline is nearer than that one: not once per call); a
call still registered then is marked abandoned, dropped from the watch, and
handed to ``on_expired`` (on the watchdog's thread, no lock held; an exception
from it is logged, on ``prevad_rx.stage``, and the watch goes on). Its worker
learns of it from :meth:`Watchdog.end` returning False, and drops whatever
the call returned: by then someone else has dealt with its work. ``end`` returns
only once ``on_expired`` has returned, so the worker takes no other work while it
is being given up (``on_expired`` may retire it).

The watchdog knows nothing of streams: what a call holds is its ``payload``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["WatchedCall", "Watchdog"]

P = TypeVar("P")

log = logging.getLogger("prevad_rx.stage")


@dataclass(eq=False, slots=True)
class WatchedCall(Generic[P]):
    """One backend call under watch: the thread making it, its deadline and what it holds."""

    thread: int
    deadline: float
    timeout: float
    payload: P
    abandoned: bool = field(default=False)
    #: set once ``on_expired`` has returned for an abandoned call
    handled: threading.Event = field(default_factory=threading.Event)


class Watchdog(Generic[P]):
    """Gives up calls that overrun their deadline: ``on_expired(call)`` for each.

    ``stop()`` ends the thread (joining it, unless called from ``on_expired``
    itself); calls registered afterwards are never given up. ``stop_when_idle()``
    lets the calls still running be given up at their deadlines first.
    """

    def __init__(
        self,
        on_expired: Callable[[WatchedCall[P]], None],
        *,
        name: str = "prevad-rx-watchdog",
    ) -> None:
        self._on_expired = on_expired
        self._name = name
        self._calls: set[WatchedCall[P]] = set()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._stop_when_idle = False
        self._expiring = False  # on_expired is running on the thread
        self._wakes_at = float("inf")  # the deadline the thread sleeps until (inf: none)

    def begin(self, timeout: float, payload: P) -> WatchedCall[P]:
        """Watch a call made now by the current thread, due within ``timeout`` seconds."""
        call = WatchedCall(threading.get_ident(), time.monotonic() + timeout, timeout, payload)
        with self._cond:
            self._calls.add(call)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._watch, name=self._name, daemon=True)
                self._thread.start()
            if call.deadline < self._wakes_at:  # else the thread wakes in time anyway
                self._wakes_at = call.deadline
                self._cond.notify()
        return call

    def end(self, call: WatchedCall[P]) -> bool:
        """The call returned; False if it had already been given up (drop its results),
        once the giving up is over."""
        with self._cond:
            self._calls.discard(call)
            abandoned = call.abandoned
            if self._stop_when_idle and not self._calls:
                self._cond.notify()  # the last call is over: the thread may end
        if abandoned:
            call.handled.wait()
        return not abandoned

    @property
    def watched(self) -> int:
        """Calls registered and neither ended nor given up."""
        with self._cond:
            return len(self._calls)

    def stop(self) -> None:
        """Stop watching; join the thread unless this is the watchdog's own thread."""
        with self._cond:
            self._stopped = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def stop_when_idle(self) -> None:
        """Stop once no call is watched: a call still running is given up at its deadline
        as before, so a hung one still costs its worker (a shared pool gets a new one),
        not the pool. Never waits for a give-up under way (the caller may hold a lock it
        needs): then, or while calls run, the thread ends on its own."""
        with self._cond:
            if self._calls or self._expiring:  # the thread ends on its own, later
                self._stop_when_idle = True
                self._cond.notify_all()
                return
        self.stop()  # idle: it ends at once

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._stop_when_idle and not self._calls:
                        self._stopped = True
                        return
                    now = time.monotonic()
                    expired = [c for c in self._calls if c.deadline <= now]
                    if expired:
                        for call in expired:
                            call.abandoned = True
                            self._calls.discard(call)
                        self._expiring = True
                        break
                    nearest = min((c.deadline for c in self._calls), default=float("inf"))
                    self._wakes_at = nearest
                    self._cond.wait(None if nearest == float("inf") else nearest - now)
                else:
                    return
            for call in expired:
                try:
                    self._on_expired(call)
                except Exception:  # one failed give-up must not end the watch over the rest
                    log.exception("giving up an overdue backend call failed")
                finally:
                    call.handled.set()
            with self._cond:
                self._expiring = False
