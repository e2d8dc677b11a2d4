"""Building operators: typed, per-stream state created and dropped for you, failures in-band.

Two levels, both used by the built-in operators:

* :func:`per_stream` -- most operators. You write ``step(state, item)``, a function
  (usually a generator) giving the items to emit for one input item; the builder
  keeps one ``state`` per stream (made by ``state(first_item)``), drops it after
  the stream's last item, forwards every :class:`~prevad_rx.StreamFailure`
  untouched, and turns an exception raised by ``step`` into that stream's
  failure -- never the chain's: a raised :class:`~prevad_rx.StreamFailedError` as
  it is, anything else as an :class:`~prevad_rx.OperatorError` naming the
  operator, with the exception as ``__cause__``. A failed stream's remaining items
  are dropped up to its last one (:class:`FailedStreams`); an operator whose last
  item may arrive before earlier ones (``done``) tracks them with ``skip``.
* :func:`operator_from` -- full control (emit from other threads, delay completion):
  ``make_handler(emit, complete)`` gives the per-subscription :class:`Handler`.

Each subscription gets its own state, so one operator can be subscribed many times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from prevad_rx._errors import ConfigError, OperatorError, StreamFailedError
from prevad_rx._types import StreamFailure

__all__ = [
    "FailedStreams",
    "Handler",
    "Operator",
    "StreamItem",
    "ends_stream",
    "operator_from",
    "per_stream",
]

A = TypeVar("A")
B = TypeVar("B")
S = TypeVar("S")
A_contra = TypeVar("A_contra", contravariant=True)
I = TypeVar("I", bound="StreamItem")  # noqa: E741

#: A reactivex operator: a function from one observable to another (compose with ``pipe``).
Operator = Callable[[Observable[A]], Observable[B]]

#: Exceptions never turned into a stream's failure: they stop the program as usual.
FATAL_EXCEPTIONS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)


class StreamItem(Protocol):
    """Any item of a multi-stream chain: it names its stream."""

    @property
    def stream_id(self) -> str: ...


def ends_stream(item: object) -> bool:
    """Whether ``item`` is its stream's last: ``is_last`` (slices, frames) or ``end_of_stream``."""
    last = getattr(item, "is_last", None)
    if last is None:
        last = getattr(item, "end_of_stream", False)
    return bool(last)


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in ((types,) if isinstance(types, type) else types))


def item_name(item: object) -> str:
    seq = getattr(item, "seq", None)
    return type(item).__name__ + (f" {seq}" if isinstance(seq, int) else "")


def operator_name(operator: object) -> str:
    """A readable name for an operator (its function's qualified name, else its repr)."""
    name = getattr(operator, "__qualname__", None)
    return name if isinstance(name, str) else repr(operator)


class FailedStreams:
    """Streams that failed here: their remaining items are dropped up to their last one.

    After a stream fails, the items already on their way are no longer wanted;
    its last item ends the dropping, so the stream id can start afresh.
    """

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def add(self, stream_id: str) -> None:
        self._ids.add(stream_id)

    def discard(self, stream_id: str) -> None:
        self._ids.discard(stream_id)

    def clear(self) -> None:
        self._ids.clear()

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def drops(self, stream_id: str, last: bool) -> bool:
        """Whether to drop this item of ``stream_id`` (``last``: it is the stream's last)."""
        if stream_id not in self._ids:
            return False
        if last:
            self._ids.discard(stream_id)
        return True


class Handler(Protocol[A_contra]):
    """One subscription's logic: items in; items out through the ``emit`` it was made with."""

    def on_next(self, item: A_contra) -> None: ...

    def on_completed(self) -> None: ...

    def dispose(self) -> None: ...


