"""ShardedStream: one stream of a :class:`~prevad_rx.ShardedVADEngine`, on the user's loop.

Its samples go into its shard's ring (``ShardHandle``), and the shard's reports
(progress, events, flushes, the result or the failure) come back to it through
its :class:`ShardedStreamPort`. It calls its engine only through a
:class:`ShardedStreamHost`: neither touches the other's private members (as
``VADStream`` with ``StreamHost``/``StreamPort``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prevad_rx._audio import AudioInput, model_sample_rate, to_float32_mono
from prevad_rx._config import VADConfig
from prevad_rx._drop_oldest import DropOldestQueue
from prevad_rx._errors import BackpressureError, StreamClosedError, StreamFailedError
from prevad_rx._fanout import EventFanout
from prevad_rx._loop import Signal, require_loop
from prevad_rx._stream import BackpressurePolicy, StreamBase, StreamState, StreamStatistics
from prevad_rx._types import Segment, SpeechEvent, StreamResult

if TYPE_CHECKING:
    from prevad_rx._shard_handle import ShardHandle

__all__ = ["ShardedStream"]


@dataclass(frozen=True, slots=True)
class ShardedStreamHost:
    """What a sharded stream needs from its engine (internal to prevad_rx)."""

    #: an event of the stream, for the engine's own subscribers and iterators
    publish: Callable[[SpeechEvent], None]
    #: the stream failed: the engine's iterators and observers hear of it
    fail: Callable[[StreamFailedError], None]
    #: unread events held by the engine's own ``events()`` iterators
    events_backlog: Callable[[], int]
    #: the stream has ended: the engine lets go of it
    forget: Callable[[ShardedStream], None]
    max_pending_chunks: int
    max_buffered_events: int
    #: chunks a ``"drop_oldest"`` stream holds back before dropping the oldest
    max_queued_chunks: int


@dataclass(frozen=True, slots=True)
class ShardedStreamPort:
    """What the shard handle and the engine call on one stream, on the loop (internal to
    prevad_rx). Made by :func:`port_of`; each field is the stream's own handler."""

    stream: ShardedStream
    #: the shard took chunks and reports its counters (taken, frames submitted, frames
    #: processed, slices in flight, samples it dropped) and new segments
    on_progress: Callable[[int, int, int, int, int, tuple[Segment, ...]], None]
    on_event: Callable[[SpeechEvent], None]
    #: the shard answered the flush with this token
    on_flushed: Callable[[int], None]
    #: the shard closed the stream: its whole result
    on_closed: Callable[[StreamResult], None]
    fail: Callable[[StreamFailedError], None]
    #: room in the ring or for events: waiting pushes look again
    room_changed: Callable[[], None]
    #: frames processed as last reported
    frames_processed: Callable[[], int]


def port_of(stream: ShardedStream) -> ShardedStreamPort:
    """The shard's and the engine's handle on ``stream``."""
    return ShardedStreamPort(
        stream,
        on_progress=stream._on_progress,
        on_event=stream._on_event,
        on_flushed=stream._on_flushed,
        on_closed=stream._on_closed,
        fail=stream._fail,
        room_changed=stream._room_changed,
        frames_processed=stream._frames_processed,
    )


