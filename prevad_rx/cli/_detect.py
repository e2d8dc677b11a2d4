"""``prevad-rx detect``: speech segments of audio files, every file a concurrent stream.

A file that cannot be read or processed reports one line naming it on stderr; the
other files' results are still printed (or written), and the exit status is then 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._errors import PrevadError
from prevad_rx.cli._files import (
    AudioFileInfo,
    UserError,
    check_output_dir,
    check_readable,
    read_blocks,
)
from prevad_rx.cli._formats import EXTENSIONS, FileResult, at_rate, render

__all__ = ["detect"]

#: Seconds of audio per chunk pushed when reading files.
FILE_CHUNK_SECONDS = 10.0


@dataclass(frozen=True)
class _Job:
    stream_id: str
    info: AudioFileInfo
    target: Path | None  # the output file, with --output


def _identity(path: Path) -> object:
    """What makes two paths the same file: device and inode where it exists."""
    try:
        found = path.stat()
    except OSError:
        return os.path.realpath(path)
    return (found.st_dev, found.st_ino)


def _targets(files: list[Path], fmt: str, output: Path) -> list[Path | None]:
    """Each file's output file; None for a repeat of a file given before (written once).

    Two different files that would write the same output file are a usage error.
    """
    owners: dict[Path, tuple[Path, object]] = {}
    targets: list[Path | None] = []
    for path in files:
        target = output / (path.stem + EXTENSIONS[fmt])
        identity = _identity(path)
        if target in owners:
            first, first_identity = owners[target]
            if first_identity != identity:
                raise UserError(
                    f"{first} and {path} would both be written to {target}; "
                    "give files with distinct names, or run them separately",
                    status=2,
                )
            targets.append(None)
            continue
        owners[target] = (path, identity)
        targets.append(target)
    return targets


class _Progress:
    """A tqdm bar in seconds of audio that never runs past its total."""

    def __init__(self, total: float) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="s",
            unit_scale=True,
            desc="detect",
            disable=None,
            file=sys.stderr,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]",
        )

    def advance(self, seconds: float) -> None:
        left = self.bar.total - self.bar.n
        if left > 0 and seconds > 0:
            self.bar.update(min(seconds, left))

    def message(self, text: str) -> None:
        """A line on stderr without breaking the bar."""
        self.bar.write(text, file=sys.stderr)

    def stdout(self, text: str) -> None:
        self.bar.clear()
        sys.stdout.write(text)
        sys.stdout.flush()
        self.bar.refresh()


async def _detect_file(
    engine: VADEngine, job: _Job, advance: Callable[[float], None]
) -> FileResult:
    info = job.info
    stream = engine.open_stream(job.stream_id, sample_rate=info.sample_rate)
    done = 0.0
    frames = 0
    try:
        for block in read_blocks(info, FILE_CHUNK_SECONDS):
            await stream.push(block)
            frames += block.size
            seconds = block.size / info.sample_rate
            done += seconds
            advance(seconds)
        result = await stream.close()
    except UserError:  # the file failed part-way: end its stream now, not with the engine
        with contextlib.suppress(PrevadError):
            await stream.close()
        raise
    except PrevadError as exc:
        raise UserError(f"{info.name}: {exc}") from None
    finally:
        advance(info.duration - done)  # a failed file's share of the bar is finished too
    segments = [at_rate(s.to_dict(), result.sample_rate, info.sample_rate) for s in result.segments]
    return FileResult(info.name, info.sample_rate, frames / info.sample_rate, segments)


def _report(text: str, progress: _Progress | None = None) -> None:
    line = f"prevad-rx: error: {text}"
    if progress is None:
        print(line, file=sys.stderr, flush=True)
    else:
        progress.message(line)


async def detect(
    files: list[Path],
    *,
    config: VADConfig,
    backend: str,
    workers: int | None,
    fmt: str,
    output: Path | None,
    backend_options: dict[str, Any] | None = None,
    max_open_files: int = 8,
) -> int:
    """Detect speech in ``files``; print (or write to ``output``) in ``fmt``.

    Returns 0 when every file was processed, 1 when some could not be (each reported
    on stderr, the others' results still given).
    """
    if output is None and fmt == "audacity" and len(files) > 1:
        raise UserError(
            "audacity labels hold one file: give one FILE or use --output DIR", status=2
        )
    if output is None and sys.stdout is None:
        raise UserError("standard output is closed: use --output DIR")
    targets: list[Path | None] = [None] * len(files)
    if output is not None:
        targets = _targets(files, fmt, output)
        check_output_dir(output, "--output")

    failed = 0
    jobs: list[_Job] = []
    used: set[str] = set()
    for index, path in enumerate(files):  # checked before the model loads: quick feedback
        if output is not None and targets[index] is None:
            continue  # the same file again: processed and written once
        try:
            info = check_readable(path)
        except UserError as exc:
            _report(str(exc))
            failed += 1
            continue
        stream_id, repeat = info.name, 1
        while stream_id in used:  # a file given twice is a second stream, under its own id
            repeat += 1
            stream_id = f"{info.name}#{repeat}"
        used.add(stream_id)
        jobs.append(_Job(stream_id, info, targets[index]))
    if not jobs:
        return 1
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)

    progress = _Progress(sum(job.info.duration for job in jobs))
    gate = asyncio.Semaphore(max_open_files)  # bounds memory: blocks in flight per file

    async def one(engine: VADEngine, job: _Job) -> FileResult:
        async with gate:
            return await _detect_file(engine, job, progress.advance)

    first = True
    try:
        async with VADEngine(backend, workers, config, backend_options=backend_options) as engine:
            tasks = [asyncio.create_task(one(engine, job)) for job in jobs]
            try:
                for job, task in zip(jobs, tasks, strict=True):
                    # in the order given, each as soon as it (and those before) end
                    try:
                        result = await task
                    except UserError as exc:
                        _report(str(exc), progress)
                        failed += 1
                        continue
                    text = render(fmt, [result], header=first or job.target is not None)
                    first = False
                    if job.target is None:
                        progress.stdout(text)
                    else:
                        job.target.write_text(text, encoding="utf-8")
            finally:  # interrupted or failed: no task is left behind unawaited
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        progress.bar.close()
    return 1 if failed else 0
