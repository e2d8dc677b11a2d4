"""Silero's hysteresis state machine, run incrementally: each decision as early as exactness allows.

silero-vad's ``get_speech_timestamps`` works in two passes over a finished
list of frame probabilities: a loop that finds raw segments, then a padding
pass in which each boundary depends on its neighbours (the silence between two
segments is split between them when it is shorter than twice the pad) and the
last end on the audio length. :class:`SpeechSegmenter` runs the same loop frame
by frame and emits

* a **start** as soon as the open segment is certain to be kept (it will
  outlast ``min_speech_duration_ms`` whatever follows), with its padded start;
* an **end** as soon as no later segment can start close enough to change the
  padding (or the next segment is certain, or the stream has ended).

The emitted boundaries are identical to ``get_speech_timestamps`` for the same
probabilities; the tests check this against goldens produced by silero-vad.
Comparisons use Python floats (float64), as silero does, never float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._types import Segment, frame_geometry

__all__ = ["Boundary", "SpeechSegmenter", "segments_from_probabilities"]


@dataclass(frozen=True, slots=True)
class Boundary:
    """One decision of the segmenter: a confirmed start, or a finished segment."""

    kind: str  # "start" | "end"
    start: int
    end: int | None
    decided_at: int


class SpeechSegmenter:
    """Incremental, exact port of silero-vad's speech-timestamp logic for one stream."""

    def __init__(self, config: VADConfig, sample_rate: int) -> None:
        frame, _ = frame_geometry(sample_rate)
        self.sample_rate = sample_rate
        self._frame = frame
        sr = sample_rate
        self._threshold = float(config.threshold)
        self._neg_threshold = float(config.effective_neg_threshold)
        self._min_speech = sr * config.min_speech_duration_ms / 1000
        self._pad = sr * config.speech_pad_ms / 1000
        self._max_speech = sr * config.max_speech_duration_s - frame - 2 * self._pad
        self._min_silence = sr * config.min_silence_duration_ms / 1000
        self._min_silence_at_max = sr * config.min_silence_at_max_speech / 1000
        self._use_max_poss = bool(config.use_max_poss_sil_at_max_speech)

        # State of silero's loop.
        self._triggered = False
        self._start: int | None = None  # start of the open segment ("current_speech")
        self._temp_end = 0
        self._prev_end = 0
        self._next_start = 0
        self._possible_ends: list[tuple[int, int]] = []
        self._frames = 0
        self.samples_seen = 0

        # State of the incremental padding pass.
        self._appended = 0  # raw segments kept so far ("len(speeches)")
        self._last_raw_end = 0  # raw end of the last kept segment
        self._open_padded_start: int | None = None  # set once the open segment's start is emitted
        self._pending: tuple[int, int] | None = None  # (padded start, raw end) awaiting its end
        self._finished = False
        self._out: list[Boundary] = []

    # ------------------------------------------------------------------ public

    def push(self, probabilities: Iterable[float], end_sample: int) -> list[Boundary]:
        """Advance over the next frames; ``end_sample`` is the stream's valid samples after them.

        Returns the boundaries these frames decided, in order.
        """
        if self._finished:
            raise RuntimeError("segmenter already finished")
        out = self._out = []
        frame = self._frame
        for prob in probabilities:
            self.samples_seen = min((self._frames + 1) * frame, end_sample)
            self._step(float(prob))
            self._frames += 1
            self._settle()
        return out

    def finish(self, num_samples: int) -> list[Boundary]:
        """End the stream of ``num_samples`` valid samples; returns the last boundaries."""
        if self._finished:
            raise RuntimeError("segmenter already finished")
        self._finished = True
        out = self._out = []
        self.samples_seen = num_samples
        if self._start is not None and (num_samples - self._start) > self._min_speech:
            self._keep(self._start, num_samples)
        if self._pending is not None:
            start, raw_end = self._pending
            self._emit_end(start, int(min(num_samples, raw_end + self._pad)))
        return out

    @property
    def earliest_needed_sample(self) -> int:
        """No boundary emitted later can lie before this sample (to trim kept audio)."""
        if self._pending is not None:
            return self._pending[0]
        if self._open_padded_start is not None:
            return self._open_padded_start
        candidate = self._start if self._start is not None else self.samples_seen
        return max(0, math.floor(candidate - self._pad))

    # ----------------------------------------------------------- silero's loop

    def _step(self, speech_prob: float) -> None:
        cur_sample = self._frame * self._frames
        threshold = self._threshold

        if speech_prob >= threshold and self._temp_end:
            sil_dur = cur_sample - self._temp_end
            if sil_dur > self._min_silence_at_max:
                self._possible_ends.append((self._temp_end, sil_dur))
            self._temp_end = 0
            if self._next_start < self._prev_end:
                self._next_start = cur_sample

        if speech_prob >= threshold and not self._triggered:
            self._triggered = True
            self._start = cur_sample
            return

        if (
            self._triggered
            and self._start is not None
            and cur_sample - self._start > self._max_speech
        ):
            if self._use_max_poss and self._possible_ends:
                prev_end, dur = max(self._possible_ends, key=lambda x: x[1])
                self._keep(self._start, prev_end)
                self._start = None
                next_start = prev_end + dur
                if next_start < prev_end + cur_sample:
                    self._start = next_start
                else:
                    self._triggered = False
                self._prev_end = self._next_start = self._temp_end = 0
                self._possible_ends = []
            elif self._prev_end:
                self._keep(self._start, self._prev_end)
                self._start = None
                if self._next_start < self._prev_end:
                    self._triggered = False
                else:
                    self._start = self._next_start
                self._prev_end = self._next_start = self._temp_end = 0
                self._possible_ends = []
            else:
                self._keep(self._start, cur_sample)
                self._start = None
                self._prev_end = self._next_start = self._temp_end = 0
                self._triggered = False
                self._possible_ends = []
                return

        if speech_prob < self._neg_threshold and self._triggered:
            if not self._temp_end:
                self._temp_end = cur_sample
            sil_dur_now = cur_sample - self._temp_end
            if not self._use_max_poss and sil_dur_now > self._min_silence_at_max:
                self._prev_end = self._temp_end
            if sil_dur_now < self._min_silence:
                return
            assert self._start is not None
            if (self._temp_end - self._start) > self._min_speech:
                self._keep(self._start, self._temp_end)
            else:
                assert self._open_padded_start is None, "a confirmed start was dropped"
            self._start = None
            self._prev_end = self._next_start = self._temp_end = 0
            self._triggered = False
            self._possible_ends = []

    # ------------------------------------------------ incremental padding pass

    def _padded_start(self, raw_start: int) -> int:
        if self._appended == 0:
            return int(max(0, raw_start - self._pad))
        silence = raw_start - self._last_raw_end
        if silence < 2 * self._pad:
            return int(max(0, raw_start - silence // 2))
        return int(max(0, raw_start - self._pad))

    def _confirm_start(self, raw_start: int) -> None:
        """The open segment will be kept: settle the previous end, then emit this start."""
        if self._pending is not None:
            start, raw_end = self._pending
            silence = raw_start - raw_end
            if silence < 2 * self._pad:
                end = raw_end + int(silence // 2)
            else:
                # silero clips at the audio length here, but raw_end + pad <= raw_start,
                # which lies inside the audio already seen, so the clip cannot apply.
                end = int(raw_end + self._pad)
            self._emit_end(start, end)
        self._open_padded_start = self._padded_start(raw_start)
        self._out.append(Boundary("start", self._open_padded_start, None, self.samples_seen))

    def _keep(self, raw_start: int, raw_end: int) -> None:
        """silero appends the raw segment ``[raw_start, raw_end)`` to its list."""
        if self._open_padded_start is None:
            self._confirm_start(raw_start)
        assert self._open_padded_start is not None
        self._pending = (self._open_padded_start, raw_end)
        self._open_padded_start = None
        self._appended += 1
        self._last_raw_end = raw_end

    def _settle(self) -> None:
        """Emit whatever the frames so far decide for certain."""
        start = self._start
        if start is not None and self._open_padded_start is None:
            lowest_end = self._temp_end if self._temp_end else self.samples_seen
            if lowest_end - start > self._min_speech:
                self._confirm_start(start)
        if self._pending is not None:
            padded_start, raw_end = self._pending
            next_start_bound = start if start is not None else self._frames * self._frame
            if (
                not next_start_bound - raw_end < 2 * self._pad
                and raw_end + self._pad <= self.samples_seen
            ):
                self._emit_end(padded_start, int(raw_end + self._pad))

    def _emit_end(self, start: int, end: int) -> None:
        self._pending = None
        self._out.append(Boundary("end", start, end, self.samples_seen))


def segments_from_probabilities(
    probabilities: Sequence[float] | np.ndarray,
    *,
    sample_rate: int = 16000,
    num_samples: int | None = None,
    config: VADConfig | None = None,
    stream_id: str = "",
) -> list[Segment]:
    """Speech segments for a finished list of frame probabilities (offline use).

    Equivalent to silero-vad's ``get_speech_timestamps_from_probs`` with the
    same parameters; ``num_samples`` defaults to ``len(probabilities) * frame``.
    """
    frame, _ = frame_geometry(sample_rate)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    total = probs.size * frame if num_samples is None else int(num_samples)
    segmenter = SpeechSegmenter(config or VADConfig(), sample_rate)
    boundaries = segmenter.push(probs.tolist(), total)
    boundaries += segmenter.finish(total)
    return [
        Segment(stream_id, b.start, b.end, sample_rate)
        for b in boundaries
        if b.kind == "end" and b.end is not None
    ]
