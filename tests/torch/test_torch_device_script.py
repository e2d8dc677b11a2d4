"""The GPU device script runs end to end at toy sizes on the CPU, so it is ready for a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.torch
pytest.importorskip("torch")


def test_device_script_runs_every_phase_on_the_cpu(tmp_path: Path) -> None:
    output = tmp_path / "torch_device.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "torch_device.py"),
            "--device",
            "cpu",
            "--quick",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(output.read_text())
    assert results["errors"] == {}
    assert all(r["segments_identical"] for r in results["exactness"]["fixtures"])
    assert all(r["max_abs_dprob_vs_onnx"] < 1e-5 for r in results["exactness"]["fixtures"])
    assert [r["streams"] for r in results["raw"]["steps"]] == [1, 16, 64]
    assert results["offline"]["eager_model_stream_frames_per_s"] > 0
    assert results["engine_offline"]["stream_frames_per_s"] > 0
    live = results["live"]
    assert [t["streams"] for t in live["trials"]] == [2, 4][: len(live["trials"])]
    ran = [t for t in live["trials"] if "skipped" not in t]
    assert ran  # the first count always runs
    for trial in ran:
        assert trial["p50_ms"] <= trial["p99_ms"]
        assert trial["ok"] == (trial["p99_ms"] < 100)
    assert all(t["ok"] for t in ran[:-1])  # the doubling stops at the first count that fails
    assert live["max_streams"] == max((t["streams"] for t in ran if t["ok"]), default=0)
    assert "Exactness vs ONNX on " in proc.stdout and "segments identical: True" in proc.stdout
