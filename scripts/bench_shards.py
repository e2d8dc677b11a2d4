"""ShardedVADEngine against VADEngine in the same run: offline 2 s chunks and 32 ms packets.

    python scripts/bench_shards.py [--shards 2] [--workers 2] [--streams 30] [--packet-streams 64]

Both engines get the same cores (``shards`` x 1 worker vs ``workers`` threads) and the same
interleaved pushes; start-up is not timed. Reported: wall µs per 32 ms frame (offline), packets
per second and CPU µs per packet in the user's process (packets).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import prevad_rx as pv

ROOT = Path(__file__).resolve().parent.parent


async def drive(engine: Any, streams: int, audio: np.ndarray, step: int) -> tuple[float, float]:
    """Push ``audio`` to every stream in ``step``-sample pieces, in turn; (wall s, CPU s)."""
    handles = [engine.open_stream(f"s{i}") for i in range(streams)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, audio.size, step):
        piece = audio[start : start + step]
        for stream in handles:
            await stream.push(piece)
    await asyncio.gather(*(s.close() for s in handles))
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(make: Any, streams: int, audio: np.ndarray, step: int) -> tuple[float, float]:
    async with make() as engine:
        await drive(engine, 2, audio[:32000], step)  # warm up
        return await drive(engine, streams, audio, step)


async def main(args: argparse.Namespace) -> None:
    audio, _ = sf.read(ROOT / "tests" / "fixtures" / "speech_16k.wav", dtype="float32")
    frames = audio.size // 512
    engines = {
        f"VADEngine(num_workers={args.workers})": lambda: pv.VADEngine(num_workers=args.workers),
        f"ShardedVADEngine(shards={args.shards}, workers_per_shard=1)": lambda: pv.ShardedVADEngine(
            shards=args.shards, workers_per_shard=1
        ),
    }
    for _ in range(args.repeat):
        for name, make in engines.items():
            wall, _cpu = await measure(make, args.streams, audio, 32000)
            us = wall / (args.streams * frames) * 1e6
            print(f"offline  {args.streams} streams x 2 s chunks  {name}: {us:6.1f} µs/frame wall")
        for name, make in engines.items():
            seconds = 6.0
            clip = audio[: int(16000 * seconds)]
            wall, cpu = await measure(make, args.packet_streams, clip, 512)
            packets = args.packet_streams * (clip.size // 512)
            print(
                f"packets  {args.packet_streams} streams x 32 ms  {name}: {packets / wall:7.0f} "
                f"packets/s, {cpu / packets * 1e6:6.1f} µs CPU/packet in this process"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--packet-streams", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    pv.run(main(parser.parse_args()))
