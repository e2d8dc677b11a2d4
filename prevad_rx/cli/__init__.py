"""The ``prevad-rx`` command line.

::

    prevad-rx detect FILE... [--format json|rttm|csv|audacity] [--output DIR]
    prevad-rx stream [--rate 16000] [--chunk-ms 32] [--format text|json] < pcm16
    prevad-rx plot FILE -o out.png
    prevad-rx bench [--scenario ...] [--quick]
    prevad-rx vllm-model DIR
    prevad-rx vllm-serve [--host 127.0.0.1] [--port 8000] [-- vllm serve options]

User errors (a missing file, an unreadable format, a bad option) print one line
on stderr and exit with status 1 (bad input) or 2 (bad usage); Ctrl-C exits with
130; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from prevad_rx._audio import validate_sample_rate
from prevad_rx._config import VADConfig
from prevad_rx._errors import BackendError, ConfigError, PrevadError, UnsupportedSampleRateError
from prevad_rx._runtime import run
from prevad_rx._version import __version__
from prevad_rx.cli._files import UserError
from prevad_rx.cli._formats import FORMATS

__all__ = ["main"]


#: Most worker threads the command line starts: each holds its own model instance
#: (about 13 MB, 0.15 s to load), and past about 8 the engine gets no faster.
MAX_WORKERS = 64
#: Longest ``stream --chunk-ms``: one minute of audio per read.
MAX_CHUNK_MS = 60_000


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


_positive_int = _int_in(1)
_workers = _int_in(1, MAX_WORKERS)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("must not be NaN")
    return value


def _backend_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value as an int, a float, a bool or None where it reads as one."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    words: dict[str, Any] = {"true": True, "false": False, "none": None}
    if raw.lower() in words:
        return key, words[raw.lower()]
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw


#: each detection option's flag, by the VADConfig field it sets (for error messages)
_FLAGS = {
    "neg_threshold": "--neg-threshold",
    "threshold": "--threshold",
    "min_speech_duration_ms": "--min-speech-ms",
    "min_silence_duration_ms": "--min-silence-ms",
    "speech_pad_ms": "--speech-pad-ms",
    "max_speech_duration_s": "--max-speech-s",
}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection (silero-vad's parameters)")
    group.add_argument(
        "--threshold", type=_number, default=0.5, help="speech probability, 0..1 (default: 0.5)"
    )
    group.add_argument(
        "--neg-threshold",
        type=_number,
        default=None,
        help="exit threshold (default: threshold - 0.15, at least 0.01)",
    )
    group.add_argument(
        "--min-speech-ms", type=_number, default=250, help="shortest speech kept (default: 250)"
    )
    group.add_argument(
        "--min-silence-ms",
        type=_number,
        default=100,
        help="silence that ends speech (default: 100)",
    )
    group.add_argument(
        "--speech-pad-ms",
        type=_number,
        default=30,
        help="padding added to each side of a segment (default: 30)",
    )
    group.add_argument(
        "--max-speech-s",
        type=_number,
        default=math.inf,
        help="longest segment before it is split (default: no limit)",
    )
    run_group = parser.add_argument_group("engine")
    run_group.add_argument("--backend", default="onnx", help="model backend (default: onnx)")
    run_group.add_argument(
        "--backend-option",
        type=_backend_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the backend, e.g. url=http://127.0.0.1:8000 for vllm-api "
        "(repeatable; see docs/backends.md)",
    )
    run_group.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help=f"worker threads, 1..{MAX_WORKERS} (default: CPU count)",
    )


def _config(args: argparse.Namespace) -> VADConfig:
    if args.neg_threshold is not None and args.neg_threshold > args.threshold:
        raise UserError(
            f"--neg-threshold {args.neg_threshold:g} is above --threshold {args.threshold:g}: "
            "speech would end on frames that count as speech",
            status=2,
        )
    try:
        return VADConfig(
            threshold=args.threshold,
            neg_threshold=args.neg_threshold,
            min_speech_duration_ms=args.min_speech_ms,
            min_silence_duration_ms=args.min_silence_ms,
            speech_pad_ms=args.speech_pad_ms,
            max_speech_duration_s=args.max_speech_s,
        )
    except ConfigError as exc:  # said with the flag the user typed
        message = str(exc)
        for field, flag in _FLAGS.items():
            if message.startswith(field + " "):
                message = flag + message[len(field) :]
                break
        raise UserError(f"{message} (see `prevad-rx {args.command} --help`)", status=2) from exc


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"prevad-rx: error: {message} (see `{self.prog} --help`)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prevad-rx",
        description="Exact, parallel, streaming voice activity detection (Silero v6.2).",
    )
    parser.add_argument("--version", action="version", version=f"prevad-rx {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    detect = commands.add_parser(
        "detect",
        help="find speech segments in audio files (WAV/FLAC/OGG, any rate)",
        description="Find speech in audio files; each file is a concurrent stream.",
    )
    detect.add_argument("files", nargs="+", type=Path, metavar="FILE")
    detect.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="json",
        help="json: one object per file per line (default); rttm; csv; audacity: a label track",
    )
    detect.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="write one file per input into DIR instead of stdout",
    )
    _add_model_options(detect)

    stream = commands.add_parser(
        "stream",
        help="live VAD over raw PCM16 from stdin, events as they happen",
        description="Read raw PCM16-LE mono from stdin (e.g. from `sox -d` or ffmpeg) "
        "in real time and print speech events as they are decided.",
    )
    stream.add_argument(
        "--rate", type=_positive_int, default=16000, help="sample rate in Hz (default: 16000)"
    )
    stream.add_argument(
        "--chunk-ms",
        type=_int_in(1, MAX_CHUNK_MS),
        default=32,
        help=f"read and push this much audio at a time, 1..{MAX_CHUNK_MS} (default 32)",
    )
    stream.add_argument(
        "--format", choices=["text", "json"], default="text", help="(default: text)"
    )
    _add_model_options(stream)

    plot = commands.add_parser(
        "plot",
        help="picture of a file: waveform, speech probability, segments",
        description="Draw the waveform, each frame's speech probability with the "
        "thresholds, and the detected segments shaded (needs matplotlib).",
    )
    plot.add_argument("file", type=Path, metavar="FILE")
    plot.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="image file (.png, .svg or .pdf)",
    )
    _add_model_options(plot)

    bench = commands.add_parser(
        "bench", help="benchmark against the reference ways of running Silero, in one run"
    )
    bench.add_argument(
        "--scenario",
        action="append",
        choices=[
            "encoder",
            "offline",
            "latency",
            "live",
            "memory",
            "scaling",
            "packets",
            "shard-scaling",
            "shard-packets",
        ],
        help="run only these (repeatable; default: all)",
    )
    bench.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help=f"most worker threads, shards or cores used, 1..{MAX_WORKERS} (default: CPUs)",
    )
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
    model = commands.add_parser(
        "vllm-model",
        help="write the model directory vLLM loads (config.json + weights)",
        description="Write config.json and model.safetensors for the Silero plugin "
        "(needs the vllm extra: safetensors).",
    )
    model.add_argument("directory", type=Path, metavar="DIR")

    serve = commands.add_parser(
        "vllm-serve",
        help="start `vllm serve` with the Silero plugin and the right flags",
        description="Exec `vllm serve` on the Silero model directory with the IO "
        "processor plugin and the engine flags it needs. Arguments after "
        "`--` go to vllm serve unchanged.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive_int, default=8000)
    serve.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory (default: written to the user cache)",
    )
    serve.add_argument(
        "--max-num-seqs",
        type=_positive_int,
        default=256,
        help="most requests batched in one engine step",
    )
    serve.add_argument(
        "--print-command", action="store_true", help="print the command instead of running it"
    )
    serve.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    return parser


def _vllm_model(args: argparse.Namespace) -> int:
    try:
        from prevad_rx.backends.vllm_plugin._model_dir import write_model_dir

        directory = write_model_dir(args.directory)
    except ImportError as exc:
        raise UserError(
            f"vllm-model needs safetensors (pip install prevad-rx[vllm]): {exc}"
        ) from exc
    print(directory)
    return 0


def _vllm_serve(args: argparse.Namespace) -> int:
    import os

    from prevad_rx.backends._vllm_env import (
        ensure_model_dir,
        prepare_environment,
        serve_arguments,
    )

    if importlib.util.find_spec("vllm") is None and not args.print_command:
        raise UserError("vllm-serve needs vLLM in this environment (see docs/vllm.md)")
    prepare_environment(single_process=False)
    try:
        directory = ensure_model_dir(args.model_dir)
    except ImportError as exc:
        raise UserError(f"vllm-serve needs safetensors: {exc}") from exc
    extra = [a for a in args.extra if a != "--"]
    command = [
        sys.executable,
        "-m",
        "prevad_rx.backends.vllm_plugin._serve_main",
        "serve",
        *serve_arguments(directory, args.host, args.port, args.max_num_seqs),
        *extra,
    ]
    if args.print_command:
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    os.execv(sys.executable, command)  # the server replaces this process (its PID is ours)


def _bench(args: argparse.Namespace) -> int:
    from prevad_rx.bench import SCENARIOS, BenchOptions, run_benchmarks, write_results
    from prevad_rx.bench import progress_to_stderr as progress
    from prevad_rx.cli._files import check_output_dir, check_output_file

    check_output_dir(args.output, "--output")  # before the run, not after it
    if args.results is not None:
        check_output_file(args.results, "--results")
    options = BenchOptions(quick=args.quick, progress=progress)
    if args.workers:
        options.workers = args.workers
    results = run_benchmarks(options, args.scenario or tuple(SCENARIOS))
    write_results(results, args.output, args.results)
    print((args.output / "bench.md").read_text(), end="")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "bench":
        return _bench(args)
    if args.command == "vllm-model":
        return _vllm_model(args)
    if args.command == "vllm-serve":
        return _vllm_serve(args)
    config = _config(args)
    if args.command == "detect":
        from prevad_rx.cli._detect import detect

        return run(
            detect(
                args.files,
                config=config,
                backend=args.backend,
                backend_options=dict(args.backend_option),
                workers=args.workers,
                fmt=args.format,
                output=args.output,
            )
        )
    if args.command == "stream":
        from prevad_rx.cli._stream import stream_stdin

        rate = validate_sample_rate(args.rate)
        return run(
            stream_stdin(
                config=config,
                sample_rate=rate,
                chunk_ms=args.chunk_ms,
                fmt=args.format,
                backend=args.backend,
                backend_options=dict(args.backend_option),
                workers=args.workers,
            )
        )
    from prevad_rx.cli._plot import plot_file

    return run(
        plot_file(
            args.file,
            args.output,
            config=config,
            backend=args.backend,
            backend_options=dict(args.backend_option),
            workers=args.workers,
        )
    )


def _park_closed_std_fds() -> None:
    """Open /dev/null on a closed descriptor 0, 1 or 2 (``prevad-rx ... <&-``).

    Left closed, the number is reused by the event loop's own descriptors, and uvloop
    aborts the process when it closes one of them. ``sys.stdin`` and ``sys.stdout`` stay
    ``None`` (the commands that need them say so); messages for a closed stderr are dropped.
    """
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            if os.open(os.devnull, os.O_RDWR) != fd:  # the lowest free number: this one
                break
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prevad-rx`` console script."""
    _park_closed_std_fds()
    parser = _build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # pointed at the command's own --help, which lists its options
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return _dispatch(args)
    except UserError as exc:
        return _fail(str(exc), exc.status)
    except (ConfigError, UnsupportedSampleRateError) as exc:  # a bad option value
        return _fail(str(exc), 2)
    except PrevadError as exc:
        if isinstance(exc, BackendError) and str(exc).startswith("bad options for backend"):
            return _fail(
                f"{exc} (a backend's options are given with --backend-option KEY=VALUE)", 2
            )
        return _fail(str(exc), 1)
    except BrokenPipeError:  # e.g. `prevad-rx detect ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # e.g. an output path that cannot be written
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, prefix="prevad-rx: ")
    except MemoryError:
        return _fail("out of memory", 1)
    except Exception as exc:  # noqa: BLE001 - a defect: still one line, naming it
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)


def _fail(message: str, status: int, *, prefix: str = "prevad-rx: error: ") -> int:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"{prefix}{first_line}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
