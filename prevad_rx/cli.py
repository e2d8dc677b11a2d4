"""The ``prevad-rx`` command line.

``prevad-rx detect FILE...`` finds speech in audio files (WAV/FLAC/OGG, any
sample rate), each file a concurrent stream, and prints one JSON object per
file per line. User errors (a missing file, an unreadable format, a bad
option) print one line on stderr and exit with status 2 (usage) or 1 (input);
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._errors import PrevadError
from prevad_rx._runtime import run
from prevad_rx._version import __version__

__all__ = ["main"]

#: Seconds of audio per chunk pushed when reading files.
FILE_CHUNK_SECONDS = 10.0


class UserError(Exception):
    """An error caused by the command's input, reported as one line."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prevad-rx",
        description="Exact, parallel, streaming voice activity detection (Silero v6.2).",
    )
    parser.add_argument("--version", action="version", version=f"prevad-rx {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="find speech segments in audio files")
    detect.add_argument("files", nargs="+", type=Path, metavar="FILE")
    detect.add_argument("--backend", default="onnx", help="model backend (default: onnx)")
    detect.add_argument("--workers", type=_positive_int, default=None, help="worker threads")
    detect.add_argument("--threshold", type=float, default=0.5)
    detect.add_argument("--neg-threshold", type=float, default=None)
    detect.add_argument("--min-speech-ms", type=float, default=250)
    detect.add_argument("--min-silence-ms", type=float, default=100)
    detect.add_argument("--speech-pad-ms", type=float, default=30)
    detect.add_argument("--max-speech-s", type=float, default=float("inf"))

    bench = commands.add_parser(
        "bench", help="benchmark against the reference ways of running Silero, in one run"
    )
    bench.add_argument(
        "--scenario",
        action="append",
        choices=["offline", "latency", "live", "memory"],
        help="run only these (repeatable; default: all)",
    )
    bench.add_argument("--workers", type=_positive_int, default=None, help="worker threads")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    bench.add_argument(
        "--output",
        type=Path,
        default=Path("benchmarks/out"),
        help="folder for bench.json and bench.md (default: benchmarks/out)",
    )
    bench.add_argument(
        "--results", type=Path, default=None, help="also write the tables to this Markdown file"
    )
    return parser


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UserError(f"{path}: cannot read audio ({exc})") from exc
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    return np.ascontiguousarray(mono), int(rate)


async def _detect_file(engine: VADEngine, path: Path) -> dict[str, Any]:
    audio, rate = _read_audio(path)
    stream = engine.open_stream(str(path), sample_rate=rate)
    step = max(1, int(FILE_CHUNK_SECONDS * rate))
    for start in range(0, audio.size, step):
        await stream.push(audio[start : start + step])
    result = await stream.close()
    return {
        "file": str(path),
        "sample_rate": rate,
        "duration": round(audio.size / rate, 3),
        "segments": [
            _segment_at_source_rate(s.to_dict(), result.sample_rate, rate) for s in result.segments
        ],
    }


def _segment_at_source_rate(segment: dict[str, Any], rate: int, source_rate: int) -> dict[str, Any]:
    """Express sample positions at the file's own rate (they are computed at ``rate``)."""
    if rate != source_rate:
        for key in ("start_sample", "end_sample"):
            segment[key] = round(segment[key] * source_rate / rate)
    return segment


async def _detect(args: argparse.Namespace) -> int:
    config = VADConfig(
        threshold=args.threshold,
        neg_threshold=args.neg_threshold,
        min_speech_duration_ms=args.min_speech_ms,
        min_silence_duration_ms=args.min_silence_ms,
        speech_pad_ms=args.speech_pad_ms,
        max_speech_duration_s=args.max_speech_s,
    )
    for path in args.files:  # fail fast, before the model loads
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    async with VADEngine(args.backend, args.workers, config) as engine:
        tasks = [asyncio.create_task(_detect_file(engine, path)) for path in args.files]
        for task in tasks:  # print in the order given, each as soon as it (and those before) end
            print(json.dumps(await task), flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from prevad_rx.bench import SCENARIOS, BenchOptions, run_benchmarks, write_results
    from prevad_rx.bench import progress_to_stderr as progress

    options = BenchOptions(quick=args.quick, progress=progress)
    if args.workers:
        options.workers = args.workers
    results = run_benchmarks(options, args.scenario or tuple(SCENARIOS))
    write_results(results, args.output, args.results)
    print((args.output / "bench.md").read_text(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prevad-rx`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return run(_detect(args))
        if args.command == "bench":
            return _bench(args)
    except (UserError, PrevadError) as exc:
        print(f"prevad-rx: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, PrevadError) and isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
