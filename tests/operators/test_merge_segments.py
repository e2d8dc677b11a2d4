"""merge_segments: silero's segments from the operator, exact, with audio when asked."""

from __future__ import annotations

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.operators import merge_segments
from tests.conftest import GoldenFixture, segmenter_cases
from tests.operators.helpers import collect


def probability_items(
    sid: str,
    probs: np.ndarray,
    num_samples: int,
    rate: int,
    sizes: list[int],
    audio: np.ndarray | None = None,
) -> list[pv.FrameProbabilities]:
    frame = 512 if rate == 16000 else 256
    items = []
    i = k = 0
    while True:
        n = sizes[k % len(sizes)]
        part = probs[i : i + n]
        last = i + part.size >= probs.size
        padded = None
        if audio is not None:
            padded = np.zeros(part.size * frame, np.float32)
            chunk = audio[i * frame : (i + part.size) * frame]
            padded[: chunk.size] = chunk
        items.append(
            pv.FrameProbabilities(
                sid, k, i, part, rate, min((i + part.size) * frame, num_samples), last, padded
            )
        )
        i += part.size
        k += 1
        if last:
            return items


def test_segments_equal_silero_for_golden_cases() -> None:
    cases = segmenter_cases()[:300]
    items = []
    for index, case in enumerate(cases):
        items += probability_items(
            f"c{index}", case["probs"], case["num_samples"], case["sample_rate"], [13, 2]
        )
    configs = {f"c{i}": pv.VADConfig(**c["config"]) for i, c in enumerate(cases)}
    events = collect(items, merge_segments(configs.__getitem__))
    for index, case in enumerate(cases):
        ends = [e for e in events if e.stream_id == f"c{index}" and e.kind == "end"]
        assert [[e.segment.start_sample, e.segment.end_sample] for e in ends] == case["segments"]


def test_end_events_carry_the_segment_audio(speech16k: GoldenFixture) -> None:
    items = probability_items(
        "a", speech16k.probabilities, speech16k.audio.size, 16000, [7], speech16k.audio
    )
    events = collect(items, merge_segments(keep_audio=True))
    ends = [e for e in events if e.kind == "end"]
    assert [[e.segment.start_sample, e.segment.end_sample] for e in ends] == (
        speech16k.default_segments
    )
    for event in ends:
        segment = event.segment
        np.testing.assert_array_equal(
            segment.audio, speech16k.audio[segment.start_sample : segment.end_sample]
        )
        assert event.sample == segment.end_sample and event.time == segment.end


def test_audio_is_not_kept_unless_asked(speech16k: GoldenFixture) -> None:
    items = probability_items(
        "a", speech16k.probabilities, speech16k.audio.size, 16000, [7], speech16k.audio
    )
    events = collect(items, merge_segments())
    assert all(e.segment.audio is None for e in events if e.kind == "end")


def test_out_of_order_input_fails_the_stream() -> None:
    probs = np.full(10, 0.9, np.float32)
    items = probability_items("a", probs, 5120, 16000, [3])
    out = collect([items[1], items[0]], merge_segments())
    assert isinstance(out[0], pv.StreamFailure)
    assert isinstance(out[0].error, pv.SliceOrderError) and "reorder_by_seq" in str(out[0].error)


def test_config_validation() -> None:
    with pytest.raises(pv.ConfigError):
        merge_segments(0.5)  # type: ignore[arg-type]
    items = probability_items("a", np.zeros(3, np.float32), 1536, 16000, [3])
    out = collect(items, merge_segments(lambda sid: None))  # type: ignore[arg-type,return-value]
    assert [type(item) for item in out] == [pv.StreamFailure]  # that stream only, once
    assert isinstance(out[0].error, pv.OperatorError)
    assert isinstance(out[0].error.__cause__, pv.ConfigError)
    assert "not a VADConfig" in str(out[0].error)
