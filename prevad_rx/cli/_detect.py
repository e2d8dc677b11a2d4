"""``prevad-rx detect``: speech segments of audio files, every file a concurrent stream."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx.cli._files import AudioFileInfo, UserError, check_readable, read_blocks
from prevad_rx.cli._formats import EXTENSIONS, FileResult, render

__all__ = ["detect"]

#: Seconds of audio per chunk pushed when reading files.
FILE_CHUNK_SECONDS = 10.0


def _at_source_rate(segment: dict[str, Any], rate: int, source_rate: int) -> dict[str, Any]:
    """Sample positions at the file's own rate (the engine reports them at ``rate``)."""
    if rate != source_rate:
        for key in ("start_sample", "end_sample"):
            segment[key] = round(segment[key] * source_rate / rate)
    return segment


async def _detect_file(engine: VADEngine, info: AudioFileInfo, progress: Any) -> FileResult:
    stream = engine.open_stream(str(info.path), sample_rate=info.sample_rate)
    for block in read_blocks(info, FILE_CHUNK_SECONDS):
        await stream.push(block)
        progress.update(block.size / info.sample_rate)
    result = await stream.close()
    segments = [
        _at_source_rate(s.to_dict(), result.sample_rate, info.sample_rate) for s in result.segments
    ]
    return FileResult(str(info.path), info.sample_rate, info.duration, segments)


async def detect(
    files: list[Path],
    *,
    config: VADConfig,
    backend: str,
    workers: int | None,
    fmt: str,
    output: Path | None,
    max_open_files: int = 8,
) -> int:
    """Detect speech in ``files``; print (or write to ``output``) in ``fmt``."""
    infos = [check_readable(path) for path in files]  # fail fast, before the model loads
    if output is None and fmt == "audacity" and len(infos) > 1:
        raise UserError("audacity labels hold one file: give one FILE or use --output DIR")
    if output is not None:
        if output.exists() and not output.is_dir():
            raise UserError(f"{output}: not a directory")
        output.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    total = sum(info.duration for info in infos)
    progress = tqdm(
        total=round(total, 1),
        unit="s",
        unit_scale=True,
        desc="detect",
        disable=None,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]",
    )
    gate = asyncio.Semaphore(max_open_files)  # bounds memory: blocks in flight per file

    async def one(engine: VADEngine, info: AudioFileInfo) -> FileResult:
        async with gate:
            return await _detect_file(engine, info, progress)

    first = True
    try:
        async with VADEngine(backend, workers, config) as engine:
            tasks = [asyncio.create_task(one(engine, info)) for info in infos]
            for task in tasks:  # in the order given, each as soon as it (and those before) end
                result = await task
                text = render(fmt, [result], header=first or output is not None)
                first = False
                if output is None:
                    progress.clear()
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    progress.refresh()
                else:
                    target = output / (Path(result.file).stem + EXTENSIONS[fmt])
                    target.write_text(text)
    finally:
        progress.close()
    return 0
