"""AsyncParallelVAD, the single-stream facade of the original design."""

from __future__ import annotations

import numpy as np
import pytest

import prevad_rx as pv
from tests.conftest import GoldenFixture, segments_as_lists

pytestmark = pytest.mark.anyio


async def test_process_chunks_then_get_results(speech16k: GoldenFixture) -> None:
    async with pv.AsyncParallelVAD(backend_type="onnx", num_workers=4, threshold=0.5) as vad:
        streamed: list[pv.Segment] = []
        for start in range(0, speech16k.audio.size, 32000):
            streamed += await vad.process_chunk(speech16k.audio[start : start + 32000])
        segments = await vad.get_results()
    assert segments_as_lists(segments) == speech16k.default_segments
    # what process_chunk returned along the way is a final prefix of the result
    assert segments_as_lists(streamed) == speech16k.default_segments[: len(streamed)]
    assert len(streamed) >= len(segments) - 1
    assert segments[0].start_time_ms == pytest.approx(segments[0].start_sample / 16.0)
    assert segments[0].end_time_ms == pytest.approx(segments[0].end_sample / 16.0)


async def test_config_keywords_and_successive_recordings(speech16k: GoldenFixture) -> None:
    params, expected = speech16k.timestamps[3]
    vad = pv.AsyncParallelVAD(num_workers=2, **params)
    await vad.initialize()
    try:
        for _ in range(2):  # get_results ends one recording; the next chunk starts another
            await vad.process_chunk(speech16k.audio)
            assert segments_as_lists(await vad.get_results()) == expected
    finally:
        await vad.close()


async def test_use_before_initialize() -> None:
    vad = pv.AsyncParallelVAD(num_workers=1)
    with pytest.raises(pv.ClosedError, match="initialize"):
        await vad.process_chunk(np.zeros(512, np.float32))
    with pytest.raises(pv.ConfigError):
        pv.AsyncParallelVAD(threshold=3.0)
