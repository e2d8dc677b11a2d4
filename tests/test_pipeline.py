"""The operators composed by hand with reactivex, with user operators inserted."""

from __future__ import annotations

import numpy as np
import pytest
import reactivex as rx
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx.operators import (
    emit_events,
    merge_segments,
    parallel_map_on_pool,
    reorder_by_seq,
    window_slices,
)
from tests.conftest import GoldenFixture, segments_as_lists
from tests.operators.helpers import chunked, collect


def high_pass(alpha: float = 0.97):  # type: ignore[no-untyped-def]
    """A user's pre-processing operator: a first-order high-pass filter, per stream."""
    memory: dict[str, float] = {}

    def apply(chunk: pv.AudioChunk) -> pv.AudioChunk:
        x = chunk.samples.astype(np.float64)
        previous = memory.get(chunk.stream_id, 0.0)
        y = np.empty_like(x)
        for i, value in enumerate(x):
            y[i] = value - alpha * previous
            previous = value
        memory[chunk.stream_id] = previous
        return pv.AudioChunk(
            chunk.stream_id, y.astype(np.float32), chunk.sample_rate, chunk.end_of_stream
        )

    return ops.map(apply)


def test_full_chain_equals_silero(pool: pv.WorkerPool, speech16k: GoldenFixture) -> None:
    events = collect(
        chunked("a", speech16k.audio, [32000]),
        window_slices(),
        parallel_map_on_pool(pool),
        reorder_by_seq(),
        merge_segments(pv.VADConfig()),
        emit_events(),
    )
    assert all(isinstance(e, pv.SpeechEvent) for e in events)
    ends = [e.segment for e in events if e.kind == "end"]
    assert segments_as_lists(ends) == speech16k.default_segments


def test_user_operators_anywhere(pool: pv.WorkerPool, speech16k: GoldenFixture) -> None:
    """A gain and a high-pass before window_slices, a filter and a map after emit_events."""
    long_segments = collect(
        chunked("a", speech16k.audio, [16000]),
        ops.map(
            lambda c: pv.AudioChunk(c.stream_id, c.samples * 0.8, c.sample_rate, c.end_of_stream)
        ),
        high_pass(),
        window_slices(),
        parallel_map_on_pool(pool),
        reorder_by_seq(),
        merge_segments(),
        emit_events(),
        ops.filter(lambda e: e.kind == "end" and e.segment.duration > 1.0),
        ops.map(lambda e: e.segment),
    )
    assert long_segments and all(isinstance(s, pv.Segment) for s in long_segments)
    assert all(s.duration > 1.0 for s in long_segments)


@pytest.mark.anyio
async def test_async_for_over_the_chain(pool: pv.WorkerPool, speech16k: GoldenFixture) -> None:
    source = rx.from_iterable(chunked("a", speech16k.audio, [20000])).pipe(
        window_slices(),
        parallel_map_on_pool(pool),
        reorder_by_seq(),
        merge_segments(),
        emit_events(),
    )
    kinds = [event.kind async for event in pv.aiter_observable(source)]
    assert kinds == ["start", "end"] * len(speech16k.default_segments)


@pytest.mark.anyio
async def test_async_for_raises_the_chain_error() -> None:
    with pytest.raises(ValueError, match="boom"):
        async for _ in pv.aiter_observable(rx.throw(ValueError("boom"))):
            pass
