"""ShardedVADEngine: streams in shard processes, exact to the in-process engine."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from reactivex import Observable
from reactivex import operators as ops

import prevad_rx as pv
from tests.conftest import ROOT, GoldenFixture, segments_as_lists

# ------------------------------------------------------------ picklable operators


def _zero_if_muted(chunk: pv.AudioChunk) -> pv.AudioChunk:
    if not chunk.stream_id.startswith("muted"):
        return chunk
    return pv.AudioChunk(chunk.stream_id, chunk.samples * 0, chunk.sample_rate, chunk.end_of_stream)


def silence_muted(source: Observable[pv.AudioChunk]) -> Observable[pv.AudioChunk]:
    """An audio operator (module level, so it can run in a shard): zeroes streams named muted-*."""
    return source.pipe(ops.map(_zero_if_muted))


def explode_on_bad(source: Observable[pv.AudioChunk]) -> Observable[pv.AudioChunk]:
    """An audio operator that raises on streams named bad-*."""

    def check(chunk: pv.AudioChunk) -> pv.AudioChunk:
        if chunk.stream_id.startswith("bad"):
            raise ValueError("no bad audio")
        return chunk

    return source.pipe(ops.map(check))


def stall_sleepy(source: Observable[pv.AudioChunk]) -> Observable[pv.AudioChunk]:
    """An audio operator that holds up its shard for a while on streams named sleepy-*."""

    def stall(chunk: pv.AudioChunk) -> pv.AudioChunk:
        if chunk.stream_id.startswith("sleepy"):
            time.sleep(2.0)
        return chunk

    return source.pipe(ops.map(stall))


def unpicklable_for_odd(source: Observable[pv.SpeechEvent]) -> Observable[pv.SpeechEvent]:
    """An event operator whose events for streams named odd-* cannot be pickled."""

    class Local(pv.SpeechEvent):
        __slots__ = ()

    def convert(event: pv.SpeechEvent) -> pv.SpeechEvent:
        if not event.stream_id.startswith("odd"):
            return event
        return Local(
            event.kind,
            event.stream_id,
            event.sample,
            event.sample_rate,
            event.decided_at_sample,
            segment=event.segment,
        )

    return source.pipe(ops.map(convert))


def only_ends(source: Observable[pv.SpeechEvent]) -> Observable[pv.SpeechEvent]:
    """An event operator that lets only ``end`` events through."""
    return source.pipe(ops.filter(_is_end))


def _is_end(event: pv.SpeechEvent) -> bool:
    return event.kind == "end"


# ------------------------------------------------------------------- helpers


def reference(pool: pv.WorkerPool, fixture: GoldenFixture) -> pv.StreamResult:
    """The in-process engine's result for a fixture, in one chunk."""
    return pool_result(pool, fixture.audio, fixture.sample_rate)


def pool_result(
    pool: pv.WorkerPool, audio: np.ndarray, sample_rate: int = 16000
) -> pv.StreamResult:
    """The in-process engine's result for ``audio``, in one chunk."""

    async def main() -> pv.StreamResult:
        async with pv.VADEngine(pool=pool) as engine:
            stream = engine.open_stream(sample_rate=sample_rate, keep_probabilities=True)
            await stream.push(audio)
            return await stream.close()

    return asyncio.run(main())


