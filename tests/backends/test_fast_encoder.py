"""The fast GEMM encoder: bit-identical to the reference graph, or not used at all."""

from __future__ import annotations

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import _fast_encoder, _onnx
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture


@pytest.fixture(scope="module")
def backend() -> _onnx.OnnxBackend:
    instance = pv.create_backend("onnx")
    instance.initialize()
    assert isinstance(instance, _onnx.OnnxBackend)
    return instance


def test_fast_encoder_is_used_and_bit_identical_on_speech(
    backend: _onnx.OnnxBackend, fixtures16k: tuple[GoldenFixture, ...]
) -> None:
    minimum = backend.fast_encoder_minimum
    assert minimum is not None and minimum <= 16  # verified on this machine
    for fixture in fixtures16k:
        windows = windows_for(fixture.audio, 16000)
        for size in (minimum, 7, 16, 31, 62, 256, 257, 258, 259, 300, 513, len(windows)):
            for start in range(0, len(windows) - size + 1, max(size, 97)):
                batch = windows[start : start + size]
                np.testing.assert_array_equal(
                    backend.encode(batch, 16000), backend._reference_encode(batch)
                )


def test_every_batch_size_up_to_two_blocks_is_exact(
    backend: _onnx.OnnxBackend, speech16k: GoldenFixture
) -> None:
    """Exhaustive over sizes: each size the backend sends to the fast encoder is exact,
    including the sizes it splits into blocks."""
    minimum = backend.fast_encoder_minimum
    assert minimum is not None
    windows = np.concatenate([windows_for(speech16k.audio, 16000)] * 2)
    block = _fast_encoder.BLOCK
    sizes = sorted(
        set(range(minimum, 65))
        | set(range(65, 2 * block, 7))
        | set(range(block - 6, block + 7))
        | set(range(2 * block - 6, 2 * block + 7))
    )
    for size in sizes:
        batch = windows[size : 2 * size]
        assert batch.shape[0] == size
        np.testing.assert_array_equal(
            backend.encode(batch, 16000), backend._reference_encode(batch), err_msg=str(size)
        )


def test_verify_rejects_an_encoder_that_differs(backend: _onnx.OnnxBackend) -> None:
    def off_by_a_bit(batch: np.ndarray) -> np.ndarray:
        out = backend._reference_encode(batch)
        return np.nextafter(out, np.float32(np.inf)) if len(batch) >= 50 else out

    frames = _fast_encoder.calibration_frames(512)
    assert _fast_encoder.verify(off_by_a_bit, backend._reference_encode, frames) is None
    assert _fast_encoder.verify(backend._reference_encode, backend._reference_encode, frames) == 1


def test_small_batches_that_differ_raise_the_minimum(backend: _onnx.OnnxBackend) -> None:
    def differs_below_ten(batch: np.ndarray) -> np.ndarray:
        out = backend._reference_encode(batch)
        return out + 1.0 if len(batch) < 10 else out

    frames = _fast_encoder.calibration_frames(512)
    assert _fast_encoder.verify(differs_below_ten, backend._reference_encode, frames) == 10


def test_unverified_fast_encoder_falls_back_or_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_onnx, "_verified_minimum", None)
    monkeypatch.setattr(_onnx, "verify", lambda fast, reference: None)
    auto = pv.create_backend("onnx")
    auto.initialize()
    assert isinstance(auto, _onnx.OnnxBackend) and auto.fast_encoder_minimum is None
    monkeypatch.setattr(_onnx, "_verified_minimum", None)
    with pytest.raises(pv.BackendError, match="not bit-identical"):
        pv.create_backend("onnx", encoder="fast").initialize()


def test_reference_mode_never_uses_the_fast_encoder() -> None:
    backend = pv.create_backend("onnx", encoder="reference")
    backend.initialize()
    assert isinstance(backend, _onnx.OnnxBackend) and backend.fast_encoder_minimum is None
    with pytest.raises(pv.BackendError, match="encoder must be"):
        pv.create_backend("onnx", encoder="quick")


def test_calibration_frames_are_deterministic_and_varied() -> None:
    a = _fast_encoder.calibration_frames(64)
    b = _fast_encoder.calibration_frames(64)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 576) and np.isfinite(a).all()
    peaks = np.abs(a).max(axis=1)
    assert peaks.min() == 0.0 and peaks.max() >= 1.0 and np.median(peaks) < 0.5
