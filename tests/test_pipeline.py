"""The operators composed by hand with reactivex, with user operators inserted."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

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
from tests.conftest import ROOT, GoldenFixture, segments_as_lists
from tests.operators.helpers import chunked, collect, interleave


def example() -> ModuleType:
    """examples/custom_operators.py, imported as a module."""
    path = ROOT / "examples" / "custom_operators.py"
    spec = importlib.util.spec_from_file_location("custom_operators", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def reference_high_pass(x: np.ndarray, alpha: float = 0.97) -> np.ndarray:
    return (x - alpha * np.concatenate(([0.0], x[:-1]))).astype(np.float32)


def test_the_example_high_pass_keeps_state_per_stream_and_resets_it(
    speech16k: GoldenFixture,
) -> None:
    audio = speech16k.audio[:20000]
    a = chunked("a", audio, [3000, 7000])
    b = chunked("b", audio[::-1].copy(), [5000])
    again = chunked("a", audio, [4000])  # the id reused after its end: a fresh filter
    failure = pv.StreamFailure("c", pv.StreamFailedError("upstream", "c"))
    items = [*interleave([a, b], np.random.default_rng(7)), failure, *again]
    out = collect(items, example().high_pass())
    assert out[len(a) + len(b)] is failure  # passed through untouched

    def filtered(sid: str, part: slice) -> np.ndarray:
        chunks = [c for c in out[part] if isinstance(c, pv.AudioChunk) and c.stream_id == sid]
        assert chunks[-1].end_of_stream
        return np.concatenate([c.samples for c in chunks])

    first = slice(0, len(a) + len(b))
    np.testing.assert_allclose(filtered("a", first), reference_high_pass(audio), atol=1e-6)
    np.testing.assert_allclose(
        filtered("b", first), reference_high_pass(audio[::-1].copy()), atol=1e-6
    )
    second = slice(len(a) + len(b) + 1, None)
    np.testing.assert_allclose(filtered("a", second), reference_high_pass(audio), atol=1e-6)


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
        example().gain(0.8),
        example().high_pass(),
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
