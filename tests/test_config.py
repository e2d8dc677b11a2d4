"""VADConfig: silero-vad's names and defaults, validated."""

from __future__ import annotations

import math

import pytest

import prevad_rx as pv


def test_defaults_are_silero_vads() -> None:
    config = pv.VADConfig()
    assert config.threshold == 0.5
    assert config.neg_threshold is None
    assert config.effective_neg_threshold == max(0.5 - 0.15, 0.01)
    assert config.min_speech_duration_ms == 250
    assert config.min_silence_duration_ms == 100
    assert config.speech_pad_ms == 30
    assert config.max_speech_duration_s == math.inf
    assert config.min_silence_at_max_speech == 98
    assert config.use_max_poss_sil_at_max_speech is True


def test_neg_threshold_default_has_a_floor() -> None:
    assert pv.VADConfig(threshold=0.1).effective_neg_threshold == 0.01
    assert pv.VADConfig(threshold=0.7, neg_threshold=0.2).effective_neg_threshold == 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"threshold": float("nan")},
        {"threshold": "0.5"},
        {"threshold": True},
        {"neg_threshold": 2.0},
        {"min_speech_duration_ms": -1},
        {"min_silence_duration_ms": math.inf},
        {"speech_pad_ms": None},
        {"max_speech_duration_s": 0},
        {"use_max_poss_sil_at_max_speech": 1},
        # beyond what a stream's sample arithmetic can hold
        {"speech_pad_ms": 1e308},
        {"min_silence_duration_ms": 1e300},
        {"min_speech_duration_ms": pv.MAX_DURATION_S * 1000 * 2},
        {"min_silence_at_max_speech": 1e200},
        {"max_speech_duration_s": 1e308},
    ],
)
def test_bad_values_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(pv.ConfigError):
        pv.VADConfig(**kwargs)  # type: ignore[arg-type]


def test_config_is_immutable_and_hashable() -> None:
    config = pv.VADConfig()
    with pytest.raises(AttributeError):
        config.threshold = 0.3  # type: ignore[misc]
    assert hash(config) == hash(pv.VADConfig())


def test_the_longest_allowed_durations_still_segment() -> None:
    """At MAX_DURATION_S every setting still gives a result (no overflow inside)."""
    import numpy as np

    longest = pv.MAX_DURATION_S
    probs = np.array([0.0] * 10 + [0.9] * 40 + [0.0] * 10, np.float32)
    padded = pv.VADConfig(speech_pad_ms=longest * 1000, min_silence_at_max_speech=longest * 1000)
    segments = pv.segments_from_probabilities(probs, config=padded)
    assert [(s.start_sample, s.end_sample) for s in segments] == [(0, probs.size * 512)]
    patient = pv.VADConfig(min_silence_duration_ms=longest * 1000, max_speech_duration_s=longest)
    segments = pv.segments_from_probabilities(probs, config=patient)
    assert [(s.start_sample, s.end_sample) for s in segments] == [
        (10 * 512 - 480, probs.size * 512)
    ]
    with pytest.raises(pv.ConfigError, match="MAX_DURATION_S"):
        pv.VADConfig(speech_pad_ms=longest * 1000 * 1.5)
