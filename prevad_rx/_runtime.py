"""Event-loop helpers: run on uvloop where installed; bridge observables to ``async for``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from reactivex import Observable

__all__ = ["aiter_observable", "run", "uvloop_available"]

T = TypeVar("T")

_DONE = object()


def uvloop_available() -> bool:
    """Whether uvloop can be imported (it is a default dependency on Linux and macOS)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None) -> T:
    """Run ``main`` to completion on a new event loop: uvloop where available, else asyncio's.

    ``use_uvloop=False`` forces the standard loop; ``True`` requires uvloop.
    """
    if use_uvloop is None:
        use_uvloop = uvloop_available()
    if use_uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


async def aiter_observable(source: Observable[T]) -> AsyncIterator[T]:
    """Iterate over an observable's items with ``async for``, on the running loop.

    Items may be emitted from any thread; they are handed to the loop with
    ``call_soon_threadsafe``. ``on_error`` is raised from the iteration;
    ``on_completed`` ends it. Leaving the loop early unsubscribes.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is iterating any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    subscription = source.subscribe(put, lambda error: put(_Raise(error)), lambda: put(_DONE))
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Raise):
                raise item.error
            yield item
    finally:
        subscription.dispose()


class _Raise:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
