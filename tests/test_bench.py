"""The benchmark harness runs end to end (quick mode) and reports every scenario's fields.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

SCRIPT = Path(sys.executable).parent / "prevad-rx"


def test_quick_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    results_md = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            str(SCRIPT),
            "bench",
            "--quick",
            "--workers",
            "2",
            "--output",
            str(tmp_path),
            "--results",
            str(results_md),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[bench] offline" in proc.stderr  # progress goes to stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["quick"] is True
    assert data["machine"]["cores"] >= 1
    assert data["machine"]["encoder"] in ("fast", "reference")
    assert isinstance(data["machine"]["vector_extensions"], list)
    encoder = data["encoder"]
    assert encoder["path"] == data["machine"]["encoder"]
    for row in encoder["sizes"].values():
        assert row["reference_us"] > 0
        assert (row.get("fast_us", 0) > 0) == (encoder["path"] == "fast")
    offline = data["offline"]
    for key in (
        "a_frame_by_frame_us",
        "b_sequence_us",
        "c_naive_split_us",
        "prevad_backend_us",
        "prevad_engine_w1_s1_cpu_us",
        "prevad_engine_w1_s30_cpu_us",
        "prevad_engine_w2_s30_wall_us",
        "floor_us",
    ):
        assert offline[key] > 0, key
    assert offline["floor_us"] < offline["b_sequence_us"]
    latency = data["latency"]
    assert latency["w1"]["chunks"] >= 4 and latency["w2"]["p99_ms"] >= latency["w2"]["p50_ms"]
    live = data["live"]
    for key in (
        "prevad_32ms",
        "prevad_1worker_32ms",
        "shards_32ms",
        "processes_32ms",
        "baseline_32ms",
        "prevad_2000ms",
        "baseline_2000ms",
    ):
        assert live[key]["trials"], key
    # the shards' own processes are counted: CPU and memory of more than this process
    assert all(t["cpu_cores"] > 0 and t["rss_mb"] > 0 for t in live["shards_32ms"]["trials"])
    for t in live["shards_32ms"]["trials"] + live["prevad_32ms"]["trials"]:
        assert 0 < t["user_cpu_cores"] <= t["cpu_cores"] + 1e-9
    # a process per core: every process's streams and latencies are in the trial
    for t in live["processes_32ms"]["trials"]:
        assert t["rss_mb"] > 0 and t["cpu_cores"] > 0 and t["p99_ms"] >= t["p50_ms"] > 0
    assert data["memory"]["streams"] == 50 and data["memory"]["workers"] == 2
    scaling = data["scaling"]
    for key in ("w1", "w2"):
        assert scaling[key]["baseline_wall_us"] > 0 and scaling[key]["engine_wall_us"] > 0, key
    assert scaling["w1"]["engine_efficiency"] == 1.0
    for system in ("prevad", "prevad_shards", "baseline"):
        row = data["packets"][system]
        assert row["packets_per_s"] > 0 and row["process_cpu_us_per_packet"] > 0, system
    for key in ("n1", "n2"):
        row = data["shard-scaling"][key]
        assert row["engine_wall_us"] > 0 and row["shards_wall_us"] > 0, key
    for system in ("engine", "shards"):
        assert data["shard-packets"][system]["packets_per_s"] > 0, system
    table = (tmp_path / "bench.md").read_text()
    for heading in (
        "0. The encoder alone",
        "1. Offline throughput",
        "2. Latency",
        "3. Many live streams",
        "4. Memory",
        "5. Offline scaling",
        "6. 32 ms packets",
        "7. Shards: offline",
        "8. Shards: 32 ms packets",
    ):
        assert heading in table
    assert results_md.read_text().startswith("# Benchmark results")
    assert table in results_md.read_text()


def test_a_live_trial_over_processes_has_every_packet_of_every_process() -> None:
    """3 streams over 2 processes, 0.5 s of 32 ms packets each: every packet's latency."""
    from prevad_rx.bench._scenarios import BenchOptions, _live_processes

    trial = _live_processes(3, 32, BenchOptions(workers=2, live_seconds=0.5))
    assert trial.streams == 3
    assert len(trial.latencies) == 3 * int(0.5 * 1000 / 32)
    assert trial.cpu_cores > 0 and trial.p99_ms >= trial.p50_ms


def _report_one(results: Any) -> None:
    results.put("trial")


def test_a_share_process_that_dies_fails_the_live_bench_instead_of_hanging() -> None:
    """One share reports, the other exits without reporting: the collector raises at once
    (not after its deadline) and leaves no process running."""
    import multiprocessing
    import os
    import time

    from prevad_rx.bench._scenarios import _collect_shares

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    reporter = ctx.Process(target=_report_one, args=(results,), daemon=True)
    crasher = ctx.Process(target=os._exit, args=(3,), daemon=True)
    blocked = ctx.Process(target=time.sleep, args=(60,), daemon=True)
    workers = [reporter, crasher, blocked]
    for worker in workers:
        worker.start()
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code 3 before reporting"):
        _collect_shares(workers, results, timeout_s=50)
    assert time.monotonic() - began < 30
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()


def test_share_processes_that_never_report_fail_the_live_bench_at_its_deadline() -> None:
    import multiprocessing
    import time

    from prevad_rx.bench._scenarios import _collect_shares

    ctx = multiprocessing.get_context("spawn")
    silent = ctx.Process(target=time.sleep, args=(60,), daemon=True)
    silent.start()
    with pytest.raises(RuntimeError, match="did not report within 1 s"):
        _collect_shares([silent], ctx.Queue(), timeout_s=1)
    silent.join(5)
    assert not silent.is_alive()


def test_compare_trees_runs_this_checkout_against_a_revision_in_one_process() -> None:
    """scripts/compare_trees.py, shrunk: both trees run the closed loop, one ratio each round."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        [
            sys.executable,
            "scripts/compare_trees.py",
            *("HEAD", "--rounds", "2", "--streams", "2", "--seconds", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("this checkout: median ") and lines[1].startswith("HEAD: median ")
    assert lines[2].startswith("this checkout / HEAD: median ")
    assert len(lines[2].split("(")[1].split()) == 2  # one ratio per round
