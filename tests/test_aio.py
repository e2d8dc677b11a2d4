"""aioreactive interop (the ``aio`` extra); run by ``make test-aio`` in its own venv,
where aioreactive 0.20 makes pip resolve reactivex 4.1."""

from __future__ import annotations

import asyncio

import pytest

import prevad_rx as pv
from tests.conftest import GoldenFixture, segments_as_lists

rx = pytest.importorskip("aioreactive")
from prevad_rx.aio import engine_events, stream_events  # noqa: E402

pytestmark = pytest.mark.anyio


async def test_stream_events_through_async_operators(speech16k: GoldenFixture) -> None:
    transcribed: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def fake_asr(event: pv.SpeechEvent) -> tuple[int, int]:
        await asyncio.sleep(0)  # an async call per segment, as an ASR client would make
        assert event.segment is not None
        return (event.segment.start_sample, event.segment.end_sample)

    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream("a")
        pipeline = rx.pipe(
            stream_events(stream),
            rx.filter(lambda e: e.kind == "end"),
            rx.map_async(fake_asr),
        )

        async def asend(value: tuple[int, int]) -> None:
            transcribed.append(value)

        async def aclose() -> None:
            done.set()

        observer = rx.AsyncAnonymousObserver(asend, aclose=aclose)
        subscription = await pipeline.subscribe_async(observer)
        for start in range(0, speech16k.audio.size, 16000):
            await stream.push(speech16k.audio[start : start + 16000])
        await stream.close()
        await asyncio.wait_for(done.wait(), 30)
        await subscription.dispose_async()
    assert [list(t) for t in transcribed] == speech16k.default_segments


async def test_engine_events_complete_on_close(speech16k: GoldenFixture) -> None:
    kinds: list[tuple[str, str]] = []
    closed = asyncio.Event()

    async def asend(event: pv.SpeechEvent) -> None:
        kinds.append((event.stream_id, event.kind))

    async def aclose() -> None:
        closed.set()

    async with pv.VADEngine(num_workers=2) as engine:
        await engine_events(engine).subscribe_async(rx.AsyncAnonymousObserver(asend, aclose=aclose))
        streams = [engine.open_stream(name) for name in ("x", "y")]
        for stream in streams:
            await stream.push(speech16k.audio)
        results = [await stream.close() for stream in streams]
    await asyncio.wait_for(closed.wait(), 30)
    for name, result in zip(("x", "y"), results, strict=True):
        assert segments_as_lists(result.segments) == speech16k.default_segments
        assert sum(1 for sid, kind in kinds if sid == name and kind == "end") == len(
            result.segments
        )


def test_reactivex_version_in_this_environment() -> None:
    """Documents which reactivex the extra resolves to (4.x, below aioreactive's pin)."""
    import importlib.metadata

    major = int(importlib.metadata.version("reactivex").split(".")[0])
    assert major == 4