def operator_from(
    make_handler: Callable[[Callable[[B], None], Callable[[], None]], Handler[A]],
) -> Operator[A, B]:
    """Build an operator from ``make_handler(emit, complete)``, called once per subscription.

    ``emit(item)`` sends an item downstream; ``complete()`` sends ``on_completed``
    (a handler may delay it until its own work is done). An exception escaping
    the handler is a bug of the operator and ends the chain with ``on_error``;
    use :func:`per_stream` for logic whose failures should stay in one stream.
    """

    def operator(source: Observable[A]) -> Observable[B]:
        def subscribe(
            observer: abc.ObserverBase[B], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            handler = make_handler(observer.on_next, observer.on_completed)

            def on_next(item: A) -> None:
                try:
                    handler.on_next(item)
                except Exception as exc:  # noqa: BLE001 - an operator bug ends the chain visibly
                    observer.on_error(exc)

            def on_completed() -> None:
                try:
                    handler.on_completed()
                except Exception as exc:  # noqa: BLE001
                    observer.on_error(exc)

            subscription = source.subscribe(
                on_next, observer.on_error, on_completed, scheduler=scheduler
            )
            return CompositeDisposable(subscription, Disposable(handler.dispose))

        return reactivex.create(subscribe)

    return operator


def failure_of(
    name: str, sid: str, item: object, exc: BaseException, *, during: str = "on"
) -> StreamFailedError:
    """The stream failure for ``exc`` raised by operator ``name`` while handling ``item``."""
    if isinstance(exc, StreamFailedError):
        return exc
    seq = getattr(item, "seq", None)
    error = OperatorError(
        f"stream {sid!r}: operator {name} failed {during} {item_name(item)}: "
        f"{type(exc).__name__}: {exc}",
        sid,
        seq if isinstance(seq, int) else None,
        operator=name,
    )
    error.__cause__ = exc
    return error


_NO_STATE: Any = object()


class _Spec(Generic[I, B, S]):
    __slots__ = ("accepts", "done", "finish", "is_last", "name", "skip", "state", "step")

    def __init__(
        self,
        step: Callable[[S, I], Iterable[B]],
        state: Callable[[I], S],
        finish: Callable[[S], Iterable[B]] | None,
        is_last: Callable[[I], bool],
        done: Callable[[S], bool] | None,
        skip: Callable[[S, I], None] | None,
        accepts: type | tuple[type, ...] | None,
        name: str,
    ) -> None:
        self.step = step
        self.state = state
        self.finish = finish
        self.is_last = is_last
        self.done = done
        self.skip = skip
        self.accepts = accepts
        self.name = name


class _PerStream(Generic[I, B, S]):
    def __init__(
        self,
        spec: _Spec[I, B, S],
        emit: Callable[[B | StreamFailure], None],
        complete: Callable[[], None],
    ) -> None:
        self._spec = spec
        self._emit = emit
        self._complete = complete
        self._states: dict[str, S] = {}
        self._saw_last: set[str] = set()  # streams whose last item came (``done`` decides the end)
        self._failed = FailedStreams()
        self._skipping: dict[str, S] = {}  # failed streams whose items ``skip`` notes until done

    def on_next(self, item: I | StreamFailure) -> None:
        if isinstance(item, StreamFailure):
            self._forget(item.stream_id)
            self._failed.discard(item.stream_id)
            self._skipping.pop(item.stream_id, None)
            self._emit(item)
            return
        spec = self._spec
        sid = getattr(item, "stream_id", None)
        if not isinstance(sid, str):
            wanted = _names(spec.accepts) if spec.accepts is not None else "stream"
            raise TypeError(
                f"operator {spec.name} expects {wanted} items, got {type(item).__name__} "
                f"{item!r:.80}, which names no stream (a bug of the chain before it)"
            )
        last = spec.is_last(item)
        if self._failed.drops(sid, last):
            return
        if sid in self._skipping:
            self._skip(sid, item, last)
            return
        if spec.accepts is not None and not isinstance(item, spec.accepts):
            error = OperatorError(
                f"stream {sid!r}: operator {spec.name} expects "
                f"{_names(spec.accepts)} items, got {type(item).__name__} "
                "(the operator before it emitted a wrong item)",
                sid,
                operator=spec.name,
            )
            self._fail(sid, error, last, item)
            return
        outputs: list[B] = []
        try:
            state = self._states.get(sid, _NO_STATE)
            if state is _NO_STATE:
                state = self._states[sid] = spec.state(item)
            if last and spec.done is not None:
                self._saw_last.add(sid)
            outputs.extend(spec.step(state, item))
            ended = spec.done(state) if spec.done is not None else last
        except FATAL_EXCEPTIONS:
            raise
        except BaseException as exc:  # noqa: BLE001 - becomes this stream's failure
            for out in outputs:
                self._emit(out)
            self._fail(sid, failure_of(spec.name, sid, item, exc), last, item)
            return
        if ended:
            self._forget(sid)
        for out in outputs:
            self._emit(out)

    def _marks_end(self, item: object) -> bool:
        """Whether the stream's last item can be told (else nothing is dropped: events)."""
        if self._spec.is_last is not ends_stream:
            return True
        return hasattr(item, "is_last") or hasattr(item, "end_of_stream")

    def _forget(self, sid: str) -> None:
        self._states.pop(sid, None)
        self._saw_last.discard(sid)

    def _fail(self, sid: str, error: StreamFailedError, last: bool, item: object) -> None:
        state = self._states.get(sid, _NO_STATE)
        saw_last = sid in self._saw_last
        self._forget(sid)
        if state is not _NO_STATE and self._spec.skip is not None and not self._ended(state):
            self._skipping[sid] = state  # ``skip`` notes the items still due, ``done`` ends it
        elif not last and not saw_last and self._marks_end(item):
            self._failed.add(sid)
        self._emit(StreamFailure(sid, error))

    def _ended(self, state: S) -> bool:
        done = self._spec.done
        try:
            return done is None or done(state)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException:  # noqa: BLE001 - the state is unusable: treat the stream as ended
            return True

    def _skip(self, sid: str, item: I, last: bool) -> None:
        """An item of a failed stream that ``skip`` tracks: noted, never emitted."""
        skip = self._spec.skip
        assert skip is not None
        state = self._skipping[sid]
        try:
            skip(state, item)
        except FATAL_EXCEPTIONS:
            raise
        except BaseException:  # noqa: BLE001 - cannot track: drop up to the last item
            del self._skipping[sid]
            if not last and self._marks_end(item):
                self._failed.add(sid)
            return
        if self._ended(state):
            del self._skipping[sid]

    def on_completed(self) -> None:
        finish = self._spec.finish
        if finish is not None:
            for sid, state in list(self._states.items()):
                outputs: list[B] = []
                try:
                    outputs.extend(finish(state))
                except FATAL_EXCEPTIONS:
                    raise
                except BaseException as exc:  # noqa: BLE001 - becomes this stream's failure
                    for out in outputs:
                        self._emit(out)
                    error = failure_of(self._spec.name, sid, "the end of the input", exc)
                    self._emit(StreamFailure(sid, error))
                    continue
                for out in outputs:
                    self._emit(out)
        self.dispose()
        self._complete()

    def dispose(self) -> None:
        self._states.clear()
        self._saw_last.clear()
        self._failed.clear()
        self._skipping.clear()


def per_stream(
    step: Callable[[S, I], Iterable[B]],
    *,
    state: Callable[[I], S],
    finish: Callable[[S], Iterable[B]] | None = None,
    is_last: Callable[[I], bool] = ends_stream,
    done: Callable[[S], bool] | None = None,
    skip: Callable[[S, I], None] | None = None,
    accepts: type | tuple[type, ...] | None = None,
    name: str | None = None,
) -> Operator[I | StreamFailure, B | StreamFailure]:
    """Build an operator that keeps one state per stream.

    Args:
        step: ``step(state, item)`` gives the items to emit for ``item`` (return a
            list or ``yield`` them). Raise :class:`~prevad_rx.StreamFailedError` to
            fail the stream; any other exception fails it too, as an
            :class:`~prevad_rx.OperatorError`. Other streams carry on.
        state: ``state(first_item)`` makes a stream's state when its first item comes.
        finish: ``finish(state)`` gives the items to emit for a stream still open
            when the source completes (default: nothing).
        is_last: whether an item is its stream's last (default: ``end_of_stream``
            or ``is_last``); the state is dropped after it.
        done: when given, a stream's state is dropped once ``done(state)`` is true
            after a step, instead of after its last item (for operators that hold
            items back, like :func:`reorder_by_seq`).
        skip: with ``done``: after a stream fails, its state is kept and each of
            its later items goes to ``skip(state, item)`` (nothing is emitted)
            until ``done(state)``, so items still due after its last one are
            dropped too. Without it, they are dropped up to the last item only.
        accepts: the item type(s) ``step`` handles; any other item fails its
            stream with an :class:`~prevad_rx.OperatorError`.
        name: the operator's name in errors (default: ``step``'s name).

    :class:`~prevad_rx.StreamFailure` items are forwarded untouched (the
    stream's state is dropped); a stream that failed here has its remaining
    items dropped up to its last one (where items mark it: not for events).
    """
    if skip is not None and done is None:
        raise ConfigError("per_stream: skip needs done (skip notes items until done)")
    spec: _Spec[I, B, S] = _Spec(
        step, state, finish, is_last, done, skip, accepts, name or operator_name(step)
    )

    def make(
        emit: Callable[[B | StreamFailure], None], complete: Callable[[], None]
    ) -> Handler[I | StreamFailure]:
        return _PerStream(spec, emit, complete)

    return operator_from(make)
