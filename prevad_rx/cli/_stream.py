"""``prevad-rx stream``: live VAD over raw PCM16 from standard input, events printed as they happen.

sox -d -t raw -r 16000 -e signed -b 16 -c 1 - | prevad-rx stream
ffmpeg -i input.mp3 -f s16le -ac 1 -ar 16000 - | prevad-rx stream --format json

Sample positions in the JSON events are at the input's own ``--rate`` (as ``detect``
reports them at the file's rate), and every event carries that ``sample_rate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._types import SpeechEvent
from prevad_rx.cli._files import UserError
from prevad_rx.cli._formats import at_rate

__all__ = ["stream_stdin"]

#: Chunks read ahead of the engine: bounds memory when the input is faster than real time.
_READ_AHEAD = 4


def _line(event: SpeechEvent, fmt: str, input_rate: int) -> str:
    if fmt == "json":
        record: dict[str, object] = {"event": event.kind, "stream": event.stream_id}
        if event.kind == "error":
            record["error"] = str(event.error)
        else:
            record["time"] = round(event.time, 3)
            record["decided_at"] = round(event.decided_at_sample / event.sample_rate, 3)
            record["sample_rate"] = input_rate
        if event.segment is not None:
            segment = event.segment
            record["segment"] = at_rate(segment.to_dict(), segment.sample_rate, input_rate)
        return json.dumps(record)
    if event.kind == "start":
        return f"{event.time:9.3f}  speech starts"
    if event.kind == "end" and event.segment is not None:
        s = event.segment
        return f"{event.time:9.3f}  speech ends    {s.start:.3f}-{s.end:.3f} ({s.duration:.3f} s)"
    return f"error: {event.error}"


class _Printer:
    """Prints each event; once the output fails (``| head`` has gone), prints nothing more.

    ``on_failed`` is then called once, to stop the reading. The output's descriptor is
    pointed at /dev/null, so that the lines still in its buffer are not flushed into the
    broken pipe again at exit (Python's "Exception ignored ... BrokenPipeError").
    """

    def __init__(
        self, fmt: str, out: TextIO, input_rate: int, on_failed: Callable[[], None]
    ) -> None:
        self._fmt = fmt
        self._out = out
        self._rate = input_rate
        self._on_failed = on_failed
        self.failure: OSError | None = None

    def __call__(self, event: SpeechEvent) -> None:
        if self.failure is None:
            self.write(_line(event, self._fmt, self._rate))

    def write(self, line: str) -> None:
        if self.failure is not None:
            return
        try:
            print(line, file=self._out, flush=True)
        except OSError as exc:
            self.failure = exc
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._out.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass  # not a real descriptor (an in-memory stream): nothing flushes it at exit
            self._on_failed()


def _start_reader(
    source: BinaryIO, size: int, loop: asyncio.AbstractEventLoop
) -> tuple[asyncio.Queue[bytes | BaseException | None], threading.Semaphore]:
    """Read ``size``-byte chunks (fewer at EOF; ``b""`` ends) on a daemon thread.

    A daemon thread, reading the file descriptor itself, so that Ctrl-C or an error
    never waits for input that may not come (a microphone, an idle pipe).
    """
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    slots = threading.Semaphore(_READ_AHEAD)
    try:
        fd: int | None = source.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # an in-memory stream: read it through its own method

    def read_chunk() -> bytes:
        if fd is None:
            return source.read(size)
        parts: list[bytes] = []
        got = 0
        while got < size:
            part = os.read(fd, size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def hand_over(item: bytes | BaseException) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def pump() -> None:
        while True:
            slots.acquire()
            try:
                data = read_chunk()
            except OSError as exc:
                hand_over(exc)
                return
            if not hand_over(data) or not data:
                return

    threading.Thread(target=pump, name="prevad-rx-stdin", daemon=True).start()
    return queue, slots


def _is_terminal(source: BinaryIO) -> bool:
    try:
        return source.isatty()
    except (AttributeError, OSError, ValueError):
        return False


async def stream_stdin(
    *,
    config: VADConfig,
    sample_rate: int,
    chunk_ms: int,
    fmt: str,
    backend: str,
    workers: int | None,
    backend_options: dict[str, Any] | None = None,
    source: BinaryIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Read PCM16-LE mono from ``source`` (stdin) in ``chunk_ms`` pieces until EOF."""
    if source is None:
        if sys.stdin is None:
            raise UserError("standard input is closed: pipe raw PCM16 into `prevad-rx stream`")
        source = sys.stdin.buffer
    if out is None:
        if sys.stdout is None:
            raise UserError("standard output is closed: nowhere to print the events")
        out = sys.stdout
    chunk_bytes = max(2, sample_rate * chunk_ms // 1000 * 2)
    loop = asyncio.get_running_loop()
    if _is_terminal(source):
        raise UserError(
            "standard input is a terminal: pipe raw PCM16 in (e.g. `sox -d -t raw -r 16000 "
            "-e signed -b 16 -c 1 - | prevad-rx stream`), or use `prevad-rx detect FILE`",
            status=2,
        )
    async with VADEngine(backend, workers, config, backend_options=backend_options) as engine:
        stream = engine.open_stream("stdin", sample_rate=sample_rate)
        queue, slots = _start_reader(source, chunk_bytes, loop)

        def stop_reading() -> None:  # None in the queue: the output is gone
            with contextlib.suppress(RuntimeError):  # a closed loop: the reading has ended
                loop.call_soon_threadsafe(queue.put_nowait, None)

        printer = _Printer(fmt, out, sample_rate, stop_reading)
        stream.subscribe(printer)
        carry = b""
        first = True
        while True:
            item = await queue.get()
            slots.release()
            if isinstance(item, BaseException):
                raise item
            if not item:  # end of input, or nowhere left to print
                break
            if first and item[:4] == b"RIFF" and item[8:12] == b"WAVE":
                raise UserError(
                    "standard input is a WAV file, not raw PCM16: use `prevad-rx detect FILE`, "
                    "or send the samples alone (e.g. `sox in.wav -t raw -r 16000 -e signed "
                    "-b 16 -c 1 - | prevad-rx stream`)"
                )
            first = False
            data = carry + item
            usable = len(data) - len(data) % 2  # an odd byte waits for its partner
            carry = data[usable:]
            await stream.push(data[:usable])
        if carry and printer.failure is None:
            print(
                "prevad-rx: warning: input ended with half a sample (1 byte dropped)",
                file=sys.stderr,
            )
        result = await stream.close()
    if fmt == "text":
        printer.write(f"{len(result.segments)} segments in {result.duration:.2f} s of audio")
    if isinstance(printer.failure, BrokenPipeError):
        return 0  # the reader went away (`| head`): what it wanted has been printed
    if printer.failure is not None:
        raise printer.failure  # e.g. a full disk: one line, status 1
    return 0
