"""The graph path of the torch backend, on the CPU: each bucketed shape is captured once and
replayed, reading the static input buffers and refilling the captured outputs.

A CUDA graph cannot run without a GPU, so a stand-in with its contract takes its place: a
replay re-runs the *captured* call (which reads the memory the capture read) and writes into
the *captured* outputs. Inputs staged anywhere but in those static buffers, or outputs read
from anywhere but the captured tensors, give wrong probabilities here as on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import ModelRequest
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

from prevad_rx.backends._torch import TorchBackend, _Runner  # noqa: E402

OPTIONS = {"buckets": True, "max_frames": 64, "max_streams": 4, "max_steps": 8}


class GraphStandIn:
    """Captures by running once; a replay re-runs the captured call into the captured outputs."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def __call__(self, fn: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        self.captures += 1
        outputs = fn()
        captured = outputs if isinstance(outputs, tuple) else (outputs,)
        for tensor in captured:
            tensor.fill_(float("nan"))  # a captured graph's outputs hold nothing until a replay

        def replay() -> None:
            self.replays += 1
            fresh = fn()
            for out, new in zip(
                captured, fresh if isinstance(fresh, tuple) else (fresh,), strict=True
            ):
                out.copy_(new)

        return replay, outputs


def with_graphs(stand_in: GraphStandIn) -> TorchBackend:
    backend = TorchBackend(**OPTIONS)
    backend.initialize()
    eager = backend._runner
    assert eager is not None
    backend._runner = _Runner(
        torch,
        eager.model,
        eager.device,
        graphs=True,
        static=True,
        max_frames=OPTIONS["max_frames"],
        max_streams=OPTIONS["max_streams"],
        max_steps=OPTIONS["max_steps"],
        capture=stand_in,
    )
    return backend


def requests_for(fixture: GoldenFixture) -> list[ModelRequest]:
    windows = windows_for(fixture.audio, 16000)
    rng = np.random.default_rng(3)
    cuts = [(0, len(windows)), (5, 70), (100, 101), (20, 43), (300, 309), (7, 200)]
    return [
        ModelRequest(windows[a:b], rng.standard_normal((2, 128)).astype(np.float32) * 0.1, 16000)
        for a, b in cuts
    ]


def test_replayed_graphs_give_what_the_eager_bucketed_path_gives(
    speech16k: GoldenFixture,
) -> None:
    stand_in = GraphStandIn()
    graphed = with_graphs(stand_in)
    eager = pv.create_backend("torch", **OPTIONS)
    eager.initialize()
    requests = requests_for(speech16k)
    first = graphed.process(requests)
    shapes = stand_in.captures
    assert shapes == graphed.describe()["graphs_captured"] and shapes > 2
    again = graphed.process(requests)
    assert stand_in.captures == shapes  # every shape was captured once, then replayed
    assert stand_in.replays > shapes
    for mine, replayed, theirs in zip(first, again, eager.process(requests), strict=True):
        np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)
        np.testing.assert_array_equal(mine.state, theirs.state)
        np.testing.assert_array_equal(replayed.probabilities, theirs.probabilities)


def test_graphs_match_onnx_on_every_fixture(fixtures16k: tuple[GoldenFixture, ...]) -> None:
    backend = with_graphs(GraphStandIn())
    for fixture in fixtures16k:
        windows = windows_for(fixture.audio, 16000)
        (result,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
        np.testing.assert_allclose(result.probabilities, fixture.probabilities, atol=1e-5, rtol=0)


def test_reset_drops_the_graphs_and_they_are_captured_again(speech16k: GoldenFixture) -> None:
    stand_in = GraphStandIn()
    backend = with_graphs(stand_in)
    requests = requests_for(speech16k)[:2]
    before = backend.process(requests)
    captured = stand_in.captures
    backend.reset()
    assert backend.describe()["graphs_captured"] == 0
    after = backend.process(requests)
    assert stand_in.captures == 2 * captured
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_precapture_captures_every_shape_so_calls_only_replay(speech16k: GoldenFixture) -> None:
    stand_in = GraphStandIn()
    backend = with_graphs(stand_in)
    buckets = (backend._frame_buckets, backend._stream_buckets, backend._step_buckets)
    assert backend._runner is not None
    backend._runner.precapture(*buckets)
    shapes = len(buckets[0]) + len(buckets[1]) * len(buckets[2])
    assert stand_in.captures == shapes == backend.describe()["graphs_captured"]
    windows = windows_for(speech16k.audio, 16000)
    (result,) = backend.process([ModelRequest(windows, backend.initial_state(), 16000)])
    assert stand_in.captures == shapes
    np.testing.assert_allclose(result.probabilities, speech16k.probabilities, atol=1e-5, rtol=0)
