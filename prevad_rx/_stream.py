"""VADStream: one audio stream inside a :class:`~prevad_rx.VADEngine`, used on the engine's loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from reactivex import Observable, abc
from reactivex.subject import Subject

from prevad_rx._audio import AudioInput, model_sample_rate
from prevad_rx._config import VADConfig
from prevad_rx._errors import StreamClosedError, StreamFailedError
from prevad_rx._types import (
    AudioChunk,
    AudioSlice,
    FrameProbabilities,
    Segment,
    SpeechEvent,
    StreamResult,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["StreamState", "StreamStatistics", "VADStream"]

log = logging.getLogger("prevad_rx.events")

StreamState = Literal["open", "closing", "closed", "failed"]

_END = object()


class _Sink(Protocol):
    """What a stream needs from its engine."""

    def _send(self, chunk: AudioChunk) -> None: ...

    def _forget(self, stream: VADStream) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """Counters and queue depths of one stream."""

    stream_id: str
    state: StreamState
    samples_pushed: int
    frames_submitted: int
    frames_processed: int
    slices_in_flight: int
    events_delivered: int
    events_buffered: int
    segments: int
    handler_errors: int


class _Signal:
    """Wakes every waiter on each notify; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()


class VADStream:
    """One stream of audio: push chunks, receive speech events, close for the result.

    Created by :meth:`VADEngine.open_stream`; all methods must be called from
    the engine's event loop. Events reach subscribers and ``events()``
    iterators on that loop, in order.
    """

    def __init__(
        self,
        engine: _Sink,
        stream_id: str,
        sample_rate: int,
        config: VADConfig,
        *,
        keep_probabilities: bool,
        keep_audio: bool,
        max_pending_slices: int,
        max_buffered_events: int,
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.processing_rate = model_sample_rate(sample_rate)
        self.config = config
        self.keep_audio = keep_audio
        self._engine = engine
        self._max_pending = max_pending_slices
        self._max_buffered = max_buffered_events
        self._push_lock = asyncio.Lock()
        self._signal = _Signal()
        self._subject: Subject[SpeechEvent] = Subject()
        self._iterators: list[asyncio.Queue[Any]] = []
        self._segments: list[Segment] = []
        self._probabilities: list[NDArray[np.float32]] | None = [] if keep_probabilities else None
        self._state: StreamState = "open"
        self._error: StreamFailedError | None = None
        self._result: StreamResult | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._samples_pushed = 0
        self._frames_submitted = 0
        self._frames_done = 0
        self._slices_submitted = 0
        self._slices_done = 0
        self._num_samples = 0
        self._end_sent = False
        self._events_delivered = 0
        self._handler_errors = 0

    def __repr__(self) -> str:
        return (
            f"VADStream({self.stream_id!r}, sample_rate={self.sample_rate}, state={self._state!r})"
        )

    # ------------------------------------------------------------------ audio in

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
        """Segments finished so far."""
        return list(self._segments)

    async def push(self, audio: AudioInput) -> None:
        """Feed the next chunk: float32/float64/int16 ndarray or PCM16-LE bytes.

        Validates the chunk first (raising :class:`~prevad_rx.AudioFormatError`
        without changing the stream), then waits while the stream has too much
        work in flight or too many unread events (backpressure). An empty chunk
        is a no-op. The array may be reused by the caller once this returns.
        """
        self._check_writable()
        chunk = AudioChunk(self.stream_id, audio, self.sample_rate)  # type: ignore[arg-type]
        if chunk.samples.size == 0:
            return
        async with self._push_lock:
            await self._signal.wait_until(lambda: self._state != "open" or self._has_room())
            self._check_writable()
            self._engine._send(chunk)
            self._samples_pushed += chunk.samples.size

    async def flush(self) -> None:
        """Return once every whole frame pushed so far is processed and its events delivered.

        A trailing partial frame waits for more audio or :meth:`close` (it
        cannot be decided before the rest of its samples arrive).
        """
        async with self._push_lock:
            target = self._frames_submitted
        await self._signal.wait_until(
            lambda: self._frames_done >= target or self._state in ("closed", "failed")
        )
        if self._error is not None:
            raise self._error

    async def close(self) -> StreamResult:
        """End the stream, wait for its last events, and return the whole result.

        A ``push()`` still waiting for room when ``close()`` is called raises
        :class:`~prevad_rx.StreamClosedError` (its chunk is not taken). Raises the
        stream's :class:`~prevad_rx.StreamFailedError` if it failed. Calling it
        again returns the same result.
        """
        if self._state == "open":
            self._state = "closing"
            self._signal.notify()  # a push still waiting for room gives up (StreamClosedError)
        async with self._push_lock:
            if self._state == "closing" and not self._end_sent:
                self._end_sent = True
                self._engine._send(self._end_chunk())
        await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _end_chunk(self) -> AudioChunk:
        return AudioChunk(self.stream_id, np.zeros(0, np.float32), self.sample_rate, True)

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != "open":
            raise StreamClosedError(f"stream {self.stream_id!r} is closed", self.stream_id)

    def _has_room(self) -> bool:
        in_flight = self._slices_submitted - self._slices_done
        backlog = max((q.qsize() for q in self._iterators), default=0)
        return in_flight < self._max_pending and backlog < self._max_buffered

    # ---------------------------------------------------------------- events out

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
        if isinstance(handler, abc.ObserverBase):
            observer = handler
            return self._subject.subscribe(
                self._guarded(observer.on_next),
                self._guarded(observer.on_error),
                self._guarded(observer.on_completed),
            )
        if not callable(handler):
            raise TypeError(f"handler must be callable or an observer, got {handler!r}")

        guarded = self._guarded(handler)

        def on_error(error: Exception) -> None:
            if isinstance(error, StreamFailedError):
                guarded(SpeechEvent("error", self.stream_id, 0, 0, 0, error=error))

        return self._subject.subscribe(guarded, on_error)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        """This stream's events as a hot reactivex observable (delivered on the loop)."""
        return self._subject

    def events(self) -> AsyncIterator[SpeechEvent]:
        """Iterate over start/end events from now until the stream ends.

        Registers at call time, so call it before pushing the audio whose events
        you want. Raises the stream's :class:`~prevad_rx.StreamFailedError` if it
        fails. While an iterator holds ``max_buffered_events`` unread events,
        ``push()`` waits.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._state in ("closed", "failed"):
            queue.put_nowait(self._error if self._error is not None else _END)
        else:
            self._iterators.append(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Any]) -> AsyncIterator[SpeechEvent]:
        try:
            while True:
                item = await queue.get()
                self._signal.notify()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if queue in self._iterators:
                self._iterators.remove(queue)
                self._signal.notify()

    def _guarded(self, call: Callable[..., object]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                call(*args)
            except Exception:
                self._handler_errors += 1
                log.exception("event handler of stream %r failed", self.stream_id)

        return guarded

    # ------------------------------------------- engine side (on the event loop)

    def _on_slice(self, item: AudioSlice) -> None:
        self._slices_submitted += 1
        self._frames_submitted += item.num_frames

    def _on_event(self, event: SpeechEvent) -> None:
        if self._state in ("closed", "failed") or event.kind == "error":
            return  # failures arrive through _on_progress, in order with the frames
        if event.kind == "end" and event.segment is not None:
            self._segments.append(event.segment)
        self._events_delivered += 1
        for queue in self._iterators:
            queue.put_nowait(event)
        self._subject.on_next(event)

    def _on_frames(self, item: FrameProbabilities) -> None:
        self._slices_done += 1
        self._frames_done += item.num_frames
        self._num_samples = item.end_sample
        if self._probabilities is not None:
            self._probabilities.append(item.probabilities)
        if item.is_last:
            self._finish()
        self._signal.notify()

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
        self._end(_END)
        self._subject.on_completed()

    def _fail(self, error: StreamFailedError) -> None:
        if self._state in ("closed", "failed"):
            return
        self._error = error
        self._state = "failed"
        self._end(error)
        self._subject.on_error(error)

    def _end(self, sentinel: object) -> None:
        for queue in self._iterators:
            queue.put_nowait(sentinel)
        self._iterators.clear()
        if not self._done.done():
            self._done.set_result(None)
        self._engine._forget(self)
        self._signal.notify()

    def _statistics(self) -> StreamStatistics:
        return StreamStatistics(
            stream_id=self.stream_id,
            state=self._state,
            samples_pushed=self._samples_pushed,
            frames_submitted=self._frames_submitted,
            frames_processed=self._frames_done,
            slices_in_flight=self._slices_submitted - self._slices_done,
            events_delivered=self._events_delivered,
            events_buffered=sum(q.qsize() for q in self._iterators),
            segments=len(self._segments),
            handler_errors=self._handler_errors,
        )
