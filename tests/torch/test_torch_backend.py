"""The torch backend on torch CPU: probabilities within 1e-5 of ONNX, segments identical,
whether calls run at exact shapes or padded to buckets (the path CUDA graphs take)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import DecodeRequest, ModelRequest
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture, segments_as_lists

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

#: Tiny buckets so that every call is chunked and padded: frames, streams and steps.
BUCKETED = {"buckets": True, "max_frames": 48, "max_streams": 4, "max_steps": 5}
MODES = [pytest.param({}, id="exact"), pytest.param(BUCKETED, id="bucketed")]


@pytest.fixture(scope="module")
def onnx() -> pv.Backend:
    instance = pv.create_backend("onnx")
    instance.initialize()
    return instance


@pytest.fixture(scope="module", params=MODES)
def backend(request: pytest.FixtureRequest) -> pv.Backend:
    instance = pv.create_backend("torch", **request.param)
    instance.initialize()
    return instance


def test_probabilities_and_segments_match_onnx_on_every_fixture(
    backend: pv.Backend, fixtures16k: tuple[GoldenFixture, ...]
) -> None:
    assert fixtures16k
    for fixture in fixtures16k:
        windows = windows_for(fixture.audio, 16000)
        (result,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
        np.testing.assert_allclose(result.probabilities, fixture.probabilities, atol=1e-5, rtol=0)
        for params, expected in fixture.timestamps:
            segments = pv.segments_from_probabilities(
                result.probabilities, num_samples=fixture.audio.size, config=pv.VADConfig(**params)
            )
            assert segments_as_lists(segments) == expected, (fixture.file, params)


def test_batched_streams_of_different_lengths_match_onnx(
    backend: pv.Backend, onnx: pv.Backend, speech16k: GoldenFixture
) -> None:
    windows = windows_for(speech16k.audio, 16000)
    rng = np.random.default_rng(7)
    # more streams than a bucket, runs longer than max_steps, an empty run in the middle
    starts = [0, 17, 100, 3, 250, 40, 9]
    lengths = [len(windows), 5, 1, 60, 0, 11, 23]
    requests = [
        ModelRequest(
            windows[s : s + n], rng.standard_normal((2, 128)).astype(np.float32) * 0.2, 16000
        )
        for s, n in zip(starts, lengths, strict=True)
    ]
    got = backend.process(requests)
    expected = onnx.process(requests)
    assert len(got) == len(requests)
    for mine, theirs, request in zip(got, expected, requests, strict=True):
        assert mine.probabilities.dtype == np.float32 and mine.state.dtype == np.float32
        assert mine.state.shape == (2, 128)
        np.testing.assert_allclose(mine.probabilities, theirs.probabilities, atol=1e-5, rtol=0)
        np.testing.assert_allclose(mine.state, theirs.state, atol=1e-5, rtol=0)
        if request.windows.shape[0] == 0:
            np.testing.assert_array_equal(mine.state, request.state)


def test_results_survive_the_next_call(backend: pv.Backend, speech16k: GoldenFixture) -> None:
    """Bucketed calls stage results in reused buffers: what a call returned must not change."""
    windows = windows_for(speech16k.audio, 16000)
    (first,) = backend.process([ModelRequest(windows[:30], backend.initial_state(), 16000)])
    kept = (first.probabilities.copy(), first.state.copy())
    backend.process([ModelRequest(windows[300:340], backend.initial_state(), 16000)])
    np.testing.assert_array_equal(first.probabilities, kept[0])
    np.testing.assert_array_equal(first.state, kept[1])


def test_encode_then_decode_in_any_pieces_matches_onnx(
    backend: pv.Backend, speech16k: GoldenFixture
) -> None:
    windows = windows_for(speech16k.audio, 16000)
    assert backend.can_encode(16000) and not backend.can_encode(8000)
    cuts = [0, 3, 50, 51, 300, len(windows)]
    pieces = {
        a: backend.encode(windows[a:b], 16000) for a, b in reversed(list(itertools.pairwise(cuts)))
    }
    assert all(pieces[a].shape == (b - a, 128) for a, b in itertools.pairwise(cuts))
    state = backend.initial_state()
    probs = []
    for a in cuts[:-1]:
        (result,) = backend.decode([DecodeRequest(pieces[a], state, 16000)])
        probs.append(result.probabilities)
        state = result.state
    np.testing.assert_allclose(np.concatenate(probs), speech16k.probabilities, atol=1e-5, rtol=0)


def test_empty_calls(backend: pv.Backend) -> None:
    assert backend.encode(np.zeros((0, 576), np.float32), 16000).shape == (0, 128)
    assert backend.process([]) == []
    state = np.full((2, 128), 0.5, np.float32)
    (result,) = backend.decode([DecodeRequest(np.zeros((0, 128), np.float32), state, 16000)])
    assert result.probabilities.shape == (0,)
    np.testing.assert_array_equal(result.state, state)


def test_read_only_input_is_accepted(backend: pv.Backend, speech16k: GoldenFixture) -> None:
    windows = windows_for(speech16k.audio, 16000)[:40]
    windows.flags.writeable = False
    features = backend.encode(windows, 16000)
    np.testing.assert_array_equal(features, backend.encode(windows.copy(), 16000))


def test_the_model_shared_with_vllm_matches_onnx_on_ragged_runs(
    fixtures16k: tuple[GoldenFixture, ...],
) -> None:
    """``SileroVAD16k.forward`` (what the vLLM plugin runs): runs of different lengths."""
    from prevad_rx.backends._torch_model import build

    model = build()
    fixture = fixtures16k[0]
    windows = torch.from_numpy(windows_for(fixture.audio, 16000))
    with torch.no_grad():
        (head, short), (state, _) = model([windows[:200], windows[:7]], [torch.zeros(2, 128)] * 2)
        (tail,), _ = model([windows[200:]], [state])
    carried = np.concatenate([head.numpy(), tail.numpy()])
    np.testing.assert_allclose(carried, fixture.probabilities, atol=1e-5, rtol=0)
    np.testing.assert_allclose(short.numpy(), fixture.probabilities[:7], atol=1e-5, rtol=0)


def test_wrong_rate_is_a_backend_error(backend: pv.Backend) -> None:
    windows = np.zeros((1, 576), np.float32)
    with pytest.raises(pv.BackendError, match="16000"):
        backend.process([ModelRequest(windows, backend.initial_state(), 8000)])
    with pytest.raises(pv.BackendError, match="16000"):
        backend.encode(windows, 8000)
    with pytest.raises(pv.BackendError, match="16000"):
        backend.decode(
            [DecodeRequest(np.zeros((1, 128), np.float32), backend.initial_state(), 8000)]
        )


def test_malformed_inputs_are_backend_errors(backend: pv.Backend) -> None:
    state = backend.initial_state()
    with pytest.raises(pv.BackendError, match="576"):
        backend.encode(np.zeros((3, 575), np.float32), 16000)
    with pytest.raises(pv.BackendError, match="576"):
        backend.encode(np.zeros(576, np.float32), 16000)
    with pytest.raises(pv.BackendError, match="features"):
        backend.decode([DecodeRequest(np.zeros((3, 64), np.float32), state, 16000)])
    with pytest.raises(pv.BackendError, match="states"):
        backend.decode([DecodeRequest(np.zeros((3, 128), np.float32), state.reshape(-1), 16000)])
    with pytest.raises(pv.BackendError, match="states"):
        backend.decode(
            [
                DecodeRequest(np.zeros((3, 128), np.float32), state, 16000),
                DecodeRequest(np.zeros((2, 128), np.float32), state[:1], 16000),
            ]
        )


def test_use_before_initialize_is_a_backend_error() -> None:
    with pytest.raises(pv.BackendError, match="initialize"):
        pv.create_backend("torch").encode(np.zeros((1, 576), np.float32), 16000)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "meta"}, "'cpu', 'cuda' or 'cuda:N', got 'meta'"),
        ({"device": "not a device"}, "'cpu', 'cuda' or 'cuda:N'"),
        ({"device": 0}, "must be a str"),
        ({"cuda_graphs": True}, "needs a CUDA device"),
        ({"device": "cuda", "cuda_graphs": True, "buckets": False}, "needs buckets"),
        ({"max_frames": 0}, "max_frames"),
        ({"max_streams": 2.5}, "max_streams"),
        ({"max_steps": True}, "max_steps"),
        ({"intra_op_threads": 0}, "intra_op_threads"),
        ({"no_such_option": 1}, "bad options"),
    ],
)
def test_bad_options_are_backend_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(pv.BackendError, match=message):
        pv.create_backend("torch", **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA device")
def test_cuda_without_a_device_is_unavailable_not_a_crash() -> None:
    backend = pv.create_backend("torch", device="cuda")
    with pytest.raises(pv.BackendUnavailableError, match="no CUDA device"):
        backend.initialize()
    with pytest.raises(pv.BackendUnavailableError, match="no CUDA device"):
        pv.WorkerPool("torch", 1, backend_options={"device": "cuda:0"}).start()


def test_describe_says_where_it_runs_and_that_tf32_is_off() -> None:
    for options, bucketed in (({}, False), (BUCKETED, True)):
        backend = pv.create_backend("torch", **options)
        backend.initialize()
        info = backend.describe()
        assert info["device"] == "cpu" and info["tf32"] is False
        assert info["torch"] == torch.__version__ and info["buckets"] is bucketed
        assert info["cuda_graphs"] is False and info["preferred_workers"] is None
        backend.close()


def test_tf32_flags_are_off_after_initialize() -> None:
    from prevad_rx.backends._torch import disable_tf32

    assert disable_tf32(torch)
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        assert matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    else:
        assert not matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_intra_op_threads_is_applied_on_the_cpu() -> None:
    before = torch.get_num_threads()
    try:
        backend = pv.create_backend("torch", intra_op_threads=2)
        backend.initialize()
        assert torch.get_num_threads() == 2
        untouched = pv.create_backend("torch", intra_op_threads=None)
        torch.set_num_threads(3)
        untouched.initialize()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_reset_and_close(speech16k: GoldenFixture) -> None:
    backend = pv.create_backend("torch", **BUCKETED)
    backend.initialize()
    windows = windows_for(speech16k.audio, 16000)
    (before,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
    backend.reset()
    (after,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
    np.testing.assert_array_equal(before.probabilities, after.probabilities)
    backend.close()
    with pytest.raises(pv.BackendError, match="initialize"):
        backend.process([ModelRequest(windows, backend.initial_state(), 16000)])


def test_an_abandoned_backend_stops_counting_towards_its_device() -> None:
    """A CUDA backend given up at a deadline may never be closed: abandon() counts it out,
    once (a close() that does follow does not count it out again)."""
    from prevad_rx.backends import _torch

    first = _torch.TorchBackend(device="cuda:0")
    second = _torch.TorchBackend(device="cuda:0")
    before = _torch._devices["cuda:0"]
    first._count_on_device()  # what initialize() does on a CUDA device
    second._count_on_device()
    assert _torch._devices["cuda:0"] == before + 2
    first.abandon()
    assert _torch._devices["cuda:0"] == before + 1
    first.abandon()
    first.close()
    assert _torch._devices["cuda:0"] == before + 1  # the abandoned one counted out once
    second.close()
    assert _torch._devices["cuda:0"] == before
