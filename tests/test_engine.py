"""VADEngine and VADStream: the asyncio API, on both asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
import pytest
from reactivex import Observer
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx.backends import _registry
from tests.conftest import GoldenFixture, assert_silero_probabilities, segments_as_lists
from tests.spy_backends import (
    POISON,
    CallLog,
    make_gated_start,
    make_only16k,
    make_slow,
    make_spy,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def spy() -> Iterator[None]:
    pv.register_backend("spy", make_spy, replace=True)
    yield
    _registry._registered.pop("spy", None)


async def push_all(stream: pv.VADStream, audio: np.ndarray, step: int = 16000) -> None:
    for start in range(0, audio.size, step):
        await stream.push(audio[start : start + step])


async def test_quick_start_flow(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(backend="onnx", num_workers=2, config=pv.VADConfig()) as engine:
        stream = engine.open_stream("caller-42", sample_rate=16000, keep_probabilities=True)
        seen: list[pv.SpeechEvent] = []
        stream.subscribe(seen.append)
        await push_all(stream, speech16k.audio, 32000)
        result = await stream.close()
    assert segments_as_lists(result.segments) == speech16k.default_segments
    assert result.probabilities is not None
    assert result.probabilities.shape == (-(-speech16k.audio.size // 512),)
    assert_silero_probabilities(result.probabilities, speech16k)
    assert [e.kind for e in seen] == ["start", "end"] * len(result.segments)
    assert result.num_samples == speech16k.audio.size and result.duration == pytest.approx(
        speech16k.audio.size / 16000
    )


async def test_float32_int16_and_pcm_bytes_give_the_same_result(speech16k: GoldenFixture) -> None:
    pcm = np.round(speech16k.audio * 32767).astype(np.int16)
    async with pv.VADEngine(num_workers=2) as engine:
        results = []
        for form in (pcm.astype(np.float32) / 32768, pcm, pcm.astype("<i2").tobytes()):
            stream = engine.open_stream(keep_probabilities=True)
            await stream.push(form)
            results.append(await stream.close())
    for other in results[1:]:
        assert other.probabilities is not None and results[0].probabilities is not None
        np.testing.assert_array_equal(other.probabilities, results[0].probabilities)
        assert segments_as_lists(other.segments) == segments_as_lists(results[0].segments)


async def test_events_iterator_and_flush(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream("s")
        events = stream.events()
        half = speech16k.audio.size // 2
        await stream.push(speech16k.audio[:half])
        await stream.flush()
        stats = stream.statistics()
        assert stats.frames_processed == stats.frames_submitted == half // 512
        delivered = list(stream.segments)
        await stream.push(speech16k.audio[half:])
        collected: list[pv.SpeechEvent] = []

        async def consume() -> None:
            async for event in events:
                collected.append(event)

        consumer = asyncio.create_task(consume())
        result = await stream.close()
        await consumer
    assert [e.kind for e in collected] == ["start", "end"] * len(result.segments)
    assert [e.segment for e in collected if e.kind == "end"] == list(result.segments)
    # everything delivered at flush time was final: a prefix of the whole result
    assert list(result.segments[: len(delivered)]) == delivered
    assert delivered and all(s.end_sample <= half for s in delivered)


async def test_observer_subscription_and_loop_thread(speech16k: GoldenFixture) -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    kinds: list[str] = []
    completed = asyncio.Event()

    def on_next(event: pv.SpeechEvent) -> None:
        threads.add(threading.get_ident())
        kinds.append(event.kind)

    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream()
        stream.subscribe(Observer(on_next, on_completed=completed.set))
        await push_all(stream, speech16k.audio)
        await stream.close()
        await completed.wait()
    assert threads == {loop_thread}  # callbacks run on the event loop, never on workers
    assert kinds == ["start", "end"] * len(speech16k.default_segments)


async def test_keep_audio_attaches_segment_samples(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream(keep_audio=True)
        await push_all(stream, speech16k.audio, 7777)
        result = await stream.close()
    for segment in result.segments:
        assert segment.audio is not None
        np.testing.assert_array_equal(
            segment.audio, speech16k.audio[segment.start_sample : segment.end_sample]
        )


async def test_bad_input_raises_and_loses_nothing(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream("s", keep_probabilities=True)
        audio = speech16k.audio
        await stream.push(audio[:10000])
        with pytest.raises(pv.AudioFormatError):
            await stream.push(np.zeros((100, 2), np.float32))
        with pytest.raises(pv.AudioFormatError):
            await stream.push(np.array([0.1, np.nan], np.float32))
        with pytest.raises(pv.AudioFormatError):
            await stream.push(np.zeros(10, np.int32))
        with pytest.raises(pv.AudioFormatError):
            await stream.push(b"\x01\x02\x03")
        await stream.push(np.zeros(0, np.float32))  # empty: allowed, no-op
        await stream.push(b"")
        await stream.push(audio[10000:])
        result = await stream.close()
        assert result.probabilities is not None
        assert_silero_probabilities(result.probabilities, speech16k)
        assert segments_as_lists(result.segments) == speech16k.default_segments
        with pytest.raises(pv.StreamClosedError):
            await stream.push(audio[:100])
        assert await stream.close() is result  # close is idempotent


async def test_stream_ids_and_rates_are_checked() -> None:
    async with pv.VADEngine(num_workers=1) as engine:
        stream = engine.open_stream("dup")
        with pytest.raises(pv.DuplicateStreamError):
            engine.open_stream("dup")
        with pytest.raises(pv.UnsupportedSampleRateError):
            engine.open_stream("bad-rate", sample_rate=1000)
        with pytest.raises(pv.ConfigError, match="stream_id must be a str"):
            engine.open_stream(42)  # type: ignore[arg-type]
        with pytest.raises(pv.ConfigError):
            engine.open_stream("cfg", config={"threshold": 0.5})  # type: ignore[arg-type]
        await stream.close()
        engine.open_stream("dup")  # a closed stream's id can be used again
        assert len(engine.open_stream().stream_id) == 32  # default: a fresh uuid


async def test_unknown_backend_and_unstarted_engine() -> None:
    with pytest.raises(pv.UnknownBackendError):
        async with pv.VADEngine(backend="nope"):
            pass
    engine = pv.VADEngine(num_workers=1)
    with pytest.raises(pv.ClosedError, match="not running"):
        engine.open_stream()
    await engine.close()
    with pytest.raises(pv.ClosedError):
        await engine.start()


async def test_a_failing_stream_does_not_affect_the_others(
    spy: None, speech16k: GoldenFixture
) -> None:
    bad = speech16k.audio.copy()
    bad[40000] = POISON
    options = {"log": CallLog(), "fail_on": "encode"}
    async with pv.VADEngine("spy", 2, backend_options=options) as engine:
        good = [engine.open_stream(f"good-{i}") for i in range(4)]
        failing = engine.open_stream("bad")
        errors: list[pv.SpeechEvent] = []
        failing.subscribe(lambda e: errors.append(e) if e.kind == "error" else None)
        iterator = failing.events()

        async def feed(stream: pv.VADStream, audio: np.ndarray) -> pv.StreamResult:
            await push_all(stream, audio, 8000)
            return await stream.close()

        outcomes = await asyncio.gather(
            feed(failing, bad), *(feed(s, speech16k.audio) for s in good), return_exceptions=True
        )
        with pytest.raises(pv.StreamFailedError):
            async for _ in iterator:
                pass
        # the failed stream's id can be used again right away
        again = engine.open_stream("bad")
        await again.push(speech16k.audio)
        again_result = await again.close()
    failure = outcomes[0]
    assert isinstance(failure, pv.StreamFailedError) and failure.stream_id == "bad"
    assert failure.seq is not None and "injected encode fault" in str(failure)
    assert [e.error for e in errors] == [failure]
    for result in outcomes[1:]:
        assert isinstance(result, pv.StreamResult)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert segments_as_lists(again_result.segments) == speech16k.default_segments
    assert failing.state == "failed" and failing.error is failure
    with pytest.raises(pv.StreamFailedError):
        await failing.push(speech16k.audio[:100])


async def test_engine_close_ends_open_streams(speech16k: GoldenFixture) -> None:
    engine = await pv.VADEngine(num_workers=2).start()
    stream = engine.open_stream()
    await push_all(stream, speech16k.audio)
    await engine.close()
    assert stream.state == "closed"
    assert segments_as_lists(stream.segments) == speech16k.default_segments
    with pytest.raises(pv.ClosedError):
        engine.open_stream()


async def test_user_operators_before_slicing_and_after_events(speech16k: GoldenFixture) -> None:
    """A gain before window_slices, and a filter keeping only end events after emit_events."""

    def halve(chunk: pv.AudioChunk) -> pv.AudioChunk:
        return pv.AudioChunk(
            chunk.stream_id, chunk.samples * 0.5, chunk.sample_rate, chunk.end_of_stream
        )

    async with pv.VADEngine(
        num_workers=2,
        audio_operators=[ops.map(halve)],
        event_operators=[ops.filter(lambda e: e.kind == "end")],
    ) as engine:
        stream = engine.open_stream(keep_probabilities=True)
        kinds: list[str] = []
        stream.subscribe(lambda e: kinds.append(e.kind))
        await push_all(stream, speech16k.audio)
        result = await stream.close()
    assert set(kinds) == {"end"} and len(kinds) == len(result.segments)
    assert result.probabilities is not None
    assert not np.array_equal(result.probabilities, speech16k.probabilities)  # gain applied


async def test_backpressure_bounds_slices_in_flight(spy: None, speech16k: GoldenFixture) -> None:
    options = {"log": CallLog(), "sleep_s": 0.002}
    async with pv.VADEngine(
        "spy", 1, backend_options=options, max_pending_slices=3, frames_per_slice=1
    ) as engine:
        stream = engine.open_stream()
        peak = 0
        for start in range(0, 512 * 60, 512):
            await stream.push(speech16k.audio[start : start + 512])
            peak = max(peak, stream.statistics().slices_in_flight)
        await stream.close()
    assert 1 <= peak <= 3


async def test_8k_and_resampled_streams(speech8k: GoldenFixture, speech16k: GoldenFixture) -> None:
    import soxr

    audio44 = soxr.resample(speech16k.audio, 16000, 44100).astype(np.float32)
    async with pv.VADEngine(num_workers=2) as engine:
        narrow = engine.open_stream(sample_rate=8000, keep_probabilities=True)
        wide = engine.open_stream(sample_rate=44100)
        await asyncio.gather(push_all(narrow, speech8k.audio, 4000), push_all(wide, audio44, 44100))
        narrow_result, wide_result = await asyncio.gather(narrow.close(), wide.close())
    assert narrow_result.sample_rate == 8000
    assert narrow_result.probabilities is not None
    assert_silero_probabilities(narrow_result.probabilities, speech8k)
    assert segments_as_lists(narrow_result.segments) == speech8k.default_segments
    # 44.1 kHz is resampled to 16 kHz: positions are at 16 kHz and close to the native run
    assert wide_result.sample_rate == 16000 and wide_result.source_sample_rate == 44100
    assert wide_result.num_samples == pytest.approx(speech16k.audio.size, abs=2)

    def mask(segments: list[list[int]]) -> np.ndarray:
        speech = np.zeros(speech16k.audio.size, bool)
        for start, end in segments:
            speech[start:end] = True
        return speech

    native, resampled = (
        mask(speech16k.default_segments),
        mask(segments_as_lists(wide_result.segments)),
    )
    agreement = np.mean(native == resampled)
    assert agreement > 0.95, agreement


async def test_statistics(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2) as engine:
        stream = engine.open_stream("s")
        await stream.push(speech16k.audio[:32000])
        await stream.flush()
        stats = engine.statistics()
        assert stats.open_streams == 1 and stats.pool.num_workers == 2
        (mine,) = stats.streams
        assert mine.samples_pushed == 32000 and mine.frames_processed == 62
        assert mine.slices_in_flight == 0 and mine.state == "open"


async def test_a_stalled_consumer_blocks_only_its_own_stream(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=2, max_buffered_events=2) as engine:
        stalled = engine.open_stream("stalled")
        unread = stalled.events()
        first = asyncio.create_task(anext(unread))  # reads one event, then stalls
        healthy = engine.open_stream("healthy")

        async def feed(stream: pv.VADStream) -> None:
            await push_all(stream, speech16k.audio, 16000)

        stalled_feed = asyncio.create_task(feed(stalled))
        await feed(healthy)
        result = await healthy.close()
        assert segments_as_lists(result.segments) == speech16k.default_segments
        # the stalled stream's producer ends up waiting for its consumer, not finished (on a
        # loaded machine its events may still be on their way when the healthy one is done)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while stalled.statistics().events_buffered < 2 and loop.time() < give_up:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time enough for a push that is not held back to go on
        assert not stalled_feed.done()
        stats = stalled.statistics()
        assert stats.events_buffered >= 2 and stats.samples_pushed < speech16k.audio.size
        # reading the events lets it go on to the end
        kinds = [(await first).kind]
        async for event in unread:
            kinds.append(event.kind)
            if len(kinds) == 2 * len(speech16k.default_segments) - 1:
                await stalled_feed
                await stalled.close()
        assert kinds == ["start", "end"] * len(speech16k.default_segments)


async def test_close_releases_a_push_waiting_for_room(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=1, max_buffered_events=1) as engine:
        stream = engine.open_stream()
        stalled = stream.events()
        reader = asyncio.create_task(anext(stalled))  # reads one event, then no more
        position = 0
        while not stream.statistics().events_buffered:  # fill the backlog
            await stream.push(speech16k.audio[position : position + 4000])
            await stream.flush()
            position += 4000
        blocked = asyncio.create_task(stream.push(speech16k.audio[position:]))
        result = await stream.close()
        with pytest.raises(pv.StreamClosedError):
            await blocked
        assert (await reader).kind == "start"
    assert result.num_samples == position


async def test_engine_wide_events(spy: None, speech16k: GoldenFixture) -> None:
    bad = speech16k.audio.copy()
    bad[40000] = POISON
    options = {"log": CallLog(), "fail_on": "encode"}
    async with pv.VADEngine("spy", 2, backend_options=options) as engine:
        everything = engine.events()
        seen: list[pv.SpeechEvent] = []
        engine.subscribe(seen.append)
        a, b, c = (engine.open_stream(name) for name in ("a", "b", "c"))

        async def feed(stream: pv.VADStream, audio: np.ndarray) -> object:
            await push_all(stream, audio)
            return await stream.close()

        await asyncio.gather(
            feed(a, speech16k.audio),
            feed(b, speech16k.audio),
            feed(c, bad),
            return_exceptions=True,
        )
    collected = [event async for event in everything]  # ends when the engine closes
    assert [(e.stream_id, e.kind) for e in collected] == [(e.stream_id, e.kind) for e in seen]
    for name in ("a", "b"):
        ends = [e.segment for e in collected if e.stream_id == name and e.kind == "end"]
        assert segments_as_lists(ends) == speech16k.default_segments
    errors = [e for e in collected if e.kind == "error"]
    assert [e.stream_id for e in errors] == ["c"] and errors[0].error is not None


# ------------------------------------------------------------------ arguments and lifecycle


def engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("prevad-rx")}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_slice_timeout": 0}, pv.ConfigError, "min_slice_timeout"),
        ({"min_slice_timeout": float("nan")}, pv.ConfigError, "min_slice_timeout"),
        ({"slice_timeout_factor": 0}, pv.ConfigError, "slice_timeout_factor"),
        ({"slice_timeout_factor": -1.0}, pv.ConfigError, "slice_timeout_factor"),
        ({"slice_timeout_factor": float("inf")}, pv.ConfigError, "slice_timeout_factor"),
        ({"slice_timeout_factor": "4"}, pv.ConfigError, "slice_timeout_factor"),
        ({"num_workers": 0}, pv.ConfigError, "num_workers"),
        ({"backend": ""}, pv.ConfigError, "backend"),
        ({"backend": "no-such-backend"}, pv.UnknownBackendError, "no-such-backend"),
        ({"backend_options": 3}, pv.ConfigError, "backend_options"),
        ({"frames_per_slice": 0}, pv.ConfigError, "frames_per_slice"),
        ({"max_pending_slices": 0}, pv.ConfigError, "max_pending_slices"),
        ({"audio_operators": [1]}, pv.ConfigError, "audio_operators"),
        ({"event_operators": "ops"}, pv.ConfigError, "event_operators"),
        ({"pool": "shared"}, pv.ConfigError, "pool"),
    ],
)
async def test_every_engine_argument_is_checked_before_any_thread_starts(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    before = engine_threads()
    with pytest.raises(error, match=match):
        pv.VADEngine(**kwargs)  # type: ignore[arg-type]
    assert engine_threads() == before


async def test_a_cancelled_close_still_tears_everything_down(speech16k: GoldenFixture) -> None:
    gate = threading.Event()
    pv.register_backend("slow", make_slow, replace=True)
    before = engine_threads()
    try:
        engine = await pv.VADEngine("slow", 2, backend_options={"gate": gate}).start()
        everything = engine.events()
        streams = [engine.open_stream(f"s{i}") for i in range(3)]
        for stream in streams:
            await stream.push(speech16k.audio[:32000])  # held by the gate: still in flight
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.close(), 0.05)  # the user gives up waiting
        for stream in streams:  # no stream is left waiting for results that never come
            assert stream.state == "failed"
            with pytest.raises(pv.StreamFailedError, match="engine closed"):
                await stream.close()
        gate.set()
        await engine.close()  # waits until the pool has stopped
        errors = [event async for event in everything if event.kind == "error"]
    finally:
        gate.set()
        _registry._registered.pop("slow", None)
    assert engine.pool.closed and engine_threads() == before
    assert sorted(e.stream_id for e in errors) == ["s0", "s1", "s2"]  # reported engine-wide too
    with pytest.raises(pv.ClosedError):
        engine.open_stream()


async def test_a_second_close_waits_until_the_engine_is_closed(speech16k: GoldenFixture) -> None:
    before = engine_threads()
    engine = await pv.VADEngine(num_workers=2).start()
    stream = engine.open_stream()
    await stream.push(speech16k.audio)
    first = asyncio.create_task(engine.close())
    await asyncio.sleep(0)  # the first close() is now waiting for the stream
    await engine.close()
    assert engine.pool.closed and engine_threads() == before
    assert stream.state == "closed"
    await first


async def test_a_cancelled_start_then_close_leaks_nothing() -> None:
    gate, started = threading.Event(), threading.Event()
    pv.register_backend("gated-start", make_gated_start, replace=True)
    before = engine_threads()
    try:
        engine = pv.VADEngine("gated-start", 2, backend_options={"gate": gate, "started": started})
        starting = asyncio.create_task(engine.start())
        assert await asyncio.to_thread(started.wait, 30)  # the workers are loading the model
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        gate.set()
        await engine.close()
    finally:
        gate.set()
        _registry._registered.pop("gated-start", None)
    assert engine.pool.closed and engine_threads() == before
    with pytest.raises(pv.ClosedError):
        await engine.start()


def _in_another_loop(call: Callable[[], Awaitable[object]]) -> BaseException | None:
    """Await ``call()`` under ``asyncio.run`` in a second thread; its exception, if any."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        async def main() -> None:
            await call()

        try:
            asyncio.run(main())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - returned for the test to check
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)  # a guard against a hang, not a time limit
    assert not thread.is_alive(), "the call from another loop hung"
    return outcome[0]


