"""The command line, run as a user runs it: real subprocesses on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = Path(sys.executable).parent / "prevad-rx"

#: Runs a command with Ctrl-C's default meaning restored (a test runner started in the
#: background inherits SIGINT ignored, and so would the command).
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def run_cli(
    *args: str | bytes,
    cwd: Path = ROOT,
    stdin: bytes = b"",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``prevad-rx ARGS...``; stdout and stderr as text (bytes that are not UTF-8 escaped)."""
    proc = subprocess.run(
        [os.fsencode(SCRIPT), *(os.fsencode(a) for a in args)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="backslashreplace"),
        proc.stderr.decode(errors="backslashreplace"),
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    """The command failed with ``status`` and exactly one ``prevad-rx: error:`` line."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("prevad-rx: error: ") and proc.stderr.count("\n") == 1, (
        proc.stderr
    )
    return proc.stderr.strip()
