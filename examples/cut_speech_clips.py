"""Cut a long recording into speech clips, one WAV file per segment.

    python examples/cut_speech_clips.py [FILE] [OUT_DIR]

Streams the file through the engine in 10 s blocks (a long file is never held in
memory whole) with ``keep_audio=True``, so every ``end`` event carries its segment's
samples, and writes each as ``OUT_DIR/<name>_NNN_<start>-<end>.wav`` as soon as it is
final. Positions and clips are at the processing rate (16 kHz for most inputs).
Without OUT_DIR the clips go to a new temporary directory, whose name is printed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import soundfile as sf

import prevad_rx as pv

DEFAULT = Path(__file__).parent / "audio" / "conversation.wav"


async def main(path: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write_clip(event: pv.SpeechEvent) -> None:
        if event.kind != "end" or event.segment is None or event.segment.audio is None:
            return
        segment = event.segment
        name = f"{path.stem}_{len(written):03d}_{segment.start:.2f}-{segment.end:.2f}.wav"
        sf.write(out_dir / name, segment.audio, segment.sample_rate, subtype="PCM_16")
        written.append(out_dir / name)
        print(f"{name}  ({segment.duration:.2f} s)")

    info = sf.info(str(path))
    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream(path.name, sample_rate=info.samplerate, keep_audio=True)
        stream.subscribe(write_clip)
        for block in sf.blocks(
            str(path), blocksize=10 * info.samplerate, dtype="float32", always_2d=True
        ):
            await stream.push(block.mean(axis=1, dtype="float32"))
        result = await stream.close()
    speech = sum(s.duration for s in result.segments)
    print(f"{len(written)} clips, {speech:.1f} s of speech out of {result.duration:.1f} s")
    print(f"clips in {out_dir}")


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if len(sys.argv) > 2:
        target = Path(sys.argv[2])
    else:
        target = Path(tempfile.mkdtemp(prefix="speech_clips_"))
    pv.run(main(source, target))
