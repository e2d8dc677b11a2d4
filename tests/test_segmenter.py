"""The incremental segmenter against silero-vad's own ``get_speech_timestamps_from_probs``.

Goldens: ``tests/golden/segmenter_cases.json`` (made by ``make goldens``), random
probability sequences built to sit on thresholds and trigger max-speech splits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prevad_rx as pv
from prevad_rx._segmenter import Boundary, SpeechSegmenter
from tests.conftest import segmenter_cases


def _config(case: dict[str, Any]) -> pv.VADConfig:
    return pv.VADConfig(**case["config"])


def _run_chunked(case: dict[str, Any], sizes: list[int]) -> list[Boundary]:
    rate = case["sample_rate"]
    frame = 512 if rate == 16000 else 256
    segmenter = SpeechSegmenter(_config(case), rate)
    probs = case["probs"]
    out: list[Boundary] = []
    i = k = 0
    while i < probs.size:
        n = sizes[k % len(sizes)]
        k += 1
        part = probs[i : i + n]
        i += part.size
        out += segmenter.push(part.tolist(), min(i * frame, case["num_samples"]))
    out += segmenter.finish(case["num_samples"])
    return out


def test_goldens_cover_the_corners() -> None:
    cases = segmenter_cases()
    assert len(cases) >= 1000
    assert sum("max_speech_duration_s" in c["config"] for c in cases) > 300
    assert any(c["sample_rate"] == 8000 for c in cases)
    assert any(not c["segments"] for c in cases) and any(len(c["segments"]) > 5 for c in cases)
    # values exactly on a threshold, where float32-vs-float64 comparison matters
    assert any(np.any(c["probs"] == np.float32(0.35)) for c in cases)


def test_offline_segments_equal_silero_on_every_golden_case() -> None:
    for index, case in enumerate(segmenter_cases()):
        segments = pv.segments_from_probabilities(
            case["probs"],
            sample_rate=case["sample_rate"],
            num_samples=case["num_samples"],
            config=_config(case),
        )
        got = [[s.start_sample, s.end_sample] for s in segments]
        assert got == case["segments"], f"case {index}: {case['config']}"


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=8),
    start=st.integers(min_value=0, max_value=10_000),
)
def test_streaming_equals_silero_for_any_chunking(sizes: list[int], start: int) -> None:
    cases = segmenter_cases()
    for case in (cases[(start + j * 97) % len(cases)] for j in range(30)):
        boundaries = _run_chunked(case, sizes)
        ends = [[b.start, b.end] for b in boundaries if b.kind == "end"]
        starts = [b.start for b in boundaries if b.kind == "start"]
        assert ends == case["segments"]
        assert starts == [s[0] for s in case["segments"]]


def test_events_alternate_and_are_decided_in_order() -> None:
    for case in segmenter_cases()[:400]:
        boundaries = _run_chunked(case, [7, 1, 33])
        kinds = [b.kind for b in boundaries]
        assert kinds == ["start", "end"] * (len(kinds) // 2)
        decided = [b.decided_at for b in boundaries]
        assert decided == sorted(decided)
        for b in boundaries:
            assert b.decided_at <= case["num_samples"]
            # an event is never decided before the audio it describes was seen
            assert b.decided_at >= b.start
            if b.end is not None:
                assert b.decided_at >= min(b.end, case["num_samples"])


def test_decisions_come_before_the_end_of_the_stream() -> None:
    """Streaming matters: most boundaries are emitted long before the audio ends."""
    early = total = 0
    for case in segmenter_cases():
        for b in _run_chunked(case, [5]):
            total += 1
            early += b.decided_at < case["num_samples"]
    assert total > 1000
    assert early / total > 0.8


def test_start_is_confirmed_after_min_speech_and_end_after_min_silence() -> None:
    """With silero's defaults, a start is known 250 ms in and an end 100 ms into the silence."""
    frame = 512
    probs = [0.0] * 20 + [0.9] * 40 + [0.0] * 30
    segmenter = SpeechSegmenter(pv.VADConfig(), 16000)
    starts = ends = None
    for i, p in enumerate(probs):
        for b in segmenter.push([p], (i + 1) * frame):
            if b.kind == "start":
                starts = (i, b)
            else:
                ends = (i, b)
    assert starts is not None and ends is not None
    onset_frame, start = starts
    assert start.start == 20 * frame - 480
    # kept once more than 250 ms (4000 samples) of speech is certain: after the
    # 8th speech frame (256 ms)
    assert onset_frame == 20 + 7
    offset_frame, end = ends
    assert end.end == 60 * frame + 480
    # silence of >= 100 ms (1600 samples) from frame 60 ends it: at frame 60 + 4
    # (4 x 512 = 2048 >= 1600), and nothing can start within 2 x pad after it
    assert offset_frame == 60 + 4


def test_finish_twice_or_push_after_finish_is_an_error() -> None:
    segmenter = SpeechSegmenter(pv.VADConfig(), 16000)
    segmenter.finish(0)
    with pytest.raises(RuntimeError):
        segmenter.finish(0)
    with pytest.raises(RuntimeError):
        segmenter.push([0.5], 512)


def test_float32_values_are_compared_as_silero_does() -> None:
    """float32(0.35) < 0.35 in float64 (silero) but not in float32: it must count as silence."""
    value = np.float32(0.35)
    assert float(value) < 0.35
    config = pv.VADConfig(min_speech_duration_ms=0, min_silence_duration_ms=0, speech_pad_ms=0)
    probs = np.array([0.9, 0.9, value, value, 0.0], dtype=np.float32)
    segments = pv.segments_from_probabilities(probs, config=config)
    assert [[s.start_sample, s.end_sample] for s in segments] == [[0, 1024]]
