"""``contain``: run any operator so that its faults stay in the stream whose item caused them.

:class:`~prevad_rx.VADEngine` wraps each of your ``audio_operators`` and
``event_operators`` in it. For each item going into the wrapped operator:

* an exception raised while the operator handles the item (also one reported
  through ``on_error``, as ``reactivex.operators.map`` does) fails that item's
  stream with an :class:`~prevad_rx.OperatorError` naming the operator (the
  exception as ``__cause__``); the operator is subscribed afresh for the other
  streams; with ``end_marker`` (items that mark their stream's end), the failed
  stream's remaining items are dropped up to its last;
* an item of the wrong type coming out fails its stream once, the same way;
* with ``end_marker``, a stream's last item that the operator swallowed (a
  filter that drops the empty end-of-stream chunk, a map that loses the flag) is
  put back: ``end_marker(last_item)`` is emitted after whatever the operator
  emitted for it, so the stream still ends.

:class:`~prevad_rx.StreamFailure` items bypass the operator. The wrapped
operator must be synchronous (emit while it handles an item); an error it
reports later, outside any item, cannot be tied to a stream and ends the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.subject import Subject

from prevad_rx._errors import OperatorError, StreamFailedError
from prevad_rx._types import StreamFailure
from prevad_rx.operators._builder import (
    FATAL_EXCEPTIONS,
    FailedStreams,
    Operator,
    ends_stream,
    failure_of,
    operator_name,
)

__all__ = ["contain"]


class _Guard:
    def __init__(
        self,
        operator: Operator[Any, Any],
        emits: tuple[type, ...],
        name: str,
        end_marker: Callable[[Any], Any] | None,
        observer: abc.ObserverBase[Any],
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._operator = operator
        self._emits = emits
        self._allowed = (*emits, StreamFailure)
        self._name = name
        self._end_marker = end_marker
        self._observer = observer
        self._scheduler = scheduler
        self._failed = FailedStreams()
        self._current: Any = None  # the item being handled by the operator, if any
        self._current_ended = False
        self._failed_now: set[str] = set()  # streams failed while handling the current item
        self._generation = 0
        self._inner = SerialDisposable()
        self._subject: Subject[Any] = Subject()
        self._completing = False
        self._subscribing = False
        self._stopped = False  # the chain ended with an error
        self._subscribe_inner()

    def _subscribe_inner(self) -> None:
        if self._stopped:
            return
        self._generation += 1
        generation = self._generation
        subject: Subject[Any] = Subject()
        self._subject = subject

        def on_next(item: Any) -> None:
            if generation == self._generation:
                self._out(item)

        def on_error(error: Exception) -> None:
            if generation == self._generation:
                self._inner_error(error)

        def on_completed() -> None:
            if generation == self._generation:
                self._inner_completed()

        self._subscribing = True
        try:
            self._inner.disposable = self._operator(subject).subscribe(
                on_next, on_error, on_completed, scheduler=self._scheduler
            )
        finally:
            self._subscribing = False

    # ------------------------------------------------------------ into the operator

    def on_next(self, item: Any) -> None:
        if self._stopped:
            return
        if isinstance(item, StreamFailure):
            self._failed.discard(item.stream_id)
            self._observer.on_next(item)
            return
        sid = getattr(item, "stream_id", None)
        if not isinstance(sid, str):
            self._stopped = True
            self._observer.on_error(
                TypeError(f"{self._name} got {type(item).__name__}, which names no stream")
            )
            return
        last = ends_stream(item)
        if self._failed.drops(sid, last):
            return
        self._current, self._current_ended = item, False
        self._failed_now.clear()
        try:
            self._subject.on_next(item)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:  # noqa: BLE001 - becomes this stream's failure
            self._fail(sid, failure_of(self._name, sid, item, exc), last)
        finally:
            self._current = None
        if (
            last
            and self._end_marker is not None
            and not self._current_ended
            and sid not in self._failed_now
        ):
            self._observer.on_next(self._end_marker(item))

    def on_completed(self) -> None:
        self._completing = True
        self._subject.on_completed()

    def dispose(self) -> None:
        self._inner.dispose()

    # ------------------------------------------------------------ out of the operator

    def _out(self, item: Any) -> None:
        current = self._current
        allowed = isinstance(item, self._allowed)
        if allowed:
            sid = item.stream_id
            if sid in self._failed_now or sid in self._failed:
                return  # the stream failed here: nothing more of it goes on
            if current is not None and sid == current.stream_id and ends_stream(item):
                self._current_ended = True
            self._observer.on_next(item)
            return
        named = getattr(item, "stream_id", None)
        sid = named if isinstance(named, str) else getattr(current, "stream_id", None)
        wanted = " or ".join(t.__name__ for t in self._emits)
        message = (
            f"operator {self._name} emitted {type(item).__name__} {item!r:.60}; "
            f"it must emit {wanted} items"
        )
        if not isinstance(sid, str):
            self._observer.on_error(OperatorError(message, operator=self._name))
            return
        if sid in self._failed_now or sid in self._failed:
            return
        last = current is not None and current.stream_id == sid and ends_stream(current)
        self._fail(sid, OperatorError(f"stream {sid!r}: {message}", sid, operator=self._name), last)

    def _inner_error(self, error: Exception) -> None:
        current = self._current
        if current is None or self._subscribing:
            self._stopped = True
            self._observer.on_error(
                OperatorError(
                    f"operator {self._name} failed outside of any item (is it synchronous?): "
                    f"{type(error).__name__}: {error}",
                    operator=self._name,
                )
            )
            return
        sid = current.stream_id
        self._fail(sid, failure_of(self._name, sid, current, error), ends_stream(current))
        self._subscribe_inner()  # that subscription is done for; the other streams go on

    def _inner_completed(self) -> None:
        if self._completing:
            self._observer.on_completed()
        elif not self._subscribing:
            self._subscribe_inner()  # it ended early: the other items still need it

    def _fail(self, sid: str, error: StreamFailedError, last: bool) -> None:
        if sid in self._failed_now:
            return
        self._failed_now.add(sid)
        if not last and self._end_marker is not None:  # items that mark their stream's end
            self._failed.add(sid)
        self._observer.on_next(StreamFailure(sid, error))


def contain(
    operator: Operator[Any, Any],
    emits: type | tuple[type, ...],
    *,
    name: str | None = None,
    end_marker: Callable[[Any], Any] | None = None,
) -> Operator[Any, Any]:
    """Wrap ``operator`` so that its faults fail only the stream they happened on.

    Args:
        operator: any reactivex operator over items with a ``stream_id``.
        emits: the item type(s) it must emit (besides ``StreamFailure``).
        name: its name in errors (default: its function's name).
        end_marker: makes a stream's end item from its last input item; given, a
            swallowed end is put back (see the module docs).
    """
    label = name or operator_name(operator)
    wanted = (emits,) if isinstance(emits, type) else tuple(emits)

    def wrapped(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            guard = _Guard(operator, wanted, label, end_marker, observer, scheduler)
            subscription = source.subscribe(
                guard.on_next, observer.on_error, guard.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(subscription, Disposable(guard.dispose))

        return reactivex.create(subscribe)

    return wrapped
