"""A faster Silero encoder: the same sums as an ONNX graph of wide GEMMs, verified before use.

ONNX Runtime runs the reference encoder (STFT + four 1-D convolutions) one frame
at a time with tiny matrices: ~50 us per frame. The fast graph
(``silero_vad_16k_encoder_fast.onnx``, derived by ``scripts/derive_models.py``)
computes the STFT and the first two convolutions for all frames of a block as a
few wide ``MatMul`` calls (im2col inside the graph) and keeps the reference's own
``Conv`` nodes for the last two (3% of the work).

Why it is bit-identical, and not just close: ONNX Runtime's GEMM kernels (MLAS)
add up each dot product in passes over K whose width grows as the number of
output columns per call shrinks. The reference sums each of its dot products in
one pass (its per-frame GEMMs have 2-4 columns). The fast graph keeps that: its
weights are 3-D (``[groups, K, columns]``: never prepacked, one GEMM per group)
with at most 43 columns per STFT GEMM and 32 per convolution GEMM, so every dot
product is again one pass over the same K in the same (channel, tap) order, on
any x86-64 kernel (AVX2, AVX-512). Everything else is element-wise and exact.

This rests on MLAS internals, not a contract, so :func:`verify` still compares the
fast graph with the reference bit for bit at start-up, on calibration frames of
many batch sizes, and the backend uses it only from the smallest batch size from
which every size tested was identical. If nothing verifies (another ONNX Runtime
build, another CPU), the reference encoder runs everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BLOCK", "EncoderVerdict", "FastEncoder", "calibration_frames", "verify"]

_FRAME = 512
_CONTEXT = 64
_WIDTH = _FRAME + _CONTEXT
#: Frames per call of the fast graph: large enough for wide GEMMs, small enough for cache.
BLOCK = 256
#: Batch sizes checked by :func:`verify` (every block a call can produce is one of these
#: or lies between two of them).
# fmt: off
VERIFY_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 24, 31, 32, 33,
                48, 62, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 258, 300, 512)
# fmt: on


@dataclass(frozen=True, slots=True)
class EncoderVerdict:
    """Which encoder runs and why: the outcome of the start-up verification.

    ``path`` is ``"fast"`` when the fast graph runs batches of at least
    ``minimum_batch`` frames (smaller ones run the reference), ``"reference"``
    when the reference runs everything; ``reason`` says why, in words.
    """

    path: Literal["fast", "reference"]
    minimum_batch: int | None
    reason: str


class FastEncoder:
    """The fast encoder graph on one ONNX Runtime session, fed in balanced blocks."""

    def __init__(self, session: Any) -> None:
        self._session = session  # input [n, 576] -> features [n, 1, 128]

    def __call__(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """[n, 576] model input rows -> [n, 128] features."""
        n = windows.shape[0]
        if n <= BLOCK:
            return self._block(windows)
        # balanced blocks (sizes differ by at most one, all > BLOCK / 2): no tiny remainder
        # block, so every block size lies in the range the verification covers densely
        return np.concatenate(
            [self._block(part) for part in np.array_split(windows, math.ceil(n / BLOCK))]
        )

    def _block(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        (features,) = self._session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(features).reshape(x.shape[0], 128)


def calibration_frames(count: int = 2048, seed: int = 1729) -> NDArray[np.float32]:
    """Deterministic model input rows that exercise the encoder broadly: harmonic tones with
    noise over a wide range of levels, plain noise, silence and clipping."""
    rng = np.random.default_rng(seed)
    t = np.arange(_WIDTH) / 16000.0
    frames = np.empty((count, _WIDTH), np.float32)
    for i in range(count):
        kind = i % 4
        level = 10.0 ** rng.uniform(-4.5, 0.0)
        if kind == 0:
            f0 = rng.uniform(80, 400)
            tone = sum(
                np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8)
            )
            row = level * tone + level * 0.05 * rng.standard_normal(_WIDTH)
        elif kind == 1:
            row = level * rng.standard_normal(_WIDTH)
        elif kind == 2:
            row = np.zeros(_WIDTH) if i % 8 == 2 else level * 1e-3 * rng.standard_normal(_WIDTH)
        else:
            row = np.clip(3.0 * rng.standard_normal(_WIDTH), -1.0, 1.0)
        frames[i] = row
    return frames


def verify(
    fast: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    reference: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    frames: NDArray[np.float32] | None = None,
) -> int | None:
    """The smallest batch size from which ``fast`` equals ``reference`` bit for bit at every
    size tested (two batches per size), or None if even the largest size differs."""
    data = calibration_frames() if frames is None else frames
    exact: dict[int, bool] = {}
    offset = 0
    for size in VERIFY_SIZES:
        ok = True
        for _ in range(2):
            if offset + size > data.shape[0]:
                offset = 0
            batch = data[offset : offset + size]
            offset += size
            if not np.array_equal(fast(batch), reference(batch)):
                ok = False
                break
        exact[size] = ok
    minimum = None
    for size in reversed(VERIFY_SIZES):
        if not exact[size]:
            break
        minimum = size
    return minimum
