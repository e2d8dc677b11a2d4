"""Run an operator chain over a list of items and collect what comes out."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import reactivex as rx
from reactivex import Observable

import prevad_rx as pv


def collect(
    items: Iterable[Any],
    *operators: Callable[[Observable[Any]], Observable[Any]],
    timeout: float = 60.0,
) -> list[Any]:
    """Push ``items`` through ``operators``; return the output once it completes."""
    out: list[Any] = []
    errors: list[BaseException] = []
    done = threading.Event()
    source: Observable[Any] = rx.from_iterable(list(items))
    for operator in operators:
        source = operator(source)
    source.subscribe(out.append, lambda e: (errors.append(e), done.set()), done.set)
    assert done.wait(timeout), "the chain did not complete"
    if errors:
        raise errors[0]
    return out


def chunked(
    stream_id: str, audio: np.ndarray, sizes: Iterable[int], rate: int = 16000, end: bool = True
) -> list[pv.AudioChunk]:
    """Cut ``audio`` into chunks of the given sizes (cycled), optionally ending the stream."""
    chunks = []
    sizes = list(sizes)
    i = k = 0
    while i < audio.size:
        n = sizes[k % len(sizes)]
        k += 1
        chunks.append(pv.AudioChunk(stream_id, audio[i : i + n], rate))
        i += n
    if end:
        chunks.append(pv.AudioChunk(stream_id, np.zeros(0, np.float32), rate, end_of_stream=True))
    return chunks


def interleave(streams: list[list[Any]], rng: np.random.Generator) -> list[Any]:
    """Merge several streams' item lists in a random order, keeping each stream's order."""
    positions = [0] * len(streams)
    out = []
    remaining = sum(len(s) for s in streams)
    while remaining:
        live = [i for i, s in enumerate(streams) if positions[i] < len(s)]
        i = live[int(rng.integers(len(live)))]
        out.append(streams[i][positions[i]])
        positions[i] += 1
        remaining -= 1
    return out
