"""Shared plumbing for the operators: building an operator from a per-subscription handler.

Every operator is a function ``Observable[A] -> Observable[B]`` (composable
with reactivex ``pipe``). Each subscription gets its own state, so one
operator instance can be subscribed several times. A bug inside an operator
(an unexpected exception) ends the subscription with ``on_error``; expected
per-stream problems travel in-band as :class:`~prevad_rx.StreamFailure`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

__all__ = ["Handler", "Operator", "operator_from"]

A = TypeVar("A")
B = TypeVar("B")

Operator = Callable[[Observable[A]], Observable[B]]


class Handler(Protocol):
    """One subscription's logic: items in, items out through ``emit``."""

    def on_next(self, item: Any) -> None: ...

    def on_completed(self) -> None: ...

    def dispose(self) -> None: ...


def operator_from(
    make_handler: Callable[[Callable[[Any], None], Callable[[], None]], Handler],
) -> Operator[Any, Any]:
    """Build an operator from ``make_handler(emit, complete)``.

    ``emit(item)`` sends an item downstream; ``complete()`` sends
    ``on_completed`` (a handler may delay it until its own work is done).
    """

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            handler = make_handler(observer.on_next, observer.on_completed)

            def on_next(item: Any) -> None:
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
