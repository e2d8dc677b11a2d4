"""VADStream: one audio stream inside a :class:`~prevad_rx.VADEngine`, used on the engine's loop.

The engine and its streams talk through two small records of callables,
internal to prevad_rx: the stream calls its engine through a
:class:`StreamHost`, the engine calls the stream through its
:class:`StreamPort` (:func:`port_of`). Neither touches the other's private
members, and both run only on the engine's loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from reactivex import Observable, abc

from prevad_rx._audio import AudioInput, model_sample_rate, to_float32_mono
from prevad_rx._config import VADConfig
from prevad_rx._drop_oldest import DropOldestQueue
from prevad_rx._errors import (
    BackpressureError,
    ConfigError,
    StreamClosedError,
    StreamFailedError,
)
from prevad_rx._fanout import EventFanout, EventIterator
from prevad_rx._loop import Signal, require_loop
from prevad_rx._outbox import Outbox, owned
from prevad_rx._types import (
    AudioChunk,
    AudioSlice,
    FrameProbabilities,
    Segment,
    SpeechEvent,
    StreamResult,
    frame_geometry,
)
from prevad_rx.operators._window_slices import DEFAULT_FRAMES_PER_SLICE

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BackpressurePolicy", "StreamState", "StreamStatistics", "VADStream"]

StreamState = Literal["open", "closing", "closed", "failed"]
#: What ``push()`` does when the stream is full.
BackpressurePolicy = Literal["wait", "drop_oldest", "error"]


def check_policy(policy: object) -> None:
    """Raise :class:`~prevad_rx.ConfigError` unless ``policy`` is a :data:`BackpressurePolicy`."""
    if policy not in ("wait", "drop_oldest", "error"):
        raise ConfigError(f"backpressure must be 'wait', 'drop_oldest' or 'error', got {policy!r}")


@dataclass(frozen=True, slots=True)
class StreamHost:
    """What a stream needs from its engine (internal to prevad_rx, not public API)."""

    #: send a chunk of the stream into the engine's operator chain (on the loop)
    send: Callable[[AudioChunk], None]
    #: the stream has ended: the engine lets go of it
    forget: Callable[[VADStream], None]
    #: unread events held by the engine's own ``events()`` iterators
    events_backlog: Callable[[], int]


@dataclass(frozen=True, slots=True)
class StreamPort:
    """What an engine calls on one of its streams, on the loop (internal to prevad_rx,
    not public API). Made by :func:`port_of`; each field is the stream's own handler."""

    stream: VADStream
    #: a slice of the stream entered the model stage
    on_slice: Callable[[AudioSlice], None]
    #: the stream failed on its way in (its next ``push()`` raises)
    failed_in_push: Callable[[StreamFailedError], None]
    #: a slice's probabilities came back, in order
    on_frames: Callable[[FrameProbabilities], None]
    #: a segment finished (whatever the event operators let through)
    on_segment: Callable[[Segment], None]
    #: a start or end event to deliver
    on_event: Callable[[SpeechEvent], None]
    #: the stream failed: it ends with this error
    fail: Callable[[StreamFailedError], None]
    #: work finished or events were read: queued audio may go in, waiting pushes wake
    room_changed: Callable[[], None]
    #: the end-of-stream chunk to send, once (None once sent)
    take_end_chunk: Callable[[], AudioChunk | None]


def port_of(stream: VADStream) -> StreamPort:
    """The engine's handle on ``stream``."""
    return StreamPort(
        stream,
        on_slice=stream._on_slice,
        failed_in_push=stream._failed_in_push,
        on_frames=stream._on_frames,
        on_segment=stream._on_segment,
        on_event=stream._on_event,
        fail=stream._fail,
        room_changed=stream._room_changed,
        take_end_chunk=stream._take_end_chunk,
    )


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """Counters and queue depths of one stream."""

    stream_id: str
    state: StreamState
    samples_pushed: int
    queued_chunks: int
    dropped_samples: int
    frames_submitted: int
    frames_processed: int
    slices_in_flight: int
    events_delivered: int
    events_buffered: int
    segments: int
    handler_errors: int


