"""Basic usage: the single-stream AsyncParallelVAD facade.

    python examples/basic_usage.py [FILE]

Feeds a file in 2 s chunks, as a service receiving audio would, and prints each
speech segment as soon as it is final, then the whole list.
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf

import prevad_rx as pv

DEFAULT = Path(__file__).parent / "audio" / "conversation.wav"


async def main(path: Path) -> None:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1, dtype="float32")  # mono: channels averaged
    async with pv.AsyncParallelVAD(
        backend_type="onnx", num_workers=2, threshold=0.5, sample_rate=rate
    ) as vad:
        step = 2 * rate
        for start in range(0, audio.size, step):
            for segment in await vad.process_chunk(audio[start : start + step]):
                print(f"final: {segment.start_time_ms:8.0f} - {segment.end_time_ms:8.0f} ms")
        segments = await vad.get_results()
    print(f"{len(segments)} segments in {audio.size / rate:.1f} s of audio")


if __name__ == "__main__":
    pv.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
