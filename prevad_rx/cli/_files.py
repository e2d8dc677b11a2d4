"""Reading audio files for the command line: WAV/FLAC/OGG (soundfile), any rate, read in blocks.

Every problem with a file becomes a :class:`UserError` whose message starts with the
file's name, so a batch can report it on one line and carry on with the other files.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prevad_rx._audio import validate_sample_rate
from prevad_rx._errors import AudioFormatError

__all__ = [
    "AudioFileInfo",
    "UserError",
    "check_output_dir",
    "check_output_file",
    "check_readable",
    "read_blocks",
    "read_all",
]


class UserError(Exception):
    """An error caused by the command's input, reported as one line.

    ``status`` is the exit status: 1 for bad input (the default), 2 for bad usage.
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def display_name(path: Path | str) -> str:
    """``path`` as printable text: bytes that are not UTF-8 shown as ``\\xNN`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_output_dir(path: Path, option: str) -> None:
    """Refuse (status 2) a directory ``path`` that cannot be made or written, before any
    work: the nearest existing folder on its way must be a directory one may write to."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {display_name(path)}: exists and is not a directory", status=2)
    _check_parents(path, option)


def check_output_file(path: Path, option: str) -> None:
    """Refuse (status 2) an output file ``path`` that cannot be written, before any work."""
    if path.is_dir():
        raise UserError(f"{option} {display_name(path)}: is a directory", status=2)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {display_name(path)}: permission denied", status=2)
    _check_parents(path.parent, option, of=path)


def _check_parents(folder: Path, option: str, of: Path | None = None) -> None:
    target = display_name(of if of is not None else folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {target}: {display_name(existing)} is not a directory", status=2)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {target}: {display_name(existing)} is not writable", status=2)


@dataclass(frozen=True)
class AudioFileInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int
    #: offset of a WAV's data size field that says 0 although audio follows (see
    #: :func:`_wav_layout`), read as "to the end"; None for any other file
    unknown_size_at: int | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def name(self) -> str:
        """The path as given, printable (see :func:`display_name`)."""
        return display_name(self.path)


def _libsndfile_reason(exc: Exception) -> str:
    reason = str(getattr(exc, "error_string", None) or exc).strip()
    if reason.lower().startswith("error :"):  # some libsndfile messages carry their own prefix
        reason = reason[len("error :") :].strip()
    return reason.rstrip(".")


@dataclass(frozen=True)
class _WavLayout:
    #: where the data chunk's size field lies, and what it says
    size_at: int
    size: int
    #: bytes after the data chunk's header, and the rate they play at
    present: int
    bytes_per_second: int

    def shortfall(self) -> tuple[float, float] | None:
        """``(announced, present)`` seconds if the file is cut short, else None. A size of
        0 or 0xFFFFFFFF is what writers to a pipe leave (length unknown), not truncation."""
        if self.size in (0, 0xFFFFFFFF) or self.present >= self.size:
            return None
        if self.bytes_per_second <= 0:
            return None
        return self.size / self.bytes_per_second, self.present / self.bytes_per_second


def _wav_layout(path: Path) -> _WavLayout | None:
    """Where a RIFF/WAVE file's data chunk lies (None for any other file).

    libsndfile quietly shortens a cut file to the frames present, and reads a data size
    of 0 as no audio at all: the header tells both cases apart.
    """
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size_of_file = os.fstat(handle.fileno()).st_size
        bytes_per_second = 0
        for _ in range(64):  # chunks before "data": a handful in real files
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"data":
                at = handle.tell()
                return _WavLayout(at - 4, size, size_of_file - at, bytes_per_second)
            if kind == b"fmt " and size >= 16:
                fmt = handle.read(16)
                bytes_per_second = struct.unpack("<I", fmt[8:12])[0]
                handle.seek(size - 16 + (size & 1), os.SEEK_CUR)
            else:
                handle.seek(size + (size & 1), os.SEEK_CUR)
    return None


