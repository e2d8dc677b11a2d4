"""``emit_events``: the chain's edge -- user-facing events, delivered to handlers.

Input:  ``Observable[SpeechEvent | StreamFailure]``
Output: ``Observable[SpeechEvent]`` (``kind`` "start", "end", or "error")

A :class:`~prevad_rx.StreamFailure` becomes an ``error`` event carrying the
:class:`~prevad_rx.StreamFailedError`, so downstream sees one item type. Each
event is also passed to every handler (a plain callable or a reactivex
observer's ``on_next``) before it goes downstream. A handler that raises (any
exception but ``KeyboardInterrupt``/``SystemExit``) does not end the chain or
vanish: the exception goes to ``on_handler_error``
(default: logged on the ``prevad_rx.events`` logger with its traceback) and
the remaining handlers and the chain carry on. ``kinds`` limits which events
pass (and reach the handlers).

Handlers run on the thread that emits (a pool worker after
``parallel_map_on_pool``); :class:`~prevad_rx.VADEngine` instead delivers
events on the asyncio loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from reactivex import abc

from prevad_rx._errors import ConfigError, OperatorError
from prevad_rx._types import SpeechEvent, StreamFailure
from prevad_rx.operators._builder import FATAL_EXCEPTIONS, Operator, operator_from

__all__ = ["EventHandler", "HandlerErrorHandler", "emit_events"]

log = logging.getLogger("prevad_rx.events")

EventHandler = Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
HandlerErrorHandler = Callable[[BaseException, SpeechEvent], object]

_KINDS = frozenset({"start", "end", "error"})


def _log_handler_error(exc: BaseException, event: SpeechEvent) -> None:
    log.error("event handler failed on %r", event, exc_info=exc)


def to_event(item: object) -> SpeechEvent:
    """The user-facing event for an item (a failure becomes an ``error`` event).

    An item of another type that names its stream becomes that stream's ``error``
    event (an :class:`~prevad_rx.OperatorError`); one that does not is a bug of the
    chain (``TypeError``).
    """
    if isinstance(item, StreamFailure):
        return SpeechEvent("error", item.stream_id, 0, 0, 0, error=item.error)
    if isinstance(item, SpeechEvent):
        return item
    sid = getattr(item, "stream_id", None)
    message = (
        f"emit_events expects SpeechEvent items, got {type(item).__name__} "
        "(the operator before it emitted a wrong item)"
    )
    if isinstance(sid, str):
        error = OperatorError(f"stream {sid!r}: {message}", sid, operator="emit_events")
        return SpeechEvent("error", sid, 0, 0, 0, error=error)
    raise TypeError(message)


class _Emitter:
    def __init__(
        self,
        emit: Callable[[SpeechEvent], None],
        complete: Callable[[], None],
        handlers: list[Callable[[SpeechEvent], object]],
        kinds: frozenset[str],
        on_handler_error: HandlerErrorHandler,
    ) -> None:
        self._emit = emit
        self._complete = complete
        self._handlers = handlers
        self._kinds = kinds
        self._on_handler_error = on_handler_error

    def on_next(self, item: SpeechEvent | StreamFailure) -> None:
        event = to_event(item)
        if event.kind not in self._kinds:
            return
        for handler in self._handlers:
            try:
                handler(event)
            except FATAL_EXCEPTIONS:
                raise
            except BaseException as exc:  # noqa: BLE001 - routed, never swallowed
                try:
                    self._on_handler_error(exc, event)
                except FATAL_EXCEPTIONS:
                    raise
                except BaseException:
                    log.exception("on_handler_error failed")
        self._emit(event)

    def on_completed(self) -> None:
        self._complete()

    def dispose(self) -> None:
        pass


def emit_events(
    *handlers: EventHandler,
    kinds: Iterable[str] | None = None,
    on_handler_error: HandlerErrorHandler | None = None,
) -> Operator[SpeechEvent | StreamFailure, SpeechEvent]:
    """Emit user-facing :class:`~prevad_rx.SpeechEvent` items and pass each to ``handlers``."""
    selected = _KINDS if kinds is None else frozenset(kinds)
    if not selected <= _KINDS:
        raise ConfigError(f"unknown event kinds {sorted(selected - _KINDS)}; use {sorted(_KINDS)}")
    calls: list[Callable[[SpeechEvent], object]] = []
    for handler in handlers:
        if isinstance(handler, abc.ObserverBase):
            calls.append(handler.on_next)
        elif callable(handler):
            calls.append(handler)
        else:
            raise TypeError(f"event handler must be callable or an observer, got {handler!r}")
    error_handler = on_handler_error or _log_handler_error

    def make(emit: Callable[[SpeechEvent], None], complete: Callable[[], None]) -> _Emitter:
        return _Emitter(emit, complete, calls, selected, error_handler)

    return operator_from(make)
