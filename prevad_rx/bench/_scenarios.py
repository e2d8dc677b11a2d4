"""The benchmark scenarios, each comparing prevad_rx with the reference ways in the same run."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources as importlib_resources
from typing import Any

import numpy as np

from prevad_rx._engine import VADEngine
from prevad_rx._runtime import run
from prevad_rx._sharded import ShardedVADEngine
from prevad_rx.backends import create_backend
from prevad_rx.backends._base import DecodeRequest
from prevad_rx.bench._references import (
    FrameByFrame,
    SequencePerChunk,
    VadIteratorLike,
    naive_split,
    streaming_session,
    windows_of,
)

__all__ = [
    "MACS_PER_FRAME",
    "BenchOptions",
    "chunk_latency",
    "encoder_speed",
    "engine_offline",
    "live_capacity",
    "live_streams",
    "memory",
    "offline_throughput",
    "packets",
    "scaling",
]

#: Multiply-adds of one frame as the Silero v6.2 graph defines it: STFT conv 330,240
#: (5 windows, one discarded), encoder convs 284,160, LSTM 131,072, head 128.
MACS_PER_FRAME = 330_240 + 284_160 + 131_072 + 128
FRAME_S = 512 / 16000
LATENCY_LIMIT_S = 0.100


@dataclass
class BenchOptions:
    """What to run and how long; ``quick`` shrinks everything for a smoke test."""

    quick: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    live_seconds: float = 4.0
    stream_counts: tuple[int, ...] = (
        8,
        16,
        32,
        64,
        128,
        192,
        256,
        384,
        512,
        768,
        1024,
        1536,
        2048,
        3072,
        4096,
    )
    progress: Callable[[str], None] = field(default=lambda message: None)

    def __post_init__(self) -> None:
        if self.quick:
            self.live_seconds = 0.5
            self.stream_counts = (2, 4)


async def warm_up(engine: VADEngine | ShardedVADEngine, audio: np.ndarray) -> None:
    """Run ``audio`` through a throw-away stream: the first calls allocate, so a timed
    part starts warm."""
    warm = engine.open_stream("warm-up")
    await warm.push(audio)
    await warm.close()


def speech(seconds: float) -> np.ndarray:
    """The bundled 16 kHz speech recording, repeated to at least ``seconds``."""
    import soundfile as sf

    path = importlib_resources.files("prevad_rx.bench") / "speech.flac"
    with importlib_resources.as_file(path) as file:
        audio, rate = sf.read(str(file), dtype="float32")
    assert rate == 16000
    reps = max(1, math.ceil(seconds * 16000 / audio.size))
    return np.tile(audio, reps)


def _best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sgemm_gflops() -> float | None:
    """Single-thread float32 GEMM rate on this machine, now (GFLOP/s); None without
    threadpoolctl (numpy's BLAS would use every core and overstate one core's rate)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        seconds = _best_of(20, lambda: a @ a)
    return 2 * 512**3 / seconds / 1e9


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of this process (or of process ``pid``) now (MB)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # not Linux: peak instead of current (this process only)
        if pid != "self":
            return 0.0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1e6 if sys.platform == "darwin" else 1e3)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _helper_pids(engine: object) -> list[int]:
    """The shard processes of a :class:`ShardedVADEngine` (none for anything else)."""
    if isinstance(engine, ShardedVADEngine):
        return [pid for pid in engine.shard_pids() if pid is not None]
    return []


# --------------------------------------------------------------------- scenario 0


