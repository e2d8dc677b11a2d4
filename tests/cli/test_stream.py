"""``prevad-rx stream --format json``: positions at the input's own rate, like ``detect``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tests.cli import run_cli
from tests.conftest import GoldenFixture


def test_stream_json_reports_samples_at_the_input_rate(
    tmp_path: Path, speech16k: GoldenFixture
) -> None:
    audio = soxr.resample(speech16k.audio, 16000, 44100)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    sf.write(tmp_path / "talk44k.wav", pcm, 44100, subtype="PCM_16")

    detected = run_cli("detect", "talk44k.wav", cwd=tmp_path)
    assert detected.returncode == 0, detected.stderr
    record = json.loads(detected.stdout)
    assert record["sample_rate"] == 44100
    from_file = [[s["start_sample"], s["end_sample"]] for s in record["segments"]]

    streamed = run_cli(
        "stream", "--rate", "44100", "--format", "json", "--chunk-ms", "100", stdin=pcm.tobytes()
    )
    assert streamed.returncode == 0, streamed.stderr
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert events and all(e["sample_rate"] == 44100 for e in events)
    ends = [e["segment"] for e in events if e["event"] == "end"]
    assert [[s["start_sample"], s["end_sample"]] for s in ends] == from_file
    assert len(from_file) > 5
    assert ends[0]["start"] == round(ends[0]["start_sample"] / 44100, 3)
