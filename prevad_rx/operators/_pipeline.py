"""``run_pipeline``: run an operator chain over a source and await everything it emits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, overload

import reactivex as rx
from reactivex import Observable

from prevad_rx._runtime import aiter_observable
from prevad_rx.operators._builder import Operator

__all__ = ["run_pipeline"]

T0 = TypeVar("T0")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")
T6 = TypeVar("T6")
T7 = TypeVar("T7")
T8 = TypeVar("T8")
T9 = TypeVar("T9")
T10 = TypeVar("T10")

Source = Observable[T0] | Iterable[T0]


@overload
async def run_pipeline(
    source: Source[T0],
    /,
) -> list[T0]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    /,
) -> list[T1]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    /,
) -> list[T2]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    /,
) -> list[T3]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    /,
) -> list[T4]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    /,
) -> list[T5]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    op6: Operator[T5, T6],
    /,
) -> list[T6]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    op6: Operator[T5, T6],
    op7: Operator[T6, T7],
    /,
) -> list[T7]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    op6: Operator[T5, T6],
    op7: Operator[T6, T7],
    op8: Operator[T7, T8],
    /,
) -> list[T8]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    op6: Operator[T5, T6],
    op7: Operator[T6, T7],
    op8: Operator[T7, T8],
    op9: Operator[T8, T9],
    /,
) -> list[T9]: ...
@overload
async def run_pipeline(
    source: Source[T0],
    op1: Operator[T0, T1],
    op2: Operator[T1, T2],
    op3: Operator[T2, T3],
    op4: Operator[T3, T4],
    op5: Operator[T4, T5],
    op6: Operator[T5, T6],
    op7: Operator[T6, T7],
    op8: Operator[T7, T8],
    op9: Operator[T8, T9],
    op10: Operator[T9, T10],
    /,
) -> list[T10]: ...
@overload
async def run_pipeline(
    source: Source[Any],
    op1: Operator[Any, Any],
    op2: Operator[Any, Any],
    op3: Operator[Any, Any],
    op4: Operator[Any, Any],
    op5: Operator[Any, Any],
    op6: Operator[Any, Any],
    op7: Operator[Any, Any],
    op8: Operator[Any, Any],
    op9: Operator[Any, Any],
    op10: Operator[Any, Any],
    op11: Operator[Any, Any],
    /,
    *more: Operator[Any, Any],
) -> list[Any]: ...


async def run_pipeline(source: Source[Any], /, *operators: Operator[Any, Any]) -> list[Any]:
    """Push ``source`` (an observable, or an iterable of items) through ``operators``;
    return every item the chain emitted, once it has completed.

    Items may be emitted from any thread (pool workers); they are collected on
    the running loop. An ``on_error`` of the chain is raised here. Streams still
    open when the source ends are ended by ``window_slices`` (as if each had an
    ``end_of_stream`` chunk), so a finite list of chunks needs no end markers.
    Typed for up to ten operators: mypy checks that each one takes what the
    one before it emits (longer chains are unchecked).
    """
    chain: Observable[Any] = (
        source if isinstance(source, Observable) else rx.from_iterable(list(source))
    )
    for operator in operators:
        chain = operator(chain)
    return [item async for item in aiter_observable(chain)]
