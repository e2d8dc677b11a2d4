"""Reliability: faults stay in their stream, nothing is lost, nothing gets stuck.

Each test backs a guarantee listed in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex import Observer

import prevad_rx as pv
from prevad_rx.backends import _registry
from tests.conftest import GoldenFixture, segments_as_lists
from tests.spy_backends import (
    EXIT,
    HANG,
    NAN,
    OUT_OF_RANGE,
    RAISE,
    SLOW,
    STATE_DTYPE,
    STATE_SHAPE,
    WRONG_SHAPE,
    FaultyBackend,
    make_faulty,
    make_slow,
)

pytestmark = pytest.mark.anyio

WORKER = re.compile(r"prevad-rx-\d+")  # a pool's worker thread (not its watchdog)


@pytest.fixture(autouse=True)
def backends() -> Iterator[None]:
    pv.register_backend("faulty", make_faulty, replace=True)
    pv.register_backend("slow", make_slow, replace=True)
    yield
    _registry._registered.pop("faulty", None)
    _registry._registered.pop("slow", None)


def pending_tasks() -> list[asyncio.Task[object]]:
    """Tasks still alive besides this test and the test runner's own."""
    return [
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task() and "_call_in_runner_task" not in repr(task)
    ]


def marked(audio: np.ndarray, value: float, at: int = 40000) -> np.ndarray:
    out = audio.copy()
    out[at] = value
    return out


async def feed(stream: pv.VADStream, audio: np.ndarray, step: int = 8000) -> pv.StreamResult:
    for start in range(0, audio.size, step):
        await stream.push(audio[start : start + step])
    return await stream.close()


# --------------------------------------------------------------------------- 1. faults


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (RAISE, "injected fault"),
        (NAN, "non-finite"),
        (WRONG_SHAPE, "probabilities for"),
        (OUT_OF_RANGE, "probabilities outside [0, 1]"),
        (STATE_SHAPE, "a state of shape (256,)"),
        (STATE_DTYPE, "dtype float64"),
    ],
)
async def test_a_faulty_slice_fails_only_its_stream(
    marker: float, message: str, speech16k: GoldenFixture
) -> None:
    async with pv.VADEngine("faulty", 2) as engine:
        bad = engine.open_stream("bad")
        good = [engine.open_stream(f"good-{i}") for i in range(5)]
        outcomes = await asyncio.gather(
            feed(bad, marked(speech16k.audio, marker)),
            *(feed(s, speech16k.audio) for s in good),
            return_exceptions=True,
        )
        # the workers keep serving: a new stream after the fault is exact
        after = await feed(engine.open_stream("after"), speech16k.audio)
        stats = engine.statistics()
    error = outcomes[0]
    assert isinstance(error, pv.StreamFailedError)
    assert error.stream_id == "bad" and error.seq is not None
    assert message in str(error) and "'bad'" in str(error)
    for result in [*outcomes[1:], after]:
        assert isinstance(result, pv.StreamResult)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert stats.pool.task_errors == 0 and stats.stage is not None
    assert stats.stage.failed_streams == 1


class _Abort(BaseException):
    """Not an Exception: what a backend might raise to bail out of a call."""


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, _Abort])
async def test_a_backend_raising_a_base_exception_fails_only_its_stream(
    raised: type[BaseException], speech16k: GoldenFixture
) -> None:
    async with pv.VADEngine("faulty", 2, backend_options={"exit_with": raised}) as engine:
        bad = engine.open_stream("bad")
        neighbours = [engine.open_stream(f"neighbour-{i}") for i in range(4)]
        outcomes = await asyncio.wait_for(  # a guard against a hang, not a time limit
            asyncio.gather(
                feed(bad, marked(speech16k.audio, EXIT)),
                *(feed(s, speech16k.audio) for s in neighbours),
                return_exceptions=True,
            ),
            120,
        )
        after = await feed(engine.open_stream("after"), speech16k.audio)
        stats = engine.statistics()
    error = outcomes[0]
    assert type(error) is pv.StreamFailedError  # its own fault, not a timeout
    assert error.stream_id == "bad" and error.seq is not None
    assert isinstance(error.__cause__, raised) and "injected exit" in str(error)
    for result in [*outcomes[1:], after]:
        assert isinstance(result, pv.StreamResult)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert stats.stage is not None and stats.stage.timed_out_calls == 0
    assert stats.pool.workers_replaced == 0  # both workers lived on