class _EngineEvents(Protocol):
    """What a stream's host tells of the engine's own event readers."""

    @property
    def events_backlog(self) -> Callable[[], int]: ...


class StreamBase:
    """What every stream class shows of its state and its events (``VADStream`` and
    ``ShardedStream``): set ``_state``, ``_error``, ``_segments``, ``_fanout``,
    ``_done`` (a future of the stream's loop), ``_host`` and ``_max_buffered``."""

    _state: StreamState
    _error: StreamFailedError | None
    _segments: list[Segment]
    _fanout: EventFanout
    _done: asyncio.Future[None]
    _host: _EngineEvents
    _max_buffered: int

    def _readers_keep_up(self) -> bool:
        """No reader of this stream's events, nor of the engine's, has
        ``max_buffered_events`` unread (else a push waits, queues or is refused)."""
        return (
            self._fanout.backlog < self._max_buffered
            and self._host.events_backlog() < self._max_buffered
        )

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state != "open"

    @property
    def error(self) -> StreamFailedError | None:
        return self._error

    @property
    def segments(self) -> list[Segment]:
        """Segments finished so far (of a sharded stream: as its shard last reported)."""
        return list(self._segments)

    def subscribe(
        self, handler: Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
    ) -> abc.DisposableBase:
        """Call ``handler`` with each event (start, end, and error) from now on.

        A reactivex observer gets start/end events through ``on_next``, the
        failure through ``on_error`` and the end of the stream through
        ``on_completed``. Exceptions raised by a handler are logged on the
        ``prevad_rx.events`` logger and counted, and never stop the stream.
        Returns a disposable that unsubscribes.
        """
        return self._fanout.subscribe(handler)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        """This stream's events as a hot reactivex observable (delivered on the loop)."""
        return self._fanout.observable

    def events(self) -> EventIterator:
        """Iterate over start/end events from now until the stream ends.

        Registers at call time, so call it before pushing the audio whose events
        you want. Raises the stream's :class:`~prevad_rx.StreamFailedError` if it
        fails. Once it has started reading, while it holds ``max_buffered_events``
        unread events, ``push()`` waits; until then it holds nothing back but keeps
        every event for its reader. It is unregistered when its iteration ends,
        when a consumer that ran is cancelled, on ``aclose()``, or once nothing
        holds it any more: ``aclose()`` or drop an iterator you will not read.
        """
        require_loop(self._done.get_loop(), f"{type(self).__name__}.events()")
        return self._fanout.events()


