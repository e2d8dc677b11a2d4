"""``run_pipeline``: run an operator chain over a source and await everything it emits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, overload

import reactivex as rx
from reactivex import Observable

from prevad_rx._runtime import aiter_observable
from prevad_rx.operators._builder import Operator

__all__ = ["run_pipeline"]

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
F = TypeVar("F")
G = TypeVar("G")
H = TypeVar("H")

Source = Observable[A] | Iterable[A]


@overload
async def run_pipeline(source: Source[A], /) -> list[A]: ...
@overload
async def run_pipeline(source: Source[A], op1: Operator[A, B], /) -> list[B]: ...
@overload
async def run_pipeline(
    source: Source[A], op1: Operator[A, B], op2: Operator[B, C], /
) -> list[C]: ...
@overload
async def run_pipeline(
    source: Source[A], op1: Operator[A, B], op2: Operator[B, C], op3: Operator[C, D], /
) -> list[D]: ...
@overload
async def run_pipeline(
    source: Source[A],
    op1: Operator[A, B],
    op2: Operator[B, C],
    op3: Operator[C, D],
    op4: Operator[D, E],
    /,
) -> list[E]: ...
@overload
async def run_pipeline(
    source: Source[A],
    op1: Operator[A, B],
    op2: Operator[B, C],
    op3: Operator[C, D],
    op4: Operator[D, E],
    op5: Operator[E, F],
    /,
) -> list[F]: ...
@overload
async def run_pipeline(
    source: Source[A],
    op1: Operator[A, B],
    op2: Operator[B, C],
    op3: Operator[C, D],
    op4: Operator[D, E],
    op5: Operator[E, F],
    op6: Operator[F, G],
    /,
) -> list[G]: ...
@overload
async def run_pipeline(
    source: Source[A],
    op1: Operator[A, B],
    op2: Operator[B, C],
    op3: Operator[C, D],
    op4: Operator[D, E],
    op5: Operator[E, F],
    op6: Operator[F, G],
    op7: Operator[G, H],
    /,
) -> list[H]: ...
@overload
async def run_pipeline(source: Source[Any], /, *operators: Operator[Any, Any]) -> list[Any]: ...


async def run_pipeline(source: Source[Any], /, *operators: Operator[Any, Any]) -> list[Any]:
    """Push ``source`` (an observable, or an iterable of items) through ``operators``;
    return every item the chain emitted, once it has completed.

    Items may be emitted from any thread (pool workers); they are collected on
    the running loop. An ``on_error`` of the chain is raised here. Streams still
    open when the source ends are ended by ``window_slices`` (as if each had an
    ``end_of_stream`` chunk), so a finite list of chunks needs no end markers.
    Typed for up to seven operators: mypy checks that each one takes what the
    one before it emits.
    """
    chain: Observable[Any] = (
        source if isinstance(source, Observable) else rx.from_iterable(list(source))
    )
    for operator in operators:
        chain = operator(chain)
    return [item async for item in aiter_observable(chain)]
