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
its ``end_of_stream`` chunk. Built with :func:`~prevad_rx.operators.per_stream`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prevad_rx._audio import StreamResampler, model_sample_rate
from prevad_rx._errors import ConfigError, StreamFailedError
from prevad_rx._types import AudioChunk, AudioSlice, StreamFailure, frame_geometry
from prevad_rx.operators._builder import Operator, per_stream

__all__ = ["DEFAULT_FRAMES_PER_SLICE", "window_slices"]

#: 32 frames = 1.024 s at 16 kHz: a 2 s chunk becomes 2 slices (measured best for 1-2 workers).
DEFAULT_FRAMES_PER_SLICE = 32

_NO_SAMPLES = np.zeros(0, np.float32)  # shared, read-only: no pending samples
_NO_SAMPLES.flags.writeable = False


@dataclass(slots=True)
class _Window:
    stream_id: str
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


def _ends(chunk: AudioChunk) -> bool:
    return chunk.end_of_stream


def _open(chunk: AudioChunk) -> _Window:
    source_rate = chunk.sample_rate
    rate = model_sample_rate(source_rate)
    frame, context = frame_geometry(rate)
    return _Window(
        stream_id=chunk.stream_id,
        source_rate=source_rate,
        rate=rate,
        frame=frame,
        context_size=context,
        resampler=StreamResampler(source_rate, rate) if rate != source_rate else None,
        context=np.zeros(context, np.float32),
        pending=_NO_SAMPLES,
    )


class _Slicer:
    def __init__(self, frames_per_slice: int) -> None:
        self._max_frames = frames_per_slice

    def step(self, window: _Window, chunk: AudioChunk) -> list[AudioSlice]:
        sid = chunk.stream_id
        if window.source_rate != chunk.sample_rate:
            raise StreamFailedError(
                f"stream {sid!r} changed sample rate from {window.source_rate} "
                f"to {chunk.sample_rate} Hz mid-stream",
                sid,
            )
        samples = chunk.samples
        if window.resampler is not None:
            samples = window.resampler.process(samples, last=chunk.end_of_stream)
        return self._cut(sid, window, samples, chunk.end_of_stream)

    def finish(self, window: _Window) -> list[AudioSlice]:
        """The source completed with the stream still open: end it."""
        tail = (
            window.resampler.process(_NO_SAMPLES, last=True)
            if window.resampler is not None
            else _NO_SAMPLES
        )
        return self._cut(window.stream_id, window, tail, True)

    def _cut(self, sid: str, window: _Window, samples: np.ndarray, last: bool) -> list[AudioSlice]:
        # A list, not a generator: one small packet is the common case, and it is cut
        # with one concatenate (context + its frames) and one copy (the next context).
        data = np.concatenate((window.pending, samples)) if window.pending.size else samples
        frame = window.frame
        valid = data.size
        if last:
            total = -(-valid // frame)  # the last partial frame zero-padded
            if total == 0:
                return [_slice(sid, window, data, 0, 0, 0, True)]
        else:
            total = valid // frame
            rest = valid - total * frame
            window.pending = data[valid - rest :].copy() if rest else _NO_SAMPLES
            if total == 0:
                return []
        count = -(-total // self._max_frames)
        if count == 1:
            return [_slice(sid, window, data, 0, total, valid, last)]
        base, extra = divmod(total, count)
        slices = []
        first = 0
        for index in range(count):
            n = base + (index < extra)
            slices.append(_slice(sid, window, data, first, n, valid, last and index == count - 1))
            first += n
        return slices


def _slice(
    sid: str,
    window: _Window,
    data: np.ndarray,
    first_frame: int,
    num_frames: int,
    valid: int,
    is_last: bool,
) -> AudioSlice:
    frame, context = window.frame, window.context_size
    start = first_frame * frame
    size = num_frames * frame
    stop = min(start + size, valid)
    if stop - start == size:  # whole frames: context and frames in one concatenate
        buffer = np.concatenate((window.context, data[start:stop]))
    else:  # the stream's last frame, zero-padded
        buffer = np.zeros(context + size, np.float32)
        buffer[:context] = window.context
        buffer[context : context + stop - start] = data[start:stop]
    if num_frames:
        window.context = buffer[-context:].copy()
    window.samples += max(0, stop - start)
    item = AudioSlice(
        stream_id=sid,
        seq=window.seq,
        start_frame=window.frames,
        num_frames=num_frames,
        buffer=buffer,
        sample_rate=window.rate,
        end_sample=window.samples,
        is_last=is_last,
    )
    window.seq += 1
    window.frames += num_frames
    return item


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
    slicer = _Slicer(frames_per_slice)
    return per_stream(
        slicer.step,
        state=_open,
        finish=slicer.finish,
        is_last=_ends,
        accepts=AudioChunk,
        name="window_slices",
    )
