"""The console examples of docs/cli.md print what they show."""

from __future__ import annotations

import re
import shlex

from tests.cli import run_cli
from tests.conftest import ROOT


def _examples() -> list[tuple[str, list[str]]]:
    """``(command, output lines)`` of each ``$ prevad-rx ...`` in the console blocks."""
    text = (ROOT / "docs" / "cli.md").read_text()
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples:
                examples[-1][1].append(line)
    return examples


def test_the_command_line_examples_print_what_the_docs_show() -> None:
    ran = 0
    for command, shown in _examples():
        if not command.startswith("prevad-rx ") or "|" in command or " -o " in command:
            continue  # a microphone or a pipe from another tool, or a picture to look at
        proc = run_cli(*shlex.split(command)[1:])
        printed = (proc.stdout + proc.stderr).splitlines()
        expected = shown[: shown.index("...")] if "..." in shown else shown
        assert printed[: len(expected)] == expected, command
        if "..." not in shown:
            assert len(printed) == len(expected), command
        ran += 1
    assert ran >= 2