def encoder_speed(options: BenchOptions) -> dict[str, Any]:
    """The encoder alone, one core: the reference graph vs the fast graph (µs per frame at
    several batch sizes, best of N), with the start-up verdict that decides which runs."""
    from prevad_rx.backends._onnx import OnnxBackend

    options.progress("encoder: reference vs fast graph")
    backend = create_backend("onnx")
    backend.initialize()
    assert isinstance(backend, OnnxBackend)
    verdict = backend.encoder_verdict
    windows = windows_of(speech(20))
    repeats = 3 if options.quick else 15
    out: dict[str, Any] = {
        "path": verdict.path,
        "minimum_batch": verdict.minimum_batch,
        "reason": verdict.reason,
        "sizes": {},
    }
    fast = backend._fast
    for size in (4, 16, 64, 256, 600):
        batch = windows[:size]
        row = {"reference_us": _best_of(repeats, partial(backend._reference_encode, batch))}
        if fast is not None:
            row["fast_us"] = _best_of(repeats, partial(fast, batch))
            row["speedup"] = row["reference_us"] / row["fast_us"]
        out["sizes"][size] = {k: v / size * 1e6 if k.endswith("_us") else v for k, v in row.items()}
    backend.close()
    return out


# --------------------------------------------------------------------- scenario 1


def offline_throughput(options: BenchOptions) -> dict[str, Any]:
    """Microseconds per 32 ms frame: references (a)(b)(c) and prevad_rx, one core and all."""
    audio = speech(15 if options.quick else 60)
    windows = windows_of(audio)
    frames = windows.shape[0]
    chunks = [windows[i : i + 62] for i in range(0, frames, 62)]
    repeats = 1 if options.quick else 3
    out: dict[str, Any] = {"frames": frames, "audio_s": round(audio.size / 16000, 1)}

    options.progress("offline: (a) one ORT call per frame")
    per_frame = FrameByFrame()

    def run_a() -> None:
        per_frame.reset()
        for start in range(0, audio.size - 511, 512):
            per_frame(audio[start : start + 512])

    out["a_frame_by_frame_us"] = _best_of(repeats, run_a) / (audio.size // 512) * 1e6

    options.progress("offline: (b) sequence model, one call per 2 s chunk")
    sequence = SequencePerChunk()

    def run_b() -> None:
        sequence.reset()
        for chunk in chunks:
            sequence(chunk)

    out["b_sequence_us"] = _best_of(repeats, run_b) / frames * 1e6

    options.progress("offline: (c) naive split in 4 fresh instances")
    out["c_naive_split_us"] = (
        _best_of(repeats, lambda: [naive_split(sequence, chunk, 4) for chunk in chunks])
        / frames
        * 1e6
    )

    options.progress("offline: prevad_rx backend, one core")
    backend = create_backend("onnx")
    backend.initialize()
    state = backend.initial_state()

    def run_backend() -> None:
        current = state
        for chunk in chunks:
            features = backend.encode(chunk, 16000)
            (result,) = backend.decode([DecodeRequest(features, current, 16000)])
            current = result.state

    out["prevad_backend_us"] = _best_of(repeats, run_backend) / frames * 1e6
    out["fast_encoder_minimum"] = getattr(backend, "fast_encoder_minimum", None)
    backend.close()

    for workers, streams in ((1, 1), (1, 30), (options.workers, 30)):
        options.progress(f"offline: prevad_rx engine, {workers} worker(s), {streams} stream(s)")
        wall, cpu = run(engine_offline(audio, workers, streams))
        total = frames * streams
        out[f"prevad_engine_w{workers}_s{streams}_wall_us"] = wall / total * 1e6
        out[f"prevad_engine_w{workers}_s{streams}_cpu_us"] = cpu / total * 1e6

    gflops = sgemm_gflops()
    out["sgemm_gflops"] = gflops
    out["floor_us"] = 2 * MACS_PER_FRAME / (gflops * 1e9) * 1e6 if gflops else None
    out["speedup_vs_b"] = out["b_sequence_us"] / out["prevad_engine_w1_s1_cpu_us"]
    out["speedup_30_streams_vs_b"] = out["b_sequence_us"] / out["prevad_engine_w1_s30_cpu_us"]
    out["vs_floor"] = (
        out["prevad_engine_w1_s1_cpu_us"] / out["floor_us"] if out["floor_us"] else None
    )
    return out


async def engine_offline(
    audio: np.ndarray,
    workers: int,
    streams: int,
    backend: str = "onnx",
    backend_options: dict[str, Any] | None = None,
) -> tuple[float, float]:
    """Wall and CPU seconds for ``streams`` streams each pushing ``audio`` in 2 s chunks
    as fast as the engine takes them (after a warm-up stream)."""
    async with VADEngine(backend, workers, backend_options=backend_options) as engine:
        await warm_up(engine, audio[: 16000 * 4])

        async def one(index: int) -> None:
            stream = engine.open_stream(f"s{index}")
            for start in range(0, audio.size, 32000):
                await stream.push(audio[start : start + 32000])
            await stream.close()

        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(streams)))
        return time.perf_counter() - wall0, time.process_time() - cpu0


