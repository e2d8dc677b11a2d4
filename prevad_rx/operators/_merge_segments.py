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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._errors import ConfigError, SliceOrderError
from prevad_rx._segmenter import Boundary, SpeechSegmenter
from prevad_rx._types import FrameProbabilities, Segment, SpeechEvent, StreamFailure
from prevad_rx.operators._plumbing import Operator, operator_from

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


class _Merger:
    def __init__(
        self,
        emit: Callable[[Any], None],
        complete: Callable[[], None],
        config: ConfigSource,
        keep_audio: bool | Callable[[str], bool],
    ) -> None:
        self._emit = emit
        self._complete = complete
        self._config = config
        self._keep_audio = keep_audio
        self._tracks: dict[str, _Track] = {}

    def _config_for(self, sid: str) -> VADConfig:
        config = self._config(sid) if callable(self._config) else self._config
        if not isinstance(config, VADConfig):
            raise ConfigError(f"config for stream {sid!r} is not a VADConfig: {config!r}")
        return config

    def on_next(self, item: FrameProbabilities | StreamFailure) -> None:
        if isinstance(item, StreamFailure):
            self._tracks.pop(item.stream_id, None)
            self._emit(item)
            return
        if not isinstance(item, FrameProbabilities):
            raise TypeError(
                f"merge_segments expects FrameProbabilities items, got {type(item).__name__}"
            )
        sid = item.stream_id
        track = self._tracks.get(sid)
        if track is None:
            track = _Track(SpeechSegmenter(self._config_for(sid), item.sample_rate))
            keep = self._keep_audio(sid) if callable(self._keep_audio) else self._keep_audio
            if keep:
                track.tape = _AudioTape()
            self._tracks[sid] = track
        if item.seq != track.next_seq:
            del self._tracks[sid]
            error = SliceOrderError(
                f"stream {sid!r}: merge_segments got slice {item.seq}, expected "
                f"{track.next_seq}; put reorder_by_seq() before it",
                sid,
                item.seq,
            )
            self._emit(StreamFailure(sid, error))
            return
        track.next_seq += 1
        if track.tape is not None and item.audio is not None:
            valid = item.end_sample - (track.tape.base + track.tape.size)
            track.tape.append(item.audio[: max(0, valid)])
        boundaries = track.segmenter.push(item.probabilities.tolist(), item.end_sample)
        if item.is_last:
            boundaries += track.segmenter.finish(item.end_sample)
            del self._tracks[sid]
        self._send(sid, track, boundaries)
        if track.tape is not None and not item.is_last:
            track.tape.trim(track.segmenter.earliest_needed_sample)

    def _send(self, sid: str, track: _Track, boundaries: list[Boundary]) -> None:
        rate = track.segmenter.sample_rate
        for boundary in boundaries:
            if boundary.kind == "start":
                self._emit(SpeechEvent("start", sid, boundary.start, rate, boundary.decided_at))
                continue
            assert boundary.end is not None
            audio = None
            if track.tape is not None:
                audio = track.tape.cut(boundary.start, boundary.end)
            segment = Segment(sid, boundary.start, boundary.end, rate, audio)
            self._emit(
                SpeechEvent("end", sid, boundary.end, rate, boundary.decided_at, segment=segment)
            )

    def on_completed(self) -> None:
        self._tracks.clear()
        self._complete()

    def dispose(self) -> None:
        self._tracks.clear()


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
    return operator_from(lambda emit, complete: _Merger(emit, complete, source, keep_audio))
