"""``window_slices``: cut each stream's chunks into numbered slices of whole model frames.

Input:  ``Observable[AudioChunk | StreamFailure]``
Output: ``Observable[AudioSlice | StreamFailure]``

Per stream the operator carries the partial frame left over from each chunk
and the model's 64-sample (32 at 8 kHz) context between slices, so slices are
independent of how the audio was chunked: the same audio always gives the same
frames. Every chunk's complete frames leave at once (a chunk never waits for
the next one), split into at most ``frames_per_slice`` frames per slice and
balanced in size so the pool can encode them in parallel. Each slice is one
freshly allocated buffer -- context followed by frames -- that the model
input rows view without copying.

Audio at rates other than 8/16 kHz is resampled to 16 kHz here (soxr, streaming).
``end_of_stream`` (or the source completing) zero-pads the last partial frame
and marks the stream's last slice (``is_last``; it may hold no frames).
A stream whose sample rate changes mid-stream fails with a
:class:`~prevad_rx.StreamFailedError`; its further chunks are ignored until
its ``end_of_stream`` chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prevad_rx._audio import StreamResampler, model_sample_rate
from prevad_rx._errors import ConfigError, StreamFailedError
from prevad_rx._types import AudioChunk, AudioSlice, StreamFailure, frame_geometry
from prevad_rx.operators._plumbing import Operator, operator_from

__all__ = ["DEFAULT_FRAMES_PER_SLICE", "window_slices"]

#: 32 frames = 1.024 s at 16 kHz: a 2 s chunk becomes 2 slices (measured best for 1-2 workers).
DEFAULT_FRAMES_PER_SLICE = 32


@dataclass(slots=True)
class _Window:
    source_rate: int
    rate: int
    frame: int
    context_size: int
    resampler: StreamResampler | None
    context: np.ndarray
    pending: np.ndarray
    seq: int = 0
    frames: int = 0
    samples: int = 0  # valid samples at the processing rate


class _Slicer:
    def __init__(
        self, emit: Callable[[Any], None], complete: Callable[[], None], frames_per_slice: int
    ) -> None:
        self._emit = emit
        self._complete = complete
        self._max_frames = frames_per_slice
        self._windows: dict[str, _Window] = {}
        self._failed: set[str] = set()

    def on_next(self, item: AudioChunk | StreamFailure) -> None:
        if isinstance(item, StreamFailure):
            self._windows.pop(item.stream_id, None)
            self._emit(item)
            return
        if not isinstance(item, AudioChunk):
            raise TypeError(f"window_slices expects AudioChunk items, got {type(item).__name__}")
        sid = item.stream_id
        if sid in self._failed:
            if item.end_of_stream:
                self._failed.discard(sid)
            return
        window = self._windows.get(sid)
        if window is None:
            window = self._windows[sid] = self._open(item.sample_rate)
        elif window.source_rate != item.sample_rate:
            del self._windows[sid]
            if not item.end_of_stream:
                self._failed.add(sid)
            self._emit(
                StreamFailure(
                    sid,
                    StreamFailedError(
                        f"stream {sid!r} changed sample rate from {window.source_rate} "
                        f"to {item.sample_rate} Hz mid-stream",
                        sid,
                    ),
                )
            )
            return
        samples = item.samples
        if window.resampler is not None:
            samples = window.resampler.process(samples, last=item.end_of_stream)
        self._cut(sid, window, samples, item.end_of_stream)
        if item.end_of_stream:
            del self._windows[sid]

    def on_completed(self) -> None:
        for sid, window in list(self._windows.items()):
            tail = (
                window.resampler.process(np.zeros(0, np.float32), last=True)
                if window.resampler is not None
                else np.zeros(0, np.float32)
            )
            self._cut(sid, window, tail, True)
        self._windows.clear()
        self._complete()

    def dispose(self) -> None:
        self._windows.clear()

    @staticmethod
    def _open(source_rate: int) -> _Window:
        rate = model_sample_rate(source_rate)
        frame, context = frame_geometry(rate)
        return _Window(
            source_rate=source_rate,
            rate=rate,
            frame=frame,
            context_size=context,
            resampler=StreamResampler(source_rate, rate) if rate != source_rate else None,
            context=np.zeros(context, np.float32),
            pending=np.zeros(0, np.float32),
        )

    def _cut(self, sid: str, window: _Window, samples: np.ndarray, last: bool) -> None:
        data = np.concatenate((window.pending, samples)) if window.pending.size else samples
        frame = window.frame
        valid = data.size
        full = valid // frame
        total = math.ceil(valid / frame) if last else full
        if not last:
            window.pending = data[full * frame :].copy()
        elif total == 0:
            self._emit_slice(sid, window, data, 0, 0, 0, True)
            return
        if total == 0:
            return
        count = math.ceil(total / self._max_frames)
        base, extra = divmod(total, count)
        first = 0
        for index in range(count):
            n = base + (index < extra)
            self._emit_slice(sid, window, data, first, n, valid, last and index == count - 1)
            first += n

    def _emit_slice(
        self,
        sid: str,
        window: _Window,
        data: np.ndarray,
        first_frame: int,
        num_frames: int,
        valid: int,
        is_last: bool,
    ) -> None:
        frame, context = window.frame, window.context_size
        start = first_frame * frame
        stop = min(start + num_frames * frame, valid)
        buffer = np.zeros(context + num_frames * frame, np.float32)
        buffer[:context] = window.context
        buffer[context : context + stop - start] = data[start:stop]
        if num_frames:
            window.context = buffer[-context:].copy()
        window.samples += max(0, stop - start)
        self._emit(
            AudioSlice(
                stream_id=sid,
                seq=window.seq,
                start_frame=window.frames,
                num_frames=num_frames,
                buffer=buffer,
                sample_rate=window.rate,
                end_sample=window.samples,
                is_last=is_last,
            )
        )
        window.seq += 1
        window.frames += num_frames


def window_slices(
    frames_per_slice: int = DEFAULT_FRAMES_PER_SLICE,
) -> Operator[AudioChunk | StreamFailure, AudioSlice | StreamFailure]:
    """Cut chunks into slices of at most ``frames_per_slice`` whole frames per stream.

    Smaller slices let the pool encode one chunk on more workers at once;
    larger ones cost fewer model calls. Any value gives identical results.
    """
    if isinstance(frames_per_slice, bool) or not isinstance(frames_per_slice, int):
        raise ConfigError(f"frames_per_slice must be an int, got {frames_per_slice!r}")
    if frames_per_slice < 1:
        raise ConfigError(f"frames_per_slice must be >= 1, got {frames_per_slice}")
    return operator_from(lambda emit, complete: _Slicer(emit, complete, frames_per_slice))