def chunks(audio: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Random chunk sizes, from a few samples to two seconds."""
    i = 0
    while i < audio.size:
        n = int(rng.choice([rng.integers(1, 600), rng.integers(600, 4000), 32000]))
        yield audio[i : i + n]
        i += n


async def push_then_close(stream: pv.ShardedStream, audio: np.ndarray) -> pv.StreamResult:
    await stream.push(audio)
    return await stream.close()


def shm_names(engine: pv.ShardedVADEngine) -> list[str]:
    return [s.ring.name for s in engine._shards + engine._retired]


def assert_nothing_left(names: list[str]) -> None:
    assert multiprocessing.active_children() == []
    for name in names:
        assert not Path("/dev/shm", name.lstrip("/")).exists(), name


# --------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("workers", "placement", "count"),
    [(1, "least_loaded", 50), (2, "hash", 24)],
    ids=["2x1-50-streams", "2x2-hash-24-streams"],
)
def test_many_streams_with_random_chunkings_are_exact(
    pool: pv.WorkerPool,
    all_fixtures: tuple[GoldenFixture, ...],
    workers: int,
    placement: Literal["least_loaded", "hash"],
    count: int,
) -> None:
    """Many concurrent streams over 2 shards, each chunked at random: probabilities and
    segments equal the in-process engine's; events reach the stream's subscribers, its
    iterator, and the engine's subscribers and iterator; flush() waits for the events;
    streams are placed as asked and both shards carry load."""
    expected = {f.file: reference(pool, f) for f in all_fixtures}
    rng = np.random.default_rng(7)

    async def feed(
        engine: pv.ShardedVADEngine, name: str, fixture: GoldenFixture, seed: int
    ) -> tuple[pv.StreamResult, list[pv.SpeechEvent], list[pv.SpeechEvent]]:
        stream = engine.open_stream(name, sample_rate=fixture.sample_rate, keep_probabilities=True)
        seen: list[pv.SpeechEvent] = []
        stream.subscribe(seen.append)
        iterated: list[pv.SpeechEvent] = []

        async def consume() -> None:
            async for event in stream.events():
                iterated.append(event)

        reader = asyncio.create_task(consume())
        half = fixture.audio.size // 2
        for chunk in chunks(fixture.audio[:half], np.random.default_rng(seed)):
            await stream.push(chunk)
        await stream.flush()
        # flush returned: every event of the audio so far has been delivered
        ends = [e for e in seen if e.kind == "end"]
        assert len(ends) == len(stream.segments)
        assert stream.statistics().frames_processed == stream.statistics().frames_submitted
        for chunk in chunks(fixture.audio[half:], np.random.default_rng(seed + 1)):
            await stream.push(chunk)
        result = await stream.close()
        await reader
        return result, seen, iterated

    async def main() -> None:
        engine = pv.ShardedVADEngine(shards=2, workers_per_shard=workers, placement=placement)
        async with engine:
            everything: list[pv.SpeechEvent] = []
            engine.subscribe(everything.append)
            iterated_all: list[pv.SpeechEvent] = []

            async def consume_all() -> None:
                async for event in engine.events():
                    iterated_all.append(event)

            all_reader = asyncio.create_task(consume_all())
            jobs = []
            for i in range(count):
                fixture = all_fixtures[i % len(all_fixtures)]
                jobs.append(
                    (f"s{i}", fixture, feed(engine, f"s{i}", fixture, int(rng.integers(10**9))))
                )
            outcomes = await asyncio.gather(*(job for _, _, job in jobs))
            stats = engine.statistics()
            if placement == "hash":
                homes = [zlib.crc32(f"s{i}".encode()) % 2 for i in range(count)]
                assert [s.streams_opened for s in stats.shards] == [homes.count(0), homes.count(1)]
            else:
                assert [s.streams_opened for s in stats.shards] == [count // 2, count // 2]
            assert all(s.frames_processed > 0 and s.state == "ready" for s in stats.shards)
            assert stats.open_streams == 0 and stats.streams_opened == count
            for (name, fixture, _), (result, seen, iterated) in zip(jobs, outcomes, strict=True):
                want = expected[fixture.file]
                assert result.stream_id == name
                assert result.probabilities is not None and want.probabilities is not None
                np.testing.assert_array_equal(result.probabilities, want.probabilities)
                assert segments_as_lists(result.segments) == segments_as_lists(want.segments)
                assert result.num_samples == want.num_samples
                ends = [e.segment for e in seen if e.kind == "end"]
                assert segments_as_lists(ends) == segments_as_lists(want.segments)
                assert [e.kind for e in seen].count("start") == len(want.segments)
                assert iterated == seen
                assert [e for e in everything if e.stream_id == name] == seen
        await all_reader  # ends when the engine closes
        assert iterated_all == everything

    pv.run(main())


def test_a_flush_after_each_live_packet_sees_what_the_in_process_engine_sees(
    speech16k: GoldenFixture,
) -> None:
    """32 ms packets, each pushed then flushed (the live pattern the shard handles without a
    task): after every flush the frames processed and the events delivered are exactly
    those of VADEngine after the same flush, so a flush is never reported before the
    events of its frames."""
    audio = speech16k.audio[: 512 * 190]  # whole frames: each flush decides its packet

    async def trace(engine: pv.VADEngine | pv.ShardedVADEngine) -> list[tuple[int, int, int]]:
        async with engine:
            stream = engine.open_stream("live")
            seen: list[pv.SpeechEvent] = []
            stream.subscribe(seen.append)
            steps = []
            for start in range(0, audio.size, 512):
                await stream.push(audio[start : start + 512])
                await stream.flush()
                stats = stream.statistics()
                steps.append((stats.frames_processed, len(seen), len(stream.segments)))
            await stream.close()
            return steps

    async def main() -> None:
        local = await trace(pv.VADEngine(num_workers=1))
        sharded = await trace(pv.ShardedVADEngine(shards=1))
        assert [frames for frames, _, _ in local] == list(range(1, audio.size // 512 + 1))
        assert local[-1][1] >= 2  # the audio holds speech: events were seen along the way
        assert sharded == local

    pv.run(main())


def test_a_killed_shard_fails_only_its_streams_and_is_replaced(
    pool: pv.WorkerPool, speech16k: GoldenFixture
) -> None:
    """SIGKILL one shard: its streams fail with ShardFailedError (push, close, events(),
    engine events, and a push and a flush that were waiting on the shard), the other
    shard's streams stay exact, a new stream runs in a replacement process, and close
    leaves no process or shared memory behind."""
    want = reference(pool, speech16k)
    audio = speech16k.audio
    names: list[str] = []

    async def main() -> None:
        engine = pv.ShardedVADEngine(shards=2, max_pending_chunks=2, audio_operators=[stall_sleepy])
        async with engine:
            errors: list[pv.SpeechEvent] = []
            engine.subscribe(lambda e: errors.append(e) if e.kind == "error" else None)
            streams = [engine.open_stream(f"s{i}", keep_probabilities=True) for i in range(4)]
            victims = [s for s in streams if s.shard == 0]
            survivors = [s for s in streams if s.shard == 1]
            assert len(victims) == len(survivors) == 2
            names.extend(shm_names(engine))
            iterator = victims[0].events()
            for s in streams:
                await s.push(audio[:48000])
            sleepy = engine.open_stream("sleepy")  # the shards are even: shard 0
            assert sleepy.shard == 0
            await sleepy.push(audio[:512])  # its audio operator holds up shard 0 for 2 s
            await asyncio.sleep(0.3)  # shard 0 is stalled now: it takes no more audio
            # two chunks in flight fill the budget, so the third push (at the latest) waits
            pushes = [
                asyncio.create_task(sleepy.push(audio[k * 512 : (k + 1) * 512])) for k in (1, 2, 3)
            ]
            waiting_push = pushes[-1]
            waiting_flush = asyncio.create_task(victims[1].flush())
            await asyncio.sleep(0.05)
            assert not waiting_push.done() and not waiting_flush.done()
            dead_pid = engine.shard_pids()[0]
            assert dead_pid is not None
            os.kill(dead_pid, signal.SIGKILL)
            for waiting in (waiting_push, waiting_flush):
                with pytest.raises(pv.ShardFailedError):
                    await waiting
            for outcome in await asyncio.gather(*pushes[:-1], return_exceptions=True):
                assert outcome is None or isinstance(outcome, pv.ShardFailedError)
            with pytest.raises(pv.ShardFailedError) as caught:
                await victims[0].close()
            assert caught.value.shard == 0 and caught.value.stream_id == "s0"
            assert "shard 0" in str(caught.value)
            with pytest.raises(pv.ShardFailedError):
                await victims[1].push(audio[48000:96000])
            with pytest.raises(pv.ShardFailedError):
                async for _ in iterator:
                    pass
            assert victims[1].state == "failed"
            assert sorted(e.stream_id for e in errors) == ["s0", "s2", "sleepy"]
            for s in survivors:
                await s.push(audio[48000:])
                result = await s.close()
                assert result.probabilities is not None and want.probabilities is not None
                np.testing.assert_array_equal(result.probabilities, want.probabilities)
            # the dead shard is replaced for new streams, and the same id can be used again
            again = engine.open_stream("s0", keep_probabilities=True)
            assert again.shard == 0
            await again.push(audio)
            result = await again.close()
            assert segments_as_lists(result.segments) == segments_as_lists(want.segments)
            shard0 = engine.statistics().shards[0]
            assert shard0.restarts == 1 and shard0.pid != dead_pid and shard0.state == "ready"
            names.extend(shm_names(engine))

    pv.run(main(), use_uvloop=False)
    assert_nothing_left(names)


def test_backpressure_operators_and_close_with_open_streams(
    pool: pv.WorkerPool, speech16k: GoldenFixture
) -> None:
    """One shard with a tiny ring and a budget of two chunks per stream: pushes larger than
    the ring still arrive whole and exact; "error" refuses a push while the stream is full;
    picklable audio and event operators run in the shard; closing the engine with open
    streams finishes them."""
    want = reference(pool, speech16k)
    audio = speech16k.audio
    names: list[str] = []

    async def main() -> None:
        engine = pv.ShardedVADEngine(
            shards=1,
            ring_samples=4096,
            max_pending_chunks=2,
            audio_operators=[silence_muted, explode_on_bad],
            event_operators=[only_ends, unpicklable_for_odd],
        )
        async with engine:
            loud = engine.open_stream("loud", keep_probabilities=True)
            muted = engine.open_stream("muted-1")
            kinds: list[str] = []
            loud.subscribe(lambda e: kinds.append(e.kind))
            peak = 0
            for i in range(0, audio.size, 20000):  # each push is 5 ring-sized pieces
                await loud.push(audio[i : i + 20000])
                await muted.push(audio[i : i + 20000])
                peak = max(peak, engine.statistics().shards[0].ring_used_samples)
            assert peak <= 4096
            result = await loud.close()
            assert result.probabilities is not None and want.probabilities is not None
            np.testing.assert_array_equal(result.probabilities, want.probabilities)
            # the event operator shaped what was delivered, not the result
            assert set(kinds) == {"end"} and len(kinds) == len(want.segments)
            assert segments_as_lists(result.segments) == segments_as_lists(want.segments)
            assert (await muted.close()).segments == ()

            # an operator's fault fails only its stream, with its error and cause intact
            bad = engine.open_stream("bad-1")
            await bad.push(audio[:512])
            with pytest.raises(pv.OperatorError) as caught:
                await bad.close()
            assert caught.value.stream_id == "bad-1" and "explode_on_bad" in str(caught.value)
            assert isinstance(caught.value.__cause__, ValueError)

            # an event that cannot be pickled fails its stream, not the shard
            odd = engine.open_stream("odd-1")
            with pytest.raises(pv.StreamFailedError, match="cannot be sent back") as failed:
                await push_then_close(odd, audio)  # the failure may come while pushing
            assert failed.value.stream_id == "odd-1"
            again = engine.open_stream("odd-1")  # ended in the shard too: the id is free
            with pytest.raises(pv.StreamFailedError, match="cannot be sent back"):
                await push_then_close(again, audio)

            eager = engine.open_stream("eager", backpressure="error")
            await eager.push(audio[:512])
            await eager.push(audio[512:1024])
            with pytest.raises(pv.BackpressureError):
                await eager.push(audio[1024:1536])  # two chunks in the shard, not yet taken
            await eager.flush()
            await eager.push(audio[1024:1536])  # room again
            with pytest.raises(pv.BackpressureError, match="never fits"):
                await eager.push(audio[:4096])  # more than half of the ring

            left_open = engine.open_stream("left-open")
            await left_open.push(audio)
            names.extend(shm_names(engine))
        assert left_open.state == "closed" and eager.state == "closed"
        assert segments_as_lists((await left_open.close()).segments) == segments_as_lists(
            want.segments
        )
        with pytest.raises(pv.StreamClosedError):
            await left_open.push(audio[:512])
        with pytest.raises(pv.ClosedError):
            engine.open_stream("late")

    pv.run(main())
    assert_nothing_left(names)


def test_drop_oldest_never_waits_keeps_the_newest_and_counts_what_it_drops(
    pool: pv.WorkerPool, speech16k: GoldenFixture
) -> None:
    """A "drop_oldest" stream whose shard reads nothing (stopped): its pushes return at
    once, the newest max_queued_chunks pieces wait and older ones are dropped and counted;
    once the shard runs again the waiting audio is processed before flush() returns and
    the result is exactly the in-process engine's on the audio that was kept."""
    audio = speech16k.audio
    packets = [audio[i : i + 512] for i in range(0, 512 * 100, 512)]
    kept_audio = np.concatenate(packets[:2] + packets[-5:])  # 2 in the shard, 5 queued

    async def main() -> tuple[pv.StreamResult, pv.StreamStatistics, pv.StreamStatistics]:
        engine = pv.ShardedVADEngine(
            shards=1, max_pending_chunks=2, max_queued_chunks=5, shard_timeout=None
        )
        async with engine:
            stream = engine.open_stream("live", keep_probabilities=True, backpressure="drop_oldest")
            pid = engine.shard_pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                for packet in packets:  # would wait for good if a push waited for room
                    await asyncio.wait_for(stream.push(packet), 5)
                held = stream.statistics()
            finally:
                os.kill(pid, signal.SIGCONT)
            await stream.flush()
            flushed = stream.statistics()
            return await stream.close(), held, flushed

    result, held, flushed = pv.run(main())
    assert held.queued_chunks == 2 + 5 and held.samples_pushed == 512 * 100
    assert held.dropped_samples == flushed.dropped_samples == 512 * 93
    assert flushed.frames_processed == 7 and flushed.queued_chunks == 0
    assert result.num_samples == held.samples_pushed - held.dropped_samples
    want = pool_result(pool, kept_audio)
    assert result.probabilities is not None and want.probabilities is not None
    np.testing.assert_array_equal(result.probabilities, want.probabilities)
    assert multiprocessing.active_children() == []


def test_drop_oldest_in_a_shard_whose_engine_falls_behind(speech16k: GoldenFixture) -> None:
    """Two-second chunks pushed far faster than a one-slice budget lets the shard's engine
    take them: the shard drops the oldest waiting chunks, the stream's statistics count
    those drops, and everything pushed is either processed or counted as dropped."""
    chunk = speech16k.audio[:32000]

    async def main() -> tuple[pv.StreamResult, pv.StreamStatistics]:
        engine = pv.ShardedVADEngine(
            shards=1, backpressure="drop_oldest", max_pending_slices=1, max_queued_chunks=2
        )
        async with engine:
            stream = engine.open_stream("fast")
            for _ in range(12):  # fewer than max_pending_chunks: all go to the shard at once
                await stream.push(chunk)
            await stream.flush()
            stats = stream.statistics()
            return await stream.close(), stats

    result, stats = pv.run(main())
    assert stats.samples_pushed == 12 * 32000 and stats.dropped_samples > 0
    assert stats.dropped_samples % 32000 == 0  # whole chunks
    assert result.num_samples == stats.samples_pushed - stats.dropped_samples
    assert stats.frames_processed == result.num_samples // 512


def test_drop_oldest_keeps_a_long_chunk_whole_and_flush_waits_only_for_earlier_audio(
    speech16k: GoldenFixture,
) -> None:
    """A chunk longer than a ring piece into an empty "drop_oldest" stream is taken whole
    (max_queued_chunks counts chunks, not pieces); a flush() called while a sender keeps
    pushing returns once the audio queued before it is processed, not when the sender
    stops."""
    audio = speech16k.audio

    async def main() -> None:
        engine = pv.ShardedVADEngine(
            shards=1, ring_samples=4096, max_pending_chunks=2, max_queued_chunks=1
        )
        async with engine:
            whole = engine.open_stream("whole", backpressure="drop_oldest")
            await whole.push(audio[:4096])  # four pieces of 1024
            result = await whole.close()
            assert result.num_samples == 4096
            assert whole.statistics().dropped_samples == 0

            busy = engine.open_stream("busy", backpressure="drop_oldest")
            stop = asyncio.Event()

            async def sender() -> None:
                while not stop.is_set():
                    for start in range(0, 512 * 20, 512):
                        await busy.push(audio[start : start + 512])
                    await asyncio.sleep(0)

            sending = asyncio.ensure_future(sender())
            await asyncio.sleep(0.2)
            try:
                await asyncio.wait_for(busy.flush(), 20)
                assert not sending.done()  # the flush did not wait for the sender
            finally:
                stop.set()
                await sending
            final = await busy.close()
            stats = busy.statistics()
            assert final.num_samples == stats.samples_pushed - stats.dropped_samples

    pv.run(main())


def test_drop_oldest_sends_what_waited_once_its_events_are_read(
    speech16k: GoldenFixture,
) -> None:
    """A "drop_oldest" stream held up only by its own unread events (max_buffered_events=1):
    once its reader catches up, the audio waiting in the user's process goes on, so
    flush() and close() return."""
    audio = speech16k.audio

    async def main() -> None:
        engine = pv.ShardedVADEngine(shards=1, max_buffered_events=1, shard_timeout=None)
        async with engine:
            stream = engine.open_stream("reader", backpressure="drop_oldest")
            events = stream.events()
            first = asyncio.ensure_future(events.__anext__())  # a reader that started
            for start in range(0, audio.size, 512):
                await stream.push(audio[start : start + 512])
                await asyncio.sleep(0.002)
            await asyncio.sleep(1.0)
            assert stream.statistics().queued_chunks > 0  # held back by the unread events
            assert (await first).kind == "start"
            with contextlib.suppress(asyncio.TimeoutError):
                while True:  # the reader catches up
                    await asyncio.wait_for(events.__anext__(), 0.5)
            await asyncio.wait_for(stream.flush(), 20)
            assert stream.statistics().queued_chunks == 0
            await events.aclose()
            result = await asyncio.wait_for(stream.close(), 20)
            stats = stream.statistics()
            assert result.num_samples == stats.samples_pushed - stats.dropped_samples

    pv.run(main())


def test_an_error_stream_is_not_failed_by_its_shard_falling_behind(
    speech16k: GoldenFixture,
) -> None:
    """ "error" is applied in the user's process only: two-second chunks pushed faster than
    the shard's one-slice budget takes them wait in the shard instead of failing the
    stream there."""
    chunk = speech16k.audio[:32000]

    async def main() -> None:
        engine = pv.ShardedVADEngine(shards=1, backpressure="error", max_pending_slices=1)
        async with engine:
            stream = engine.open_stream("eager")
            taken = 0
            for _ in range(6):
                with contextlib.suppress(pv.BackpressureError):
                    await stream.push(chunk)
                    taken += chunk.size
            result = await stream.close()
            assert result.num_samples == taken > 0

    pv.run(main())


def lambda_operator() -> Callable[[Observable[Any]], Observable[Any]]:
    return ops.map(lambda c: c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 0}, "shards must be an int >= 1"),
        ({"workers_per_shard": True}, "workers_per_shard"),
        ({"placement": "random"}, "placement"),
        ({"backpressure": "sometimes"}, "'wait', 'drop_oldest' or 'error'"),
        ({"max_queued_chunks": 0}, "max_queued_chunks"),
        ({"ring_samples": 100}, "ring_samples"),
        ({"start_timeout": 0}, "start_timeout"),
        ({"shard_timeout": 0.5}, "shard_timeout"),
        ({"cpu_affinity": [[10_000]]}, "CPU 10000"),
        ({"cpu_affinity": "all"}, "cpu_affinity"),
        ({"max_pending_slices": 0}, "max_pending_slices"),
        ({"audio_operators": [lambda_operator()]}, "picklable"),
        ({"event_operators": [lambda s: s]}, "picklable"),
        ({"backend": "no-such-backend"}, "no-such-backend"),
    ],
)
def test_bad_arguments_are_config_errors_before_any_process_starts(
    kwargs: dict[str, Any], message: str
) -> None:
    error: type[Exception] = pv.UnknownBackendError if kwargs.get("backend") else pv.ConfigError
    with pytest.raises(error, match=re.escape(message)):
        pv.ShardedVADEngine(**kwargs)
    assert multiprocessing.active_children() == []


