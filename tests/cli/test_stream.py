"""``prevad-rx stream``: positions at the input's own rate, like ``detect``; a closed output."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tests.cli import SCRIPT, assert_one_line_error, run_cli
from tests.conftest import ROOT, GoldenFixture


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


def test_stream_into_a_reader_that_stops_ends_quietly(speech16k: GoldenFixture) -> None:
    """``prevad-rx stream | head -1``: once head has gone, stop reading and exit 0, silently.

    stdin stays open, as a microphone's would: the command must not wait for it to end.
    """
    pcm = np.round(speech16k.audio * 32767).astype("<i2").tobytes()
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [SCRIPT, "stream"], stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(read_end)
    assert proc.stdout is not None and proc.stderr is not None
    head = subprocess.Popen(["head", "-n", "1"], stdin=proc.stdout, stdout=subprocess.PIPE)
    proc.stdout.close()  # head holds the only reading end now
    try:
        os.write(write_end, pcm[: 2 * 32000])  # 2 s; the first segment starts at 0.74 s
        first, _ = head.communicate(timeout=60)
        assert b"speech starts" in first and head.returncode == 0
        # the rest of the talk: its events meet a closed pipe (the command may be gone already)
        with contextlib.suppress(BrokenPipeError):
            os.write(write_end, pcm[2 * 32000 :])
        status = proc.wait(timeout=60)
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:  # still reading its open stdin: do not leave it behind
            proc.kill()
            proc.wait()
        os.close(write_end)
        proc.stderr.close()
    assert status == 0, err
    assert err == ""  # no traceback, no "Exception ignored" at exit


def test_stream_into_a_full_disk_fails_on_one_line(speech16k: GoldenFixture) -> None:
    """An output that cannot be written (here /dev/full) is an error, not lost events."""
    pcm = np.round(speech16k.audio[: 16000 * 2] * 32767).astype("<i2").tobytes()
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [SCRIPT, "stream"], input=pcm, stdout=full, stderr=subprocess.PIPE, timeout=60
        )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert err.startswith("prevad-rx: error: ") and "No space left" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_stream_refuses_a_wav_file_and_a_terminal_on_stdin(speech16k: GoldenFixture) -> None:
    """A WAV file piped in is not raw PCM16 (its header would be read as samples, at the
    wrong rate); a terminal would have keystrokes read as audio: both say what to do."""
    wav = (ROOT / speech16k.file).read_bytes()
    piped = run_cli("stream", stdin=wav)
    message = assert_one_line_error(piped, 1)
    assert "standard input is a WAV file" in message and "prevad-rx detect FILE" in message

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [str(SCRIPT), "stream"],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("prevad-rx: error: standard input is a terminal")
