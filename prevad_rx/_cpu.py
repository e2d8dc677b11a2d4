"""What the CPU offers: its model name and the vector extensions that decide kernel choice.

ONNX Runtime picks its GEMM kernels by these extensions, so benchmarks and the fast
encoder's start-up log name them: a figure or a verdict belongs to a kind of CPU.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_model", "vector_extensions"]

# /proc/cpuinfo flag -> name, in the order they are reported
_X86_FLAGS = (
    ("sse4_2", "SSE4.2"),
    ("avx", "AVX"),
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx512f", "AVX-512F"),
    ("avx512bw", "AVX-512BW"),
    ("avx512_vnni", "AVX-512VNNI"),
    ("avx512_bf16", "AVX-512BF16"),
    ("amx_tile", "AMX"),
)
_ARM_FLAGS = (("asimd", "NEON"), ("sve", "SVE"), ("sve2", "SVE2"))


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _first(text: str, *keys: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in keys:
            return value.strip()
    return None


@cache
def vector_extensions() -> tuple[str, ...]:
    """The SIMD extensions of this CPU that matter for kernel choice, e.g. ``("AVX2", "FMA")``.

    Read from ``/proc/cpuinfo`` on Linux; on other systems only what the machine type
    implies (64-bit ARM always has NEON). Empty when nothing is known.
    """
    machine = platform.machine().lower()
    flags = set((_first(_cpuinfo(), "flags", "Features") or "").split())
    if machine in ("arm64", "aarch64"):
        found = [name for flag, name in _ARM_FLAGS if flag in flags]
        return tuple(found) if found else ("NEON",)
    return tuple(name for flag, name in _X86_FLAGS if flag in flags)


@cache
def cpu_model() -> str:
    """A human-readable CPU name, e.g. ``"AMD EPYC 7B13"`` (falls back to the machine type)."""
    text = _cpuinfo()
    return (
        _first(text, "model name", "Model", "Hardware")
        or platform.processor()
        or (platform.machine() or "unknown CPU")
    )
