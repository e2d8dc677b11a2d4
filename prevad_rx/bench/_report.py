"""Benchmark results as JSON and as the Markdown tables of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from typing import Any

__all__ = ["machine", "markdown"]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU and its vector extensions (they decide the
    kernels, and so whether the fast encoder verifies), library versions, encoder path."""
    import numpy
    import onnxruntime

    from prevad_rx._cpu import cpu_model, vector_extensions
    from prevad_rx._version import __version__
    from prevad_rx.backends import create_backend

    backend = create_backend("onnx")
    backend.initialize()
    info = backend.describe()
    backend.close()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "vector_extensions": list(vector_extensions()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "prevad_rx": __version__,
        "encoder": info.get("encoder"),
        "fast_encoder_minimum_batch": info.get("fast_encoder_minimum_batch"),
    }


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (the body of ``benchmarks/RESULTS.md``)."""
    m = results["machine"]
    extensions = ", ".join(m.get("vector_extensions") or []) or "no known vector extensions"
    encoder = m.get("encoder")
    if encoder == "fast":
        encoder_note = (
            f"fast encoder graph (verified bit-identical from batches of "
            f"{m.get('fast_encoder_minimum_batch')} frames)"
        )
    else:
        encoder_note = f"{encoder} encoder"
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores; {extensions}), "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, "
        f"prevad_rx {m['prevad_rx']}; {encoder_note}. "
        "All rows of a table come from the same run; compare ratios, not absolute times, "
        "across machines.",
        "",
    ]
    enc = results.get("encoder")
    if enc:
        lines += [
            "### 0. The encoder alone (µs per frame, one core, best of repeats)",
            "",
            f"Verdict at start-up: **{enc['path']}** ({enc['reason']}).",
            "",
            "| batch | reference graph | fast graph | speed-up |",
            "|---|---|---|---|",
        ]
        for size, row in enc["sizes"].items():
            lines.append(
                f"| {size} | {_f(row['reference_us'])} | {_f(row.get('fast_us'))} | "
                f"{_f(row.get('speedup'), 2)}x |"
            )
        lines.append("")
    off = results.get("offline")
    if off:
        w = max(int(k.split("_w")[1].split("_")[0]) for k in off if k.startswith("prevad_engine_w"))
        lines += [
            f"### 1. Offline throughput (µs per 32 ms frame; {off['audio_s']} s of speech)",
            "",
            "| path | µs/frame | vs (b) |",
            "|---|---|---|",
        ]
        b = off["b_sequence_us"]
        rows = [
            (
                "(a) one ORT call per frame (silero `OnnxWrapper`/`VADIterator`)",
                off["a_frame_by_frame_us"],
            ),
            ("(b) one call per 2 s chunk (silero `SileroVADSequence`)", b),
            (
                "(c) naive split, 4 fresh instances per chunk (changes decisions)",
                off["c_naive_split_us"],
            ),
            ("prevad_rx backend only (encoder + decoder), 1 core", off["prevad_backend_us"]),
            ("prevad_rx engine, 1 worker, 1 stream: CPU time", off["prevad_engine_w1_s1_cpu_us"]),
            (
                "prevad_rx engine, 1 worker, 1 stream: wall time",
                off["prevad_engine_w1_s1_wall_us"],
            ),
            (
                "prevad_rx engine, 1 worker, 30 streams: CPU time",
                off.get("prevad_engine_w1_s30_cpu_us"),
            ),
            (
                f"prevad_rx engine, {w} workers, 30 streams: CPU time",
                off.get(f"prevad_engine_w{w}_s30_cpu_us"),
            ),
            (
                f"prevad_rx engine, {w} workers, 30 streams: wall time",
                off.get(f"prevad_engine_w{w}_s30_wall_us"),
            ),
        ]
        gflops = off.get("sgemm_gflops")
        if gflops:
            rows.append(
                (f"arithmetic floor ({MACS_NOTE}, sgemm {gflops:.0f} GFLOP/s)", off["floor_us"])
            )
        for name, value in rows:
            ratio = b / value if value else None
            lines.append(f"| {name} | {_f(value)} | {_f(ratio, 2)}x |")
        summary = (
            f"prevad_rx (1 worker, CPU time) is **{off['speedup_vs_b']:.2f}x** (b) with one stream"
        )
        if off.get("speedup_30_streams_vs_b"):
            summary += f" and **{off['speedup_30_streams_vs_b']:.2f}x** with 30 streams"
        if off.get("vs_floor"):
            summary += f"; {off['vs_floor']:.2f}x the arithmetic floor"
        lines += ["", summary + ".", ""]
    lat = results.get("latency")
    if lat:
        lines += [
            "### 2. Latency of one stream pushing 2 s chunks",
            "",
            f"One sequential (b) call on a 2 s chunk: {lat['b_sequence_call_ms']:.2f} ms.",
            "",
            "| workers | push→processed p50 | p99 | p50 / (b) call | push→event p50 | p99 |",
            "|---|---|---|---|---|---|",
        ]
        for key in sorted((k for k in lat if k.startswith("w")), key=lambda k: int(k[1:])):
            r = lat[key]
            lines.append(
                f"| {key[1:]} | {_f(r['p50_ms'], 2)} ms | {_f(r['p99_ms'], 2)} ms | "
                f"{_f(r['ratio_vs_b'], 2)}x | {_f(r['event_p50_ms'], 2)} ms | "
                f"{_f(r['event_p99_ms'], 2)} ms |"
            )
        lines.append("")
    live = results.get("live")
    if live:
        lines += [
            "### 3. Many live streams in real time (p99 push→processed < 100 ms)",
            "",
            "| chunks | engine | max streams "
            "| per-stream model in executor (pipecat/LiveKit style) | ratio |",
            "|---|---|---|---|---|",
        ]
        workers = live.get("workers", "N")
        for chunk in (32, 2000):
            b = live[f"baseline_{chunk}ms"]
            for system, name, ratio in (
                ("prevad", f"`VADEngine`, {workers} workers", f"ratio_{chunk}ms"),
                ("prevad_1worker", "`VADEngine`, 1 worker", f"ratio_prevad_1worker_{chunk}ms"),
                ("shards", f"`ShardedVADEngine`, {workers} shards", f"ratio_shards_{chunk}ms"),
                (
                    "processes",
                    f"{workers} processes, each `VADEngine` with 1 worker on its own CPU",
                    f"ratio_processes_{chunk}ms",
                ),
            ):
                p = live.get(f"{system}_{chunk}ms")
                if p is None:
                    continue
                more = "" if p["limit_reached"] else "+ (not reached)"
                lines.append(
                    f"| {chunk} ms | {name} | {p['max_streams']}{more} | {b['max_streams']} | "
                    f"{_f(live[ratio], 1)}x |"
                )
        lines += [
            "",
            "Trials (streams: p50 / p99 ms, CPU cores busy in all processes, of which in the "
            "pushing process, RSS MB):",
            "",
        ]
        for key in sorted(k for k in live if k.endswith("ms") and not k.startswith("ratio")):
            trials = ", ".join(
                f"{t['streams']}: {t['p50_ms']:.0f}/{t['p99_ms']:.0f} ms, "
                f"{t['cpu_cores']:.2f} ({t.get('user_cpu_cores', math.nan):.2f}) cores, "
                f"{t['rss_mb']:.0f} MB"
                for t in live[key]["trials"]
            )
            lines.append(f"- {key}: {trials}")
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines += [
            "### 4. Memory",
            "",
            f"{mem['streams']} open streams add **{mem['added_mb']:.1f} MB** RSS beyond the "
            f"loaded engine ({mem['rss_before_mb']:.0f} MB → {mem['rss_with_streams_mb']:.0f} MB); "
            f"threads in the process: {mem['threads']} with {mem['workers']} workers.",
            "",
        ]
    sc = results.get("scaling")
    if sc:
        lines += [
            f"### 5. Offline scaling ({sc['streams']} streams x {sc['audio_s']} s, 2 s chunks; "
            f"wall µs per frame, median of {sc.get('rounds', 1)} interleaved rounds)",
            "",
            "| workers | sequence model, one session per thread | prevad_rx engine "
            "| engine vs baseline | engine efficiency | baseline efficiency | engine, each round |",
            "|---|---|---|---|---|---|---|",
        ]
        for key in sorted((k for k in sc if k.startswith("w")), key=lambda k: int(k[1:])):
            r = sc[key]
            each = " / ".join(_f(x) for x in r.get("engine_wall_us_rounds", []))
            lines.append(
                f"| {key[1:]} | {_f(r['baseline_wall_us'])} | {_f(r['engine_wall_us'])} | "
                f"{_f(r['engine_vs_baseline'], 2)}x | {_f(r['engine_efficiency'], 2)} | "
                f"{_f(r['baseline_efficiency'], 2)} | {each} |"
            )
        lines += [
            "",
            "Efficiency: throughput with N workers / (N x throughput with 1), from the medians.",
            "",
        ]
    pk = results.get("packets")
    if pk:

        def packet_row(label: str, r: dict[str, float], process_note: str = "") -> str:
            return (
                f"| {label} | {_f(r['packets_per_s'], 0)} | {_f(r['loop_cpu_us_per_packet'])} "
                f"| {_f(r['process_cpu_us_per_packet'])}{process_note} |"
            )

        packet_rows = [packet_row("prevad_rx engine", pk["prevad"])]
        summary = f"prevad_rx takes **{pk['ratio']:.2f}x** the baseline's packets per second"
        if "prevad_shards" in pk:
            packet_rows.append(
                packet_row(
                    "prevad_rx, `ShardedVADEngine` (1 worker per shard)",
                    pk["prevad_shards"],
                    " (this process only)",
                )
            )
            summary += f" in one process, **{pk['ratio_shards']:.2f}x** with shards"
        if "prevad_paced" in pk:
            packet_rows.append(
                packet_row(
                    "prevad_rx engine, paced (one packet per stream per loop iteration)",
                    pk["prevad_paced"],
                )
            )
            summary += f"; **{pk['ratio_paced']:.2f}x** paced"
        packet_rows.append(packet_row("per-stream model in an executor", pk["baseline"]))
        lines += [
            f"### 6. 32 ms packets, {pk['streams']} interleaved streams "
            f"({pk['packets_per_stream']} packets each, as fast as taken)",
            "",
            "| | packets/s | CPU µs per packet, event-loop thread | CPU µs per packet, process |",
            "|---|---|---|---|",
            *packet_rows,
            "",
            summary + ".",
            "",
        ]
    ss = results.get("shard-scaling")
    if ss:
        lines += [
            f"### 7. Shards: offline ({ss['streams']} streams x {ss['audio_s']} s, 2 s chunks, "
            "every stream in turn; wall µs per frame)",
            "",
            "| cores | `VADEngine(num_workers=n)` | `ShardedVADEngine(shards=n)` "
            "| shards vs engine |",
            "|---|---|---|---|",
        ]
        for key in sorted((k for k in ss if k.startswith("n")), key=lambda k: int(k[1:])):
            r = ss[key]
            lines.append(
                f"| {key[1:]} | {_f(r['engine_wall_us'])} | {_f(r['shards_wall_us'])} | "
                f"{_f(r['shards_vs_engine'], 2)}x |"
            )
        lines.append("")
    sp = results.get("shard-packets")
    if sp:
        e, s_ = sp["engine"], sp["shards"]
        lines += [
            f"### 8. Shards: 32 ms packets, {sp['streams']} interleaved streams on "
            f"{sp['cores']} cores",
            "",
            "| | packets/s | CPU µs per packet in the user's process |",
            "|---|---|---|",
            f"| `VADEngine` | {_f(e['packets_per_s'], 0)} | "
            f"{_f(e['user_process_cpu_us_per_packet'])} |",
            f"| `ShardedVADEngine` | {_f(s_['packets_per_s'], 0)} | "
            f"{_f(s_['user_process_cpu_us_per_packet'])} |",
            "",
        ]
    return "\n".join(lines)


MACS_NOTE = "745,600 multiply-adds"
