"""The prevad-rx command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

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

    not_a_number = run_cli("detect", str(junk), "--threshold", "high")
    assert not_a_number.returncode == 2 and "not a number" in not_a_number.stderr

    bad_rate = run_cli("stream", "--rate", "3")
    assert bad_rate.returncode == 2 and "sample_rate" in bad_rate.stderr
    assert "Traceback" not in bad_rate.stderr

    bad_threshold = run_cli("detect", "examples/audio/conversation.wav", "--threshold", "7")
    assert bad_threshold.returncode == 2 and "threshold" in bad_threshold.stderr
    assert "Traceback" not in bad_threshold.stderr

    bad_backend = run_cli("detect", "examples/audio/conversation.wav", "--backend", "nope")
    assert bad_backend.returncode == 1 and "unknown backend" in bad_backend.stderr


def test_formats_to_stdout_and_to_files(tmp_path: Path, speech16k: GoldenFixture) -> None:
    expected = speech16k.default_segments
    rttm = run_cli("detect", speech16k.file, "--format", "rttm")
    assert rttm.returncode == 0, rttm.stderr
    rows = [line.split() for line in rttm.stdout.splitlines()]
    assert len(rows) == len(expected)
    assert all(r[0] == "SPEAKER" and r[1] == "speech_16k" and r[7] == "speech" for r in rows)
    assert float(rows[0][3]) == round(expected[0][0] / 16000, 3)

    csv_out = run_cli(
        "detect", speech16k.file, "examples/audio/conversation.wav", "--format", "csv"
    )
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "file,start,end,start_sample,end_sample"
    assert sum(line.startswith("tests/fixtures/speech_16k.wav,") for line in lines) == len(expected)
    assert lines.count(lines[0]) == 1  # one header for all files

    out_dir = tmp_path / "labels"
    written = run_cli(
        "detect",
        speech16k.file,
        "examples/audio/conversation.wav",
        "--format",
        "audacity",
        "--output",
        str(out_dir),
    )
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    labels = (out_dir / "speech_16k.txt").read_text().splitlines()
    assert len(labels) == len(expected)
    start, _end, label = labels[0].split("\t")
    assert label == "speech" and float(start) == expected[0][0] / 16000
    assert (out_dir / "conversation.txt").is_file()

    two = run_cli(
        "detect", speech16k.file, "examples/audio/conversation.wav", "--format", "audacity"
    )
    assert two.returncode == 2 and "one FILE" in two.stderr  # usage: the table's status 2


def test_progress_bar_on_a_terminal_only(speech16k: GoldenFixture) -> None:
    """Piped (as everywhere above): no bar. On a pseudo-terminal: a bar on stderr, and
    no warning from it (16.741 s of audio once ran past a total rounded to 16.7)."""
    piped = run_cli("detect", speech16k.file)
    assert "detect:" not in piped.stderr and piped.stderr == ""

    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [str(SCRIPT), "detect", speech16k.file, "examples/audio/conversation.wav"],
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=ROOT,
        text=True,
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "detect:" in terminal and "s audio" in terminal
    assert "Warning" not in terminal and "clamping" not in terminal, terminal
    files = [json.loads(line)["file"] for line in out.splitlines()]
    assert files == [speech16k.file, "examples/audio/conversation.wav"]  # results on stdout


def test_stream_reads_pcm_from_stdin(speech16k: GoldenFixture) -> None:
    pcm = np.round(speech16k.audio * 32767).astype("<i2").tobytes()
    proc = subprocess.run(
        [str(SCRIPT), "stream", "--format", "json", "--chunk-ms", "100"],
        input=pcm + b"\x01",
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    ends = [e["segment"] for e in events if e["event"] == "end"]
    assert [[s["start_sample"], s["end_sample"]] for s in ends] == speech16k.default_segments
    assert all(e["decided_at"] >= e["time"] for e in events)
    assert b"half a sample" in proc.stderr

    text = subprocess.run(
        [str(SCRIPT), "stream"],
        input=pcm,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = text.stdout.decode().splitlines()
    assert lines[-1] == f"{len(speech16k.default_segments)} segments in 23.76 s of audio"
    assert sum("speech starts" in line for line in lines) == len(speech16k.default_segments)


def test_plot_writes_a_real_picture(tmp_path: Path, speech16k: GoldenFixture) -> None:
    import matplotlib.image

    out = tmp_path / "plot.png"
    proc = run_cli("plot", speech16k.file, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    image = matplotlib.image.imread(out)
    assert image.shape[0] == 500 and image.shape[1] == 1200
    assert float(image[..., :3].std()) > 0.05  # not blank
    # the speech shading colour appears in many pixels
    shade = np.all(np.abs(image[..., :3] - np.array([0.79, 0.90, 0.89])) < 0.06, axis=-1)
    assert shade.mean() > 0.05

    bad = run_cli("plot", speech16k.file, "-o", str(tmp_path / "plot.gif"))
    assert bad.returncode == 2 and ".png" in bad.stderr


def test_module_entry_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prevad_rx", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("prevad-rx ")


_ARG_WORDS = st.sampled_from(
    [
        "detect",
        "stream",
        "plot",
        "--format",
        "json",
        "rttm",
        "xml",
        "--workers",
        "0",
        "2",
        "-3",
        "--threshold",
        "--neg-threshold",
        "0.4",
        "nan",
        "1e9",
        "1000",
        "--min-speech-ms",
        "--speech-pad-ms",
        "-1",
        "--output",
        "-o",
        "/proc/prevad-x.png",
        "examples/audio/conversation.wav",
        "no_such.wav",
        "README.md",
        "/dev/stdin",
        "--rate",
        "7",
        "--chunk-ms",
        "--backend",
        "nope",
        "--help",
        "--max-speech-s",
        "inf",
        "",
    ]
)


@settings(max_examples=25, deadline=None)
@given(args=st.lists(_ARG_WORDS, min_size=0, max_size=6))
def test_any_arguments_give_a_clear_outcome(args: list[str]) -> None:
    """Fuzzed command lines: success or one-line errors with status 1/2, never a traceback.

    A usage error (status 2, argparse's included) is one line; bad input (status 1) is one
    line per bad file of a ``detect`` batch."""
    proc = subprocess.run(
        [str(SCRIPT), *args],
        input=b"",
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 1, 2), (args, proc.returncode, stderr)
    assert "Traceback" not in stderr, (args, stderr)
    if proc.returncode in (1, 2):
        lines = stderr.splitlines()
        assert lines and all(line.startswith("prevad-rx: error: ") for line in lines), stderr
        assert stderr.endswith("\n") and (len(lines) == 1 or proc.returncode == 1), stderr