async def test_a_call_from_another_event_loop_is_refused_clearly(
    speech16k: GoldenFixture,
) -> None:
    async with pv.VADEngine(num_workers=1) as engine:
        loop = asyncio.get_running_loop()
        stream = engine.open_stream("s")
        audio = speech16k.audio
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: stream.push(audio[:16000]),
            stream.flush,
            stream.close,
            engine.close,
        ]
        for call in calls:
            error = await asyncio.to_thread(_in_another_loop, call)
            assert isinstance(error, pv.WrongEventLoopError) and isinstance(error, pv.PrevadError)
            assert "another event loop" in str(error)
        with pytest.raises(pv.WrongEventLoopError, match="outside any event loop"):
            await asyncio.to_thread(engine.open_stream, "from-a-thread")

        def hand_over() -> None:  # what the error message advises
            asyncio.run_coroutine_threadsafe(stream.push(audio), loop).result(30)

        await asyncio.to_thread(hand_over)
        result = await stream.close()
    assert segments_as_lists(result.segments) == speech16k.default_segments


async def test_open_stream_checks_the_backends_sample_rates(speech8k: GoldenFixture) -> None:
    pv.register_backend("only16k", make_only16k, replace=True)
    try:
        async with pv.VADEngine("only16k", 1) as engine:
            with pytest.raises(pv.UnsupportedSampleRateError, match=r"'only16k'.*8000 Hz"):
                engine.open_stream(sample_rate=8000)
            for rate in (16000, 44100):  # 44.1 kHz is resampled to 16 kHz
                stream = engine.open_stream(sample_rate=rate)
                await stream.push(np.zeros(rate, np.float32))
                await stream.close()
    finally:
        _registry._registered.pop("only16k", None)


async def test_flush_after_close_raises_stream_closed(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine(num_workers=1) as engine:
        stream = engine.open_stream("s")
        await stream.push(speech16k.audio[:16000])
        await stream.flush()
        await stream.close()
        with pytest.raises(pv.StreamClosedError) as caught:
            await stream.flush()
        assert caught.value.stream_id == "s"
