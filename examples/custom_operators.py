"""Your own operators in the chain: pre-processing before slicing, post-processing after events.

    python examples/custom_operators.py [FILE]

Builds the pipeline by hand from the five operators and inserts

* a gain and a first-order high-pass filter (per stream) before ``window_slices``;
* a filter that keeps only segments longer than 1 s, and a map to a plain dict,
  after ``emit_events``,

then consumes the result with ``async for``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import reactivex as rx
import soundfile as sf
from reactivex import Observable
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx.operators import (
    emit_events,
    merge_segments,
    parallel_map_on_pool,
    reorder_by_seq,
    window_slices,
)

DEFAULT = Path(__file__).parent / "audio" / "conversation.wav"


def gain(factor: float):  # type: ignore[no-untyped-def]
    """Scale every chunk's samples."""
    return ops.map(
        lambda c: pv.AudioChunk(c.stream_id, c.samples * factor, c.sample_rate, c.end_of_stream)
    )


def high_pass(alpha: float = 0.97):  # type: ignore[no-untyped-def]
    """y[n] = x[n] - alpha * x[n-1], carrying x[n-1] across chunks of each stream."""
    last: dict[str, float] = {}

    def apply(chunk: pv.AudioChunk) -> pv.AudioChunk:
        x = chunk.samples
        previous = np.concatenate(([last.get(chunk.stream_id, 0.0)], x[:-1])).astype(np.float32)
        if x.size:
            last[chunk.stream_id] = float(x[-1])
        return pv.AudioChunk(
            chunk.stream_id, x - alpha * previous, chunk.sample_rate, chunk.end_of_stream
        )

    return ops.map(apply)


def long_segments_only(min_seconds: float):  # type: ignore[no-untyped-def]
    def operator(source: Observable[pv.SpeechEvent]) -> Observable[dict[str, object]]:
        return source.pipe(
            ops.filter(lambda e: e.kind == "end" and e.segment.duration >= min_seconds),
            ops.map(
                lambda e: {
                    "stream": e.stream_id,
                    "start": round(e.segment.start, 3),
                    "end": round(e.segment.end, 3),
                }
            ),
        )

    return operator


async def main(path: Path) -> None:
    audio, rate = sf.read(path, dtype="float32")
    chunks = [pv.AudioChunk("file", audio[i : i + rate], rate) for i in range(0, audio.size, rate)]
    chunks.append(pv.AudioChunk("file", np.zeros(0, np.float32), rate, end_of_stream=True))
    with pv.WorkerPool("onnx", num_workers=2) as pool:
        pipeline = rx.from_iterable(chunks).pipe(
            gain(0.9),
            high_pass(),
            window_slices(frames_per_slice=16),
            parallel_map_on_pool(pool),
            reorder_by_seq(),
            merge_segments(pv.VADConfig(threshold=0.5)),
            emit_events(),
            long_segments_only(1.0),
        )
        async for segment in pv.aiter_observable(pipeline):
            print(segment)


if __name__ == "__main__":
    pv.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
