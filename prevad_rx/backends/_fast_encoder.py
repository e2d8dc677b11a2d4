"""A faster Silero encoder: the same arithmetic as large GEMMs, verified bit-identical before use.

ONNX Runtime runs Silero's STFT and convolutions one frame at a time with tiny
matrices (time axis of 4); that costs ~50 us per frame here. Written as three
large GEMMs over all frames of a batch -- windows x STFT basis, then the first
two convolutions via im2col with the convolution's own (channel, tap) order of
summation -- the same sums take ~4x less time. The last two convolutions (3% of
the work, where the reference multiplies one column per frame) run in ONNX Runtime
as batched ``MatMul`` with exactly those per-frame shapes
(``silero_vad_16k_encoder_tail.onnx``).

Bit-identical results are not a mathematical given: they hold when the BLAS
accumulates each dot product in the same order as ONNX Runtime's convolution.
So :func:`verify` compares the fast encoder with the reference one, bit for
bit, on calibration frames of many batch sizes, and the backend uses it only
from the smallest batch size from which every size tested was identical
(smaller batches can take different BLAS kernels); everything else runs the
reference encoder. If nothing verifies, the fast encoder is not used at all.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["FastEncoder", "calibration_frames", "verify"]

log = logging.getLogger("prevad_rx.backends")

_FRAME = 512
_CONTEXT = 64
_WIDTH = _FRAME + _CONTEXT
#: Frames per GEMM block: large enough for the big-matrix kernels, small enough for cache.
BLOCK = 256
#: Batch sizes checked by :func:`verify` (every block a call can produce is one of these
#: or lies between two of them).
# fmt: off
VERIFY_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 24, 31, 32, 33,
                48, 62, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 258, 300, 512)
# fmt: on

_blas_lock = threading.Lock()
_blas_limited = False


def limit_blas_threads() -> None:
    """Make BLAS single-threaded, process-wide (once): the worker pool is the parallelism,
    and a multi-threaded BLAS under several workers only oversubscribes the cores."""
    global _blas_limited
    with _blas_lock:
        if not _blas_limited:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
            _blas_limited = True
            log.info("prevad_rx: BLAS limited to one thread per call (fast encoder)")


class FastEncoder:
    """Silero's 16 kHz encoder as large GEMMs (numpy) plus the original last two convolutions."""

    def __init__(self, weights: dict[str, NDArray[np.float32]], tail: Any) -> None:
        self._basis_t = weights["stft_basis_t"]  # [256, 258]
        self._w0 = weights["conv0_w_t"]  # [387, 128]
        self._b0 = weights["conv0_b"]
        self._w1 = weights["conv1_w_t"]  # [384, 64]
        self._b1 = weights["conv1_b"]
        self._tail = tail  # ORT session: h1 [n, 2, 64], zeros [n, 64, 1] -> [n, 1, 128]
        self._zeros = np.zeros((BLOCK, 64, 1), np.float32)

    def __call__(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """[n, 576] model input rows -> [n, 128] features."""
        n = windows.shape[0]
        if n <= BLOCK:
            return self._block(windows)
        # balanced blocks (sizes differ by at most one, all > BLOCK / 2): never a tiny
        # remainder, whose small GEMMs may take other BLAS kernels than verified
        return np.concatenate(
            [self._block(part) for part in np.array_split(windows, math.ceil(n / BLOCK))]
        )

    def _block(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        n = x.shape[0]
        # STFT: 4 windows of 256 at hops of 128 over the frame, reflect-padded by 64 on the right
        padded = np.empty((n, _WIDTH + 64), np.float32)
        padded[:, :_WIDTH] = x
        padded[:, _WIDTH:] = x[:, _WIDTH - 2 : _WIDTH - 66 : -1]
        windows = np.lib.stride_tricks.as_strided(
            padded, (n, 4, 256), (padded.strides[0], 512, 4)
        ).reshape(n * 4, 256)
        spec = windows @ self._basis_t  # [n*4, 258]: real 0..128, imaginary 129..257
        power = spec * spec
        mag = np.sqrt(power[:, :129] + power[:, 129:]).reshape(n, 4, 129)
        # conv0 (k=3, stride 1, pad 1) over time: im2col in (channel, tap) order
        cols0 = np.empty((n, 4, 129, 3), np.float32)
        cols0[:, 0, :, 0] = 0.0
        cols0[:, 1:, :, 0] = mag[:, :3]
        cols0[:, :, :, 1] = mag
        cols0[:, :3, :, 2] = mag[:, 1:]
        cols0[:, 3, :, 2] = 0.0
        h0 = cols0.reshape(n * 4, 387) @ self._w0
        h0 += self._b0
        np.maximum(h0, 0.0, out=h0)
        # conv1 (k=3, stride 2, pad 1): output t reads inputs 2t-1, 2t, 2t+1
        h0 = h0.reshape(n, 4, 128)
        cols1 = np.empty((n, 2, 128, 3), np.float32)
        cols1[:, 0, :, 0] = 0.0
        cols1[:, 1, :, 0] = h0[:, 1]
        cols1[:, :, :, 1] = h0[:, 0::2]
        cols1[:, :, :, 2] = h0[:, 1::2]
        h1 = cols1.reshape(n * 2, 384) @ self._w1
        h1 += self._b1
        np.maximum(h1, 0.0, out=h1)
        (features,) = self._tail.run(None, {"h1": h1.reshape(n, 2, 64), "zeros": self._zeros[:n]})
        return np.asarray(features).reshape(n, 128)


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
    size tested (two batches per size), or None if even full blocks differ."""
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