# --------------------------------------------------------------------- scenario 2


def chunk_latency(options: BenchOptions) -> dict[str, Any]:
    """One stream pushing 2 s chunks: push to processed (and to speech event) latency."""
    audio = speech(10 if options.quick else 60)
    out: dict[str, Any] = {}
    sequence = SequencePerChunk()
    chunk_windows = windows_of(audio[:32000])
    times = [_best_of(1, lambda: sequence(chunk_windows)) for _ in range(30)]
    out["b_sequence_call_ms"] = percentile(times, 50) * 1e3
    worker_counts = sorted({1, 2, options.workers})
    for workers in worker_counts:
        options.progress(f"2 s chunks: {workers} worker(s)")
        result = run(_chunk_latency(audio, workers))
        out[f"w{workers}"] = result
        out[f"w{workers}"]["ratio_vs_b"] = result["p50_ms"] / out["b_sequence_call_ms"]
    return out


async def _chunk_latency(audio: np.ndarray, workers: int) -> dict[str, float]:
    async with VADEngine(num_workers=workers) as engine:
        await warm_up(engine, audio[:64000])
        stream = engine.open_stream("s")
        pushed_at: list[tuple[int, float]] = []  # (end sample of the chunk, push time)
        event_delays: list[float] = []

        def on_event(event: Any) -> None:
            now = time.perf_counter()
            for end, when in pushed_at:
                if end >= event.decided_at_sample:
                    event_delays.append(now - when)
                    return

        stream.subscribe(on_event)
        latencies = []
        for start in range(0, audio.size - 31999, 32000):
            t0 = time.perf_counter()
            pushed_at.append((start + 32000, t0))
            await stream.push(audio[start : start + 32000])
            await stream.flush()
            latencies.append(time.perf_counter() - t0)
        await stream.close()
    return {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "event_p50_ms": percentile(event_delays, 50) * 1e3,
        "event_p99_ms": percentile(event_delays, 99) * 1e3,
        "chunks": len(latencies),
    }


# --------------------------------------------------------------------- scenario 3


@dataclass
class LiveTrial:
    streams: int
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    rss_mb: float
    #: CPU of the process that pushes (the user's), in cores: what shards leave to it
    user_cpu_cores: float = math.nan
    latencies: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if k != "latencies"}

    @property
    def ok(self) -> bool:
        return self.p99_ms < LATENCY_LIMIT_S * 1e3


def live_streams(options: BenchOptions) -> dict[str, Any]:
    """N streams pushing in real time: the largest N whose p99 push-to-result stays < 100 ms."""
    audio = speech(options.live_seconds + 2)
    out: dict[str, Any] = {"workers": options.workers}
    for chunk_ms in (32, 2000):
        # small packets are bound by one interpreter's Python: also one worker, shards, and a
        # process per core
        systems = (
            ("prevad", "prevad_1worker", "shards", "processes", "baseline")
            if chunk_ms == 32
            else ("prevad", "baseline")
        )
        for system in systems:
            out[f"{system}_{chunk_ms}ms"] = live_capacity(system, chunk_ms, audio, options)
        base_max = out[f"baseline_{chunk_ms}ms"]["max_streams"]
        for system in systems[:-1]:
            best = out[f"{system}_{chunk_ms}ms"]["max_streams"]
            key = f"ratio_{chunk_ms}ms" if system == "prevad" else f"ratio_{system}_{chunk_ms}ms"
            out[key] = best / base_max if base_max else math.inf
    return out


