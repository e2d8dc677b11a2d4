"""EventFanout: one source of events, on the event loop, to handlers, observers and iterators.

Used by each :class:`~prevad_rx.VADStream` (its own events) and by
:class:`~prevad_rx.VADEngine` (every stream's events). Handlers are guarded: an
exception in one (any but ``KeyboardInterrupt``/``SystemExit``, so also a
``CancelledError``) is logged (``prevad_rx.events``) and counted, never propagated.
Iterators receive events from their creation on (nothing is missed), and from
their first ``__anext__`` on report their backlog, which the engine turns into
backpressure on ``push()``; so a consumer task cancelled before it ever ran holds
nothing back. One is unregistered when it ends, fails, is cancelled, is closed
(``aclose()``), or is garbage-collected -- always on the loop's thread: a
collection on another thread hands the unregistering to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.subject import Subject

from prevad_rx._errors import StreamFailedError
from prevad_rx._types import SpeechEvent

__all__ = ["EventFanout", "EventIterator"]

log = logging.getLogger("prevad_rx.events")

_END = object()
_FATAL = (KeyboardInterrupt, SystemExit)


class EventIterator(AsyncIterator[SpeechEvent]):
    """``async for`` over events from its creation on (made by ``events()``).

    It holds back ``push()`` (while ``max_buffered_events`` are unread) only from
    its first ``__anext__`` on: a consumer task cancelled before it ever ran holds
    nothing back; until then it keeps every event for its reader, without bound.
    It is unregistered when its iteration ends or raises, when a ``__anext__`` is
    cancelled, on :meth:`aclose`, or when it is garbage-collected -- so a task
    cancelled before it ran unregisters it only once nothing else holds it:
    ``aclose()`` or drop an iterator you will not read.
    """

    def __init__(
        self,
        queue: asyncio.Queue[Any],
        unregister: Callable[[asyncio.Queue[Any]], None],
        on_consumed: Callable[[], None],
        on_start: Callable[[asyncio.Queue[Any]], None],
    ) -> None:
        self._queue = queue
        self._closed = False
        self._started = False
        self._on_consumed = on_consumed
        self._on_start = on_start
        # holds no reference to the iterator, so dropping it unregisters the queue
        self._finalizer = weakref.finalize(self, unregister, queue)
        self._finalizer.atexit = False

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> SpeechEvent:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._on_start(self._queue)  # a reader now: its backlog counts
        try:
            item = await self._queue.get()
        except BaseException:  # cancelled: this consumer is gone
            self._close()
            raise
        if item is _END:
            self._close()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._close()
            raise item
        self._on_consumed()
        event: SpeechEvent = item
        return event

    async def aclose(self) -> None:
        """Stop iterating: unregister now (no effect when already ended)."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(_END)  # another task waiting on this iterator ends too
        self._finalizer()  # unregisters, once
        self._on_consumed()


def _on_loop(
    loop: asyncio.AbstractEventLoop, call: Callable[[asyncio.Queue[Any]], None]
) -> Callable[[asyncio.Queue[Any]], None]:
    """``call``, run on ``loop``'s thread wherever it is called from.

    An iterator's finalizer runs where the garbage collector fires, possibly on a
    worker thread, while unregistering touches the loop's state (queues, the
    engine's backpressure): from another thread it is handed to the loop; a
    closed loop has nothing left to unregister from.
    """
    loop_thread = threading.get_ident()  # made on the loop, so this is its thread

    def on_loop(queue: asyncio.Queue[Any]) -> None:
        if threading.get_ident() == loop_thread:
            call(queue)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing to unregister from
            loop.call_soon_threadsafe(call, queue)

    return on_loop


class EventFanout:
    """Publishes events to subscribers and ``async for`` iterators, on the loop.

    Args:
        name: used in log messages.
        raise_failures: iterators raise a :class:`StreamFailedError` published with
            :meth:`fail` (a stream's own iterators); otherwise failures are ``error``
            events and the fan-out goes on (the engine-wide iterators).
        on_consumed: called whenever an iterator takes an event (backlog shrank).
    """

    def __init__(
        self,
        name: str,
        *,
        raise_failures: bool,
        on_consumed: Callable[[], None] = lambda: None,
    ) -> None:
        self._name = name
        self._raise_failures = raise_failures
        self._on_consumed = on_consumed
        self._subject: Subject[SpeechEvent] = Subject()
        self._queues: list[asyncio.Queue[Any]] = []
        self._reading: set[asyncio.Queue[Any]] = set()  # started: their backlog counts
        self._ended: BaseException | object | None = None
        self.delivered = 0
        self.handler_errors = 0

    # ------------------------------------------------------------------ consumers

    def subscribe(
        self, handler: Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
    ) -> abc.DisposableBase:
        """Call ``handler`` with each event from now on; returns a disposable.

        A reactivex observer gets events through ``on_next``, a stream failure
        through ``on_error`` and the end through ``on_completed``; a plain callable
        gets failures as ``error`` events.
        """
        if isinstance(handler, abc.ObserverBase):
            observer = handler
            return self._subject.subscribe(
                self._guarded(observer.on_next),
                self._guarded(observer.on_error),
                self._guarded(observer.on_completed),
            )
        if not callable(handler):
            raise TypeError(f"handler must be callable or an observer, got {handler!r}")
        guarded = self._guarded(handler)

        def on_error(error: Exception) -> None:
            if isinstance(error, StreamFailedError):
                guarded(SpeechEvent("error", error.stream_id or "", 0, 0, 0, error=error))

        return self._subject.subscribe(guarded, on_error)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        return self._subject

    def events(self) -> EventIterator:
        """An iterator over events from now on (registered at call time, on the loop)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._ended is not None:
            queue.put_nowait(self._ended)
        else:
            self._queues.append(queue)
        unregister = _on_loop(asyncio.get_running_loop(), self._unregister)
        return EventIterator(queue, unregister, self._on_consumed, self._reading.add)

    def _unregister(self, queue: asyncio.Queue[Any]) -> None:
        reading = queue in self._reading
        self._reading.discard(queue)
        if queue in self._queues:
            self._queues.remove(queue)
        elif not reading:
            return
        self._on_consumed()

    @property
    def backlog(self) -> int:
        """Unread events of the slowest iterator that has started reading."""
        if not self._reading:  # the common case, checked on every push
            return 0
        return max(q.qsize() for q in self._reading)

    @property
    def buffered(self) -> int:
        return sum(q.qsize() for q in self._queues)

    # ------------------------------------------------------------------ producers

    def publish(self, event: SpeechEvent) -> None:
        self.delivered += 1
        for queue in tuple(self._queues):  # a collected iterator may unregister meanwhile
            queue.put_nowait(event)
        self._subject.on_next(event)

    def complete(self) -> None:
        """No more events: iterators end, observers get ``on_completed``."""
        self._end(_END)
        self._subject.on_completed()

    def fail(self, error: StreamFailedError) -> None:
        """The source failed: iterators raise it (or get an ``error`` event)."""
        if self._raise_failures:
            self._end(error)
            self._subject.on_error(error)
        else:
            self.publish(SpeechEvent("error", error.stream_id or "", 0, 0, 0, error=error))

    def _end(self, sentinel: BaseException | object) -> None:
        self._ended = sentinel
        for queue in tuple(self._queues):  # a collected iterator may unregister meanwhile
            queue.put_nowait(sentinel)
        self._queues.clear()
        self._reading.clear()

    def _guarded(self, call: Callable[..., object]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                call(*args)
            except _FATAL:
                raise
            except BaseException:
                self.handler_errors += 1
                log.exception("event handler of %s failed", self._name)

        return guarded
