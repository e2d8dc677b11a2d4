"""Your own operators in the chain: pre-processing before slicing, post-processing after events.

    python examples/custom_operators.py [FILE]

Builds the pipeline by hand from the five operators and inserts

* a gain and a first-order high-pass filter before ``window_slices``; the filter
  keeps one memory per stream, made by ``per_stream`` when the stream's first chunk
  comes and dropped after its last;
* after ``merge_segments``, ``long_segments``: holds each start event back until its
  segment ends and lets both through only when the segment lasts at least 1 s
  (per stream too: no start is ever left without its end);

runs it with ``run_pipeline`` and prints each long segment. Every operator is
typed, so mypy checks that each one takes what the one before it emits.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx.operators import (
    Operator,
    emit_events,
    merge_segments,
    parallel_map_on_pool,
    per_stream,
    reorder_by_seq,
    run_pipeline,
    window_slices,
)

DEFAULT = Path(__file__).parent / "audio" / "conversation.wav"

Chunks = pv.AudioChunk | pv.StreamFailure
Events = pv.SpeechEvent | pv.StreamFailure


def gain(factor: float) -> Operator[Chunks, Chunks]:
    """Scale every chunk's samples (stateless: a plain reactivex ``map``)."""

    def scale(item: Chunks) -> Chunks:
        if isinstance(item, pv.StreamFailure):
            return item
        return pv.AudioChunk(
            item.stream_id, item.samples * factor, item.sample_rate, item.end_of_stream
        )

    return ops.map(scale)


@dataclass
class _Memory:
    previous: float = 0.0  # the stream's last sample so far


def high_pass(alpha: float = 0.97) -> Operator[Chunks, Chunks]:
    """y[n] = x[n] - alpha * x[n-1], carrying x[n-1] from chunk to chunk of each stream."""

    def step(memory: _Memory, chunk: pv.AudioChunk) -> Iterator[pv.AudioChunk]:
        x = chunk.samples
        before = np.empty_like(x)
        if x.size:
            before[0] = memory.previous
            before[1:] = x[:-1]
            memory.previous = float(x[-1])
        yield pv.AudioChunk(
            chunk.stream_id, x - alpha * before, chunk.sample_rate, chunk.end_of_stream
        )

    return per_stream(step, state=lambda chunk: _Memory(), accepts=pv.AudioChunk, name="high_pass")


def long_segments(min_seconds: float) -> Operator[Events, Events]:
    """Only segments lasting ``min_seconds`` or more: start and end events, in pairs."""

    def step(held: list[pv.SpeechEvent], event: pv.SpeechEvent) -> list[pv.SpeechEvent]:
        if event.kind == "start":
            held.append(event)
            return []
        if event.kind == "end" and held:
            start = held.pop()
            assert event.segment is not None
            return [start, event] if event.segment.duration >= min_seconds else []
        return [event]  # an error event

    return per_stream(
        step,
        state=lambda event: [],
        done=lambda held: not held,  # nothing held: the stream's state can go
        accepts=pv.SpeechEvent,
        name="long_segments",
    )


async def main(path: Path) -> None:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1, dtype="float32")  # mono: channels averaged
    chunks = [pv.AudioChunk("file", audio[i : i + rate], rate) for i in range(0, audio.size, rate)]
    async with pv.WorkerPool("onnx", num_workers=2) as pool:
        events = await run_pipeline(
            chunks,  # the stream ends with the list: window_slices ends every open stream
            gain(0.9),
            high_pass(),
            window_slices(frames_per_slice=16),
            parallel_map_on_pool(pool),
            reorder_by_seq(),
            merge_segments(pv.VADConfig(threshold=0.5)),
            long_segments(1.0),
            emit_events(),
        )
    for event in events:
        if event.kind == "end":
            assert event.segment is not None
            print(
                {
                    "stream": event.stream_id,
                    "start": round(event.segment.start, 3),
                    "end": round(event.segment.end, 3),
                }
            )


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    pv.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
