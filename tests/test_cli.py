"""The prevad-rx command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import ROOT, GoldenFixture

SCRIPT = Path(sys.executable).parent / "prevad-rx"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_detect_prints_one_json_line_per_file(all_fixtures: tuple[GoldenFixture, ...]) -> None:
    files = [f.file for f in all_fixtures]
    proc = run_cli("detect", *files, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(files)
    for line, fixture in zip(lines, all_fixtures, strict=True):
        record = json.loads(line)
        assert record["file"] == fixture.file
        assert record["sample_rate"] == fixture.sample_rate
        assert record["duration"] == round(fixture.audio.size / fixture.sample_rate, 3)
        got = [[s["start_sample"], s["end_sample"]] for s in record["segments"]]
        assert got == fixture.default_segments
        first = record["segments"][0]
        assert first["start"] == round(first["start_sample"] / fixture.sample_rate, 3)


def test_detect_options_reach_the_segmenter(speech16k: GoldenFixture) -> None:
    params, expected = speech16k.timestamps[3]  # min_silence 300 ms, pad 100 ms
    proc = run_cli(
        "detect",
        speech16k.file,
        "--min-silence-ms",
        str(params["min_silence_duration_ms"]),
        "--speech-pad-ms",
        str(params["speech_pad_ms"]),
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert [[s["start_sample"], s["end_sample"]] for s in record["segments"]] == expected


def test_stereo_and_other_rates_are_read(tmp_path: Path, speech16k: GoldenFixture) -> None:
    stereo = np.stack([speech16k.audio, speech16k.audio], axis=1)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 16000)
    proc = run_cli("detect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["segments"]) > 5


def test_user_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    missing = run_cli("detect", "no/such/file.wav")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "prevad-rx: error: no/such/file.wav: no such file"

    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio")
    unreadable = run_cli("detect", str(junk))
    assert unreadable.returncode == 1
    assert "cannot read audio" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr and len(unreadable.stderr.splitlines()) == 1

    bad_option = run_cli("detect", str(junk), "--workers", "0")
    assert bad_option.returncode == 2 and "must be >= 1" in bad_option.stderr

    bad_threshold = run_cli("detect", "examples/audio/conversation.wav", "--threshold", "7")
    assert bad_threshold.returncode == 2 and "threshold" in bad_threshold.stderr
    assert "Traceback" not in bad_threshold.stderr

    bad_backend = run_cli("detect", "examples/audio/conversation.wav", "--backend", "nope")
    assert bad_backend.returncode == 1 and "unknown backend" in bad_backend.stderr


def test_module_entry_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prevad_rx", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("prevad-rx ")
