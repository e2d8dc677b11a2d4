"""The ONNX backend: bit-identical to silero-vad's own ONNX path, batched or not."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import DecodeRequest, ModelRequest, _models, model_path
from tests.conftest import GoldenFixture, assert_silero_probabilities


def windows_for(audio: np.ndarray, rate: int) -> np.ndarray:
    """Model input rows for a whole signal: context + frame, last frame zero-padded."""
    frame, context = (512, 64) if rate == 16000 else (256, 32)
    n = -(-audio.size // frame)
    buffer = np.zeros(context + n * frame, np.float32)
    buffer[context : context + audio.size] = audio
    return np.stack([buffer[i * frame : i * frame + context + frame] for i in range(n)])


@pytest.fixture(scope="module")
def backend() -> pv.Backend:
    instance = pv.create_backend("onnx")
    instance.initialize()
    return instance


def test_probabilities_equal_silero_bit_for_bit(
    backend: pv.Backend, all_fixtures: tuple[GoldenFixture, ...]
) -> None:
    for fixture in all_fixtures:
        windows = windows_for(fixture.audio, fixture.sample_rate)
        (result,) = backend.process(
            [ModelRequest(windows, backend.initial_state(), fixture.sample_rate)]
        )
        assert_silero_probabilities(result.probabilities, fixture)


def test_batched_streams_of_different_lengths_equal_separate_calls(
    backend: pv.Backend, all_fixtures: tuple[GoldenFixture, ...]
) -> None:
    for rate in (16000, 8000):
        fixture = next(f for f in all_fixtures if f.sample_rate == rate)
        windows = windows_for(fixture.audio, rate)
        rng = np.random.default_rng(rate)
        starts = [0, 17, 100, 3]
        lengths = [len(windows), 5, 1, 60]
        states = [rng.standard_normal((2, 128)).astype(np.float32) * 0.2 for _ in starts]
        requests = [
            ModelRequest(windows[s : s + n], state, rate)
            for s, n, state in zip(starts, lengths, states, strict=True)
        ]
        batched = backend.process(requests)
        for request, result in zip(requests, batched, strict=True):
            (alone,) = backend.process([request])
            np.testing.assert_array_equal(result.probabilities, alone.probabilities)
            np.testing.assert_array_equal(result.state, alone.state)


def test_encode_then_decode_equals_process_and_splits_anywhere(
    backend: pv.Backend, speech16k: GoldenFixture
) -> None:
    windows = windows_for(speech16k.audio, 16000)
    assert backend.can_encode(16000) and not backend.can_encode(8000)
    # encode the frames in arbitrary pieces, in reverse order
    cuts = [0, 3, 50, 51, 300, len(windows)]
    pieces = {
        a: backend.encode(windows[a:b], 16000) for a, b in reversed(list(itertools.pairwise(cuts)))
    }
    state = backend.initial_state()
    probs = []
    for a in cuts[:-1]:
        (result,) = backend.decode([DecodeRequest(pieces[a], state, 16000)])
        probs.append(result.probabilities)
        state = result.state
    assert_silero_probabilities(np.concatenate(probs), speech16k)


@pytest.mark.parametrize(
    "lengths",
    [[1] * 7, [3, 3, 3], [1, 0, 1, 1], [0, 2, 0]],
    ids=["one frame each", "equal runs", "one frame, one empty", "ragged with empties"],
)
def test_batched_decode_equals_decoding_each_stream_alone(
    backend: pv.Backend, speech16k: GoldenFixture, lengths: list[int]
) -> None:
    """Whatever shape the decoder's batch takes (the live case: one frame per stream),
    each stream's probabilities and state are those of decoding it alone."""
    windows = windows_for(speech16k.audio, 16000)
    features = backend.encode(windows[:200], 16000)
    rng = np.random.default_rng(len(lengths))
    requests = []
    for k, n in enumerate(lengths):
        state = rng.standard_normal((2, 128)).astype(np.float32) * 0.2
        requests.append(DecodeRequest(features[20 * k : 20 * k + n], state, 16000))
    batched = backend.decode(requests)
    assert len(batched) == len(requests)
    for request, result in zip(requests, batched, strict=True):
        (alone,) = backend.decode([request])
        assert result.probabilities.shape == (request.features.shape[0],)
        np.testing.assert_array_equal(result.probabilities, alone.probabilities)
        np.testing.assert_array_equal(result.state, alone.state)


def test_empty_requests_keep_their_state(backend: pv.Backend) -> None:
    state = np.full((2, 128), 0.5, np.float32)
    empty16 = np.zeros((0, 576), np.float32)
    (result,) = backend.process([ModelRequest(empty16, state, 16000)])
    assert result.probabilities.shape == (0,)
    np.testing.assert_array_equal(result.state, state)


def test_wrong_rate_is_a_backend_error(backend: pv.Backend) -> None:
    with pytest.raises(pv.BackendError, match="8000 or 16000"):
        backend.process(
            [ModelRequest(np.zeros((1, 576), np.float32), backend.initial_state(), 44100)]
        )


def test_use_before_initialize_is_a_backend_error() -> None:
    fresh = pv.create_backend("onnx")
    with pytest.raises(pv.BackendError, match="initialize"):
        fresh.encode(np.zeros((1, 576), np.float32), 16000)


def test_bad_options_are_a_backend_error() -> None:
    with pytest.raises(pv.BackendError):
        pv.create_backend("onnx", intra_op_threads=0)
    with pytest.raises(pv.BackendError, match="bad options"):
        pv.create_backend("onnx", no_such_option=1)


def test_shipped_models_match_their_pins() -> None:
    pins = _models.pinned_digests()
    assert set(pins) >= set(_models.MODEL_FILES.values()) | {"LICENSE"}
    for role in _models.MODEL_FILES:
        assert model_path(role).is_file()
    licence = (model_path("streaming").parent / "LICENSE").read_text()
    assert "MIT" in licence and "Silero" in licence


def test_a_tampered_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    shutil.copytree(model_path("streaming").parent, models)
    target = models / _models.MODEL_FILES["encoder"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(_models, "_models_dir", lambda: models)
    monkeypatch.setattr(_models, "_verified", set())
    with pytest.raises(pv.ModelIntegrityError, match="sha256"):
        model_path("encoder")