class VADStream(StreamBase):
    """One stream of audio: push chunks, receive speech events, close for the result.

    Created by :meth:`VADEngine.open_stream`; all methods must be called from
    the engine's event loop (``push``, ``flush``, ``close`` and ``events``
    raise :class:`~prevad_rx.WrongEventLoopError` elsewhere). Events reach
    subscribers and ``events()`` iterators on that loop, in order.
    """

    def __init__(
        self,
        host: StreamHost,
        stream_id: str,
        sample_rate: int,
        config: VADConfig,
        *,
        keep_probabilities: bool,
        keep_audio: bool,
        max_pending_slices: int,
        max_buffered_events: int,
        backpressure: BackpressurePolicy = "wait",
        max_queued_chunks: int = 64,
        frames_per_slice: int = DEFAULT_FRAMES_PER_SLICE,
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.processing_rate = model_sample_rate(sample_rate)
        self.config = config
        self.keep_audio = keep_audio
        self._host: StreamHost = host
        self._max_pending = max_pending_slices
        self._max_buffered = max_buffered_events
        self.backpressure: BackpressurePolicy = backpressure
        self._queued = DropOldestQueue(max_queued_chunks)  # "drop_oldest" only
        self._push_lock = asyncio.Lock()
        self._signal = Signal()
        self._fanout = EventFanout(
            f"stream {stream_id!r}", raise_failures=True, on_consumed=self._room_changed
        )
        self._segments: list[Segment] = []
        self._probabilities: list[NDArray[np.float32]] | None = [] if keep_probabilities else None
        self._state: StreamState = "open"
        self._error: StreamFailedError | None = None
        self._result: StreamResult | None = None
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()
        # what was pushed in this loop iteration, entering the chain as one chunk
        frame = frame_geometry(self.processing_rate)[0]
        slice_samples = math.ceil(frames_per_slice * frame * sample_rate / self.processing_rate)
        self._outbox = Outbox(stream_id, sample_rate, self._send, loop, slice_samples)
        self._samples_pushed = 0
        self._frames_submitted = 0
        self._frames_done = 0
        self._slices_submitted = 0
        self._slices_done = 0
        self._num_samples = 0
        self._end_sent = False
        self._failed_on_entry: StreamFailedError | None = None
        #: called on the loop each time frames of this stream are processed (a driver's hook)
        self._on_processed: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return (
            f"VADStream({self.stream_id!r}, sample_rate={self.sample_rate}, state={self._state!r})"
        )

    # ------------------------------------------------------------------ audio in

    async def push(self, audio: AudioInput) -> None:
        """Feed the next chunk: float32/float64/int16 ndarray or PCM16-LE bytes.

        Validates the chunk first (raising :class:`~prevad_rx.AudioFormatError`
        without changing the stream). When the stream is full (too much work in
        flight or too many unread events), the stream's ``backpressure`` policy
        decides: ``"wait"`` (default) waits for room; ``"error"`` raises
        :class:`~prevad_rx.BackpressureError` and takes nothing; ``"drop_oldest"``
        returns at once, queueing the chunk and dropping the oldest queued chunk
        when ``max_queued_chunks`` are waiting (dropped audio is left out of the
        stream, counted in ``statistics().dropped_samples``). An empty chunk is a
        no-op. The array may be reused by the caller once this returns.

        What a stream is pushed during one loop iteration enters the operator chain
        at the iteration's end, as one chunk (results are the same for any
        chunking): a sender that is ahead pays the chain's per-item costs once.
        """
        require_loop(self._done.get_loop(), "VADStream.push()")
        self._check_writable()
        samples = to_float32_mono(audio)
        if samples.size == 0:
            return
        samples = owned(samples, audio)  # kept past this call: the caller may reuse its array
        if self._push_now(samples):  # room now and no push waiting before this one: no await
            return
        if self.backpressure == "drop_oldest":  # never waits, not even behind a flush
            self._queue(samples)
            return
        async with self._push_lock:
            self._check_writable()  # closed or failed while this push waited its turn
            if self.backpressure == "wait":
                await self._signal.wait_until(lambda: self._state != "open" or self._has_room())
                self._check_writable()
            elif not self._has_room():
                raise BackpressureError(
                    f"stream {self.stream_id!r} is full (backpressure='error')",
                    self.stream_id,
                )
            self._take(samples)

    def _take(self, samples: NDArray[np.float32]) -> None:
        """Admit a push's samples: into the outbox, sent on at the iteration's end."""
        self._outbox.add(samples)
        self._samples_pushed += samples.size

    def _queue(self, samples: NDArray[np.float32]) -> None:
        """Policy "drop_oldest": wait at the door (what fits goes in), newest kept."""
        self._queued.add([samples])
        self._samples_pushed += samples.size
        self._admit_queued()
        self._queued.trim()

    def _send(self, chunk: AudioChunk) -> None:
        """The outbox's coalesced chunk into the engine's chain (on the loop, at the end of
        the iteration the audio was pushed in)."""
        if self._state in ("closed", "failed"):
            return
        try:
            self._host.send(chunk)
        except Exception as exc:  # noqa: BLE001 - no push() is left to raise it to
            error = StreamFailedError(
                f"stream {self.stream_id!r}: its audio could not enter the engine: {exc}",
                self.stream_id,
            )
            error.__cause__ = exc
            self._fail(error)
            return
        self._room_changed()  # the chunk's slices may hold less room than its pushes did

    def _room_changed(self) -> None:
        """Work finished or events were read: admit queued audio, wake waiting pushes."""
        if self._queued:
            self._admit_queued()
        self._signal.notify()

    def _admit_queued(self) -> None:
        """Move queued chunks into the pipeline while there is room (on the loop). Once the
        stream is closing, unread events no longer hold them back: its end must not wait
        for a reader."""
        queued = self._queued
        while queued and self._state in ("open", "closing"):
            if not self._has_room(readers=self._state == "open"):
                break
            self._outbox.add(queued.take_piece())
        if not queued and self._state == "closing" and self._claim_end():
            self._outbox.add_end()

    async def flush(self) -> None:
        """Return once every whole frame pushed so far is processed and its events delivered.

        A trailing partial frame waits for more audio or :meth:`close` (it
        cannot be decided before the rest of its samples arrive). Raises
        :class:`~prevad_rx.StreamClosedError` once :meth:`close` was called, and
        the stream's :class:`~prevad_rx.StreamFailedError` if it failed.
        """
        require_loop(self._done.get_loop(), "VADStream.flush()")
        self._check_writable()
        mark = self._queued.mark()  # "drop_oldest": what is queued now, not what comes later
        target = self._flush_now()
        if target is None:  # a push is waiting, or chunks are queued: after them
            async with self._push_lock:
                await self._signal.wait_until(
                    lambda: (
                        not self._queued.holds_before(mark) or self._state in ("closed", "failed")
                    )
                )
                self._outbox.send_now()
                target = self._frames_submitted
        await self._signal.wait_until(
            lambda: self._frames_done >= target or self._state in ("closed", "failed")
        )
        if self._error is not None:
            raise self._error

    async def close(self) -> StreamResult:
        """End the stream, wait for its last events, and return the whole result.

        Queued chunks (policy ``"drop_oldest"``) are processed first. A ``push()``
        still waiting for room when ``close()`` is called raises
        :class:`~prevad_rx.StreamClosedError` (its chunk is not taken). Raises the
        stream's :class:`~prevad_rx.StreamFailedError` if it failed. Calling it
        again returns the same result.
        """
        require_loop(self._done.get_loop(), "VADStream.close()")
        if self._state == "open":
            self._state = "closing"
            self._signal.notify()  # a push still waiting for room gives up (StreamClosedError)
        async with self._push_lock:
            self._admit_queued()  # sends the end once nothing is queued
            self._outbox.send_now()  # nothing more comes to coalesce with
        await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _claim_end(self) -> bool:
        """True the first time only: the caller sends the end of the stream."""
        if self._end_sent:
            return False
        self._end_sent = True
        return True

    def _take_end_chunk(self) -> AudioChunk | None:
        """The end-of-stream chunk, the first time only (None once it was taken)."""
        if not self._claim_end():
            return None
        return AudioChunk(self.stream_id, np.zeros(0, np.float32), self.sample_rate, True)

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._failed_on_entry is not None:
            raise self._failed_on_entry
        if self._state != "open":
            raise StreamClosedError(f"stream {self.stream_id!r} is closed", self.stream_id)

    def _has_room(self, *, readers: bool = True) -> bool:
        """Room for another push: work in flight under its bound and (``readers``) no
        iterator holding ``max_buffered_events`` unread events."""
        # audio waiting in the outbox counts as in flight: one slice per push
        in_flight = self._slices_submitted - self._slices_done + len(self._outbox)
        return in_flight < self._max_pending and (not readers or self._readers_keep_up())

    # --------------------------- for a driver on the loop that need not await

    def _push_now(self, samples: NDArray[np.float32]) -> bool:
        """Take ``samples`` as :meth:`push` would without waiting, or return False (push()
        would wait or raise: call it instead). ``samples`` must be valid 1-D float32 the
        stream may keep (the shard's copy out of its ring)."""
        if (
            self._state != "open"
            or self._error is not None
            or self._failed_on_entry is not None
            or self._push_lock.locked()
            or self._queued
            or not self._has_room()
        ):
            return False
        self._take(samples)
        return True

    def _flush_now(self) -> int | None:
        """Start a flush that has no push or queued chunk to wait for: send the outbox and
        return the frames submitted, which the frames processed must reach for it to be
        done; None when :meth:`flush` would wait or raise first (call it instead)."""
        if self._state != "open" or self._push_lock.locked() or self._queued:
            return None
        if self._error is not None or self._failed_on_entry is not None:
            return None
        self._outbox.send_now()
        return self._frames_submitted

    @property
    def _frames_processed(self) -> int:
        return self._frames_done

    # ------------------------------------------- engine side (on the event loop)

    def _failed_in_push(self, error: StreamFailedError) -> None:
        """The stream failed on its way in (an audio operator, slicing): the next
        ``push()`` raises at once; the failure itself arrives in order with the frames."""
        if self._failed_on_entry is None:
            self._failed_on_entry = error

    def _on_slice(self, item: AudioSlice) -> None:
        self._slices_submitted += 1
        self._frames_submitted += item.num_frames

    def _on_segment(self, segment: Segment) -> None:
        """A finished segment, whatever the event operators let through."""
        if self._state not in ("closed", "failed"):
            self._segments.append(segment)

    def _on_event(self, event: SpeechEvent) -> None:
        if self._state in ("closed", "failed") or event.kind == "error":
            return  # failures arrive through _on_progress, in order with the frames
        self._fanout.publish(event)

    def _on_frames(self, item: FrameProbabilities) -> None:
        self._slices_done += 1
        self._frames_done += item.num_frames
        self._num_samples = item.end_sample
        if self._probabilities is not None:
            self._probabilities.append(item.probabilities)
        if item.is_last:
            self._finish()
        elif self._queued or (self._state == "closing" and not self._end_sent):
            self._admit_queued()
        self._signal.notify()
        if self._on_processed is not None:
            self._on_processed()

    def _finish(self) -> None:
        probabilities = None
        if self._probabilities is not None:
            probabilities = (
                np.concatenate(self._probabilities)
                if self._probabilities
                else np.zeros(0, np.float32)
            )
        self._result = StreamResult(
            stream_id=self.stream_id,
            sample_rate=self.processing_rate,
            source_sample_rate=self.sample_rate,
            num_samples=self._num_samples,
            segments=tuple(self._segments),
            probabilities=probabilities,
        )
        self._state = "closed"
        self._fanout.complete()
        self._end()

    def _fail(self, error: StreamFailedError) -> None:
        if self._state in ("closed", "failed"):
            return
        self._error = error
        self._state = "failed"
        if self._outbox.clear():
            self._end_sent = False  # never sent: the engine takes it to end the chain's state
        self._fanout.fail(error)
        self._end()

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._host.forget(self)
        self._signal.notify()

    def statistics(self) -> StreamStatistics:
        """Counters and queue depths of this stream now."""
        return StreamStatistics(
            stream_id=self.stream_id,
            state=self._state,
            samples_pushed=self._samples_pushed,
            queued_chunks=len(self._queued),
            dropped_samples=self._queued.dropped_samples,
            frames_submitted=self._frames_submitted,
            frames_processed=self._frames_done,
            slices_in_flight=self._slices_submitted - self._slices_done,
            events_delivered=self._fanout.delivered,
            events_buffered=self._fanout.buffered,
            segments=len(self._segments),
            handler_errors=self._fanout.handler_errors,
        )
