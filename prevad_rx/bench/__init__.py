"""``prevad-rx bench``: prevad_rx against the reference ways of running Silero, in one run.

Scenarios (see ``docs/performance.md``): the encoder alone (reference vs fast
graph), offline throughput with the arithmetic floor, 2 s chunk latency, many
live streams against a per-stream-model baseline, memory at 1,000 open
streams, offline scaling over worker counts against one sequence-model session
per thread, 32 ms packets from many interleaved streams, and the same two with
``ShardedVADEngine`` next to ``VADEngine``. Results are written as JSON and
Markdown; timings are never asserted in the test suite.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prevad_rx.bench._report import machine, markdown
from prevad_rx.bench._scenarios import (
    BenchOptions,
    chunk_latency,
    encoder_speed,
    live_streams,
    memory,
    offline_throughput,
    packets,
    scaling,
)
from prevad_rx.bench._shards import shard_packets, shard_scaling

__all__ = ["SCENARIOS", "BenchOptions", "markdown", "run_benchmarks", "write_results"]

SCENARIOS = {
    "encoder": encoder_speed,
    "offline": offline_throughput,
    "latency": chunk_latency,
    "live": live_streams,
    "memory": memory,
    "scaling": scaling,
    "packets": packets,
    "shard-scaling": shard_scaling,
    "shard-packets": shard_packets,
}


def run_benchmarks(
    options: BenchOptions, scenarios: Sequence[str] = tuple(SCENARIOS)
) -> dict[str, Any]:
    """Run the named scenarios; returns ``{"machine": ..., scenario: results, ...}``."""
    results: dict[str, Any] = {"machine": machine(), "quick": options.quick}
    for name in scenarios:
        started = time.perf_counter()
        results[name] = SCENARIOS[name](options)
        options.progress(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return results


def write_results(results: dict[str, Any], folder: Path, results_md: Path | None) -> None:
    """``folder/bench.json`` and ``folder/bench.md``; also ``results_md`` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    table = markdown(results)
    (folder / "bench.md").write_text(table + "\n")
    if results_md is not None:
        header = (
            "# Benchmark results\n\n"
            "Latest `make bench` (`prevad-rx bench --results benchmarks/RESULTS.md`). "
            "Targets and what was reached are discussed in docs/performance.md.\n\n"
        )
        kept = ""  # sections written by other benchmarks (make bench-vllm) are kept
        if results_md.exists():
            old = results_md.read_text()
            begin = old.find("<!-- vllm:begin -->")
            if begin >= 0:
                kept = "\n" + old[begin:].rstrip() + "\n"
        results_md.write_text(header + table + "\n" + kept)


def progress_to_stderr(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
