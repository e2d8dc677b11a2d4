"""The immutable items that flow through the operator chain, and what users get back.

::

    AudioChunk ──window_slices──▶ AudioSlice ──parallel_map_on_pool──▶ FrameProbabilities
      ──reorder_by_seq──▶ FrameProbabilities ──merge_segments──▶ SpeechEvent
      ──emit_events──▶ SpeechEvent

A :class:`StreamFailure` may appear anywhere in the chain in place of an item;
every operator forwards it and forgets that stream's state, so one stream's
fault never ends the others.

Sample positions are at the stream's *processing rate* (``sample_rate`` on
each item): the input rate for 8 and 16 kHz audio, 16 kHz for any other
input rate (which is resampled). Times in seconds are valid at any rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prevad_rx._audio import to_float32_mono, validate_sample_rate
from prevad_rx._errors import AudioFormatError, StreamFailedError
from prevad_rx._slotted import direct_init

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "AudioChunk",
    "AudioSlice",
    "EventKind",
    "FrameProbabilities",
    "Segment",
    "SpeechEvent",
    "StreamFailure",
    "StreamResult",
    "frame_geometry",
]

EventKind = Literal["start", "end", "error"]


def frame_geometry(sample_rate: int) -> tuple[int, int]:
    """(frame samples, context samples) of the Silero model at a processing rate."""
    if sample_rate == 16000:
        return 512, 64
    if sample_rate == 8000:
        return 256, 32
    raise ValueError(f"the model runs at 8000 or 16000 Hz, not {sample_rate}")


def _check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str):
        raise TypeError(f"stream_id must be a str, got {type(stream_id).__name__}")


@direct_init
@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """A piece of one stream's audio entering the chain.

    ``samples`` may be float32/float64/int16 numpy arrays, PCM16-LE bytes, or a
    1-D memoryview (read by its format); it is validated and converted to
    float32 on construction (raising :class:`~prevad_rx.AudioFormatError`).
    ``end_of_stream`` marks the stream's last chunk (it may hold samples or be
    empty).
    """

    stream_id: str
    samples: NDArray[np.float32]
    sample_rate: int = 16000
    end_of_stream: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        object.__setattr__(self, "samples", to_float32_mono(self.samples))
        object.__setattr__(self, "sample_rate", validate_sample_rate(self.sample_rate))
        if not isinstance(self.end_of_stream, bool):
            raise AudioFormatError("end_of_stream must be a bool")

    def __repr__(self) -> str:
        return (
            f"AudioChunk(stream_id={self.stream_id!r}, samples=<{self.samples.size}>, "
            f"sample_rate={self.sample_rate}, end_of_stream={self.end_of_stream})"
        )


def validated_chunk(
    stream_id: str, samples: NDArray[np.float32], sample_rate: int, end_of_stream: bool
) -> AudioChunk:
    """An :class:`AudioChunk` of samples already validated and converted (1-D float32,
    finite) at a rate already checked: built without checking them a second time."""
    chunk = object.__new__(AudioChunk)
    object.__setattr__(chunk, "stream_id", stream_id)
    object.__setattr__(chunk, "samples", samples)
    object.__setattr__(chunk, "sample_rate", sample_rate)
    object.__setattr__(chunk, "end_of_stream", end_of_stream)
    return chunk


@direct_init
@dataclass(frozen=True, slots=True, eq=False)
class AudioSlice:
    """A run of whole model frames of one stream, numbered ``seq`` within it.

    ``buffer`` holds the context samples followed by ``num_frames`` frames;
    :attr:`windows` views it as the model's input rows (each frame preceded by
    the last context samples of the frame before it, zeros for the first frame)
    without copying. The stream's last slice (``is_last``) has its final frame
    zero-padded, and may hold no frames at all.
    """

    stream_id: str
    seq: int
    start_frame: int
    num_frames: int
    buffer: NDArray[np.float32]
    sample_rate: int
    end_sample: int
    is_last: bool = False

    @property
    def frame_samples(self) -> int:
        return frame_geometry(self.sample_rate)[0]

    @property
    def context_samples(self) -> int:
        return frame_geometry(self.sample_rate)[1]

    @property
    def windows(self) -> NDArray[np.float32]:
        """Model input rows ``[num_frames, context + frame]``: a strided view of ``buffer``."""
        frame, context = frame_geometry(self.sample_rate)
        buffer = self.buffer
        shape = (self.num_frames, context + frame)
        strides = (frame * buffer.itemsize, buffer.itemsize)
        if buffer.flags.c_contiguous:  # as window_slices makes them: a plain view is cheaper
            rows: NDArray[np.float32] = np.ndarray(shape, buffer.dtype, buffer, 0, strides)
            rows.flags.writeable = False
            return rows
        return np.lib.stride_tricks.as_strided(
            buffer, shape=shape, strides=strides, writeable=False
        )

    @property
    def audio(self) -> NDArray[np.float32]:
        """The slice's frames as one 1-D view (the last frame of a stream zero-padded)."""
        return self.buffer[self.context_samples :]

    def __repr__(self) -> str:
        return (
            f"AudioSlice(stream_id={self.stream_id!r}, seq={self.seq}, "
            f"start_frame={self.start_frame}, num_frames={self.num_frames}, "
            f"sample_rate={self.sample_rate}, is_last={self.is_last})"
        )


