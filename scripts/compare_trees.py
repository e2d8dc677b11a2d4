"""CPU per 32 ms packet of this checkout against another revision, in one process.

    python scripts/compare_trees.py REV [--rounds 12] [--streams 128] [--seconds 3]

The package at ``REV`` (``git archive``) is loaded under another name next to this
checkout's, and the two run the per-core closed loop of ``bench_shards.py --scenario
per-core`` in alternating rounds, with this process pinned to one CPU: the same
process, CPU and minutes, so that a shared machine's noise falls on both alike (runs
in separate processes differed by up to 1.5x here). Prints each tree's median CPU µs
per packet and the median of the per-round ratios. ``REV`` must have
``prevad_rx/bench/_shards.py`` with ``_closed_loop``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OTHER = "prevad_rev"  # the package name REV's tree is loaded under


def export(rev: str, into: Path) -> None:
    """REV's ``prevad_rx`` as package ``OTHER`` under ``into`` (every reference renamed)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "prevad_rx"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "prevad_rx").rename(into / OTHER)
    for source in (into / OTHER).rglob("*.py"):
        source.write_text(source.read_text().replace("prevad_rx", OTHER))


def closed_loop(package: str) -> tuple[Any, Any, Any]:
    shards = importlib.import_module(f"{package}.bench._shards")
    if not hasattr(shards, "_closed_loop"):
        raise SystemExit(f"{package}: no bench._shards._closed_loop at this revision")
    scenarios = importlib.import_module(f"{package}.bench._scenarios")
    runtime = importlib.import_module(f"{package}._runtime")
    return shards._closed_loop, scenarios.speech, runtime.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", help="the git revision to compare with (e.g. HEAD~3)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--streams", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        trees = {"this checkout": closed_loop("prevad_rx"), args.rev: closed_loop(OTHER)}
        audio = {name: speech(args.seconds) for name, (_, speech, _) in trees.items()}
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
        cpu_us: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            order = list(trees.items())
            if round_ % 2:
                order.reverse()  # neither tree always goes first
            for name, (loop, _, run) in order:
                _, us = run(loop(args.streams, audio[name]))
                cpu_us[name].append(us)
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr, flush=True)
    ours, theirs = cpu_us["this checkout"], cpu_us[args.rev]
    for name, values in cpu_us.items():
        print(f"{name}: median {statistics.median(values):.1f} µs CPU per packet")
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(
        f"this checkout / {args.rev}: median {statistics.median(ratios):.3f} "
        f"({' '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
