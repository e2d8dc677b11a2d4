"""Segmentation parameters, named and defaulted as in silero-vad's ``get_speech_timestamps``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prevad_rx._errors import ConfigError

__all__ = ["MAX_DURATION_S", "VADConfig"]

#: The longest duration a setting may ask for (10**9 s, about 31.7 years): stream
#: positions are counted in samples, and longer settings would overflow that arithmetic.
MAX_DURATION_S = 1e9


@dataclass(frozen=True, slots=True)
class VADConfig:
    """How frame probabilities become speech segments.

    The names, defaults and meaning match silero-vad's ``get_speech_timestamps``,
    so segments are identical to it for the same probabilities.

    Attributes:
        threshold: a frame with probability >= threshold is speech.
        neg_threshold: while in speech, a frame below this is silence; ``None``
            means ``max(threshold - 0.15, 0.01)``.
        min_speech_duration_ms: segments this short or shorter are dropped.
        min_silence_duration_ms: silence needed to end a segment.
        speech_pad_ms: padding added on each side of a segment.
        max_speech_duration_s: longer segments are split (at the longest
            silence over ``min_silence_at_max_speech`` ms where there is one).
        min_silence_at_max_speech: ms of silence that counts as a split point.
        use_max_poss_sil_at_max_speech: split at the longest such silence
            (True) or at the last one (False).

    Durations are checked to be finite (``max_speech_duration_s`` may be
    ``inf``) and at most :data:`MAX_DURATION_S`; anything else is a
    :class:`~prevad_rx.ConfigError`.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: float = 250
    min_silence_duration_ms: float = 100
    speech_pad_ms: float = 30
    max_speech_duration_s: float = math.inf
    min_silence_at_max_speech: float = 98
    use_max_poss_sil_at_max_speech: bool = True

    def __post_init__(self) -> None:
        def number(name: str, value: object) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if math.isnan(value):
                raise ConfigError(f"{name} must not be NaN")
            return float(value)

        if not 0.0 <= number("threshold", self.threshold) <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.neg_threshold is not None:
            neg = number("neg_threshold", self.neg_threshold)
            if not 0.0 <= neg <= 1.0:
                raise ConfigError(f"neg_threshold must be in [0, 1], got {neg!r}")
        for name in (
            "min_speech_duration_ms",
            "min_silence_duration_ms",
            "speech_pad_ms",
            "min_silence_at_max_speech",
        ):
            value = number(name, getattr(self, name))
            if not 0.0 <= value < math.inf:
                raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")
            if value > MAX_DURATION_S * 1000:
                raise ConfigError(
                    f"{name} must be at most {MAX_DURATION_S * 1000:g} ms "
                    f"(MAX_DURATION_S), got {value!r}"
                )
        longest = number("max_speech_duration_s", self.max_speech_duration_s)
        if not longest > 0.0:
            raise ConfigError(
                f"max_speech_duration_s must be > 0, got {self.max_speech_duration_s!r}"
            )
        if MAX_DURATION_S < longest < math.inf:
            raise ConfigError(
                f"max_speech_duration_s must be at most {MAX_DURATION_S:g} s "
                f"(MAX_DURATION_S) or inf, got {longest!r}"
            )
        if not isinstance(self.use_max_poss_sil_at_max_speech, bool):
            raise ConfigError("use_max_poss_sil_at_max_speech must be a bool")

    @property
    def effective_neg_threshold(self) -> float:
        """The exit threshold in use: ``neg_threshold`` or silero's default for it."""
        if self.neg_threshold is not None:
            return float(self.neg_threshold)
        return max(self.threshold - 0.15, 0.01)
