"""Many concurrent streams on one engine, events delivered to callbacks.

    python examples/many_streams.py [STREAMS]

Simulates STREAMS callers (default 20) sending 32 ms packets of the example
recording, each starting at a different offset, all through one VADEngine and
one worker pool. Each stream's callback prints its speech starts and ends.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import soundfile as sf

import prevad_rx as pv

AUDIO = Path(__file__).parent / "audio" / "conversation.wav"


async def caller(engine: pv.VADEngine, index: int, audio, rate: int) -> int:  # type: ignore[no-untyped-def]
    stream = engine.open_stream(f"caller-{index:02d}", sample_rate=rate)

    def on_event(event: pv.SpeechEvent) -> None:
        if event.kind == "start":
            print(f"{event.stream_id}: speech starts at {event.time:6.2f} s")
        elif event.kind == "end":
            print(
                f"{event.stream_id}: speech ends   at {event.time:6.2f} s "
                f"({event.segment.duration:.2f} s)"
            )
        else:
            print(f"{event.stream_id}: failed: {event.error}")

    stream.subscribe(on_event)
    offset = (index * 7919) % audio.size
    packets = audio[offset:]
    packet = rate * 32 // 1000
    for start in range(0, packets.size, packet):
        await stream.push(packets[start : start + packet])
    result = await stream.close()
    return len(result.segments)


async def main(streams: int) -> None:
    audio, rate = sf.read(AUDIO, dtype="float32")
    started = time.perf_counter()
    async with pv.VADEngine(num_workers=2) as engine:
        counts = await asyncio.gather(*(caller(engine, i, audio, rate) for i in range(streams)))
        stats = engine.statistics()
    elapsed = time.perf_counter() - started
    print(
        f"{streams} streams, {sum(counts)} segments, {elapsed:.2f} s "
        f"({stats.pool.tasks_completed} pool tasks)"
    )


if __name__ == "__main__":
    pv.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
