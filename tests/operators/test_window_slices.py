"""window_slices: the same frames and context whatever the chunking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prevad_rx as pv
from prevad_rx.operators import window_slices
from tests.backends.test_onnx import windows_for
from tests.operators.helpers import chunked, collect, interleave

AUDIO = np.random.default_rng(0).uniform(-1, 1, 16000 * 3 + 123).astype(np.float32)


def all_windows(slices: list[pv.AudioSlice]) -> np.ndarray:
    return np.concatenate([s.windows for s in slices if s.num_frames])


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40000), min_size=1, max_size=6),
    frames_per_slice=st.integers(min_value=1, max_value=100),
)
def test_any_chunking_gives_the_reference_windows(sizes: list[int], frames_per_slice: int) -> None:
    slices = collect(chunked("a", AUDIO, sizes), window_slices(frames_per_slice))
    np.testing.assert_array_equal(all_windows(slices), windows_for(AUDIO, 16000))
    assert [s.seq for s in slices] == list(range(len(slices)))
    assert all(s.num_frames <= frames_per_slice for s in slices)
    starts = np.cumsum([0] + [s.num_frames for s in slices])[:-1]
    assert [s.start_frame for s in slices] == starts.tolist()
    assert [s.is_last for s in slices] == [False] * (len(slices) - 1) + [True]
    assert slices[-1].end_sample == AUDIO.size
    assert all(a.end_sample <= b.end_sample for a, b in itertools.pairwise(slices))


def test_each_chunk_leaves_at_once_in_balanced_slices() -> None:
    chunk = pv.AudioChunk("a", AUDIO[:32000])  # 62.5 frames
    slices = collect([chunk], window_slices(16))
    # source completion ends the stream: 62 whole frames, then the padded half frame
    assert [s.num_frames for s in slices] == [16, 16, 15, 15, 1]


def test_windows_are_views_not_copies() -> None:
    (first, *_rest) = collect([pv.AudioChunk("a", AUDIO[:8000])], window_slices(8))
    assert first.windows.base is not None
    assert np.shares_memory(first.windows, first.buffer)
    assert not first.windows.flags.writeable


def test_8k_uses_256_sample_frames_and_32_sample_context() -> None:
    audio = AUDIO[:8000]
    slices = collect(chunked("a", audio, [999], rate=8000), window_slices(10))
    assert {s.sample_rate for s in slices} == {8000}
    np.testing.assert_array_equal(all_windows(slices), windows_for(audio, 8000))


def test_other_rates_are_resampled_to_16k_the_same_way_for_any_chunking() -> None:
    audio = np.sin(np.arange(44100 * 2) * 0.03).astype(np.float32)
    whole = collect(chunked("a", audio, [audio.size], rate=44100), window_slices(1000))
    pieces = collect(chunked("a", audio, [441, 1000, 7], rate=44100), window_slices(3))
    assert {s.sample_rate for s in whole} == {16000}
    np.testing.assert_allclose(all_windows(pieces), all_windows(whole), atol=1e-6)
    assert whole[-1].end_sample == pytest.approx(audio.size * 16000 / 44100, abs=1)


def test_streams_are_independent_when_interleaved() -> None:
    rng = np.random.default_rng(1)
    streams = {f"s{i}": AUDIO[i * 1000 : i * 1000 + 20000 + i * 333] for i in range(6)}
    items = interleave(
        [chunked(sid, audio, [int(rng.integers(1, 3000))]) for sid, audio in streams.items()], rng
    )
    slices = collect(items, window_slices(5))
    for sid, audio in streams.items():
        mine = [s for s in slices if s.stream_id == sid]
        np.testing.assert_array_equal(all_windows(mine), windows_for(audio, 16000))


def test_an_empty_stream_still_ends() -> None:
    (only,) = collect(
        [pv.AudioChunk("a", np.zeros(0, np.float32), end_of_stream=True)], window_slices()
    )
    assert (only.num_frames, only.is_last, only.end_sample) == (0, True, 0)


def test_whole_frames_leave_before_the_end() -> None:
    slices = collect(chunked("a", AUDIO[:1024], [1024], end=False), window_slices())
    # 2 whole frames leave with the chunk; completion then ends the stream with an empty slice
    assert [(s.num_frames, s.is_last) for s in slices] == [(2, False), (0, True)]


def test_a_rate_change_fails_only_that_stream() -> None:
    items = [
        pv.AudioChunk("a", AUDIO[:1000], 16000),
        pv.AudioChunk("b", AUDIO[:1000], 16000),
        pv.AudioChunk("a", AUDIO[:1000], 8000),
        pv.AudioChunk("a", AUDIO[:5000], 16000),  # ignored: stream a has failed
        pv.AudioChunk("a", AUDIO[:0], 16000, end_of_stream=True),
        pv.AudioChunk("b", AUDIO[1000:2000], 16000, end_of_stream=True),
    ]
    out = collect(items, window_slices())
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert [f.stream_id for f in failures] == ["a"]
    assert "changed sample rate" in str(failures[0].error)
    b = [o for o in out if isinstance(o, pv.AudioSlice) and o.stream_id == "b"]
    assert sum(s.num_frames for s in b) == 4 and b[-1].is_last
    assert all(o.stream_id == "b" for o in out if isinstance(o, pv.AudioSlice) and o.seq > 0)


def test_bad_arguments_and_items() -> None:
    with pytest.raises(pv.ConfigError):
        window_slices(0)
    with pytest.raises(pv.ConfigError):
        window_slices(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AudioChunk"):
        collect(["not a chunk"], window_slices())