@direct_init
@dataclass(frozen=True, slots=True, eq=False)
class FrameProbabilities:
    """The model's speech probability for each frame of one slice."""

    stream_id: str
    seq: int
    start_frame: int
    probabilities: NDArray[np.float32]
    sample_rate: int
    end_sample: int
    is_last: bool = False
    audio: NDArray[np.float32] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.probabilities)

    def __repr__(self) -> str:
        return (
            f"FrameProbabilities(stream_id={self.stream_id!r}, seq={self.seq}, "
            f"start_frame={self.start_frame}, num_frames={self.num_frames}, "
            f"is_last={self.is_last})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class Segment:
    """One stretch of speech: ``[start_sample, end_sample)`` at ``sample_rate``.

    ``audio`` holds the segment's samples when the pipeline was asked to keep them.
    """

    stream_id: str
    start_sample: int
    end_sample: int
    sample_rate: int
    audio: NDArray[np.float32] | None = field(default=None, repr=False)

    @property
    def start(self) -> float:
        """Start in seconds."""
        return self.start_sample / self.sample_rate

    @property
    def end(self) -> float:
        """End in seconds."""
        return self.end_sample / self.sample_rate

    @property
    def duration(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate

    @property
    def start_time_ms(self) -> float:
        return 1000.0 * self.start

    @property
    def end_time_ms(self) -> float:
        return 1000.0 * self.end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.stream_id, self.start_sample, self.end_sample, self.sample_rate) == (
            other.stream_id,
            other.start_sample,
            other.end_sample,
            other.sample_rate,
        )

    def __hash__(self) -> int:
        return hash((self.stream_id, self.start_sample, self.end_sample, self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: samples and seconds (3 decimals)."""
        return {
            "start_sample": self.start_sample,
            "end_sample": self.end_sample,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
        }


@dataclass(frozen=True, slots=True, eq=False)
class SpeechEvent:
    """Speech started or ended in a stream, or the stream failed.

    ``sample`` is the (padded) segment boundary; ``decided_at_sample`` is how
    far into the stream the audio had to reach before the event could be known
    exactly, so ``(decided_at_sample - sample) / sample_rate`` is the event's
    inherent delay. An ``end`` event carries its :class:`Segment`; an
    ``error`` event carries the :class:`~prevad_rx.StreamFailedError` and no
    position (``sample_rate`` 0, so ``time`` and ``delay`` are NaN).
    """

    kind: EventKind
    stream_id: str
    sample: int
    sample_rate: int
    decided_at_sample: int
    segment: Segment | None = None
    error: StreamFailedError | None = None

    @property
    def time(self) -> float:
        """The boundary's position in seconds."""
        return self.sample / self.sample_rate if self.sample_rate else math.nan

    @property
    def delay(self) -> float:
        """Seconds of audio after the boundary needed to decide it exactly."""
        if not self.sample_rate:
            return math.nan
        return (self.decided_at_sample - self.sample) / self.sample_rate

    def __repr__(self) -> str:
        extra = f", error={self.error!r}" if self.error is not None else ""
        return (
            f"SpeechEvent(kind={self.kind!r}, stream_id={self.stream_id!r}, "
            f"time={self.time:.3f}, sample={self.sample}{extra})"
        )


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """In-band failure of one stream, forwarded by every operator in place of items."""

    stream_id: str
    error: StreamFailedError


@dataclass(frozen=True, slots=True, eq=False)
class StreamResult:
    """What :meth:`VADStream.close` returns: all segments and, if kept, all probabilities."""

    stream_id: str
    sample_rate: int
    source_sample_rate: int
    num_samples: int
    segments: tuple[Segment, ...]
    probabilities: NDArray[np.float32] | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio processed."""
        return self.num_samples / self.sample_rate