async def test_the_backend_is_reset_after_a_failed_call(speech16k: GoldenFixture) -> None:
    resets: list[str] = []
    async with pv.VADEngine("faulty", 2, backend_options={"resets": resets}) as engine:
        clean = await feed(engine.open_stream("clean"), speech16k.audio)
        assert resets == []  # no failure, no reset
        outcomes = await asyncio.gather(
            feed(engine.open_stream("bad"), marked(speech16k.audio, RAISE)),
            feed(engine.open_stream("good"), speech16k.audio),
            return_exceptions=True,
        )
    assert isinstance(outcomes[0], pv.StreamFailedError)
    assert segments_as_lists(clean.segments) == speech16k.default_segments
    assert isinstance(outcomes[1], pv.StreamResult)
    assert segments_as_lists(outcomes[1].segments) == speech16k.default_segments
    # on the worker that made the failed call, before its next call
    assert resets and all(name.startswith("prevad-rx-") for name in resets)


async def test_a_backend_that_cannot_be_reset_is_replaced(
    speech16k: GoldenFixture, caplog: pytest.LogCaptureFixture
) -> None:
    async with pv.VADEngine("faulty", 2, backend_options={"reset_fails": True}) as engine:
        outcomes = await asyncio.gather(
            feed(engine.open_stream("bad"), marked(speech16k.audio, RAISE)),
            *(feed(engine.open_stream(f"good-{i}"), speech16k.audio) for i in range(3)),
            return_exceptions=True,
        )
        after = await feed(engine.open_stream("after"), speech16k.audio)
        stats = engine.statistics()
    error = outcomes[0]
    assert isinstance(error, pv.StreamFailedError) and "injected fault" in str(error)
    for result in [*outcomes[1:], after]:
        assert isinstance(result, pv.StreamResult)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    assert stats.pool.workers_replaced >= 1
    assert "could not be reset" in caplog.text


async def test_workers_replaced_again_and_again_keep_the_pool_serving(
    speech16k: GoldenFixture,
) -> None:
    """One worker whose backend never resets, replaced six times, one after the other: the
    system reuses the ids of threads that have ended, and a replacement must not take a
    retired thread's id for its own retirement (it would exit at once, leaving no worker)."""
    async with pv.VADEngine("faulty", 1, backend_options={"reset_fails": True}) as engine:
        for k in range(6):
            with pytest.raises(pv.StreamFailedError):
                await asyncio.wait_for(
                    feed(engine.open_stream(f"bad-{k}"), marked(speech16k.audio, RAISE)), 20
                )
            for _ in range(100):  # the replaced thread ends, and its id is free again
                if len([t for t in threading.enumerate() if WORKER.fullmatch(t.name)]) <= 1:
                    break
                await asyncio.sleep(0.02)
        result = await asyncio.wait_for(feed(engine.open_stream("good"), speech16k.audio), 20)
        assert engine.statistics().pool.workers_replaced == 6
    assert segments_as_lists(result.segments) == speech16k.default_segments


class _StartsOnly(FaultyBackend):
    """A faulty backend that cannot be reset, whose instances after the first fail to
    initialise up to instance ``works_again`` (class-wide count; None: never again)."""

    name = "starts-only"
    works_again: int | None = None
    started = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(reset_fails=True, **options)

    def initialize(self) -> None:
        cls = type(self)
        cls.started += 1
        if cls.started > 1 and (cls.works_again is None or cls.started < cls.works_again):
            raise RuntimeError("the model cannot be loaded now")
        super().initialize()


@pytest.mark.parametrize("works_again", [None, 3])
async def test_a_replacement_that_cannot_start_tries_again_or_fails_what_waits(
    speech16k: GoldenFixture, works_again: int | None
) -> None:
    """The only worker is replaced and its replacement cannot start. Through a passing
    fault (the second try starts) the work waits and the pool serves on; if the backend
    never starts again, the work waiting for a worker fails with a clear BackendError
    (from the third failed try on) instead of waiting for ever."""
    _StartsOnly.works_again, _StartsOnly.started = works_again, 0
    pv.register_backend("starts-only", _StartsOnly, replace=True)
    try:
        async with pv.VADEngine("starts-only", 1) as engine:
            with pytest.raises(pv.StreamFailedError):
                await feed(engine.open_stream("bad"), marked(speech16k.audio, RAISE))
            waiting = feed(engine.open_stream("good"), speech16k.audio)
            if works_again is None:
                with pytest.raises(pv.StreamFailedError, match="unavailable: no worker could"):
                    await asyncio.wait_for(waiting, 20)
            else:
                result = await asyncio.wait_for(waiting, 20)
                assert segments_as_lists(result.segments) == speech16k.default_segments
                assert _StartsOnly.started == 3  # the initial one, a failed try, a good one
    finally:
        _registry._registered.pop("starts-only", None)