class _SizeUnknown(io.FileIO):
    """A WAV file read with its data size field (4 bytes at ``at``) as 0xFFFFFFFF, which
    libsndfile reads to the end of the file, where the file says 0."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__(path, "rb")
        self._at = at

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        if data is None or start >= self._at + 4 or start + len(data) <= self._at:
            return data or b""
        patched = bytearray(data)
        for i in range(max(self._at, start), min(self._at + 4, start + len(data))):
            patched[i - start] = 0xFF
        return bytes(patched)

    def readinto(self, buffer: Any, /) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _source(path: Path, unknown_size_at: int | None) -> Any:
    """What soundfile opens: the path, or the file with its data size read as unknown."""
    if unknown_size_at is None:
        return os.fsencode(path)
    return _SizeUnknown(path, unknown_size_at)


def check_readable(path: Path) -> AudioFileInfo:
    """Open ``path`` as audio (raising :class:`UserError` with one clear line if not).

    Only regular files are read: a pipe or device (``/dev/stdin`` fed by a pipe, a FIFO)
    would be consumed by this check or block forever, so it is refused.
    """
    import soundfile as sf

    name = display_name(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except OSError as exc:
        raise UserError(f"{name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{name}: is a directory")
    if not stat.S_ISREG(mode):
        raise UserError(
            f"{name}: not a regular file (a pipe or device); save the audio to a file, "
            "or pipe raw PCM16 into `prevad-rx stream`"
        )
    try:
        layout = _wav_layout(path)
    except OSError as exc:
        raise UserError(f"{name}: {exc.strerror or exc}") from None
    unknown_at = layout.size_at if layout and layout.size == 0 and layout.present else None
    try:
        source = _source(path, unknown_at)
        try:
            info = sf.info(source)
        finally:
            if not isinstance(source, bytes):
                source.close()
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UserError(f"{name}: cannot read audio ({_libsndfile_reason(exc)})") from None
    except OSError as exc:
        raise UserError(f"{name}: {exc.strerror or exc}") from None
    try:
        rate = validate_sample_rate(int(info.samplerate))
    except AudioFormatError as exc:
        raise UserError(f"{name}: {exc}") from None
    frames = int(info.frames)
    if not 0 <= frames < 2**62:  # libsndfile's "length unknown" (a FLAC without a count)
        frames = 0
    shortfall = layout.shortfall() if layout else None
    if shortfall is not None:
        announced, present = shortfall
        raise UserError(
            f"{name}: truncated: its header announces {announced:.2f} s of audio, "
            f"the file holds {present:.2f} s"
        )
    return AudioFileInfo(path, rate, frames, int(info.channels), unknown_at)


def read_blocks(info: AudioFileInfo, block_seconds: float) -> Iterator[np.ndarray]:
    """The file's audio as float32 mono blocks (channels averaged), without loading it whole.

    A decoding failure part-way, or fewer frames than the file announced, raises
    :class:`UserError` naming the file.
    """
    import soundfile as sf

    block = max(1, int(block_seconds * info.sample_rate))
    done = 0
    try:
        with sf.SoundFile(_source(info.path, info.unknown_size_at)) as handle:
            while True:
                data = handle.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                done += len(data)
                if data.shape[1] > 1:
                    yield data.mean(axis=1, dtype=np.float32)
                else:
                    yield data[:, 0].copy()
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UserError(
            f"{info.name}: cannot read audio after {done / info.sample_rate:.2f} s "
            f"({_libsndfile_reason(exc)})"
        ) from None
    except OSError as exc:
        raise UserError(f"{info.name}: {exc.strerror or exc}") from None
    if done < info.frames:
        raise UserError(
            f"{info.name}: truncated: its header announces {info.duration:.2f} s of audio, "
            f"the file holds {done / info.sample_rate:.2f} s"
        )


def read_all(info: AudioFileInfo) -> np.ndarray:
    blocks = list(read_blocks(info, 60.0))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
