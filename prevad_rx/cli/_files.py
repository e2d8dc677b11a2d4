"""Reading audio files for the command line: WAV/FLAC/OGG (soundfile), any rate, read in blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AudioFileInfo", "UserError", "check_readable", "read_blocks", "read_all"]


class UserError(Exception):
    """An error caused by the command's input, reported as one line."""


@dataclass(frozen=True)
class AudioFileInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def check_readable(path: Path) -> AudioFileInfo:
    """Open ``path`` as audio (raising :class:`UserError` with one clear line if not)."""
    import soundfile as sf

    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UserError(f"{path}: cannot read audio ({exc})") from exc
    if info.frames <= 0 and info.duration <= 0:
        raise UserError(f"{path}: holds no audio")
    return AudioFileInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def read_blocks(info: AudioFileInfo, block_seconds: float) -> Iterator[np.ndarray]:
    """The file's audio as float32 mono blocks (channels averaged), without loading it whole."""
    import soundfile as sf

    block = max(1, int(block_seconds * info.sample_rate))
    with sf.SoundFile(str(info.path)) as handle:
        while True:
            data = handle.read(block, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0].copy()


def read_all(info: AudioFileInfo) -> np.ndarray:
    blocks = list(read_blocks(info, 60.0))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
