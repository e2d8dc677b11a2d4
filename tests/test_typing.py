"""Operators are typed: mypy checks a chain, and the custom-operator example needs no ignores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BAD_CHAIN = """
import prevad_rx as pv
from prevad_rx.operators import merge_segments, run_pipeline, window_slices


async def main(chunks: list[pv.AudioChunk]) -> None:
    events = await run_pipeline(chunks, window_slices(), merge_segments())
"""


def test_mypy_checks_a_chain_and_the_example(tmp_path: Path) -> None:
    bad = tmp_path / "bad_chain.py"
    bad.write_text(BAD_CHAIN)
    example = ROOT / "examples" / "custom_operators.py"
    assert "type: ignore" not in example.read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(example), str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert errors, proc.stdout
    # only the chain where merge_segments (FrameProbabilities in) follows window_slices
    # (AudioSlice out) is refused
    assert all(line.startswith(f"{bad}:7: error") for line in errors), proc.stdout
