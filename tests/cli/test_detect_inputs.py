"""``prevad-rx detect`` on the files users really have: broken, empty, odd, repeated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.cli import SCRIPT, assert_one_line_error, run_cli
from tests.conftest import ROOT, GoldenFixture


def _segments(record: dict[str, object]) -> list[list[int]]:
    segments = record["segments"]
    assert isinstance(segments, list)
    return [[s["start_sample"], s["end_sample"]] for s in segments]


def test_each_bad_file_of_a_batch_gets_its_own_line_and_the_rest_are_reported(
    tmp_path: Path, speech16k: GoldenFixture
) -> None:
    good = ROOT / speech16k.file
    shutil.copy(good, tmp_path / "good.wav")
    shutil.copy(good, os.fsencode(tmp_path) + b"/caf\xe9.wav")  # a name that is not UTF-8
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)  # valid, zero samples
    sf.write(tmp_path / "rate2000.wav", speech16k.audio[:4000], 2000)
    (tmp_path / "junk.wav").write_text("this is not audio")
    os.mkfifo(tmp_path / "pipe.wav")  # would be consumed by the check, then block
    # a FLAC download cut short: decodes for a while, then fails part-way
    sf.write(tmp_path / "full.flac", np.tile(speech16k.audio, 2), 16000)
    flac = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) * 6 // 10])
    # a WAV whose header announces 11.1 s but holds 0.62 s
    sf.write(tmp_path / "full.wav", np.resize(speech16k.audio, 177600), 16000, subtype="PCM_16")
    wav = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(wav[: 44 + 9920 * 2])

    proc = run_cli(
        "detect",
        "good.wav",
        "cut.flac",
        "truncated.wav",
        "empty.wav",
        "rate2000.wav",
        "pipe.wav",
        "/dev/stdin",
        "junk.wav",
        "missing.wav",
        b"caf\xe9.wav",
        "./good.wav",  # the same file again: a second stream, not "already open"
        cwd=tmp_path,
        stdin=good.read_bytes(),  # /dev/stdin is a pipe: refused, not hung on
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr

    errors = {}
    for line in proc.stderr.splitlines():
        assert line.startswith("prevad-rx: error: "), line
        name, _, reason = line.removeprefix("prevad-rx: error: ").partition(": ")
        errors[name] = reason
    assert len(errors) == len(proc.stderr.splitlines()) == 7
    assert errors["truncated.wav"] == (
        "truncated: its header announces 11.10 s of audio, the file holds 0.62 s"
    )
    assert errors["cut.flac"].startswith(("cannot read audio after", "truncated"))
    assert "2000 Hz" in errors["rate2000.wav"]
    assert errors["pipe.wav"].startswith("not a regular file")
    assert errors["/dev/stdin"].startswith("not a regular file")
    assert errors["junk.wav"].startswith("cannot read audio")
    assert errors["missing.wav"] == "no such file"

    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == ["good.wav", "empty.wav", "caf\\xe9.wav", "good.wav"]
    expected = speech16k.default_segments
    assert _segments(records[0]) == _segments(records[2]) == _segments(records[3]) == expected
    assert records[1] == {
        "file": "empty.wav",
        "sample_rate": 16000,
        "duration": 0.0,
        "segments": [],
    }


def test_a_wav_of_unknown_length_is_read_to_its_end(
    tmp_path: Path, speech16k: GoldenFixture
) -> None:
    """A WAV written to a pipe leaves its data size at 0 or 0xFFFFFFFF: both are read to the
    end of the file (libsndfile alone reads a size of 0 as no audio)."""
    wav = bytearray((ROOT / speech16k.file).read_bytes())
    size_at = wav.index(b"data") + 4
    for name, size in (("zero.wav", b"\0\0\0\0"), ("ffff.wav", b"\xff\xff\xff\xff")):
        wav[size_at : size_at + 4] = size
        (tmp_path / name).write_bytes(bytes(wav))
    proc = run_cli("detect", "zero.wav", "ffff.wav", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["duration"] for r in records] == [round(speech16k.audio.size / 16000, 3)] * 2
    assert _segments(records[0]) == _segments(records[1]) == speech16k.default_segments


def test_output_files_that_would_collide_are_a_usage_error(tmp_path: Path) -> None:
    audio = np.zeros(1600, np.float32)
    for name in ("a/x.wav", "b/x.wav", "talk.wav", "talk.ogg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        sf.write(tmp_path / name, audio, 16000)
    out = tmp_path / "out"

    same_name = run_cli("detect", "a/x.wav", "b/x.wav", "--output", "out", cwd=tmp_path)
    message = assert_one_line_error(same_name, 2)
    assert "a/x.wav and b/x.wav would both be written to out/x.json" in message

    same_stem = run_cli("detect", "talk.wav", "talk.ogg", "--output", "out", cwd=tmp_path)
    assert "talk.wav and talk.ogg" in assert_one_line_error(same_stem, 2)
    assert not out.exists()  # refused before anything was written


def test_the_same_file_twice_is_written_once(tmp_path: Path, speech16k: GoldenFixture) -> None:
    shutil.copy(ROOT / speech16k.file, tmp_path / "talk.wav")
    proc = run_cli("detect", "talk.wav", "./talk.wav", "--output", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["talk.json"]
    lines = (tmp_path / "out" / "talk.json").read_text().splitlines()
    assert len(lines) == 1 and _segments(json.loads(lines[0])) == speech16k.default_segments


def test_option_values_out_of_range_are_usage_errors_on_one_line() -> None:
    wav = "examples/audio/conversation.wav"
    many_workers = run_cli("detect", wav, "--workers", "1000")
    assert "must be <= 64" in assert_one_line_error(many_workers, 2)

    inverted = run_cli("detect", wav, "--threshold", "0.5", "--neg-threshold", "0.9")
    message = assert_one_line_error(inverted, 2)
    assert "--neg-threshold 0.9 is above --threshold 0.5" in message

    huge_chunks = run_cli("stream", "--chunk-ms", "100000000000", stdin=b"\0" * 64)
    assert "must be <= 60000" in assert_one_line_error(huge_chunks, 2)

    unknown = run_cli("detect", wav, "--format", "xml")
    assert "invalid choice" in assert_one_line_error(unknown, 2)

    # a detection option's error names the flag typed, and the command's own help
    negative = run_cli("detect", wav, "--min-speech-ms", "-5")
    assert assert_one_line_error(negative, 2).endswith(
        "--min-speech-ms must be finite and >= 0, got -5.0 (see `prevad-rx detect --help`)"
    )
    stray = run_cli("plot", wav, "other.wav", "-o", "x.png")
    assert assert_one_line_error(stray, 2).endswith(
        "unrecognized arguments: other.wav (see `prevad-rx plot --help`)"
    )

    # backend options: KEY=VALUE, passed to the backend; a backend that needs one says how
    malformed = run_cli("detect", wav, "--backend-option", "url")
    assert "expected KEY=VALUE, got 'url'" in assert_one_line_error(malformed, 2)
    missing_url = run_cli("detect", wav, "--backend", "vllm-api")
    message = assert_one_line_error(missing_url, 2)
    assert "'url'" in message and "--backend-option KEY=VALUE" in message
    passed = run_cli("detect", wav, "--backend-option", "intra_op_threads=1")
    assert passed.returncode == 0 and json.loads(passed.stdout)["segments"], passed.stderr


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(
    tmp_path: Path,
) -> None:
    wav = str(ROOT / "examples/audio/conversation.wav")
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder.png").mkdir()
    cases = [
        (("plot", wav, "-o", "afile/x.png"), "--output afile/x.png: afile is not a directory"),
        (("plot", wav, "-o", "folder.png"), "--output folder.png: is a directory"),
        (("detect", wav, "--output", "afile"), "--output afile: exists and is not a directory"),
        (
            ("bench", "--quick", "--scenario", "offline", "--output", "afile"),
            "--output afile: exists and is not a directory",
        ),
        (
            ("bench", "--quick", "--scenario", "offline", "--results", "afile/r.md"),
            "--results afile/r.md: afile is not a directory",
        ),
    ]
    for args, error in cases:
        proc = run_cli(*args, cwd=tmp_path, timeout=60)
        assert assert_one_line_error(proc, 2) == f"prevad-rx: error: {error}", args
        assert "[bench]" not in proc.stderr  # refused before the run started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.png"]


def _with_closed(fd: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``prevad-rx ARGS`` started with descriptor ``fd`` closed (as ``<&-`` does)."""
    return subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {fd}>&-', str(SCRIPT), *args],
        stdout=None if fd == 1 else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_closed_standard_streams(speech16k: GoldenFixture) -> None:
    """A closed descriptor 0/1 must not be taken over by the event loop's own (uvloop
    aborted the process closing it); commands that need the stream say so."""
    no_stdin = _with_closed(0, "detect", speech16k.file)
    assert no_stdin.returncode == 0, no_stdin.stderr
    assert _segments(json.loads(no_stdin.stdout)) == speech16k.default_segments

    no_stdout = _with_closed(1, "detect", speech16k.file)
    assert "standard output is closed" in assert_one_line_error(no_stdout, 1)

    stream = _with_closed(0, "stream")
    assert "standard input is closed" in assert_one_line_error(stream, 1)