def live_capacity(
    system: str, chunk_ms: int, audio: np.ndarray, options: BenchOptions
) -> dict[str, Any]:
    """Trials at ``options.stream_counts`` in turn, up to the first whose p99 is too long.

    ``system``: ``"prevad"`` (``VADEngine`` with ``options.workers`` workers),
    ``"prevad_1worker"`` (with one), ``"shards"`` (``ShardedVADEngine``, one shard per
    worker), ``"processes"`` (``options.workers`` processes, each a ``VADEngine`` with one
    worker pinned to its own CPU and holding its share of the streams: a server run with a
    worker process per core) or ``"baseline"`` (a per-stream model in an executor).
    """
    trials = []
    for count in options.stream_counts:
        options.progress(f"live {chunk_ms} ms chunks: {system}, {count} streams")
        if system == "processes":
            trial = _live_processes(count, chunk_ms, options)
        else:
            trial = run(_live_trial(system, audio, count, chunk_ms, options))
        trials.append(trial)
        if not trial.ok:
            break
    passing = [t.streams for t in trials if t.ok]
    return {
        "max_streams": max(passing) if passing else 0,
        "limit_reached": not trials[-1].ok,
        "trials": [t.summary() for t in trials],
    }


def _live_processes(count: int, chunk_ms: int, options: BenchOptions) -> LiveTrial:
    """``count`` live streams shared out over ``options.workers`` processes (spawned), each
    a ``VADEngine(num_workers=1)`` pinned to its own CPU where there are enough; they
    start pacing together, and the trial's latencies are all of theirs."""
    import multiprocessing

    procs = max(1, options.workers)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
    firsts = [sum(shares[:i]) for i in range(procs)]
    workers = [
        ctx.Process(
            target=_live_share,
            args=(shares[i], firsts[i], count, chunk_ms, options.live_seconds, barrier, results),
            kwargs={"cpu": cpus[i] if len(cpus) >= procs else None},
            daemon=True,
        )
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    parts = _collect_shares(workers, results, _SHARE_START_S + 4 * options.live_seconds)
    for worker in workers:
        worker.join()
    latencies = [x for part in parts for x in part.latencies]
    return LiveTrial(
        streams=count,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        cpu_cores=sum(part.cpu_cores for part in parts),
        rss_mb=sum(part.rss_mb for part in parts),
        user_cpu_cores=sum(part.user_cpu_cores for part in parts),
        latencies=latencies,
    )


#: how long a share process may take to start its engine (spawn, imports, model) and finish
_SHARE_START_S = 120.0


def _collect_shares(workers: list[Any], results: Any, timeout_s: float) -> list[LiveTrial]:
    """The trial of every share process, as each reports it. A process that exits without
    reporting (it crashed), or none reporting within ``timeout_s``, stops them all and
    raises ``RuntimeError``: a benchmark fails, it never hangs."""
    parts: list[LiveTrial] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(parts) < len(workers):
            try:
                parts.append(results.get(timeout=0.25))
                continue
            except queue.Empty:
                pass
            crashed = [w for w in workers if w.exitcode not in (None, 0)]
            if crashed:
                raise RuntimeError(
                    f"live bench: a share process exited with code {crashed[0].exitcode} "
                    "before reporting its trial"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"live bench: {len(workers) - len(parts)} share process(es) did not "
                    f"report within {timeout_s:.0f} s"
                )
    finally:
        if len(parts) < len(workers):
            for worker in workers:
                worker.kill()
    return parts


def _live_share(
    count: int,
    first: int,
    total: int,
    chunk_ms: int,
    live_seconds: float,
    barrier: Any,
    results: Any,
    cpu: int | None = None,
) -> None:
    """One process of :func:`_live_processes`: streams ``first`` .. ``first + count``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    options = BenchOptions(workers=1, live_seconds=live_seconds)
    audio = speech(live_seconds + 2)
    share = _live_trial(
        "prevad_1worker", audio, count, chunk_ms, options, streams=(first, total), barrier=barrier
    )
    trial = run(share)
    results.put(trial)


async def _live_trial(
    system: str,
    audio: np.ndarray,
    count: int,
    chunk_ms: int,
    options: BenchOptions,
    *,
    streams: tuple[int, int] | None = None,
    barrier: Any = None,
) -> LiveTrial:
    """``count`` streams pushing ``chunk_ms`` chunks on their real-time schedules.

    ``streams``: (first index, total) when this trial runs a share of a larger one (each
    stream's audio position and phase are the larger trial's); ``barrier``: waited on once
    the engine has started, so that every share begins pacing at the same moment.
    """
    first, total = streams or (0, count)
    chunk = 16000 * chunk_ms // 1000
    chunks_per_stream = max(1, int(options.live_seconds * 1000 / chunk_ms))
    latencies: list[float] = []
    rng = np.random.default_rng(total)
    offsets = rng.uniform(0, chunk_ms / 1000, total)
    loop = asyncio.get_running_loop()

    async def paced(index: int, begin: float, process: Callable[[np.ndarray], Any]) -> None:
        """Feed one stream's chunks on its real-time schedule; record each latency."""
        index += first
        position = (index * 7919) % (audio.size // 2)
        for k in range(chunks_per_stream):
            due = begin + offsets[index] + k * chunk_ms / 1000
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await process(audio[position : position + chunk])
            latencies.append(time.perf_counter() - due)
            position += chunk

    engine: VADEngine | ShardedVADEngine | None = None
    if system in ("prevad", "prevad_1worker", "shards"):
        running = (
            ShardedVADEngine(shards=options.workers)
            if system == "shards"
            else VADEngine(num_workers=1 if system == "prevad_1worker" else options.workers)
        )
        engine = running
        await running.start()

        async def stream_task(index: int, begin: float) -> None:
            stream = running.open_stream(f"s{index}")

            async def process(samples: np.ndarray) -> None:
                await stream.push(samples)
                await stream.flush()

            await paced(index, begin, process)
            await stream.close()
    else:
        session = streaming_session()
        models = [VadIteratorLike(session) for _ in range(count)]

        def analyze(index: int, samples: np.ndarray) -> None:
            model = models[index]
            for start in range(0, samples.size - 511, 512):
                model(samples[start : start + 512])

        async def stream_task(index: int, begin: float) -> None:
            async def process(samples: np.ndarray) -> None:
                await loop.run_in_executor(None, analyze, index, samples)

            await paced(index, begin, process)

    gc.collect()
    helpers = _helper_pids(engine)  # shard processes: their CPU and memory count too

    def cpu_s() -> float:
        return sum(process_cpu_s(pid) for pid in helpers)

    if barrier is not None:
        barrier.wait(timeout=_SHARE_START_S)  # a share that never came: broken, not a hang
    user0, cpu0 = time.process_time(), cpu_s()
    wall0 = time.perf_counter()
    begin = wall0 + 0.05
    await asyncio.gather(*(stream_task(i, begin) for i in range(count)))
    wall = time.perf_counter() - wall0
    user = time.process_time() - user0
    cpu = user + cpu_s() - cpu0
    rss = rss_mb() + sum(rss_mb(pid) for pid in helpers)
    if engine is not None:
        await engine.close()
    return LiveTrial(
        streams=count,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        cpu_cores=cpu / wall,
        rss_mb=rss,
        user_cpu_cores=user / wall,
        latencies=latencies,
    )


# --------------------------------------------------------------------- scenario 4


def memory(options: BenchOptions) -> dict[str, Any]:
    """RSS added by 1,000 open streams (model excluded), and the threads in use; measured in
    a fresh process, so memory freed by earlier scenarios cannot hide the growth."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    count = 50 if options.quick else 1000
    options.progress(f"memory: {count} open streams (fresh process)")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        return executor.submit(_memory_in_process, count, options.workers).result()


def _memory_in_process(count: int, workers: int) -> dict[str, Any]:
    return run(_memory(count, workers))


async def _memory(count: int, workers: int) -> dict[str, Any]:
    audio = speech(2)
    async with VADEngine(num_workers=workers) as engine:
        await warm_up(engine, audio[:32000])
        gc.collect()
        before = rss_mb()
        threads_before = threading.active_count()
        streams = [engine.open_stream(f"s{i}") for i in range(count)]
        for i, stream in enumerate(streams):
            # one second each, ending mid-frame, so every operator holds state for it
            await stream.push(audio[(i * 101) % 16000 : (i * 101) % 16000 + 16000 + 300])
        for stream in streams:
            await stream.flush()
        gc.collect()
        after = rss_mb()
        for stream in streams:
            await stream.close()
    return {
        "streams": count,
        "rss_before_mb": before,
        "rss_with_streams_mb": after,
        "added_mb": after - before,
        "threads": threads_before,
        "workers": workers,
    }


# --------------------------------------------------------------------- scenario 5


def scaling(options: BenchOptions) -> dict[str, Any]:
    """Offline throughput at 1, 2, 4, ... workers up to ``options.workers``: the engine
    against silero's sequence model with one ORT session per thread (the streams split
    evenly over the threads), 2 s chunks, wall µs per frame, same run.

    Each count runs ``rounds`` times, the counts interleaved round by round (1, 2, ..., 1,
    2, ...), and the median is reported: a shared machine's slow second then moves one
    round of every count rather than all of one count's figure.
    """
    audio = speech(10 if options.quick else 30)
    streams = 8 if options.quick else 32
    rounds = 1 if options.quick else 3
    counts = sorted({1, options.workers} | {2**k for k in range(8) if 2**k <= options.workers})
    out: dict[str, Any] = {
        "streams": streams,
        "audio_s": round(audio.size / 16000, 1),
        "rounds": rounds,
    }
    frames = windows_of(audio).shape[0] * streams
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
    for round_ in range(rounds):
        for workers in counts:
            step = f"scaling, round {round_ + 1}/{rounds}: {workers} worker(s)"
            options.progress(f"{step}, sequence baseline")
            baseline = _sequence_threads(audio, streams, workers) / frames * 1e6
            options.progress(f"{step}, prevad_rx engine")
            wall, cpu = run(engine_offline(audio, workers, streams))
            runs[workers].append((baseline, wall / frames * 1e6, cpu / frames * 1e6))
    for workers in counts:
        columns = zip(*runs[workers], strict=True)
        baseline, wall_us, cpu_us = (float(np.median(column)) for column in columns)
        out[f"w{workers}"] = {
            "baseline_wall_us": baseline,
            "engine_wall_us": wall_us,
            "engine_cpu_us": cpu_us,
            "engine_vs_baseline": baseline / wall_us,
            "engine_wall_us_rounds": [r[1] for r in runs[workers]],
            "baseline_wall_us_rounds": [r[0] for r in runs[workers]],
        }
    one = out["w1"]["engine_wall_us"]
    for workers in counts:
        row = out[f"w{workers}"]
        row["engine_efficiency"] = one / row["engine_wall_us"] / workers
        row["baseline_efficiency"] = (
            out["w1"]["baseline_wall_us"] / row["baseline_wall_us"] / workers
        )
    return out


def _sequence_threads(audio: np.ndarray, streams: int, threads: int) -> float:
    """Wall seconds for ``streams`` streams of 2 s chunks through the sequence model, one
    ORT session per thread (silero's ``SileroVADSequence`` used the way a thread pool would)."""
    from concurrent.futures import ThreadPoolExecutor

    windows = windows_of(audio)
    chunks = [windows[i : i + 62] for i in range(0, windows.shape[0], 62)]
    models = [SequencePerChunk() for _ in range(threads)]
    for model in models:  # warm-up: first calls allocate
        model(chunks[0])

    def work(thread: int) -> None:
        model = models[thread]
        for _ in range(thread, streams, threads):
            model.reset()
            for chunk in chunks:
                model(chunk)

    with ThreadPoolExecutor(threads) as executor:
        start = time.perf_counter()
        list(executor.map(work, range(threads)))
        return time.perf_counter() - start


# --------------------------------------------------------------------- scenario 6


def packets(options: BenchOptions) -> dict[str, Any]:
    """Many streams pushing 32 ms packets (512 samples), interleaved, as fast as they are
    taken: packets per second, and CPU per packet on the event-loop thread and in the whole
    process, against one per-stream model called per packet in an executor (pipecat/LiveKit
    style), same run. The engine also runs "paced": every stream yields to the loop after
    each push, so each packet enters the chain alone (nothing to coalesce), as with live
    sources that deliver one packet at a time."""
    streams = 8 if options.quick else 64
    seconds = 2 if options.quick else 8
    audio = speech(seconds + 1)
    out: dict[str, Any] = {"streams": streams, "packets_per_stream": seconds * 16000 // 512}
    workers = options.workers
    options.progress(f"packets: prevad_rx engine, {streams} streams")
    engine = partial(VADEngine, num_workers=workers)
    out["prevad"] = run(_packets_engine(audio, streams, seconds, engine))
    options.progress("packets: prevad_rx engine, one packet per stream per loop iteration")
    out["prevad_paced"] = run(_packets_engine(audio, streams, seconds, engine, paced=True))
    options.progress(f"packets: prevad_rx, {workers} shards x 1 worker, {streams} streams")
    sharded = partial(ShardedVADEngine, shards=workers, workers_per_shard=1)
    out["prevad_shards"] = run(_packets_engine(audio, streams, seconds, sharded))
    options.progress(f"packets: per-stream model in an executor, {streams} streams")
    out["baseline"] = run(_packets_baseline(audio, streams, seconds, workers))
    out["ratio"] = out["prevad"]["packets_per_s"] / out["baseline"]["packets_per_s"]
    out["ratio_shards"] = out["prevad_shards"]["packets_per_s"] / out["baseline"]["packets_per_s"]
    out["ratio_paced"] = out["prevad_paced"]["packets_per_s"] / out["baseline"]["packets_per_s"]
    return out


def _packet_sources(audio: np.ndarray, streams: int, seconds: int) -> list[list[np.ndarray]]:
    count = seconds * 16000 // 512
    out = []
    for index in range(streams):
        start = (index * 7919) % 16000
        out.append([audio[start + k * 512 : start + (k + 1) * 512] for k in range(count)])
    return out


async def _timed_feeds(feeds: list[Callable[[], Any]], packets: int) -> dict[str, float]:
    """Run the feeder coroutines together: packets/s and CPU µs per packet on this (the
    event-loop) thread and in the whole process."""
    gc.collect()
    loop_cpu0, cpu0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(feed() for feed in feeds))
    wall = time.perf_counter() - wall0
    loop_cpu = time.thread_time() - loop_cpu0
    cpu = time.process_time() - cpu0
    return {
        "packets_per_s": packets / wall,
        "loop_cpu_us_per_packet": loop_cpu / packets * 1e6,
        "process_cpu_us_per_packet": cpu / packets * 1e6,
    }


async def _packets_engine(
    audio: np.ndarray,
    streams: int,
    seconds: int,
    make: Callable[[], VADEngine | ShardedVADEngine],
    *,
    paced: bool = False,
) -> dict[str, float]:
    sources = _packet_sources(audio, streams, seconds)
    async with make() as engine:
        await warm_up(engine, audio[:32000])
        handles = [engine.open_stream(f"s{i}") for i in range(streams)]

        async def feed(index: int) -> None:
            stream = handles[index]
            for packet in sources[index]:
                await stream.push(packet)
                if paced:
                    await asyncio.sleep(0)  # the next packet comes in a later iteration
            await stream.close()

        return await _timed_feeds(
            [partial(feed, i) for i in range(streams)], sum(len(s) for s in sources)
        )


async def _packets_baseline(
    audio: np.ndarray, streams: int, seconds: int, workers: int
) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    sources = _packet_sources(audio, streams, seconds)
    session = streaming_session()
    models = [VadIteratorLike(session) for _ in range(streams)]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(workers) as executor:

        async def feed(index: int) -> None:
            model = models[index]
            for packet in sources[index]:
                await loop.run_in_executor(executor, model, packet)

        return await _timed_feeds(
            [partial(feed, i) for i in range(streams)], sum(len(s) for s in sources)
        )
