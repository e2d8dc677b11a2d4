"""Fixed-shape batching for device calls: bucket choice, padding, unpadding, state gather/scatter.

A captured CUDA graph replays one shape only, so the ``torch`` backend runs a
call of ``n`` items in the smallest *bucket* >= ``n`` (padding rows are zeros
and their results are dropped), and a call larger than the largest bucket as
several. The decoder's padded batch is ``[T, B, 128]``: stream ``b`` fills steps
``0 .. lengths[b] - 1`` of column ``b``; padding streams have length 0 and keep
their (zero) state. Everything here is numpy on host buffers, so it is tested
on any machine; the device code only copies these buffers and runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from prevad_rx._errors import BackendError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "Chunk",
    "PackedRuns",
    "bucket_for",
    "chunks",
    "pack_runs",
    "power_buckets",
    "scatter_index",
    "time_rounds",
    "unpack_runs",
]


def power_buckets(largest: int, smallest: int = 1) -> tuple[int, ...]:
    """Powers of two from ``smallest`` up to ``largest`` (``largest`` itself included)."""
    if smallest < 1 or largest < smallest:
        raise BackendError(f"bad bucket range {smallest}..{largest}")
    sizes = []
    size = smallest
    while size < largest:
        sizes.append(size)
        size *= 2
    sizes.append(largest)
    return tuple(sizes)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n`` items (the largest if none does)."""
    for size in buckets:
        if size >= n:
            return size
    return buckets[-1]


class Chunk(NamedTuple):
    """Items ``start:stop`` of a call, run padded to ``bucket``."""

    start: int
    stop: int
    bucket: int


def chunks(n: int, buckets: Sequence[int]) -> list[Chunk]:
    """Cover ``n`` items with calls: full largest buckets, then the smallest bucket for the rest."""
    largest = buckets[-1]
    out = []
    start = 0
    while n - start > largest:
        out.append(Chunk(start, start + largest, largest))
        start += largest
    if n > start:
        out.append(Chunk(start, n, bucket_for(n - start, buckets)))
    return out


def time_rounds(lengths: NDArray[np.int64], max_steps: int | None) -> list[tuple[int, int]]:
    """Split the longest run into rounds of at most ``max_steps`` steps: (first step, steps)."""
    longest = int(np.max(lengths, initial=0))
    if longest == 0:
        return []
    step = longest if max_steps is None else max_steps
    return [(start, min(step, longest - start)) for start in range(0, longest, step)]


def scatter_index(lengths: NDArray[np.int64], batch: int) -> NDArray[np.int64]:
    """Flat positions in a ``[T, batch]`` grid of the concatenated runs' rows.

    Run ``b`` (of ``lengths[b]`` rows, ``b < len(lengths) <= batch``) goes to
    column ``b``, steps ``0 .. lengths[b] - 1``; the result lists the positions in
    the order of the concatenated rows (run 0's rows first).
    """
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    column = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    step = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    index: NDArray[np.int64] = step * batch + column
    return index


class PackedRuns(NamedTuple):
    """Where the runs of one padded call are: their lengths and flat grid positions."""

    lengths: NDArray[np.int64]  # [len(runs)]
    positions: NDArray[np.int64]  # [sum(lengths)], positions in the flat [T * B] grid


def pack_runs(
    rows: NDArray[np.float32],
    lengths: NDArray[np.int64],
    states: NDArray[np.float32],
    x: NDArray[np.float32],
    h: NDArray[np.float32],
    c: NDArray[np.float32],
    length_out: NDArray[np.int64],
) -> PackedRuns:
    """Write runs into a padded decoder batch, in place; padding is zeros.

    ``rows`` are the runs' features concatenated ([sum(lengths), dim]); ``states``
    their states [n, 2, dim]; ``x`` [T, B, dim], ``h``/``c`` [B, dim] and
    ``length_out`` [B] the call's buffers (``n <= B``, every length <= T).
    """
    steps, batch, dim = x.shape
    n = lengths.size
    if n > batch or (n and int(np.max(lengths)) > steps):
        raise BackendError(
            f"{n} runs of up to {int(np.max(lengths))} steps do not fit [{steps}, {batch}]"
        )
    index = scatter_index(lengths, batch)
    flat = x.reshape(steps * batch, dim)
    flat[...] = 0.0
    flat[index] = rows
    h[:n] = states[:, 0]
    c[:n] = states[:, 1]
    h[n:] = 0.0
    c[n:] = 0.0
    length_out[:n] = lengths
    length_out[n:] = 0
    return PackedRuns(lengths, index)


def unpack_runs(
    packed: PackedRuns,
    probs: NDArray[np.float32],
    h: NDArray[np.float32],
    c: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The runs' probabilities, concatenated in run order, and their new states [n, 2, dim].

    ``probs`` [T, B], ``h``/``c`` [B, dim]: the call's outputs; padding is dropped.
    Both results are new arrays (the buffers may be reused by the next call).
    """
    n = packed.lengths.size
    flat = probs.reshape(-1)[packed.positions].astype(np.float32, copy=False)
    states = np.stack((h[:n], c[:n]), axis=1).astype(np.float32, copy=False)
    return flat, states