async def test_a_hung_call_times_out_and_its_worker_is_replaced(
    speech16k: GoldenFixture,
) -> None:
    release = threading.Event()
    async with pv.VADEngine(
        "faulty",
        2,
        backend_options={"release": release},
        slice_timeout_factor=0.01,
        min_slice_timeout=0.3,
    ) as engine:
        try:
            bad = engine.open_stream("bad")
            good = [engine.open_stream(f"good-{i}") for i in range(3)]
            outcomes = await asyncio.gather(
                feed(bad, marked(speech16k.audio, HANG)),
                *(feed(s, speech16k.audio) for s in good),
                return_exceptions=True,
            )
            stats = engine.statistics()
            again = await feed(engine.open_stream("after"), speech16k.audio)
        finally:
            release.set()  # let the abandoned thread finish its call and exit
    error = outcomes[0]
    assert isinstance(error, pv.SliceTimeoutError) and error.stream_id == "bad"
    assert "did not finish within" in str(error)
    for result in [*outcomes[1:], again]:
        assert isinstance(result, pv.StreamResult)
        assert segments_as_lists(result.segments) == speech16k.default_segments
    # one timeout if the culprit ran alone; two if it shared a batch (the batch-mates are
    # rerun alone, the culprit hangs again): a worker is replaced for each
    assert stats.stage is not None and stats.stage.timed_out_calls in (1, 2)
    assert stats.pool.workers_replaced == stats.stage.timed_out_calls


async def test_a_slow_call_within_its_deadline_is_not_an_error(
    speech16k: GoldenFixture,
) -> None:
    async with pv.VADEngine("faulty", 1, backend_options={"slow_s": 0.05}) as engine:
        result = await feed(engine.open_stream(), marked(speech16k.audio, SLOW))
    assert len(result.segments) == len(speech16k.default_segments)


# ----------------------------------------------------------------------- 2. backpressure


async def test_wait_policy_bounds_work_in_flight(speech16k: GoldenFixture) -> None:
    async with pv.VADEngine("slow", 1, max_pending_slices=4, frames_per_slice=4) as engine:
        stream = engine.open_stream()
        peak = 0
        audio = speech16k.audio[: 16000 * 6]
        for start in range(0, audio.size, 1024):
            await stream.push(audio[start : start + 1024])
            stats = stream.statistics()
            peak = max(peak, stats.slices_in_flight)
        result = await stream.close()
    assert 1 <= peak <= 4
    assert result.num_samples == audio.size


async def test_error_policy_refuses_without_taking_anything(speech16k: GoldenFixture) -> None:
    gate = threading.Event()
    async with pv.VADEngine(
        "slow", 1, backend_options={"gate": gate}, max_pending_slices=2, backpressure="error"
    ) as engine:
        stream = engine.open_stream(keep_probabilities=True)
        taken = refused = 0
        for start in range(0, 16000 * 3, 2048):
            try:
                await stream.push(speech16k.audio[start : start + 2048])
                taken += 2048
            except pv.BackpressureError:
                refused += 1
        gate.set()
        result = await stream.close()
    assert refused > 0 and taken >= 2048
    assert result.num_samples == taken  # everything taken was processed, nothing else
    assert result.probabilities is not None
    assert result.probabilities.size == math.ceil(taken / 512)


def held_drop_oldest_engine(gate: threading.Event) -> pv.VADEngine:
    """A "drop_oldest" engine whose only worker waits for ``gate``: room for two slices
    in flight and five queued chunks."""
    return pv.VADEngine(
        "slow",
        1,
        backend_options={"gate": gate},
        max_pending_slices=2,
        max_queued_chunks=5,
        backpressure="drop_oldest",
    )


async def test_drop_oldest_never_waits_and_counts_what_it_drops(
    speech16k: GoldenFixture,
) -> None:
    gate = threading.Event()
    async with held_drop_oldest_engine(gate) as engine:
        stream = engine.open_stream(keep_probabilities=True)
        pushed = 0
        for start in range(0, 512 * 100, 512):  # the only worker is held: nothing runs
            await stream.push(speech16k.audio[start : start + 512])
            pushed += 512
        stats = stream.statistics()
        assert stats.queued_chunks == 5 and stats.dropped_samples > 0
        gate.set()
        result = await stream.close()
        final = stream.statistics()
    assert final.samples_pushed == pushed
    assert result.num_samples == pushed - final.dropped_samples
    assert result.probabilities is not None
    assert result.probabilities.size == result.num_samples // 512


