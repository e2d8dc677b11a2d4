"""The torch backend on one CUDA GPU, every phase in one run: benchmarks/torch_device.py.

On a CUDA host with the ``torch`` extra installed (``pip install 'prevad-rx[torch]'``)::

    python benchmarks/torch_device.py --output out.json

It measures, in this order, each phase within its share of ``--budget`` seconds (default
600; a phase out of time is skipped and says so):

1. exactness: the ``torch`` backend on the device against the ``onnx`` backend (CPU) on
   every 16 kHz fixture: max |dprob|, frames whose side of 0.5 differs, segments identical;
2. raw model capacity: B streams advancing one frame each per step, the step (encoder,
   decoder, state kept on the device) captured as one CUDA graph, for B = 1 .. 262,144:
   µs per step, stream-frames/s and real-time 32 ms streams;
3. offline: B streams x 63 frames per call, eager model; and ``TorchBackend.process`` on the
   same block (host copies, buckets and graphs included);
4. the engine, ``VADEngine("torch", 1, backend_options={"device": ...})``: flat-out 2 s
   chunks of many streams (stream-frames/s), then live streams pushing 32 ms packets in real
   time, doubling the count until p99 push->processed reaches 100 ms.

Writes JSON to ``--output`` after every phase (so a run cut short keeps what it measured)
and prints a Markdown summary for benchmarks/RESULTS.md and docs/backends.md.
``--device cuda:1`` picks another GPU; ``--device cpu --quick`` runs every phase at toy
sizes on the CPU (tests/torch checks that).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import math
import os
import platform
import sys
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prevad_rx as pv  # noqa: E402
from prevad_rx.backends import ModelRequest  # noqa: E402

FRAME, CONTEXT = 512, 64
REAL_TIME_FPS = 16000 / FRAME  # 31.25 frames per second per stream
LATENCY_LIMIT_MS = 100.0


# ----------------------------------------------------------------------------- inputs


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV as float32 in [-1, 1), as soundfile reads it (no soundfile needed)."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def windows_for(audio: np.ndarray) -> np.ndarray:
    """Model input rows for a whole signal: context + frame, last frame zero-padded."""
    n = -(-audio.size // FRAME)
    buffer = np.zeros(CONTEXT + n * FRAME, np.float32)
    buffer[CONTEXT : CONTEXT + audio.size] = audio
    return np.stack([buffer[i * FRAME : i * FRAME + CONTEXT + FRAME] for i in range(n)])


def fixtures() -> list[dict[str, Any]]:
    data = json.loads((ROOT / "tests" / "golden" / "fixtures.json").read_text())
    out = []
    for entry in data["fixtures"]:
        if entry["sample_rate"] != 16000:
            continue
        out.append(
            {
                "file": entry["file"],
                "audio": read_wav(ROOT / entry["file"]),
                "golden": np.frombuffer(base64.b64decode(entry["probabilities"]), "<f4"),
                "timestamps": [(t["params"], t["segments"]) for t in entry["timestamps"]],
            }
        )
    return out


def speech(seconds: float) -> np.ndarray:
    """The fixtures' speech, repeated to at least ``seconds``."""
    audio = np.concatenate([f["audio"] for f in fixtures()])
    return np.tile(audio, max(1, math.ceil(seconds * 16000 / audio.size)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


# ------------------------------------------------------------------------- 1. exactness


def exactness(device: str) -> dict[str, Any]:
    onnx = pv.create_backend("onnx")
    onnx.initialize()
    backend = pv.create_backend("torch", device=device)
    backend.initialize()
    rows = []
    for fixture in fixtures():
        windows = windows_for(fixture["audio"])
        (mine,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
        (ref,) = onnx.process([ModelRequest(windows, onnx.initial_state(), 16000)])
        same = all(
            [
                [s.start_sample, s.end_sample]
                for s in pv.segments_from_probabilities(
                    mine.probabilities, num_samples=fixture["audio"].size, config=pv.VADConfig(**p)
                )
            ]
            == expected
            for p, expected in fixture["timestamps"]
        )
        rows.append(
            {
                "file": fixture["file"],
                "frames": int(windows.shape[0]),
                "max_abs_dprob_vs_onnx": float(
                    np.abs(mine.probabilities - ref.probabilities).max()
                ),
                "max_abs_dprob_vs_golden": float(
                    np.abs(mine.probabilities - fixture["golden"]).max()
                ),
                "flips_at_0.5": int(
                    np.sum((mine.probabilities >= 0.5) != (ref.probabilities >= 0.5))
                ),
                "segments_identical": same,
            }
        )
    info = dict(backend.describe())
    backend.close()
    return {"fixtures": rows, "backend_info": info}


# ------------------------------------------------------------------- 2. raw capacity


def _timer(torch: Any, cuda: bool) -> Callable[[Callable[[], object], int], float]:
    """Seconds per call of ``fn`` (mean of ``repeats`` after a warm-up), device-synchronized."""

    def measure(fn: Callable[[], object], repeats: int) -> float:
        fn()
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3 / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    return measure


def _one_frame_step(model: Any, windows: Any, h: Any, c: Any, lengths: Any) -> Callable[[], Any]:
    """One frame of every stream through the model; the state stays on the device."""

    def step() -> Any:
        features = model.encode(windows)
        probs, h_new, c_new = model.decode(features.unsqueeze(0), h, c, lengths)
        h.copy_(h_new)
        c.copy_(c_new)
        return probs

    return step


def raw_capacity(device: str, sizes: list[int], deadline: float) -> dict[str, Any]:
    import torch

    from prevad_rx.backends._torch import disable_tf32
    from prevad_rx.backends._torch_model import build

    disable_tf32(torch)
    cuda = device.startswith("cuda")
    model = build().to(device)
    measure = _timer(torch, cuda)
    audio = windows_for(speech(40))
    rows = []
    for streams in sizes:
        if time.monotonic() > deadline:
            rows.append({"streams": streams, "skipped": "out of time"})
            continue
        picks = np.arange(streams) % audio.shape[0]
        windows = torch.from_numpy(audio[picks]).to(device)
        h = torch.zeros(streams, 128, device=device)
        c = torch.zeros(streams, 128, device=device)
        lengths = torch.ones(streams, dtype=torch.int64, device=device)

        step = _one_frame_step(model, windows, h, c, lengths)
        with torch.no_grad():
            if cuda:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                run: Callable[[], object] = graph.replay
            else:
                run = step
            repeats = max(3, min(200, int(2e6 / streams)))
            seconds = measure(run, repeats)
        rate = streams / seconds
        rows.append(
            {
                "streams": streams,
                "us_per_step": seconds * 1e6,
                "stream_frames_per_s": rate,
                "real_time_streams": rate / REAL_TIME_FPS,
                "graph": cuda,
            }
        )
    return {"steps": rows}


# ------------------------------------------------------------------------ 3. offline


def offline(device: str, streams: int, deadline: float) -> dict[str, Any]:
    import torch

    from prevad_rx.backends._torch_model import build

    cuda = device.startswith("cuda")
    measure = _timer(torch, cuda)
    model = build().to(device)
    audio = windows_for(speech(60))
    frames = 63
    block = np.stack(
        [audio[(k * 97) % (audio.shape[0] - frames) :][:frames] for k in range(streams)]
    )
    out: dict[str, Any] = {"streams": streams, "frames_per_stream": frames}
    with torch.no_grad():
        windows = torch.from_numpy(block.reshape(-1, 576)).to(device)
        h = torch.zeros(streams, 128, device=device)
        c = torch.zeros(streams, 128, device=device)
        lengths = torch.full((streams,), frames, dtype=torch.int64, device=device)

        def eager() -> Any:
            features = model.encode(windows).view(streams, frames, 128).transpose(0, 1)
            return model.decode(features, h, c, lengths)

        seconds = measure(eager, 3)
    out["eager_model_stream_frames_per_s"] = streams * frames / seconds
    if time.monotonic() > deadline:
        out["backend"] = "skipped: out of time"
        return out
    backend = pv.create_backend("torch", device=device)
    backend.initialize()
    state = backend.initial_state()
    requests = [ModelRequest(block[k], state, 16000) for k in range(streams)]
    backend.process(requests)  # captures the graphs these shapes need
    t0 = time.perf_counter()
    backend.process(requests)
    out["backend_process_stream_frames_per_s"] = streams * frames / (time.perf_counter() - t0)
    out["backend_info"] = dict(backend.describe())
    backend.close()
    return out


# ------------------------------------------------------------------------- 4. engine


def engine_options(device: str) -> dict[str, Any]:
    return {"device": device}


async def engine_offline(device: str, streams: int, seconds: float) -> dict[str, Any]:
    audio = speech(seconds)
    async with pv.VADEngine("torch", 1, backend_options=engine_options(device)) as engine:
        warm = engine.open_stream("warm-up")
        await warm.push(audio[: 16000 * 4])
        await warm.close()

        async def one(index: int) -> None:
            stream = engine.open_stream(f"s{index}")
            offset = (index * 7919) % 32000
            for start in range(offset, audio.size, 32000):
                await stream.push(audio[start : start + 32000])
            await stream.close()

        gc.collect()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(streams)))
        wall = time.perf_counter() - t0
        stats = engine.statistics()
    frames = sum(-(-(audio.size - (i * 7919) % 32000) // FRAME) for i in range(streams))
    assert stats.stage is not None
    return {
        "streams": streams,
        "seconds_per_stream": seconds,
        "stream_frames_per_s": frames / wall,
        "mean_streams_per_decode": stats.stage.mean_streams_per_decode,
    }


async def live_trial(
    engine: pv.VADEngine, audio: np.ndarray, count: int, seconds: float
) -> dict[str, Any]:
    """``count`` streams pushing 32 ms packets on their real-time schedule."""
    chunk = FRAME
    packets = int(seconds * REAL_TIME_FPS)
    latencies: list[float] = []
    offsets = np.random.default_rng(count).uniform(0, chunk / 16000, count)

    async def stream_task(index: int, begin: float) -> None:
        stream = engine.open_stream(f"live-{count}-{index}")
        position = (index * 7919) % (audio.size // 2)
        try:
            for k in range(packets):
                due = begin + offsets[index] + k * chunk / 16000
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await stream.push(audio[position : position + chunk])
                await stream.flush()
                latencies.append(time.perf_counter() - due)
                position += chunk
        finally:
            await stream.close()

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    begin = wall0 + 0.2
    tasks = [asyncio.ensure_future(stream_task(i, begin)) for i in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=seconds * 3 + 10)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    p99 = percentile(latencies, 99) * 1e3 if not pending else math.inf
    return {
        "streams": count,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": p99,
        "ok": p99 < LATENCY_LIMIT_MS,
        "unfinished_streams": len(pending),
        "cpu_cores": cpu / wall,
    }


async def live(device: str, counts: list[int], seconds: float, deadline: float) -> dict[str, Any]:
    """Live trials of doubling stream counts on one engine, until p99 reaches 100 ms."""
    audio = speech(seconds + 2)
    trials: list[dict[str, Any]] = []
    async with pv.VADEngine("torch", 1, backend_options=engine_options(device)) as engine:
        for count in counts:
            if time.monotonic() + seconds * 3 + 15 > deadline:
                trials.append({"streams": count, "skipped": "out of time"})
                break
            trial = await live_trial(engine, audio, count, seconds)
            trials.append(trial)
            print(f"[torch-device] live {count} streams: p99 {trial['p99_ms']:.1f} ms", flush=True)
            if not trial["ok"]:
                break
        info = dict(engine.statistics().pool.backend_info)
    passing = [t["streams"] for t in trials if t.get("ok")]
    return {
        "packet_ms": 32,
        "seconds": seconds,
        "max_streams": max(passing) if passing else 0,
        "trials": trials,
        "backend_info": info,
    }


# --------------------------------------------------------------------------- report


def machine(device: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {m['date']} on {m.get('gpu', m['device'])} ({m['cpu_count']} CPU cores), "
        f"torch {m['torch']}, Python {m['python']}, fp32 with TF32 off.",
        "",
    ]
    if "exactness" in results:
        rows = results["exactness"].get("fixtures", [])
        worst = max((r["max_abs_dprob_vs_onnx"] for r in rows), default=math.nan)
        flips = sum(r["flips_at_0.5"] for r in rows)
        same = all(r["segments_identical"] for r in rows)
        lines += [
            f"Exactness vs ONNX on {len(rows)} fixtures: max |dprob| {worst:.2g}, "
            f"{flips} frames across 0.5, segments identical: {same}.",
            "",
        ]
    if "raw" in results:
        lines += ["| streams per step | µs per step | stream-frames/s | real-time 32 ms streams |"]
        lines += ["|---|---|---|---|"]
        for r in results["raw"].get("steps", []):
            if "us_per_step" in r:
                lines.append(
                    f"| {r['streams']:,} | {r['us_per_step']:,.0f} | "
                    f"{r['stream_frames_per_s']:,.0f} | {r['real_time_streams']:,.0f} |"
                )
        lines.append("")
    if "offline" in results:
        o = results["offline"]
        line = (
            f"Offline, {o['streams']:,} streams x {o['frames_per_stream']} frames: eager model "
            f"{o['eager_model_stream_frames_per_s'] / 1e6:.2f} M stream-frames/s"
        )
        if "backend_process_stream_frames_per_s" in o:
            line += (
                f"; `TorchBackend.process` {o['backend_process_stream_frames_per_s'] / 1e6:.2f} M"
            )
        lines += [line + ".", ""]
    if "engine_offline" in results:
        e = results["engine_offline"]
        lines += [
            f"Engine (1 worker), {e['streams']:,} streams pushing 2 s chunks flat out: "
            f"{e['stream_frames_per_s']:,.0f} stream-frames/s "
            f"({e['mean_streams_per_decode']:.1f} streams per decoder call).",
            "",
        ]
    if "live" in results:
        v = results["live"]
        lines += [
            f"Engine (1 worker), live 32 ms packets: max streams with p99 push->processed "
            f"< 100 ms: **{v['max_streams']:,}**.",
            "",
        ]
    raw_best = max(
        (
            r["real_time_streams"]
            for r in results.get("raw", {}).get("steps", [])
            if "us_per_step" in r
        ),
        default=0.0,
    )
    if "live" in results and raw_best:
        share = results["live"]["max_streams"] / raw_best
        lines += [f"Live streams through the engine: {share:.1%} of the raw capacity.", ""]
    for name, error in results.get("errors", {}).items():
        lines.append(f"Phase {name} failed: {error}")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for all phases")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a check of the script)")
    default_out = ROOT / "benchmarks" / "out" / "torch_device.json"
    parser.add_argument("--output", type=Path, default=default_out, help="the JSON results")
    args = parser.parse_args(argv)
    start = time.monotonic()
    budget = args.budget
    if args.quick:
        raw_sizes, offline_streams, engine_streams, engine_seconds = [1, 16, 64], 8, 4, 4.0
        live_counts, live_seconds = [2, 4], 1.0
    else:
        raw_sizes = [1, 1024, 16384, 262144]
        offline_streams, engine_streams, engine_seconds = 16384, 1000, 20.0
        live_counts = [250, 500, 1000, 2000, 4000, 8000, 16000, 32000]
        live_seconds = 10.0
    results: dict[str, Any] = {"machine": machine(args.device), "errors": {}}
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def phase(name: str, share: float, fn: Callable[[float], dict[str, Any]]) -> None:
        """Run one phase, to end by ``share`` of the budget; record its error, not raise it."""
        deadline = start + budget * share
        if time.monotonic() > deadline:
            results["errors"][name] = "skipped: out of time"
            return
        print(f"[torch-device] {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            results[name] = fn(deadline)
            results[name]["phase_seconds"] = time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the others
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
        args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")

    phase("exactness", 0.10, lambda _: exactness(args.device))
    phase("raw", 0.30, lambda d: raw_capacity(args.device, raw_sizes, d))
    phase("offline", 0.45, lambda d: offline(args.device, offline_streams, d))
    phase(
        "engine_offline",
        0.60,
        lambda _: pv.run(engine_offline(args.device, engine_streams, engine_seconds)),
    )
    phase("live", 1.0, lambda d: pv.run(live(args.device, live_counts, live_seconds, d)))
    results["total_seconds"] = time.monotonic() - start
    args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(markdown(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
