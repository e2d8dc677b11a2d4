"""Every example runs, as a user would run it, and prints what it promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, golden_fixtures


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def conversation_segments() -> list[list[int]]:
    fixture = next(f for f in golden_fixtures() if f.file.endswith("conversation.wav"))
    return fixture.default_segments


def test_basic_usage() -> None:
    out = run_example("basic_usage.py")
    expected = conversation_segments()
    assert f"{len(expected)} segments in 16.7 s of audio" in out
    assert out.count("final:") >= len(expected) - 1


def test_many_streams() -> None:
    out = run_example("many_streams.py", "6")
    assert out.count("speech starts") == out.count("speech ends") > 6
    assert "6 streams," in out
    assert "failed" not in out


def test_custom_operators() -> None:
    out = run_example("custom_operators.py")
    rows = [json.loads(line.replace("'", '"')) for line in out.strip().splitlines()]
    assert rows and all(row["end"] - row["start"] >= 1.0 for row in rows)


def test_cut_speech_clips(tmp_path: Path) -> None:
    import soundfile as sf

    out = run_example("cut_speech_clips.py", "examples/audio/conversation.wav", str(tmp_path))
    clips = sorted(tmp_path.glob("conversation_*.wav"))
    expected = conversation_segments()
    assert len(clips) == len(expected)
    audio, rate = sf.read(ROOT / "examples/audio/conversation.wav", dtype="int16")
    first, clip_rate = sf.read(clips[0], dtype="int16")
    assert clip_rate == rate
    assert np.array_equal(first, audio[expected[0][0] : expected[0][1]])
    assert f"{len(expected)} clips" in out


def test_cut_speech_clips_writes_nothing_where_it_is_run(tmp_path: Path) -> None:
    """Without OUT_DIR the clips go to a fresh temporary folder, not the current one."""
    import shutil

    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cut_speech_clips.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
    folder = Path(proc.stdout.splitlines()[-1].removeprefix("clips in "))
    try:
        assert folder.is_absolute() and folder.parent == Path(tempfile.gettempdir())
        assert len(list(folder.glob("conversation_*.wav"))) == len(conversation_segments())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_tcp_ingest_demo() -> None:
    out = run_example("tcp_ingest.py", "demo", "--clients", "3")
    expected = len(conversation_segments())
    assert f"segments per client: [{expected}, {expected}, {expected}]" in out
    assert out.count('"event": "start"') + out.count("'event': 'start'") == 3 * expected


def test_tcp_ingest_demo_over_processes_sharing_one_port() -> None:
    """Two server processes on one port (SO_REUSEPORT), each its own engine: every client
    still gets all of its segments, from one of the two processes."""
    out = run_example("tcp_ingest.py", "demo", "--clients", "6", "--processes", "2")
    expected = len(conversation_segments())
    assert f"segments per client: {[expected] * 6}, served by " in out
    pids = {int(pid) for pid in re.findall(r"'event': 'done', 'segments': \d+, 'pid': (\d+)", out)}
    assert len(re.findall(r"'event': 'done'", out)) == 6
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
