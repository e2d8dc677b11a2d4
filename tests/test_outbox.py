"""A stream's pushes of one loop iteration enter the chain as one chunk (``_outbox.py``)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx._outbox import Outbox, owned
from prevad_rx._stream import port_of
from tests.conftest import GoldenFixture, segments_as_lists
from tests.test_stream_boundary import FakeEngine, a_slice, frames_of, make_stream

pytestmark = pytest.mark.anyio


def outbox(limit: int = 10_000) -> tuple[Outbox, list[pv.AudioChunk]]:
    sent: list[pv.AudioChunk] = []
    return Outbox("s", 16000, sent.append, asyncio.get_running_loop(), limit), sent


async def test_pushes_of_one_iteration_leave_as_one_chunk_in_order() -> None:
    box, sent = outbox()
    box.add(np.zeros(3, np.float32))
    box.add(np.ones(2, np.float32))
    assert len(box) == 2 and sent == []
    await asyncio.sleep(0)
    assert len(sent) == 1 and len(box) == 0
    assert sent[0].samples.tolist() == [0, 0, 0, 1, 1] and not sent[0].end_of_stream
    await asyncio.sleep(0)
    assert len(sent) == 1  # nothing waits: nothing more is sent


async def test_the_end_leaves_with_the_samples_before_it() -> None:
    box, sent = outbox()
    box.add(np.ones(4, np.float32))
    box.add_end()
    box.send_now()
    assert [(c.samples.size, c.end_of_stream) for c in sent] == [(4, True)]
    box.add_end()
    box.send_now()
    assert (sent[1].samples.size, sent[1].end_of_stream) == (0, True)


async def test_a_full_slice_is_sent_at_once() -> None:
    box, sent = outbox(limit=1024)
    box.add(np.zeros(512, np.float32))
    assert sent == []
    box.add(np.zeros(512, np.float32))  # the limit is reached: no waiting
    assert [c.samples.size for c in sent] == [1024]
    box.add(np.zeros(5000, np.float32))  # one large push goes straight through
    assert [c.samples.size for c in sent] == [1024, 5000]


async def test_a_cleared_outbox_sends_nothing() -> None:
    box, sent = outbox()
    box.add(np.zeros(8, np.float32))
    assert box.clear() is False
    box.add_end()
    assert box.clear() is True  # the end was dropped: its owner must send it again
    await asyncio.sleep(0)
    assert sent == [] and len(box) == 0


def test_owned_copies_what_may_share_the_callers_memory() -> None:
    caller = np.zeros(16, np.float32)
    assert owned(caller, caller) is not caller  # the caller's own array
    view = caller[4:8]
    assert not np.shares_memory(owned(view, view), caller)
    converted = np.zeros(4, np.int16).astype(np.float32)
    assert owned(converted, "int16 input") is converted  # a fresh conversion is kept


async def in_one_push(engine: pv.VADEngine, audio: np.ndarray) -> np.ndarray:
    """The engine's probabilities for ``audio`` pushed whole: the reference on this CPU."""
    stream = engine.open_stream(keep_probabilities=True)
    await stream.push(audio)
    result = await stream.close()
    assert result.probabilities is not None
    return result.probabilities


async def test_a_reused_buffer_gives_the_exact_result(speech16k: GoldenFixture) -> None:
    """The caller refills one array after every push returns: nothing pushed may change."""
    audio = speech16k.audio
    packet = np.empty(512, np.float32)
    async with pv.VADEngine(num_workers=2) as engine:
        want = await in_one_push(engine, audio)
        stream = engine.open_stream(keep_probabilities=True)
        for start in range(0, audio.size - 511, 512):
            packet[:] = audio[start : start + 512]
            await stream.push(packet)
        packet[:] = np.nan  # poisoned after the last push: must not reach the model
        await stream.push(audio[audio.size - audio.size % 512 :])
        result = await stream.close()
    assert result.probabilities is not None
    np.testing.assert_array_equal(result.probabilities, want)
    assert segments_as_lists(result.segments) == speech16k.default_segments


async def test_a_sender_that_is_ahead_sends_fewer_larger_chunks(
    speech16k: GoldenFixture,
) -> None:
    audio = speech16k.audio[: 512 * 200]
    sizes: list[int] = []
    operator = ops.do_action(lambda chunk: sizes.append(chunk.samples.size))
    async with pv.VADEngine(num_workers=2, audio_operators=[operator]) as engine:
        want = await in_one_push(engine, audio)
        sizes.clear()
        stream = engine.open_stream(keep_probabilities=True)
        for start in range(0, audio.size, 512):  # back to back: no await yields
            await stream.push(audio[start : start + 512])
        result = await stream.close()
    assert sum(sizes) == audio.size
    assert len(sizes) < 200 / 4  # coalesced: far fewer items than pushes
    assert max(sizes) <= 32 * 512  # at most one slice's worth waits (frames_per_slice=32)
    assert result.probabilities is not None
    np.testing.assert_array_equal(result.probabilities, want)


async def test_a_paced_sender_sends_each_push_as_it_is(speech16k: GoldenFixture) -> None:
    audio = speech16k.audio[: 512 * 20]
    sizes: list[int] = []
    operator = ops.do_action(lambda chunk: sizes.append(chunk.samples.size))
    async with pv.VADEngine(num_workers=2, audio_operators=[operator]) as engine:
        stream = engine.open_stream()
        for start in range(0, audio.size, 512):
            await stream.push(audio[start : start + 512])
            await asyncio.sleep(0)  # one packet per loop iteration, as a live source
        await stream.close()
    assert sizes[:20] == [512] * 20


async def test_a_stream_failing_with_its_end_waiting_still_hands_the_end_over() -> None:
    """The end queued by a result, then the stream fails in the same iteration: the end
    was never sent, so the engine can still take it (to end the chain's state)."""
    engine = FakeEngine()
    stream = make_stream(engine, max_pending_slices=1, backpressure="drop_oldest")
    port = port_of(stream)
    await stream.push(np.zeros(512, np.float32))
    await asyncio.sleep(0)
    first = a_slice(0)
    port.on_slice(first)  # the stream is full now
    await stream.push(np.ones(512, np.float32))  # queued at the door
    closing = asyncio.ensure_future(stream.close())
    await asyncio.sleep(0)  # close() waits: no room for the queued chunk yet
    port.on_frames(frames_of(first, 0.5))  # room: the queued chunk and the end wait to go
    port.fail(pv.StreamFailedError("stream 's': broken", "s"))
    end = port.take_end_chunk()
    assert end is not None and end.end_of_stream
    with pytest.raises(pv.StreamFailedError):
        await closing
    await asyncio.sleep(0)
    assert [chunk.end_of_stream for chunk in engine.sent] == [False]  # nothing after failing
