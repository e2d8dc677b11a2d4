"""The fast encoder graph: bit-identical to the reference graph where it runs, on any CPU.

Which path runs depends on the CPU and the onnxruntime build (the start-up
verification decides); the pytest header says which one ran here. Every test
below holds on either path.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import prevad_rx as pv
from prevad_rx.backends import _fast_encoder, _onnx
from prevad_rx.backends._models import model_path
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture


@pytest.fixture(scope="module")
def backend() -> _onnx.OnnxBackend:
    instance = pv.create_backend("onnx")
    instance.initialize()
    assert isinstance(instance, _onnx.OnnxBackend)
    return instance


@pytest.fixture
def fresh_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the process-wide verdicts, so the next backend verifies again."""
    monkeypatch.setattr(_onnx, "_verdicts", {})


def test_encoder_output_is_exact_whichever_path_runs(
    backend: _onnx.OnnxBackend, fixtures16k: tuple[GoldenFixture, ...]
) -> None:
    for fixture in fixtures16k:
        windows = windows_for(fixture.audio, 16000)
        for size in (1, 3, 7, 16, 31, 62, 256, 257, 258, 259, 300, 513, len(windows)):
            for start in range(0, len(windows) - size + 1, max(size, 97)):
                batch = windows[start : start + size]
                np.testing.assert_array_equal(
                    backend.encode(batch, 16000), backend._reference_encode(batch)
                )


def test_fast_graph_is_bit_identical_over_sizes_and_block_boundaries(
    backend: _onnx.OnnxBackend, speech16k: GoldenFixture
) -> None:
    """Every size from the smallest verified one to 64, every size within 6 of one and two
    blocks (where calls are split), and every 7th size in between. Runs only where the fast
    graph verified (the header says)."""
    verdict = backend.encoder_verdict
    if verdict.path != "fast":
        pytest.skip(f"the reference encoder runs on this machine: {verdict.reason}")
    minimum = backend.fast_encoder_minimum
    assert minimum is not None and minimum == verdict.minimum_batch
    assert backend._fast is not None
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
            backend._fast(batch),
            backend._reference_encode(batch),
            err_msg=str(size),
        )


def test_fast_graph_computes_the_reference_function_on_any_cpu(
    backend: _onnx.OnnxBackend, speech16k: GoldenFixture
) -> None:
    """Independent of rounding: the fast graph is the same function (to float32 noise) even
    where the verification would reject it, so a wiring error cannot hide behind a fallback."""
    import onnxruntime as ort

    fast = _fast_encoder.FastEncoder(
        ort.InferenceSession(str(model_path("encoder_fast")), providers=["CPUExecutionProvider"])
    )
    windows = windows_for(speech16k.audio, 16000)
    for batch in (windows[:1], windows[:37], windows[: 2 * _fast_encoder.BLOCK + 5]):
        np.testing.assert_allclose(
            fast(batch), backend._reference_encode(batch), rtol=1e-5, atol=1e-6
        )


def test_fast_graph_follows_the_one_pass_rule() -> None:
    """The construction the exactness rests on, checked on the shipped file: every GEMM is a
    MatMul with a 3-D constant weight (never prepacked, never fused into Gemm) of at most 43
    columns for the STFT and 32 for the convolutions; the last two convolutions are the
    reference's own Conv nodes."""
    model = onnx.load(str(model_path("encoder_fast")))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ops = [node.op_type for node in model.graph.node]
    assert "Gemm" not in ops and ops.count("Conv") == 2
    matmuls = [node for node in model.graph.node if node.op_type == "MatMul"]
    shapes = sorted(weights[node.input[1]].shape for node in matmuls)
    assert shapes == [(2, 384, 32), (4, 387, 32), (6, 256, 43)]
    reference = onnx.load(str(model_path("encoder")))
    ref_weights = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    for name in ("encoder.2.weight", "encoder.3.weight"):
        assert any(np.array_equal(ref_weights[name], w) for w in weights.values()), name


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


@pytest.mark.usefixtures("fresh_verdicts")
def test_unverified_fast_encoder_falls_back_quietly_or_refuses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_onnx, "verify", lambda fast, reference: None)
    with caplog.at_level(logging.INFO, logger="prevad_rx"):
        auto = pv.create_backend("onnx")
        auto.initialize()
    assert isinstance(auto, _onnx.OnnxBackend)
    assert auto.fast_encoder_minimum is None
    assert auto.encoder_verdict.path == "reference"
    assert "not bit-identical" in auto.encoder_verdict.reason
    assert auto.describe()["encoder"] == "reference"
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # logged, never a warning
    # the reference encoder answers every size
    frames = _fast_encoder.calibration_frames(5)
    np.testing.assert_array_equal(auto.encode(frames, 16000), auto._reference_encode(frames))
    with pytest.raises(pv.BackendError, match="not bit-identical"):
        pv.create_backend("onnx", encoder="fast").initialize()


@pytest.mark.usefixtures("fresh_verdicts")
def test_the_verdict_is_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="prevad_rx"):
        for _ in range(3):
            pv.create_backend("onnx").initialize()
    records = [r for r in caplog.records if "encoder" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert records[0].getMessage().startswith(("prevad_rx: fast encoder", "prevad_rx: reference"))
    assert "CPU:" in records[0].getMessage()


def test_reference_mode_never_uses_the_fast_encoder() -> None:
    backend = pv.create_backend("onnx", encoder="reference")
    backend.initialize()
    assert isinstance(backend, _onnx.OnnxBackend) and backend.fast_encoder_minimum is None
    assert backend.encoder_verdict.path == "reference"
    with pytest.raises(pv.BackendError, match="encoder must be"):
        pv.create_backend("onnx", encoder="quick")


@pytest.mark.anyio
async def test_engine_statistics_say_which_encoder_runs(backend: _onnx.OnnxBackend) -> None:
    async with pv.VADEngine(num_workers=1) as engine:
        info = engine.statistics().pool.backend_info
    assert info["encoder"] == backend.encoder_verdict.path
    assert info["fast_encoder_minimum_batch"] == backend.fast_encoder_minimum


def test_calibration_frames_are_deterministic_and_varied() -> None:
    a = _fast_encoder.calibration_frames(64)
    b = _fast_encoder.calibration_frames(64)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 576) and np.isfinite(a).all()
    peaks = np.abs(a).max(axis=1)
    assert peaks.min() == 0.0 and peaks.max() >= 1.0 and np.median(peaks) < 0.5
