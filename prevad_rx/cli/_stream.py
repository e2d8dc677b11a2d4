"""``prevad-rx stream``: live VAD over raw PCM16 from standard input, events printed as they happen.

sox -d -t raw -r 16000 -e signed -b 16 -c 1 - | prevad-rx stream
ffmpeg -i input.mp3 -f s16le -ac 1 -ar 16000 - | prevad-rx stream --format json
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import BinaryIO, TextIO

from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._types import SpeechEvent

__all__ = ["stream_stdin"]


def _printer(fmt: str, out: TextIO) -> object:
    def show(event: SpeechEvent) -> None:
        if fmt == "json":
            record: dict[str, object] = {"event": event.kind, "stream": event.stream_id}
            if event.kind == "error":
                record["error"] = str(event.error)
            else:
                record["time"] = round(event.time, 3)
                record["decided_at"] = round(event.decided_at_sample / event.sample_rate, 3)
            if event.segment is not None:
                record["segment"] = event.segment.to_dict()
            line = json.dumps(record)
        elif event.kind == "start":
            line = f"{event.time:9.3f}  speech starts"
        elif event.kind == "end" and event.segment is not None:
            s = event.segment
            line = (
                f"{event.time:9.3f}  speech ends    {s.start:.3f}-{s.end:.3f} ({s.duration:.3f} s)"
            )
        else:
            line = f"error: {event.error}"
        print(line, file=out, flush=True)

    return show


async def stream_stdin(
    *,
    config: VADConfig,
    sample_rate: int,
    chunk_ms: int,
    fmt: str,
    backend: str,
    workers: int | None,
    source: BinaryIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Read PCM16-LE mono from ``source`` (stdin) in ``chunk_ms`` pieces until EOF."""
    source = source or sys.stdin.buffer
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    chunk_bytes = max(2, sample_rate * chunk_ms // 1000 * 2)
    async with VADEngine(backend, workers, config) as engine:
        stream = engine.open_stream("stdin", sample_rate=sample_rate)
        stream.subscribe(_printer(fmt, out))  # type: ignore[arg-type]
        carry = b""
        while True:
            data = await loop.run_in_executor(None, source.read, chunk_bytes)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % 2  # an odd byte waits for its partner
            carry = data[usable:]
            await stream.push(data[:usable])
        if carry:
            print(
                "prevad-rx: warning: input ended with half a sample (1 byte dropped)",
                file=sys.stderr,
            )
        result = await stream.close()
    if fmt == "text":
        print(f"{len(result.segments)} segments in {result.duration:.2f} s of audio", file=out)
    return 0
