"""Your operators and callbacks cannot hang or stop the engine: faults stay in their stream.

Each test is written as a user would hit the problem: an operator that raises, drops the
end-of-stream chunk or emits the wrong type; a callback raising a ``BaseException``; a
consumer task cancelled before it ever ran; a config whose arithmetic overflows.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable

import numpy as np
import pytest
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx._fanout import EventFanout
from tests.conftest import GoldenFixture, segments_as_lists

pytestmark = pytest.mark.anyio

#: Generous: only a hang (the bug) ever reaches it.
DEADLINE = 60.0


async def feed(
    stream: pv.VADStream, audio: np.ndarray, step: int = 8000, *, paced: bool = False
) -> pv.StreamResult:
    """Push ``audio`` in ``step``-sample chunks and close; ``paced``: one chunk per loop
    iteration (else a stream ahead of the engine sends its pushes on as larger chunks)."""
    for start in range(0, audio.size, step):
        await stream.push(audio[start : start + step])
        if paced:
            await asyncio.sleep(0)
    return await stream.close()


async def within(awaitable: object) -> object:
    return await asyncio.wait_for(awaitable, DEADLINE)  # type: ignore[arg-type]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


# ------------------------------------------------- an operator that swallows the end marker


@pytest.mark.parametrize(
    "swallow",
    [
        pytest.param(lambda: ops.filter(lambda c: rms(c.samples) > 0.001), id="noise-gate"),
        pytest.param(
            lambda: ops.map(lambda c: pv.AudioChunk(c.stream_id, c.samples, c.sample_rate)),
            id="map-losing-the-flag",
        ),
    ],
)
async def test_an_audio_operator_dropping_the_end_chunk_does_not_hang_close(
    speech16k: GoldenFixture, swallow: Callable[[], pv.operators.Operator[object, object]]
) -> None:
    async def run() -> pv.StreamResult:
        async with pv.VADEngine(num_workers=2, audio_operators=[swallow()]) as engine:
            return await feed(engine.open_stream("gated"), speech16k.audio)

    result = await within(run())
    assert isinstance(result, pv.StreamResult)
    assert segments_as_lists(result.segments) == speech16k.default_segments


# ------------------------------------------------------- an operator that raises, once


def fails_once_on(stream_id: str, error: BaseException) -> Callable[[pv.AudioChunk], pv.AudioChunk]:
    seen = {"n": 0}

    def step(chunk: pv.AudioChunk) -> pv.AudioChunk:
        if chunk.stream_id == stream_id:
            seen["n"] += 1
            if seen["n"] == 3:
                raise error
        return chunk

    return step


@pytest.mark.parametrize(
    "error",
    [ValueError("my operator failed once"), asyncio.CancelledError("a cancelled future")],
    ids=["exception", "base-exception"],
)
async def test_a_raising_audio_operator_fails_only_its_stream(
    speech16k: GoldenFixture, error: BaseException
) -> None:
    audio = speech16k.audio
    operator = ops.map(fails_once_on("a", error))
    async with pv.VADEngine(num_workers=2, audio_operators=[operator]) as engine:
        a, b = engine.open_stream("a"), engine.open_stream("b")
        for start in range(0, 24000, 8000):  # the third chunk makes the operator raise
            await a.push(audio[start : start + 8000])
            await b.push(audio[start : start + 8000])
            await asyncio.sleep(0)  # pushes of one loop iteration enter the chain as one chunk
        with pytest.raises(pv.OperatorError) as failed:
            await a.push(audio[24000:32000])  # visible at the stream's next push
        for start in range(24000, 48000, 8000):  # the neighbour's pushes all succeed
            await b.push(audio[start : start + 8000])
        with pytest.raises(pv.OperatorError):
            await within(a.flush())  # and flush
        result_b = await within(feed(b, audio[48000:]))
        later = await within(feed(engine.open_stream("c"), audio))  # the engine goes on
        again = await within(feed(engine.open_stream("a"), audio))  # and the id is free
    assert failed.value.stream_id == "a" and failed.value.__cause__ is error
    assert "audio_operators[0]" in str(failed.value) and failed.value.operator
    with pytest.raises(pv.OperatorError):
        await a.close()  # and at close()
    for result in (result_b, later, again):
        assert segments_as_lists(result.segments) == speech16k.default_segments


async def test_a_raising_event_operator_fails_only_its_stream(speech16k: GoldenFixture) -> None:
    def strict(event: pv.SpeechEvent) -> pv.SpeechEvent:
        if event.stream_id == "a" and event.kind == "end":
            raise RuntimeError("my event operator failed")
        return event

    async with pv.VADEngine(num_workers=2, event_operators=[ops.map(strict)]) as engine:
        a, b = engine.open_stream("a"), engine.open_stream("b")
        results = await within(
            asyncio.gather(
                feed(a, speech16k.audio), feed(b, speech16k.audio), return_exceptions=True
            )
        )
        reopened = await within(feed(engine.open_stream("b"), speech16k.audio))
    failure, result_b = results  # type: ignore[misc]
    assert isinstance(failure, pv.OperatorError) and "event_operators[0]" in str(failure)
    assert isinstance(failure.__cause__, RuntimeError)
    assert segments_as_lists(result_b.segments) == speech16k.default_segments
    assert segments_as_lists(reopened.segments) == speech16k.default_segments


async def test_a_config_overflowing_inside_the_segmenter_fails_only_its_stream(
    speech16k: GoldenFixture,
) -> None:
    with pytest.raises(pv.ConfigError):  # such a config is refused up front now ...
        pv.VADConfig(speech_pad_ms=1e308)
    broken = pv.VADConfig()
    object.__setattr__(broken, "speech_pad_ms", 1e308)  # ... so force one past the checks
    async with pv.VADEngine(num_workers=2) as engine:
        bad = engine.open_stream("bad", config=broken, keep_audio=True)
        good = engine.open_stream("good", keep_audio=True)
        results = await within(
            asyncio.gather(
                # paced: the first item ends before speech starts, where the pad is used
                feed(bad, speech16k.audio, paced=True),
                feed(good, speech16k.audio),
                return_exceptions=True,
            )
        )
        later = await within(feed(engine.open_stream("later"), speech16k.audio))
    failure, result = results  # type: ignore[misc]
    assert isinstance(failure, pv.StreamFailedError) and failure.stream_id == "bad"
    assert isinstance(failure.__cause__, OverflowError)
    assert segments_as_lists(result.segments) == speech16k.default_segments
    assert segments_as_lists(later.segments) == speech16k.default_segments


# ---------------------------------------------------- an operator emitting the wrong type


async def test_an_event_operator_returning_dicts_fails_its_stream_once(
    speech16k: GoldenFixture, caplog: pytest.LogCaptureFixture
) -> None:
    broken = {"a"}

    def as_dict(event: pv.SpeechEvent) -> object:
        if event.stream_id in broken:
            return {"stream": event.stream_id, "kind": event.kind}
        return event

    async with pv.VADEngine(num_workers=2, event_operators=[ops.map(as_dict)]) as engine:
        seen: list[pv.SpeechEvent] = []
        engine.subscribe(seen.append)
        results = await within(
            asyncio.gather(
                feed(engine.open_stream("a"), speech16k.audio),
                feed(engine.open_stream("b"), speech16k.audio),
                return_exceptions=True,
            )
        )
        broken.clear()  # fixed: the id "a" works again
        reopened = await within(feed(engine.open_stream("a"), speech16k.audio))
    assert segments_as_lists(reopened.segments) == speech16k.default_segments
    assert sum(e.kind == "end" and e.stream_id == "a" for e in seen) == len(reopened.segments)
    failure, result_b = results  # type: ignore[misc]
    assert isinstance(failure, pv.OperatorError)
    assert "dict" in str(failure) and "event_operators[0]" in str(failure)
    assert [e.stream_id for e in seen if e.kind == "error"] == ["a"]  # once
    assert "AttributeError" not in caplog.text  # no log flood
    assert segments_as_lists(result_b.segments) == speech16k.default_segments


async def test_event_operators_shape_delivery_but_never_remove_segments(
    speech16k: GoldenFixture,
) -> None:
    only_starts = ops.filter(lambda e: e.kind != "end")
    async with pv.VADEngine(num_workers=2, event_operators=[only_starts]) as engine:
        stream = engine.open_stream()
        seen: list[pv.SpeechEvent] = []
        stream.subscribe(seen.append)
        result = await within(feed(stream, speech16k.audio))
    assert {e.kind for e in seen} == {"start"}
    assert segments_as_lists(result.segments) == speech16k.default_segments


# ---------------------------------------------------------------- callbacks and consumers


async def test_a_handler_raising_a_base_exception_stalls_nobody(
    speech16k: GoldenFixture, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled.cancel()

    def handler(event: pv.SpeechEvent) -> None:
        cancelled.result()  # raises CancelledError, a BaseException

    async with pv.VADEngine(num_workers=2) as engine:
        engine.subscribe(handler)
        bad, neighbour = engine.open_stream("bad"), engine.open_stream("neighbour")
        bad.subscribe(handler)
        results = await within(
            asyncio.gather(feed(bad, speech16k.audio), feed(neighbour, speech16k.audio))
        )
        errors = bad.statistics().handler_errors
    for result in results:
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert errors == 2 * len(speech16k.default_segments)  # counted, and logged
    assert "CancelledError" in caplog.text


@pytest.mark.parametrize("source", ["stream", "engine"])
async def test_a_consumer_cancelled_before_its_first_iteration_unregisters(
    speech16k: GoldenFixture, source: str
) -> None:
    """Its iterator was registered but never read: push() must not wait for it, and
    once nothing holds it (not you, not the finished task), it is unregistered.

    ``max_buffered_events=2`` makes the engine wait after 2 unread events (the
    default waits after 1,024; the mechanism is the same).
    """

    async def consume(events: pv.EventIterator) -> None:
        async for _ in events:
            pass

    async with pv.VADEngine(num_workers=2, max_buffered_events=2) as engine:
        stream = engine.open_stream()
        fanout = stream._fanout if source == "stream" else engine._fanout
        events = stream.events() if source == "stream" else engine.events()
        assert len(fanout._queues) == 1  # registered at call time
        task = asyncio.create_task(consume(events))
        del events  # only the consumer holds it
        task.cancel()  # before it ever ran
        await asyncio.gather(task, return_exceptions=True)
        del task  # once the loop lets go of the finished task, nothing holds the iterator
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(fanout._queues) == 0  # unregistered with its consumer
        result = await within(feed(stream, np.concatenate([speech16k.audio] * 2)))
        assert fanout.delivered > 0 and fanout.buffered == 0  # nothing kept for it
    assert len(result.segments) == 2 * len(speech16k.default_segments) > 2


async def test_an_iterator_dropped_on_another_thread_unregisters_on_the_loop() -> None:
    """Its finalizer runs where the garbage collector fires; the unregistering may not."""
    loop_thread = threading.get_ident()
    seen: list[int] = []
    fanout = EventFanout(
        "test", raise_failures=False, on_consumed=lambda: seen.append(threading.get_ident())
    )
    cycle: list[object] = [fanout.events()]
    cycle.append(cycle)  # only the cyclic collector frees it
    fanout.publish(pv.SpeechEvent("start", "a", 0, 0, 0))
    assert fanout.buffered == 1
    gc.disable()  # so it cannot run on this thread first
    try:
        del cycle
        collector = threading.Thread(target=gc.collect)
        collector.start()
        collector.join()
    finally:
        gc.enable()
    for _ in range(10):
        if seen:
            break
        await asyncio.sleep(0)
    assert seen == [loop_thread]  # on_consumed ran on the loop's thread
    assert fanout.buffered == 0  # and the iterator is unregistered


async def test_aclose_unregisters_an_iterator_never_read(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2, max_buffered_events=2) as engine:
        stream = engine.open_stream()
        unread = stream.events()
        await unread.aclose()
        result = await within(feed(stream, speech16k.audio))
        assert [e async for e in unread] == []
    assert segments_as_lists(result.segments) == speech16k.default_segments


async def test_a_reader_that_stalls_still_holds_back_push(speech16k: GoldenFixture) -> None:
    """The other side: an iterator that has started reading and stops is backpressure."""
    async with pv.VADEngine(num_workers=2, max_buffered_events=2) as engine:
        stream = engine.open_stream()
        events = stream.events()
        pushes = asyncio.create_task(feed(stream, speech16k.audio, 4000))
        first = await within(anext(events))
        while stream.statistics().events_buffered < 2:
            await asyncio.sleep(0.01)
        frames = stream.statistics().frames_submitted
        await asyncio.sleep(0.2)
        assert not pushes.done() and stream.statistics().frames_submitted == frames  # waiting
        rest = [event.kind async for event in events]  # reading on makes room
        result = await within(pushes)
    assert [first.kind, *rest] == ["start", "end"] * len(result.segments)


async def test_an_iterator_not_yet_started_misses_nothing(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2, max_buffered_events=2) as engine:
        stream = engine.open_stream()
        later = stream.events()  # registered now, read only after the stream ended
        result = await within(feed(stream, speech16k.audio))
        kinds = [event.kind async for event in later]
    assert kinds == ["start", "end"] * len(result.segments)
    assert segments_as_lists(result.segments) == speech16k.default_segments
