"""Ctrl-C: status 130, one line, no traceback, and nothing left waiting (for input or tasks)."""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.cli import SCRIPT, WITH_SIGINT
from tests.conftest import GoldenFixture


def _start(*args: str, cwd: Path, stdin: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT, str(SCRIPT), *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )


def _first_line(proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    """The first line the command prints: proof that it is at work."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), "no output from the command"
            chunk = os.read(fd, 4096)
            assert chunk, (proc.wait(), proc.stderr.read() if proc.stderr else b"")
            data += chunk
    return data


def _unread(fd: int) -> int:
    """Bytes written to a pipe and not yet read from it."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # hung: do not leave it behind
            proc.kill()
            proc.communicate()
    return proc.returncode, err.decode(errors="replace")


def test_ctrl_c_during_a_multi_file_detect(tmp_path: Path, speech16k: GoldenFixture) -> None:
    sf.write(tmp_path / "short.wav", speech16k.audio[:16000], 16000, subtype="PCM_16")
    long = np.resize(speech16k.audio, 16000 * 600)  # 10 minutes
    sf.write(tmp_path / "long.wav", long, 16000, subtype="PCM_16")
    names = [f"long{i}.wav" for i in range(8)]
    for name in names:
        os.link(tmp_path / "long.wav", tmp_path / name)
    # short.wav's line comes first; 80 minutes of audio on one worker are still to go
    proc = _start("detect", "short.wav", *names, "--workers", "1", cwd=tmp_path)
    _first_line(proc)
    status, err = _interrupt(proc)
    assert status == 130, err
    assert err == "prevad-rx: interrupted\n"


def test_ctrl_c_while_stream_waits_for_input(tmp_path: Path, speech16k: GoldenFixture) -> None:
    """stdin stays open (a microphone, an idle pipe): the read must not hold the exit."""
    read_end, write_end = os.pipe()
    proc = _start("stream", cwd=tmp_path, stdin=read_end)
    os.close(read_end)
    try:
        pcm = np.round(speech16k.audio[: 16000 * 2] * 32767).astype("<i2").tobytes()
        os.write(write_end, pcm)  # 2 s; the first segment starts at 0.74 s
        assert b"speech starts" in _first_line(proc)
        deadline = time.monotonic() + 30
        while _unread(write_end) and time.monotonic() < deadline:
            time.sleep(0.01)  # until all of it is read: the command now waits for more
        status, err = _interrupt(proc)
    finally:
        os.close(write_end)
    assert status == 130, err
    assert err == "prevad-rx: interrupted\n"