async def test_drop_oldest_never_waits_behind_a_flush_and_the_flush_ends(
    speech16k: GoldenFixture,
) -> None:
    """While a flush waits for the queued chunks, a "drop_oldest" push still returns at
    once; the flush then ends once the chunks queued before it are processed."""
    gate = threading.Event()
    audio = speech16k.audio
    async with held_drop_oldest_engine(gate) as engine:
        stream = engine.open_stream()
        for start in range(0, 512 * 10, 512):
            await stream.push(audio[start : start + 512])
            await asyncio.sleep(0)
        assert stream.statistics().queued_chunks > 0
        flushing = asyncio.ensure_future(stream.flush())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not flushing.done()
        await asyncio.wait_for(stream.push(audio[:512]), 1)  # not held up by the flush
        gate.set()
        await asyncio.wait_for(flushing, 20)
        result = await stream.close()
        stats = stream.statistics()
    assert result.num_samples == stats.samples_pushed - stats.dropped_samples


async def test_drop_oldest_close_does_not_wait_for_a_reader_that_stalled(
    speech16k: GoldenFixture,
) -> None:
    """A "drop_oldest" stream held back only by its own events() reader, which stopped
    reading: close() (and the engine's close) still sends the queued audio and ends."""
    audio = speech16k.audio
    engine = await pv.VADEngine(
        "onnx", 1, max_pending_slices=2, max_buffered_events=1, backpressure="drop_oldest"
    ).start()
    try:
        stream = engine.open_stream()
        reader = stream.events()
        first = asyncio.ensure_future(reader.__anext__())  # reads one event, then stalls
        for start in range(0, audio.size, 512):
            await stream.push(audio[start : start + 512])
            await asyncio.sleep(0.001)
        assert (await first).kind == "start"
        assert stream.statistics().queued_chunks > 0  # held back by the unread events
        result = await asyncio.wait_for(stream.close(), 20)
        stats = stream.statistics()
        assert result.num_samples == stats.samples_pushed - stats.dropped_samples
        await reader.aclose()
    finally:
        await asyncio.wait_for(engine.close(), 20)


async def test_drop_oldest_audio_queued_behind_a_tiny_burst_goes_on(
    speech16k: GoldenFixture,
) -> None:
    """A burst of pushes shorter than one frame fills the outbox (each counts as a slice
    in flight) and queues the rest; once the burst has gone on without making a slice,
    the queued audio follows: nothing later is dropped and flush() returns."""
    audio = speech16k.audio
    async with pv.VADEngine(
        "onnx", 1, max_pending_slices=2, max_queued_chunks=4, backpressure="drop_oldest"
    ) as engine:
        stream = engine.open_stream()
        for _ in range(3):  # one loop iteration: two fill the outbox, the third waits
            await stream.push(audio[:100])
        for start in range(0, 16000, 512):  # then a second of paced packets
            await asyncio.sleep(0.005)
            await stream.push(audio[start : start + 512])
        await asyncio.wait_for(stream.flush(), 20)
        stats = stream.statistics()
        assert stats.queued_chunks == 0 and stats.dropped_samples == 0
        assert stats.frames_processed == stats.samples_pushed // 512
        await stream.close()


async def test_iterators_end_however_they_are_closed(speech16k: GoldenFixture) -> None:
    """An events() iterator closed by another task ends the task waiting on it; two tasks
    sharing one iterator both end when the stream ends; iterators and observers made
    before start() end when the engine never runs (closed unstarted, or its start fails)."""
    async with pv.VADEngine("onnx", 1) as engine:
        stream = engine.open_stream()
        reader = stream.events()
        waiting = asyncio.ensure_future(anext(reader, None))
        await asyncio.sleep(0)
        await reader.aclose()
        assert await asyncio.wait_for(waiting, 5) is None

        shared = stream.events()
        readers = [asyncio.ensure_future(anext(shared, None)) for _ in range(2)]
        await asyncio.sleep(0)
        await stream.close()  # no speech pushed: the stream just ends
        assert await asyncio.wait_for(asyncio.gather(*readers), 5) == [None, None]

    never = pv.VADEngine("onnx", 1)
    early = never.events()
    completed: list[bool] = []
    never.subscribe(Observer(on_completed=lambda: completed.append(True)))
    await never.close()
    assert await asyncio.wait_for(anext(early, None), 5) is None and completed == [True]

    pv.register_backend("cannot-start", make_faulty_start, replace=True)
    try:
        failing = pv.VADEngine("cannot-start", 1)
        early = failing.events()
        with pytest.raises(pv.BackendError):
            await failing.start()
        assert await asyncio.wait_for(anext(early, None), 5) is None
    finally:
        _registry._registered.pop("cannot-start", None)


