"""The central guarantee: parallel streaming gives silero-vad's decisions, exactly.

For real (synthesised) speech, any chunking, any worker count, any slice size and
any interleaving of 50+ concurrent streams, each stream's per-frame probabilities
match one sequential silero pass with carried state (goldens from silero-vad's
own ONNX path) and its segments equal silero-vad's ``get_speech_timestamps``.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prevad_rx as pv
from prevad_rx.backends import ModelRequest
from tests.backends.test_onnx import windows_for
from tests.conftest import GoldenFixture, golden_fixtures, segments_as_lists

STREAMS = 52


def chunk_sizes(rng: np.random.Generator, total: int) -> list[int]:
    """Log-uniform chunk sizes from 1 sample to 10 s, covering ``total`` samples."""
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(math.exp(rng.uniform(0, math.log(160_000)))))
    return sizes


Outcome = tuple[GoldenFixture, int, pv.StreamResult, list[pv.SpeechEvent]]


async def run_engine(workers: int, frames_per_slice: int, seed: int) -> list[Outcome]:
    engine = pv.VADEngine(
        num_workers=workers, frames_per_slice=frames_per_slice, max_pending_slices=4
    )
    return await run_streams(engine, seed)


async def run_streams(engine: pv.VADEngine | pv.ShardedVADEngine, seed: int) -> list[Outcome]:
    """STREAMS streams at once, each a fixture with random parameters pushed in random
    chunks with a random interleaving."""
    fixtures = golden_fixtures()
    rng = np.random.default_rng(seed)
    async with engine:

        async def one(index: int) -> Outcome:
            fixture = fixtures[index % len(fixtures)]
            params_index = int(rng.integers(len(fixture.timestamps)))
            params = fixture.timestamps[params_index][0]
            stream = engine.open_stream(
                f"stream-{index}",
                sample_rate=fixture.sample_rate,
                config=pv.VADConfig(**params),
                keep_probabilities=True,
            )
            events: list[pv.SpeechEvent] = []
            stream.subscribe(events.append)
            position = 0
            for size in chunk_sizes(rng, fixture.audio.size):
                await stream.push(fixture.audio[position : position + size])
                position += size
                for _ in range(int(rng.integers(0, 3))):  # vary the interleaving
                    await asyncio.sleep(0)
            return fixture, params_index, await stream.close(), events

        return list(await asyncio.gather(*(one(i) for i in range(STREAMS))))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    workers=st.integers(min_value=1, max_value=8),
    frames_per_slice=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    use_uvloop=st.booleans(),
)
def test_many_streams_equal_silero(
    workers: int, frames_per_slice: int, seed: int, use_uvloop: bool
) -> None:
    results = pv.run(run_engine(workers, frames_per_slice, seed), use_uvloop=use_uvloop)
    assert_equal_silero(results)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    shards=st.integers(min_value=1, max_value=3),
    workers_per_shard=st.integers(min_value=1, max_value=2),
    frames_per_slice=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_many_streams_equal_silero_with_shards(
    shards: int, workers_per_shard: int, frames_per_slice: int, seed: int
) -> None:
    """The same property with the streams spread over shard processes."""

    async def main() -> list[Outcome]:
        engine = pv.ShardedVADEngine(
            shards=shards,
            workers_per_shard=workers_per_shard,
            frames_per_slice=frames_per_slice,
            max_pending_slices=4,
        )
        return await run_streams(engine, seed)

    assert_equal_silero(pv.run(main()))


def assert_equal_silero(results: list[Outcome]) -> None:
    assert len(results) == STREAMS
    for fixture, params_index, result, events in results:
        assert result.probabilities is not None
        np.testing.assert_allclose(result.probabilities, fixture.probabilities, rtol=0, atol=1e-5)
        expected = fixture.timestamps[params_index][1]
        assert segments_as_lists(result.segments) == expected
        # the events tell the same story as the result
        ends = [e.segment for e in events if e.kind == "end"]
        assert segments_as_lists(ends) == expected
        assert [e.sample for e in events if e.kind == "start"] == [s[0] for s in expected]


def test_tiny_chunks_down_to_one_sample(speech16k: GoldenFixture) -> None:
    frames = 40
    audio = speech16k.audio[: frames * 512]

    async def main() -> pv.StreamResult:
        async with pv.VADEngine(num_workers=2) as engine:
            stream = engine.open_stream("tiny", keep_probabilities=True)
            rng = np.random.default_rng(0)
            position = 0
            while position < audio.size:
                size = int(rng.integers(1, 64))
                await stream.push(audio[position : position + size])
                position += size
            return await stream.close()

    result = pv.run(main())
    assert result.probabilities is not None
    np.testing.assert_allclose(result.probabilities, speech16k.probabilities[:frames], atol=1e-5)


def naive_split_probabilities(
    backend: pv.Backend, fixture: GoldenFixture, chunk_frames: int, pieces: int
) -> np.ndarray:
    """The tempting, wrong parallelisation: each piece of a chunk on a fresh model instance."""
    windows = windows_for(fixture.audio, fixture.sample_rate)
    out = []
    for start in range(0, len(windows), chunk_frames):
        chunk = windows[start : start + chunk_frames].copy()
        for part in np.array_split(chunk, pieces):
            if part.shape[0]:
                part[0, :64] = 0.0  # a fresh instance has no context ...
                (result,) = backend.process(  # ... and no recurrent state
                    [ModelRequest(part, backend.initial_state(), fixture.sample_rate)]
                )
                out.append(result.probabilities)
    return np.concatenate(out)


def test_naive_splitting_changes_decisions(fixtures16k: tuple[GoldenFixture, ...]) -> None:
    """Guards against a regression to per-slice fresh state: it is measurably different."""
    backend = pv.create_backend("onnx")
    backend.initialize()
    changed_segments = 0
    for fixture in fixtures16k:
        naive = naive_split_probabilities(backend, fixture, chunk_frames=62, pieces=4)
        assert np.max(np.abs(naive - fixture.probabilities)) > 0.1
        segments = pv.segments_from_probabilities(naive, num_samples=fixture.audio.size)
        changed_segments += segments_as_lists(segments) != fixture.default_segments
    assert changed_segments == len(fixtures16k)  # measured: every fixture changes
