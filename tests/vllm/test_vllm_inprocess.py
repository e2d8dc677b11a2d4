"""The torch model and the in-process ``vllm`` backend, on the CPU build of vLLM.

Runs in ``.venv-vllm`` (``make test-vllm``); skipped where vLLM is not installed.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import prevad_rx as pv
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture, segments_as_lists

pytestmark = pytest.mark.vllm
torch = pytest.importorskip("torch")
pytest.importorskip("vllm")


def test_torch_model_matches_onnx(fixtures16k: tuple[GoldenFixture, ...]) -> None:
    from prevad_rx.backends._torch_model import build

    torch.set_num_threads(1)
    model = build()
    for fixture in fixtures16k:
        windows = torch.from_numpy(windows_for(fixture.audio, 16000))
        with torch.no_grad():
            (whole,), _ = model([windows], [torch.zeros(2, 128)])
            (head,), (state,) = model([windows[:200]], [torch.zeros(2, 128)])
            (tail,), _ = model([windows[200:]], [state])
        np.testing.assert_allclose(whole.numpy(), fixture.probabilities, atol=1e-5, rtol=0)
        carried = np.concatenate([head.numpy(), tail.numpy()])
        np.testing.assert_allclose(carried, fixture.probabilities, atol=1e-5, rtol=0)
        for params, expected in fixture.timestamps:
            segments = pv.segments_from_probabilities(
                whole.numpy(), num_samples=fixture.audio.size, config=pv.VADConfig(**params)
            )
            assert segments_as_lists(segments) == expected, params


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})])
async def test_inprocess_engine_equals_onnx(fixtures16k: tuple[GoldenFixture, ...]) -> None:
    async with pv.VADEngine("vllm", 1) as engine:

        async def one(index: int) -> tuple[GoldenFixture, pv.StreamResult]:
            fixture = fixtures16k[index % len(fixtures16k)]
            stream = engine.open_stream(f"s{index}", keep_probabilities=True)
            for start in range(0, fixture.audio.size, 32000):
                await stream.push(fixture.audio[start : start + 32000])
            return fixture, await stream.close()

        results = await asyncio.gather(*(one(i) for i in range(12)))
    for fixture, result in results:
        assert result.probabilities is not None
        np.testing.assert_allclose(result.probabilities, fixture.probabilities, atol=1e-4, rtol=0)
        assert segments_as_lists(result.segments) == fixture.default_segments
