"""aioreactive interop (``pip install 'prevad-rx[aio]'``): events as ``AsyncObservable``.

::

    import aioreactive as rx
    from prevad_rx.aio import stream_events

    segments = rx.pipe(
        stream_events(stream),
        rx.filter(lambda event: event.kind == "end"),
        rx.map_async(send_to_asr),          # an async operator per speech segment
    )
    await segments.subscribe_async(observer)

Each subscription registers an ``events()`` iterator of the stream (or engine)
when it is made and forwards the events in order, awaiting each ``asend`` before
the next, so a slow async consumer applies backpressure to ``push()`` like any
``events()`` reader; disposing of the subscription unregisters it. A stream's
failure reaches ``athrow``; its end ``aclose``.
aioreactive 0.20 requires reactivex < 5; prevad_rx runs on reactivex 4.1 and 6.x.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prevad_rx._fanout import EventIterator

if TYPE_CHECKING:
    from prevad_rx._engine import VADEngine
    from prevad_rx._stream import VADStream

__all__ = ["engine_events", "stream_events"]


def _observable(events: Callable[[], EventIterator]) -> Any:
    try:
        from aioreactive.create import create
        from expression.system import AsyncDisposable
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("prevad_rx.aio needs aioreactive: pip install 'prevad-rx[aio]'") from exc

    async def subscribe_async(observer: Any) -> Any:
        iterator = events()  # registered now: nothing from here on is missed

        async def forward() -> None:
            try:
                async for event in iterator:
                    await observer.asend(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a stream failure goes to athrow
                await observer.athrow(exc)
                return
            await observer.aclose()

        task = asyncio.get_running_loop().create_task(forward())

        async def cancel() -> None:
            task.cancel()
            await iterator.aclose()  # unregistered even if the task never got to run

        return AsyncDisposable.create(cancel)

    return create(subscribe_async)


def stream_events(stream: VADStream) -> Any:
    """The stream's start/end events as an aioreactive ``AsyncObservable[SpeechEvent]``."""
    return _observable(stream.events)


def engine_events(engine: VADEngine) -> Any:
    """Every stream's events (failures as ``error`` events) as an ``AsyncObservable``;
    completes when the engine closes."""
    return _observable(engine.events)