def make_faulty_start(**options: object) -> pv.Backend:
    raise pv.BackendError("no model today")


def test_an_iterator_collected_during_a_publish_costs_no_other_iterator_its_event() -> None:
    """The garbage collector may unregister an iterator while events are handed out (its
    finalizer runs on the loop thread, wherever the collection fires): every other
    iterator still gets the event, and the end."""
    from prevad_rx._fanout import EventFanout

    async def main() -> list[int]:
        fanout = EventFanout("test", raise_failures=False)
        iterators = [fanout.events() for _ in range(3)]
        queues = list(fanout._queues)
        original = queues[0].put_nowait

        def put_then_collect(item: object) -> None:  # as if a collection fired here
            original(item)
            fanout._unregister(queues[0])  # the iterator being served is collected

        queues[0].put_nowait = put_then_collect  # type: ignore[method-assign]
        fanout.publish(pv.SpeechEvent("start", "s", 0, 16000, 0))
        fanout.complete()
        return [queues[1].qsize(), queues[2].qsize(), len(iterators)]

    assert asyncio.run(main()) == [2, 2, 3]  # the event and the end, for both others


async def test_bad_policy_is_a_config_error() -> None:
    with pytest.raises(pv.ConfigError):
        pv.VADEngine(backpressure="sometimes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- 3. accounting


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_sample_is_accounted_for(data: st.DataObject) -> None:
    """Random chunking, concurrent streams and cancelled pushes: after close, frames
    processed equal ceil(samples taken / 512) for every stream."""
    streams = data.draw(st.integers(1, 6))
    plans = [
        data.draw(st.lists(st.integers(1, 20000), min_size=1, max_size=12)) for _ in range(streams)
    ]
    cancel_at = [data.draw(st.integers(-1, len(p) - 1)) for p in plans]
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, 20000).astype(np.float32)

    async def main() -> list[tuple[int, pv.StreamResult]]:
        async with pv.VADEngine(num_workers=2, max_pending_slices=2, frames_per_slice=3) as e:

            async def one(index: int) -> tuple[int, pv.StreamResult]:
                stream = e.open_stream(keep_probabilities=True)
                taken = 0
                for k, size in enumerate(plans[index]):
                    push = asyncio.ensure_future(stream.push(audio[:size]))
                    if k == cancel_at[index]:
                        push.cancel()
                    try:
                        await push
                        taken += size
                    except asyncio.CancelledError:
                        pass
                return taken, await stream.close()

            return list(await asyncio.gather(*(one(i) for i in range(streams))))

    for taken, result in pv.run(main()):
        assert result.num_samples == taken
        assert result.probabilities is not None
        assert result.probabilities.size == math.ceil(taken / 512)


# -------------------------------------------------------------------------- 4. lifecycle


async def test_cancelled_consumer_and_failing_callbacks_end_cleanly(
    speech16k: GoldenFixture, caplog: pytest.LogCaptureFixture
) -> None:
    async with pv.VADEngine(num_workers=2, max_buffered_events=4) as engine:
        stream = engine.open_stream("s")

        def broken(event: pv.SpeechEvent) -> None:
            raise RuntimeError("callback bug")

        stream.subscribe(broken)
        iterator = stream.events()

        async def consume() -> None:
            async for _ in iterator:
                pass

        consumer = asyncio.create_task(consume())
        await stream.push(speech16k.audio[:64000])
        await stream.flush()
        consumer.cancel()  # the reader goes away: its queue must not block push
        with pytest.raises(asyncio.CancelledError):
            await consumer
        result = await feed(stream, speech16k.audio[64000:])  # continues to the end
        stats = stream.statistics()
    assert len(result.segments) >= 10
    assert stats.handler_errors == 2 * len(result.segments)  # counted, not lost
    assert "callback bug" in caplog.text  # and logged with the traceback
    assert not pending_tasks()