def test_open_stream_checks_its_arguments(speech16k: GoldenFixture) -> None:
    """open_stream() and push() refuse what VADEngine refuses; int16, resampled and
    keep_audio streams work (the kept audio crosses back with its end event); the shard
    runs on the CPU it was pinned to."""

    async def main() -> None:
        last_cpu = max(os.sched_getaffinity(0))
        engine = pv.ShardedVADEngine(shards=1, cpu_affinity=[[last_cpu]])
        with pytest.raises(pv.ClosedError):
            engine.open_stream("early")
        async with engine:
            stream = engine.open_stream("a")
            with pytest.raises(pv.DuplicateStreamError):
                engine.open_stream("a")
            with pytest.raises(pv.ConfigError):
                engine.open_stream(3)  # type: ignore[arg-type]
            with pytest.raises(pv.ConfigError):
                engine.open_stream("b", config={"threshold": 0.5})  # type: ignore[arg-type]
            with pytest.raises(pv.AudioFormatError):
                await stream.push(np.full(512, np.nan, np.float32))
            await stream.push(b"")  # empty: a no-op
            await stream.push(np.zeros(512, np.int16))
            resampled = engine.open_stream("c", sample_rate=44100)
            await resampled.push(speech16k.audio[:44100])
            assert (await resampled.close()).sample_rate == 16000
            assert (await stream.close()).num_samples == 512
            pid = engine.shard_pids()[0]
            assert pid is not None and os.sched_getaffinity(pid) == {last_cpu}
            kept = engine.open_stream("kept", keep_audio=True)
            ends: list[pv.SpeechEvent] = []
            kept.subscribe(lambda e: ends.append(e) if e.kind == "end" else None)
            await kept.push(speech16k.audio)
            result = await kept.close()
            assert ends and all(e.segment is not None for e in ends)
            for event, segment in zip(ends, result.segments, strict=True):
                assert event.segment is not None and event.segment.audio is not None
                assert event.segment.audio.size == segment.end_sample - segment.start_sample
                np.testing.assert_array_equal(
                    event.segment.audio,
                    speech16k.audio[segment.start_sample : segment.end_sample],
                )

    pv.run(main())


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """docs/shards.md's example, run as a script (shards import the main module)."""
    text = (ROOT / "docs" / "shards.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("caller-0: ") and len(lines) == 9
    assert "resource_tracker" not in proc.stderr


def test_a_shard_that_cannot_start_fails_start_with_its_reason() -> None:
    """A backend registered only in this process is unknown in the shards: start() raises
    BackendError naming the shard's own error, and no process is left."""
    pv.register_backend("registered-here-only", pv.create_backend("onnx").__class__)
    try:
        engine = pv.ShardedVADEngine("registered-here-only", shards=1)

        async def main() -> None:
            with pytest.raises(pv.BackendError, match="UnknownBackendError"):
                await engine.start()
            with pytest.raises(pv.ClosedError):
                engine.open_stream("a")
            await engine.close()

        pv.run(main())
        assert_nothing_left(shm_names(engine))
    finally:
        from prevad_rx.backends import _registry

        _registry._registered.pop("registered-here-only", None)


def test_a_script_without_the_main_guard_is_told_what_to_add(tmp_path: Path) -> None:
    """A script that starts a ShardedVADEngine when imported (no ``__main__`` guard): its
    shards die while the spawn imports the script, and the error says what to add."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import prevad_rx as pv\n\n"
        "async def main():\n"
        "    async with pv.ShardedVADEngine(shards=1):\n"
        "        pass\n\n"
        "pv.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("prevad_rx._errors.BackendError: shard 0"), done.stderr[-2000:]
    assert "before it was ready" in last and 'if __name__ == "__main__":' in last


def test_the_shard_packet_benchmark_runs_both_engines() -> None:
    """scripts/bench_shards.py's packet scenario, shrunk: both engines take every packet."""
    from prevad_rx.bench._scenarios import BenchOptions
    from prevad_rx.bench._shards import shard_packets

    out = shard_packets(BenchOptions(quick=True, workers=1))
    assert out["streams"] == 8 and out["cores"] == 1
    for name in ("engine", "shards"):
        assert out[name]["packets_per_s"] > 0
        assert out[name]["user_process_cpu_us_per_packet"] > 0
    assert multiprocessing.active_children() == []


def test_the_per_core_benchmark_runs_pinned_and_restores_the_affinity() -> None:
    """scripts/bench_shards.py's per-core scenario, shrunk: packets flow, the process is
    pinned to one CPU during it and may use all of its CPUs again afterwards."""
    from prevad_rx.bench._scenarios import BenchOptions
    from prevad_rx.bench._shards import per_core

    before = os.sched_getaffinity(0)
    out = per_core(BenchOptions(quick=True, workers=1))
    assert os.sched_getaffinity(0) == before
    assert out["cpu"] in before
    assert out["closed_loop"]["packets_per_s"] > 0 and out["closed_loop"]["cpu_us_per_packet"] > 0
    assert out["live"]["trials"]


def test_the_shard_bench_script_starts_its_live_searches_where_asked() -> None:
    """``scripts/bench_shards.py --from-streams N`` (for many-core machines): every live
    search of the three engines begins at N streams."""
    import json

    done = subprocess.run(
        [
            sys.executable,
            "scripts/bench_shards.py",
            *("--quick", "--workers", "1", "--scenario", "live", "--from-streams", "3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    results = json.loads(done.stdout[done.stdout.index("{") :])["shard_live"]
    for system in ("prevad", "shards", "processes"):
        assert [t["streams"] for t in results[system]["trials"]] == [4]  # quick: 2, 4


def test_a_shard_whose_loop_is_blocked_is_killed_after_shard_timeout(
    pool: pv.WorkerPool, speech16k: GoldenFixture
) -> None:
    """An operator that holds up its shard's loop past shard_timeout: the shard is killed,
    its stream fails with ShardFailedError saying why, and a new stream runs in the
    replacement."""
    want = reference(pool, speech16k)

    async def main() -> None:
        engine = pv.ShardedVADEngine(shards=1, shard_timeout=1.0, audio_operators=[stall_sleepy])
        async with engine:
            stuck = engine.open_stream("sleepy-1")
            await stuck.push(speech16k.audio[:512])  # holds the shard's loop for 2 s
            with pytest.raises(pv.ShardFailedError, match="did not answer"):
                await stuck.close()
            assert engine.statistics().shards[0].restarts == 1
            fresh = engine.open_stream("fresh")
            await fresh.push(speech16k.audio)
            result = await fresh.close()
            assert segments_as_lists(result.segments) == segments_as_lists(want.segments)

    pv.run(main())
    assert multiprocessing.active_children() == []


def test_a_stopped_shard_that_reads_nothing_never_stalls_the_user_s_loop() -> None:
    """A shard stopped (SIGSTOP) while more records are due to it than its pipe holds
    (400 stream opens, ~100 KiB): the user's loop runs on, the watchdog kills the shard
    after shard_timeout, and its streams fail with ShardFailedError (a blocking write to
    the full pipe would have stopped the loop, and the watchdog with it, for good)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        engine = pv.ShardedVADEngine(shards=1, shard_timeout=1.0)
        async with engine:
            pid = engine.shard_pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                streams = [engine.open_stream(f"caller-{i:03d}-" + "x" * 200) for i in range(400)]
                begin, ticks = loop.time(), 0
                while loop.time() - begin < 0.5:  # the loop is not held by the stopped shard
                    await asyncio.sleep(0.05)
                    ticks += 1
                assert ticks >= 5
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(s.close() for s in streams), return_exceptions=True), 60
                )
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            assert all(isinstance(o, pv.ShardFailedError) for o in outcomes), outcomes[:3]
            assert "did not answer" in str(outcomes[0])
            assert engine.statistics().shards[0].restarts == 1

    pv.run(main())
    assert multiprocessing.active_children() == []


def test_a_cancelled_close_still_closes_everything(speech16k: GoldenFixture) -> None:
    """close() cancelled while its streams are finishing: awaiting it again returns once
    the streams have their results and the shards are gone."""
    names: list[str] = []

    async def main() -> None:
        engine = await pv.ShardedVADEngine(shards=1).start()
        names.extend(shm_names(engine))
        stream = engine.open_stream("a")
        await stream.push(speech16k.audio)
        closing = asyncio.create_task(engine.close())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await engine.close()
        assert stream.state == "closed" and len((await stream.close()).segments) > 0

    pv.run(main())
    assert_nothing_left(names)


def test_an_operator_from_an_interactive_session_is_a_config_error() -> None:
    """Shards cannot import an operator defined in ``python -c`` (or a notebook): refused
    at construction, not as a shard that fails to start."""
    code = (
        "import prevad_rx as pv\n"
        "def op(source):\n"
        "    return source\n"
        "try:\n"
        "    pv.ShardedVADEngine(shards=1, audio_operators=[op])\n"
        "except pv.ConfigError as error:\n"
        "    print(error)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "interactive session" in proc.stdout
