"""``merge_segments``: silero's hysteresis over frame probabilities, emitting start/end events.

Input:  ``Observable[FrameProbabilities | StreamFailure]`` (each stream in ``seq`` order)
Output: ``Observable[SpeechEvent | StreamFailure]`` (``kind`` "start" or "end")

Per stream, a :class:`~prevad_rx._segmenter.SpeechSegmenter` applies
threshold / neg_threshold / min speech / min silence / speech pad / max speech
exactly as silero-vad's ``get_speech_timestamps`` does, and emits each
boundary as soon as later audio can no longer change it (see
``docs/events.md``). An ``end`` event carries the finished
:class:`~prevad_rx.Segment`, with its audio when ``keep_audio`` is set (the
operator then holds only the audio an open or pending segment may still need).

Out-of-order input is a usage error reported in-band: the stream fails with a
:class:`~prevad_rx.SliceOrderError` (put :func:`reorder_by_seq` before this).
Anything else that goes wrong with one stream (its config function raising, say)
fails that stream alone (:func:`~prevad_rx.operators.per_stream`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._errors import ConfigError, SliceOrderError
from prevad_rx._segmenter import Boundary, SpeechSegmenter
from prevad_rx._types import FrameProbabilities, Segment, SpeechEvent, StreamFailure
from prevad_rx.operators._builder import Operator, per_stream

__all__ = ["ConfigSource", "merge_segments"]

#: One config for all streams, or a function giving each stream's config.
ConfigSource = VADConfig | Callable[[str], VADConfig]


@dataclass(slots=True)
class _AudioTape:
    """The tail of a stream's audio from ``base`` on, trimmed as segments are settled."""

    base: int = 0
    pieces: list[np.ndarray] = field(default_factory=list)
    size: int = 0

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.pieces.append(samples)
            self.size += samples.size

    def cut(self, start: int, end: int) -> np.ndarray:
        data = (
            np.concatenate(self.pieces)
            if len(self.pieces) > 1
            else (self.pieces[0] if self.pieces else np.zeros(0, np.float32))
        )
        self.pieces = [data] if data.size else []
        return data[start - self.base : end - self.base].copy()

    def trim(self, keep_from: int) -> None:
        drop = keep_from - self.base
        while self.pieces and drop >= self.pieces[0].size:
            piece = self.pieces.pop(0)
            drop -= piece.size
            self.base += piece.size
            self.size -= piece.size


@dataclass(slots=True)
class _Track:
    segmenter: SpeechSegmenter
    next_seq: int = 0
    tape: _AudioTape | None = None


def _is_last(item: FrameProbabilities) -> bool:
    return item.is_last


class _Merger:
    def __init__(self, config: ConfigSource, keep_audio: bool | Callable[[str], bool]) -> None:
        self._config = config
        self._keep_audio = keep_audio

    def open(self, item: FrameProbabilities) -> _Track:
        sid = item.stream_id
        config = self._config(sid) if callable(self._config) else self._config
        if not isinstance(config, VADConfig):
            raise ConfigError(f"config for stream {sid!r} is not a VADConfig: {config!r}")
        track = _Track(SpeechSegmenter(config, item.sample_rate))
        keep = self._keep_audio(sid) if callable(self._keep_audio) else self._keep_audio
        if keep:
            track.tape = _AudioTape()
        return track

    def step(self, track: _Track, item: FrameProbabilities) -> list[SpeechEvent]:
        sid = item.stream_id
        if item.seq != track.next_seq:
            raise SliceOrderError(
                f"stream {sid!r}: merge_segments got slice {item.seq}, expected "
                f"{track.next_seq}; put reorder_by_seq() before it",
                sid,
                item.seq,
            )
        track.next_seq += 1
        if track.tape is not None and item.audio is not None:
            valid = item.end_sample - (track.tape.base + track.tape.size)
            track.tape.append(item.audio[: max(0, valid)])
        boundaries = track.segmenter.push(item.probabilities.tolist(), item.end_sample)
        if item.is_last:
            boundaries += track.segmenter.finish(item.end_sample)
        events = self._events(sid, track, boundaries)
        if track.tape is not None and not item.is_last:
            track.tape.trim(track.segmenter.earliest_needed_sample)
        return events

    @staticmethod
    def _events(sid: str, track: _Track, boundaries: list[Boundary]) -> list[SpeechEvent]:
        rate = track.segmenter.sample_rate
        events = []
        for boundary in boundaries:
            if boundary.kind == "start":
                events.append(SpeechEvent("start", sid, boundary.start, rate, boundary.decided_at))
                continue
            assert boundary.end is not None
            audio = None
            if track.tape is not None:
                audio = track.tape.cut(boundary.start, boundary.end)
            segment = Segment(sid, boundary.start, boundary.end, rate, audio)
            events.append(
                SpeechEvent("end", sid, boundary.end, rate, boundary.decided_at, segment=segment)
            )
        return events


def merge_segments(
    config: ConfigSource | None = None, *, keep_audio: bool | Callable[[str], bool] = False
) -> Operator[FrameProbabilities | StreamFailure, SpeechEvent | StreamFailure]:
    """Turn each stream's frame probabilities into exact speech start/end events.

    Args:
        config: a :class:`~prevad_rx.VADConfig` for every stream, or a function
            ``stream_id -> VADConfig`` (called once when a stream first appears).
        keep_audio: attach each segment's samples to its ``end`` event (a bool,
            or a function ``stream_id -> bool``).
    """
    source: ConfigSource = VADConfig() if config is None else config
    if not isinstance(source, VADConfig) and not callable(source):
        raise ConfigError(f"config must be a VADConfig or a callable, got {config!r}")
    merger = _Merger(source, keep_audio)
    return per_stream(
        merger.step,
        state=merger.open,
        is_last=_is_last,
        accepts=FrameProbabilities,
        name="merge_segments",
    )
