"""The engine-stream boundary: a VADStream needs only its StreamHost, and is driven by its port."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx._stream import StreamHost, VADStream, port_of

pytestmark = pytest.mark.anyio


class FakeEngine:
    """Plays the engine's side by hand: records what the stream sends."""

    def __init__(self) -> None:
        self.sent: list[pv.AudioChunk] = []
        self.forgotten: list[VADStream] = []
        self.backlog = 0
        self.host = StreamHost(self.sent.append, self.forgotten.append, lambda: self.backlog)


def make_stream(engine: FakeEngine, **options: object) -> VADStream:
    settings: dict[str, object] = {
        "keep_probabilities": True,
        "keep_audio": False,
        "max_pending_slices": 1,
        "max_buffered_events": 4,
    }
    settings.update(options)
    return VADStream(engine.host, "s", 16000, pv.VADConfig(), **settings)  # type: ignore[arg-type]


def a_slice(seq: int, *, last: bool = False) -> pv.AudioSlice:
    return pv.AudioSlice(
        stream_id="s",
        seq=seq,
        start_frame=seq,
        num_frames=1,
        buffer=np.zeros(576, np.float32),
        sample_rate=16000,
        end_sample=(seq + 1) * 512,
        is_last=last,
    )


def frames_of(item: pv.AudioSlice, value: float) -> pv.FrameProbabilities:
    return pv.FrameProbabilities(
        stream_id="s",
        seq=item.seq,
        start_frame=item.start_frame,
        probabilities=np.full(item.num_frames, value, np.float32),
        sample_rate=16000,
        end_sample=item.end_sample,
        is_last=item.is_last,
        audio=item.audio,
    )


async def test_a_stream_runs_on_its_host_and_port_alone() -> None:
    engine = FakeEngine()
    stream = make_stream(engine, max_pending_slices=2)
    port = port_of(stream)
    assert port.stream is stream
    await stream.push(np.zeros(512, np.float32))
    await stream.push(np.ones(512, np.float32))
    assert engine.sent == []  # sent at the end of the loop iteration, as one chunk
    await asyncio.sleep(0)
    assert [chunk.samples.size for chunk in engine.sent] == [1024]
    assert engine.sent[0].samples[511:513].tolist() == [0.0, 1.0]
    first = a_slice(0)
    port.on_slice(first)
    assert stream.statistics().slices_in_flight == 1
    port.on_frames(frames_of(first, 0.25))
    task = asyncio.ensure_future(stream.close())
    await asyncio.sleep(0)  # close() sends the end and waits for the last result
    end = engine.sent[-1]
    assert end.end_of_stream and port.take_end_chunk() is None  # sent once, by the stream
    last = a_slice(1, last=True)
    port.on_slice(last)
    port.on_frames(frames_of(last, 0.75))
    result = await task
    np.testing.assert_array_equal(result.probabilities, np.array([0.25, 0.75], np.float32))
    assert engine.forgotten == [stream]


async def test_a_failed_stream_hands_its_end_over_once() -> None:
    engine = FakeEngine()
    stream = make_stream(engine)
    port = port_of(stream)
    error = pv.StreamFailedError("stream 's': broken", "s")
    port.fail(error)
    assert stream.state == "failed" and engine.forgotten == [stream]
    end = port.take_end_chunk()
    assert end is not None and end.end_of_stream and end.stream_id == "s"
    assert port.take_end_chunk() is None
    with pytest.raises(pv.StreamFailedError, match="broken"):
        await stream.push(np.zeros(512, np.float32))


async def test_the_hosts_event_backlog_holds_back_push() -> None:
    engine = FakeEngine()
    engine.backlog = 4  # the engine's events() iterators are full
    stream = make_stream(engine, backpressure="error")
    with pytest.raises(pv.BackpressureError):
        await stream.push(np.zeros(512, np.float32))
    engine.backlog = 0
    port_of(stream).room_changed()
    await stream.push(np.zeros(512, np.float32))
    with pytest.raises(pv.BackpressureError):  # a push waiting to be sent counts as in flight
        await stream.push(np.zeros(512, np.float32))
    await asyncio.sleep(0)
    assert len(engine.sent) == 1
