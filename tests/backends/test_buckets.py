"""Fixed-shape batching of the torch backend's device calls (pure numpy: runs without torch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prevad_rx as pv
from prevad_rx.backends._buckets import (
    bucket_for,
    chunks,
    pack_runs,
    power_buckets,
    scatter_index,
    time_rounds,
    unpack_runs,
)


def test_power_buckets_end_at_the_largest() -> None:
    assert power_buckets(1) == (1,)
    assert power_buckets(16) == (1, 2, 4, 8, 16)
    assert power_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert power_buckets(100, smallest=8) == (8, 16, 32, 64, 100)
    with pytest.raises(pv.BackendError):
        power_buckets(0)


def test_bucket_for_is_the_smallest_that_fits() -> None:
    buckets = (1, 2, 4, 8)
    assert [bucket_for(n, buckets) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 8]


@settings(deadline=None)  # what is checked is the chunks, not how fast a loaded machine is
@given(n=st.integers(0, 100), largest=st.integers(1, 20))
def test_chunks_cover_every_item_once_within_their_bucket(n: int, largest: int) -> None:
    buckets = power_buckets(largest)
    parts = chunks(n, buckets)
    assert [i for part in parts for i in range(part.start, part.stop)] == list(range(n))
    for part in parts:
        assert part.bucket in buckets
        assert part.stop - part.start <= part.bucket
        # no bigger bucket than needed
        assert part.bucket == bucket_for(part.stop - part.start, buckets)


def test_time_rounds_split_the_longest_run() -> None:
    lengths = np.array([3, 10, 0], np.int64)
    assert time_rounds(lengths, 4) == [(0, 4), (4, 4), (8, 2)]
    assert time_rounds(lengths, None) == [(0, 10)]
    assert time_rounds(np.zeros(3, np.int64), 4) == []


def test_scatter_index_lays_runs_down_columns() -> None:
    # runs of 2, 0 and 3 rows in a [T, 4] grid
    index = scatter_index(np.array([2, 0, 3], np.int64), batch=4)
    assert index.tolist() == [0 * 4 + 0, 1 * 4 + 0, 0 * 4 + 2, 1 * 4 + 2, 2 * 4 + 2]


def _buffers(steps: int, batch: int, dim: int) -> tuple[np.ndarray, ...]:
    """Buffers full of garbage, as a reused pinned buffer would be."""
    fill = np.float32(np.nan)
    return (
        np.full((steps, batch, dim), fill, np.float32),
        np.full((batch, dim), fill, np.float32),
        np.full((batch, dim), fill, np.float32),
        np.full(batch, 99, np.int64),
    )


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    extra_steps=st.integers(0, 3),
    extra_streams=st.integers(0, 3),
)
def test_pack_then_unpack_returns_each_runs_rows_and_state(
    lengths: list[int], extra_steps: int, extra_streams: int
) -> None:
    dim = 3
    run_lengths = np.array(lengths, np.int64)
    rng = np.random.default_rng(sum(lengths))
    rows = rng.standard_normal((int(run_lengths.sum()), dim)).astype(np.float32)
    states = rng.standard_normal((len(lengths), 2, dim)).astype(np.float32)
    steps, batch = max(lengths) + extra_steps, len(lengths) + extra_streams
    x, h, c, counts = _buffers(steps, batch, dim)
    packed = pack_runs(rows, run_lengths, states, x, h, c, counts)

    # padding is zeros and zero-length streams, whatever the buffers held
    assert counts.tolist() == [*lengths, *[0] * extra_streams]
    assert np.all(h[len(lengths) :] == 0) and np.all(c[len(lengths) :] == 0)
    for b, n in enumerate(lengths):
        assert np.all(x[n:, b] == 0)
    assert np.all(x[:, len(lengths) :] == 0)

    # a stand-in model: probability = first feature, state unchanged
    probs = x[..., 0].copy()
    flat, new_states = unpack_runs(packed, probs, h, c)
    np.testing.assert_array_equal(flat, rows[:, 0])
    np.testing.assert_array_equal(new_states, states)
    # the results do not alias the buffers the next call overwrites
    probs[...] = -5.0
    h[...] = -5.0
    c[...] = -5.0
    np.testing.assert_array_equal(flat, rows[:, 0])
    np.testing.assert_array_equal(new_states, states)


def test_pack_refuses_runs_that_do_not_fit() -> None:
    x, h, c, counts = _buffers(2, 2, 3)
    rows = np.zeros((3, 3), np.float32)
    states = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(pv.BackendError, match="do not fit"):
        pack_runs(rows, np.array([3], np.int64), states, x, h, c, counts)
    with pytest.raises(pv.BackendError, match="do not fit"):
        pack_runs(
            np.zeros((3, 3), np.float32),
            np.array([1, 1, 1], np.int64),
            np.zeros((3, 2, 3), np.float32),
            x,
            h,
            c,
            counts,
        )