async def test_closing_with_work_in_flight_and_open_streams(speech16k: GoldenFixture) -> None:
    engine = await pv.VADEngine("slow", 2).start()
    streams = [engine.open_stream(f"s{i}") for i in range(8)]
    for stream in streams:
        await stream.push(speech16k.audio[:48000])  # slices in flight, no close
    await engine.close()
    for stream in streams:
        assert stream.state == "closed"
        assert stream.statistics().frames_processed == math.ceil(48000 / 512)
    assert not pending_tasks()


# ------------------------------------------------------------------------------ 5. load


async def test_a_thousand_concurrent_streams(speech16k: GoldenFixture) -> None:
    audio = speech16k.audio[: 16000 * 3]
    async with pv.VADEngine(num_workers=2) as engine:
        reference = await feed(engine.open_stream(), audio, 4000)
        results = await asyncio.gather(
            *(feed(engine.open_stream(f"s{i}"), audio, 4000) for i in range(1000))
        )
        stats = engine.statistics()
    expected = segments_as_lists(reference.segments)
    assert expected
    assert all(segments_as_lists(r.segments) == expected for r in results)
    assert stats.open_streams == 0 and stats.streams_opened == 1001


def _rss_mb() -> float:
    from prevad_rx.bench._scenarios import rss_mb

    return rss_mb()


async def _soak(streams: int, seconds_per_stream: float, audio: np.ndarray) -> list[float]:
    samples: list[float] = []
    chunk = 16000 // 2
    async with pv.VADEngine(num_workers=2) as engine:
        opened = [engine.open_stream(f"s{i}") for i in range(streams)]
        total = int(seconds_per_stream * 16000)
        position = 0
        while position < total:
            for index, stream in enumerate(opened):
                start = (position + index * 997) % (audio.size - chunk)
                await stream.push(audio[start : start + chunk])
            position += chunk
            if position % (16000 * 30) == 0:
                samples.append(_rss_mb())
        for stream in opened:
            await stream.close()
    return samples


async def test_short_soak_memory_is_flat(speech16k: GoldenFixture) -> None:
    rss = await _soak(100, 120, speech16k.audio)
    assert len(rss) >= 4
    assert rss[-1] - rss[1] < 15, rss  # after warm-up: no growth with the audio


@pytest.mark.soak
async def test_soak_ten_minutes_per_stream(speech16k: GoldenFixture) -> None:
    rss = await _soak(100, 600, speech16k.audio)
    logging.getLogger(__name__).info("RSS samples (MB): %s", rss)
    assert rss[-1] - rss[2] < 15, rss


# -------------------------------------------------------------------------- 6. fuzzing


def _filled(n: int, dtype: str, fill: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # e.g. NaN cast to int: garbage in
        return np.full(n, fill).astype(dtype)


_samples = st.one_of(
    st.builds(
        _filled,
        st.integers(0, 3000),
        st.sampled_from(["float32", "float64", "int16", "int32", "uint8", "complex64", "bool"]),
        st.sampled_from([0.0, 0.5, -1.0, np.nan, np.inf, 3.0]),
    ),
    st.builds(lambda n, k: np.zeros((n, k), np.float32), st.integers(0, 100), st.integers(1, 3)),
    st.binary(max_size=4001),
    st.lists(st.floats(allow_nan=True), max_size=10),
    st.text(max_size=10),
    st.none(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.lists(_samples, min_size=1, max_size=8))
def test_bad_input_never_corrupts_a_neighbour(inputs: list[object]) -> None:
    from tests.conftest import golden_fixtures

    fixture = next(f for f in golden_fixtures() if f.file.endswith("conversation.wav"))

    async def main() -> tuple[pv.StreamResult, list[BaseException | None]]:
        async with pv.VADEngine(num_workers=2) as engine:
            victim = engine.open_stream("victim")
            neighbour = engine.open_stream("neighbour")
            outcomes: list[BaseException | None] = []
            for index, item in enumerate(inputs):
                start = index * 4000
                await neighbour.push(fixture.audio[start : start + 4000])
                try:
                    await victim.push(item)  # type: ignore[arg-type]
                    outcomes.append(None)
                except pv.PrevadError as exc:
                    outcomes.append(exc)
            await neighbour.push(fixture.audio[len(inputs) * 4000 :])
            await victim.close()
            return await neighbour.close(), outcomes

    result, outcomes = pv.run(main())
    assert segments_as_lists(result.segments) == fixture.default_segments
    for item, outcome in zip(inputs, outcomes, strict=True):
        if outcome is not None:
            assert isinstance(outcome, pv.AudioFormatError), (item, outcome)