class ShardedStream(StreamBase):
    """One stream inside a :class:`ShardedVADEngine`: the same API as :class:`VADStream`.

    Its audio is processed in one shard process; events, segments, counters and
    the result come back from there. All methods belong to the engine's loop.
    """

    def __init__(
        self,
        host: ShardedStreamHost,
        shard: ShardHandle,
        slot: int,
        stream_id: str,
        sample_rate: int,
        config: VADConfig,
        *,
        keep_audio: bool,
        backpressure: BackpressurePolicy,
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.processing_rate = model_sample_rate(sample_rate)
        self.config = config
        self.keep_audio = keep_audio
        self.backpressure = backpressure
        self._host: ShardedStreamHost = host
        self._shard = shard
        self._slot = slot
        self._max_pending = host.max_pending_chunks
        self._max_buffered = host.max_buffered_events
        self._queued = DropOldestQueue(host.max_queued_chunks)  # "drop_oldest" only
        self._shard_dropped = 0  # samples dropped by the shard's stream, as last reported
        self._push_lock = asyncio.Lock()
        self._signal = Signal()  # room for a waiting push (acks, progress, reads, the end)
        self._flushes = Signal()  # a waiting flush: its token came back, or the stream ended
        self._fanout = EventFanout(
            f"stream {stream_id!r}", raise_failures=True, on_consumed=self._room_changed
        )
        self._segments: list[Segment] = []
        self._state: StreamState = "open"
        self._error: StreamFailedError | None = None
        self._result: StreamResult | None = None
        self._done: asyncio.Future[None] = shard.loop.create_future()
        self._in_flight = 0
        self._samples_pushed = 0
        self._frames_submitted = 0
        self._frames_done = 0
        self._slices_in_flight = 0
        self._flush_token = 0
        self._flushed = 0
        self._close_sent = False

    def __repr__(self) -> str:
        return (
            f"ShardedStream({self.stream_id!r}, sample_rate={self.sample_rate}, "
            f"shard={self._shard.index}, state={self._state!r})"
        )

    @property
    def shard(self) -> int:
        """Index of the shard that processes this stream."""
        return self._shard.index

    # ------------------------------------------------------------------ audio in

    async def push(self, audio: AudioInput) -> None:
        """Feed the next chunk (as :meth:`VADStream.push`).

        The samples are copied into the shard's ring, so the array may be reused
        once this returns. When the stream has ``max_pending_chunks`` chunks in
        its shard not yet taken, too many unread events, or the ring is full,
        ``"wait"`` waits and ``"error"`` raises :class:`BackpressureError` (taking
        nothing; with ``"error"`` a chunk may hold at most half of ``ring_samples``).
        ``"drop_oldest"`` returns at once: the chunk waits here until there is
        room, and once more than ``max_queued_chunks`` chunks wait the oldest is
        dropped; inside the shard the stream drops the same way when its engine
        falls behind. Dropped audio is left out of the stream and counted in
        ``statistics().dropped_samples``.

        A chunk longer than a quarter of the ring travels in pieces: the shard
        drops by piece, and a ``"wait"`` push that ``close()`` or a cancellation
        interrupts leaves the pieces already sent in the stream.
        """
        require_loop(self._done.get_loop(), "ShardedStream.push()")
        self._check_writable()
        samples = to_float32_mono(audio)
        if samples.size == 0:
            return
        ring = self._shard.ring
        step = ring.max_piece
        if (
            samples.size <= step
            and not self._push_lock.locked()  # no earlier push still waiting: order kept
            and not self._queued
            and self._fits_now(samples.size)
        ):
            self._put(samples)  # the common case: room now, nothing to wait for
            self._samples_pushed += samples.size
            return
        pieces = [samples[i : i + step] for i in range(0, samples.size, step)]
        if self.backpressure == "drop_oldest":
            self._queue(pieces)
            return
        async with self._push_lock:
            if self.backpressure == "error":
                self._check_writable()
                if samples.size > ring.capacity // 2:
                    raise BackpressureError(
                        f"stream {self.stream_id!r}: a chunk of {samples.size} samples never "
                        f"fits at once in a ring of {ring.capacity} (backpressure='error' "
                        "takes chunks of at most half of ring_samples)",
                        self.stream_id,
                    )
                if not (self._has_room() and ring.fits_all([p.size for p in pieces])):
                    raise BackpressureError(
                        f"stream {self.stream_id!r} is full (backpressure='error')",
                        self.stream_id,
                    )
            for piece in pieces:
                if self.backpressure == "wait":
                    await self._signal.wait_until(self._room_for(piece.size))
                    self._check_writable()
                self._put(piece)
                self._samples_pushed += piece.size

    def _put(self, piece: np.ndarray) -> None:
        """Copy a piece that fits into the ring and tell the shard where it lies."""
        offset, end = self._shard.ring.write(piece)
        self._shard.send_audio(self._slot, offset, piece.size, end)
        self._in_flight += 1

    def _queue(self, pieces: list[np.ndarray]) -> None:
        """Policy "drop_oldest": hold a copy of the chunk back, send what fits now, then
        drop the oldest chunks beyond ``max_queued_chunks``."""
        self._queued.add([piece.copy() for piece in pieces])  # the caller may reuse its array
        self._samples_pushed += sum(piece.size for piece in pieces)
        self._admit_queued()
        self._queued.trim()

    def _admit_queued(self) -> None:
        """Send queued pieces, oldest first, while they fit (on the loop)."""
        queued = self._queued
        while self._state in ("open", "closing"):
            piece = queued.next_piece()
            if piece is None or not self._fits_now(piece.size, readers=self._state == "open"):
                return
            self._put(queued.take_piece())

    def _queue_sent(self) -> bool:
        return not self._queued or self._state in ("closed", "failed")

    async def flush(self) -> None:
        """Return once every whole frame pushed so far is processed and its events delivered
        (as :meth:`VADStream.flush`)."""
        require_loop(self._done.get_loop(), "ShardedStream.flush()")
        self._check_writable()
        async with self._push_lock:
            self._check_writable()
            mark = self._queued.mark()  # "drop_oldest": after the chunks queued so far
            await self._signal.wait_until(
                lambda: not self._queued.holds_before(mark) or self._state in ("closed", "failed")
            )
            self._flush_token += 1
            token = self._flush_token
            if self._state not in ("closed", "failed"):
                self._shard.send(("flush", self._slot, token))
        await self._flushes.wait_until(
            lambda: self._flushed >= token or self._state in ("closed", "failed")
        )
        if self._error is not None:
            raise self._error

    async def close(self) -> StreamResult:
        """End the stream, wait for its last events, and return the whole result
        (as :meth:`VADStream.close`)."""
        require_loop(self._done.get_loop(), "ShardedStream.close()")
        if self._state == "open":
            self._state = "closing"
            self._signal.notify()  # a push waiting for room gives up
        async with self._push_lock:
            await self._signal.wait_until(self._queue_sent)  # queued audio goes first
            if not self._close_sent and self._state == "closing":
                self._close_sent = True
                self._shard.send(("close", self._slot))
        await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _room_for(self, samples: int) -> Callable[[], bool]:
        def ready() -> bool:
            return self._state != "open" or self._fits_now(samples)

        return ready

    def _fits_now(self, samples: int, *, readers: bool = True) -> bool:
        """A piece of ``samples`` may be written now: the stream has room (unread events
        counted when ``readers``), the ring space."""
        return self._has_room(readers=readers) and self._shard.ring.fits_all([samples])

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != "open":
            raise StreamClosedError(f"stream {self.stream_id!r} is closed", self.stream_id)

    def _has_room(self, *, readers: bool = True) -> bool:
        return self._in_flight < self._max_pending and (not readers or self._readers_keep_up())

    def statistics(self) -> StreamStatistics:
        """Counters of this stream now (frame counts as last reported by its shard;
        ``queued_chunks``: chunks sent to the shard and not yet taken by its engine, and
        chunks a ``"drop_oldest"`` stream holds back; ``dropped_samples``: dropped here
        and in the shard)."""
        return StreamStatistics(
            stream_id=self.stream_id,
            state=self._state,
            samples_pushed=self._samples_pushed,
            queued_chunks=self._in_flight + len(self._queued),
            dropped_samples=self._queued.dropped_samples + self._shard_dropped,
            frames_submitted=self._frames_submitted,
            frames_processed=self._frames_done,
            slices_in_flight=self._slices_in_flight,
            events_delivered=self._fanout.delivered,
            events_buffered=self._fanout.buffered,
            segments=len(self._segments),
            handler_errors=self._fanout.handler_errors,
        )

    # --------------------------------------------------- from the shard (loop)

    def _frames_processed(self) -> int:
        return self._frames_done

    def _room_changed(self) -> None:
        """Room in the ring, the shard or a reader: queued audio goes on, waiting pushes
        look again."""
        if self._queued:
            self._admit_queued()
        self._signal.notify()

    def _on_progress(
        self,
        taken: int,
        submitted: int,
        processed: int,
        in_flight: int,
        dropped: int,
        segments: tuple[Segment, ...],
    ) -> None:
        self._in_flight -= taken
        self._frames_submitted = submitted
        self._frames_done = processed
        self._slices_in_flight = in_flight
        self._shard_dropped = dropped
        if self._state not in ("closed", "failed"):
            self._segments.extend(segments)
        self._room_changed()

    def _on_event(self, event: SpeechEvent) -> None:
        if self._state in ("closed", "failed"):
            return
        self._fanout.publish(event)
        self._host.publish(event)

    def _on_flushed(self, token: int) -> None:
        self._flushed = max(self._flushed, token)
        self._flushes.notify()

    def _on_closed(self, result: StreamResult) -> None:
        if self._state in ("closed", "failed"):
            return
        self._result = result
        self._segments = list(result.segments)
        self._state = "closed"
        self._fanout.complete()
        self._end()

    def _fail(self, error: StreamFailedError) -> None:
        if self._state in ("closed", "failed"):
            return
        self._error = error
        self._state = "failed"
        self._queued.clear()  # its audio goes nowhere now
        self._fanout.fail(error)
        self._host.fail(error)
        self._end()

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._host.forget(self)
        self._signal.notify()
        self._flushes.notify()
