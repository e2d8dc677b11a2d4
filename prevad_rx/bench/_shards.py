"""Benchmarks of :class:`ShardedVADEngine` next to :class:`VADEngine`, in the same run.

* :func:`shard_scaling`: offline throughput (2 s chunks, streams interleaved) with 1, 2,
  4, ... shards x 1 worker up to ``options.workers``, next to ``VADEngine`` with as many
  worker threads: wall µs per 32 ms frame.
* :func:`shard_packets`: many interleaved streams of 32 ms packets, ``options.workers``
  shards x 1 worker against ``VADEngine(num_workers=options.workers)``: packets per
  second and CPU per packet in the user's process.
* :func:`per_core`: what one core does with live packets: a one-worker ``VADEngine`` with
  this process pinned to one CPU, in a closed loop (every stream pushes and flushes its
  next packet as soon as the last is done; packets/s and CPU per packet, the median of
  interleaved rounds: the figure to compare trees by) and on the live schedule (the most
  streams at p99 < 100 ms).
* :func:`shard_live`: streams delivering 32 ms packets in real time, ``VADEngine`` with
  ``options.workers`` workers, ``options.workers`` shards x 1 worker, and as many
  processes each running a one-worker ``VADEngine`` on its own CPU: the most streams
  whose p99 push-to-processed stays under 100 ms.

Start-up (spawning shards, loading models) is not timed; each engine warms up first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from prevad_rx._engine import VADEngine
from prevad_rx._runtime import run
from prevad_rx._sharded import ShardedVADEngine
from prevad_rx.bench._scenarios import BenchOptions, live_capacity, speech, warm_up

__all__: list[str] = []  # run through scripts/bench_shards.py

EngineFactory = Callable[[], VADEngine | ShardedVADEngine]


async def _drive(
    make: EngineFactory, streams: int, audio: np.ndarray, step: int
) -> tuple[float, float]:
    """Wall and CPU seconds (this process) for ``streams`` streams pushing ``audio`` in
    ``step``-sample pieces, every stream in turn, then closing."""
    async with make() as engine:
        await warm_up(engine, audio[:32000])
        handles = [engine.open_stream(f"s{i}") for i in range(streams)]
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, audio.size, step):
            piece = audio[start : start + step]
            for stream in handles:
                await stream.push(piece)
        await asyncio.gather(*(s.close() for s in handles))
        return time.perf_counter() - wall0, time.process_time() - cpu0


def _counts(limit: int) -> list[int]:
    return sorted({1, limit} | {2**k for k in range(8) if 2**k <= limit})


def shard_scaling(options: BenchOptions) -> dict[str, Any]:
    """Offline 2 s chunks: ``VADEngine(num_workers=n)`` and ``n`` shards x 1 worker."""
    streams = 8 if options.quick else 32
    audio = speech(6 if options.quick else 30)
    frames = audio.size // 512 * streams
    out: dict[str, Any] = {"streams": streams, "audio_s": round(audio.size / 16000, 1)}
    for n in _counts(options.workers):
        options.progress(f"shard scaling: VADEngine, {n} worker(s)")
        engine_wall, _ = run(_drive(partial(VADEngine, num_workers=n), streams, audio, 32000))
        options.progress(f"shard scaling: {n} shard(s) x 1 worker")
        shard_wall, _ = run(_drive(partial(ShardedVADEngine, shards=n), streams, audio, 32000))
        out[f"n{n}"] = {
            "engine_wall_us": engine_wall / frames * 1e6,
            "shards_wall_us": shard_wall / frames * 1e6,
            "shards_vs_engine": engine_wall / shard_wall,
        }
    return out


def shard_packets(options: BenchOptions) -> dict[str, Any]:
    """32 ms packets from many interleaved streams: both engines on ``options.workers`` cores."""
    streams = 8 if options.quick else 64
    audio = speech(2 if options.quick else 6)
    packets = streams * (audio.size // 512)
    n = options.workers
    out: dict[str, Any] = {"streams": streams, "packets": packets, "cores": n}
    for name, make in (
        ("engine", lambda: VADEngine(num_workers=n)),
        ("shards", lambda: ShardedVADEngine(shards=n)),
    ):
        options.progress(f"shard packets: {name}, {streams} streams")
        wall, cpu = run(_drive(make, streams, audio, 512))
        out[name] = {
            "packets_per_s": packets / wall,
            "user_process_cpu_us_per_packet": cpu / packets * 1e6,
        }
    out["shards_vs_engine"] = out["shards"]["packets_per_s"] / out["engine"]["packets_per_s"]
    return out


def shard_live(options: BenchOptions) -> dict[str, Any]:
    """Live 32 ms streams: the most each way of using the cores holds with p99
    push-to-processed < 100 ms (``VADEngine`` with N workers, N shards, N processes each a
    one-worker ``VADEngine`` on its own CPU)."""
    audio = speech(options.live_seconds + 2)
    out: dict[str, Any] = {"cores": options.workers}
    for system in ("prevad", "shards", "processes"):
        out[system] = live_capacity(system, 32, audio, options)
    return out


@contextlib.contextmanager
def _pinned_to_one_cpu() -> Iterator[int | None]:
    """This process on one CPU (the last it may use) for the block; None where it cannot."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


async def _closed_loop(streams: int, audio: np.ndarray) -> tuple[float, float]:
    """Packets/s and CPU µs per packet: ``streams`` streams, each pushing and flushing its
    next 32 ms packet as soon as the last was processed (a one-worker ``VADEngine``)."""
    packets_each = audio.size // 512 - 32
    async with VADEngine(num_workers=1) as engine:
        await warm_up(engine, audio[:32000])
        handles = [engine.open_stream(f"s{i}") for i in range(streams)]

        async def feed(index: int, stream: Any) -> None:
            start = (index * 7919) % 16000
            for k in range(packets_each):
                await stream.push(audio[start + k * 512 : start + (k + 1) * 512])
                await stream.flush()

        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(feed(i, s) for i, s in enumerate(handles)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await asyncio.gather(*(s.close() for s in handles))
    packets = streams * packets_each
    return packets / wall, cpu / packets * 1e6


def per_core(options: BenchOptions) -> dict[str, Any]:
    """One core, live 32 ms packets: closed-loop throughput (median of interleaved rounds)
    and live capacity of a one-worker ``VADEngine``, this process pinned to one CPU."""
    streams = 8 if options.quick else 128
    rounds = 1 if options.quick else 5
    audio = speech(1.5 if options.quick else 5)
    out: dict[str, Any] = {"streams": streams, "rounds": rounds}
    with _pinned_to_one_cpu() as cpu:
        out["cpu"] = cpu
        runs = []
        for round_ in range(rounds):
            options.progress(f"per core: closed loop, round {round_ + 1}/{rounds}")
            runs.append(run(_closed_loop(streams, audio)))
        out["closed_loop"] = {
            "packets_per_s": float(np.median([r[0] for r in runs])),
            "cpu_us_per_packet": float(np.median([r[1] for r in runs])),
            "packets_per_s_rounds": [r[0] for r in runs],
        }
        out["live"] = live_capacity("prevad_1worker", 32, speech(options.live_seconds + 2), options)
    return out
