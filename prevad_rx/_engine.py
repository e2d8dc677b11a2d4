"""VADEngine: many streams through one operator chain on one worker pool, with an asyncio API.

::

    push() ─▶ Subject ─▶ [audio_operators] ─▶ window_slices ─▶ parallel_map_on_pool
      (loop thread)                                               │ (worker threads)
                                                                  ▼
                        events ◀─ [event_operators] ◀─ emit_events ◀─ merge_segments ◀─┐
                                                                                    reorder_by_seq
                        progress (flush, close, credits) ◀─────────────────────────────┘

Everything before the pool runs on the event loop: ``push()`` validates the audio,
and what a stream was pushed in one loop iteration enters the chain as one chunk
at the iteration's end (``_outbox.py``). Results
come back from the workers through ``loop.call_soon_threadsafe``, so stream
objects, subscribers and iterators are only ever touched on the loop. For each
result, events are scheduled before the progress update, so when ``flush()``
returns the events it waited for have been delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.abc import DisposableBase
from reactivex.subject import Subject

from prevad_rx._audio import model_sample_rate, validate_sample_rate
from prevad_rx._config import VADConfig
from prevad_rx._errors import (
    ClosedError,
    ConfigError,
    DuplicateStreamError,
    StreamFailedError,
    UnsupportedSampleRateError,
)
from prevad_rx._fanout import EventFanout, EventIterator
from prevad_rx._loop import require_loop
from prevad_rx._model_stage import ModelStage, StageStatistics, check_timeouts
from prevad_rx._pool import PoolStatistics, WorkerPool
from prevad_rx._stream import (
    BackpressurePolicy,
    StreamHost,
    StreamPort,
    StreamStatistics,
    VADStream,
    check_policy,
    port_of,
)
from prevad_rx._types import AudioChunk, AudioSlice, FrameProbabilities, SpeechEvent, StreamFailure
from prevad_rx.operators import (
    DEFAULT_FRAMES_PER_SLICE,
    contain,
    emit_events,
    merge_segments,
    parallel_map_on_pool,
    reorder_by_seq,
    window_slices,
)
from prevad_rx.operators._builder import operator_name

__all__ = ["EngineStatistics", "VADEngine"]

log = logging.getLogger("prevad_rx.engine")

AnyOperator = Callable[[Observable[Any]], Observable[Any]]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """A snapshot of the engine: its pool and every open stream."""

    open_streams: int
    streams_opened: int
    pool: PoolStatistics
    stage: StageStatistics | None
    streams: tuple[StreamStatistics, ...]


def _check_operators(name: str, chain: object) -> None:
    if isinstance(chain, str | bytes) or not isinstance(chain, Sequence):
        raise ConfigError(f"{name} must be a sequence of operators, got {chain!r}")
    for operator in chain:
        if not callable(operator):
            raise ConfigError(f"{name} must hold callables (operators), got {operator!r}")


def _end_chunk_for(chunk: AudioChunk) -> AudioChunk:
    """The end-of-stream chunk put back when an audio operator swallowed it."""
    return AudioChunk(chunk.stream_id, np.zeros(0, np.float32), chunk.sample_rate, True)


def _apply(source: Observable[Any], *operators: AnyOperator) -> Observable[Any]:
    """``source.pipe(*operators)`` for a chain assembled at run time."""
    for operator in operators:
        source = operator(source)
    return source


class VADEngine:
    """Streaming VAD over many concurrent streams, exact to silero-vad.

    Args:
        backend: backend name (``"onnx"``, or any registered backend).
        num_workers: worker threads, each with its own model instance
            (default: CPU count). Ignored when ``pool`` is given.
        config: default :class:`VADConfig` for streams.
        backend_options: keyword arguments for the backend.
        pool: share an already started :class:`WorkerPool` (the engine then
            does not close it).
        frames_per_slice: most frames per slice (see ``window_slices``).
        max_pending_slices: per stream, slices in flight (each push not yet
            sliced counts as one) before ``push()`` waits.
        max_buffered_events: per ``events()`` iterator, unread events before
            ``push()`` waits.
        backpressure: what ``push()`` does when a stream is full: ``"wait"``,
            ``"drop_oldest"`` or ``"error"`` (see :meth:`VADStream.push`); streams
            may override it.
        max_queued_chunks: chunks a ``"drop_oldest"`` stream queues before dropping.
        slice_timeout_factor: a model call taking longer than this many times the
            audio it holds (at least ``min_slice_timeout`` s) fails its streams
            (:class:`SliceTimeoutError`) and its worker is replaced; None: no limit.
        audio_operators: operators applied to the ``AudioChunk`` stream before
            slicing (must be synchronous, e.g. ``ops.map``); what a stream is pushed
            in one loop iteration reaches them as one chunk.
        event_operators: operators applied to the ``SpeechEvent`` stream; they
            shape what is delivered (``result.segments`` stays complete).
            Each user operator is contained (``operators.contain``): its fault
            or wrong item fails only that stream (:class:`OperatorError`), and an
            end-of-stream chunk it swallows is put back.

    Use ``async with VADEngine(...) as engine`` (or ``await engine.start()`` /
    ``await engine.close()``), then :meth:`open_stream`. Every argument is
    checked here (:class:`ConfigError`), before any thread starts. The engine
    and its streams belong to the loop it starts on; calls from another loop
    raise :class:`WrongEventLoopError`.
    """

    def __init__(
        self,
        backend: str = "onnx",
        num_workers: int | None = None,
        config: VADConfig | None = None,
        *,
        backend_options: Mapping[str, Any] | None = None,
        pool: WorkerPool | None = None,
        frames_per_slice: int = DEFAULT_FRAMES_PER_SLICE,
        max_pending_slices: int = 16,
        max_buffered_events: int = 1024,
        backpressure: BackpressurePolicy = "wait",
        max_queued_chunks: int = 64,
        slice_timeout_factor: float | None = 4.0,
        min_slice_timeout: float = 2.0,
        audio_operators: Sequence[AnyOperator] = (),
        event_operators: Sequence[AnyOperator] = (),
    ) -> None:
        if config is not None and not isinstance(config, VADConfig):
            raise ConfigError(f"config must be a VADConfig, got {config!r}")
        check_policy(backpressure)
        for name, value in (
            ("max_pending_slices", max_pending_slices),
            ("max_buffered_events", max_buffered_events),
            ("max_queued_chunks", max_queued_chunks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        check_timeouts(slice_timeout_factor, min_slice_timeout)
        _check_operators("audio_operators", audio_operators)
        _check_operators("event_operators", event_operators)
        if pool is not None and not isinstance(pool, WorkerPool):
            raise ConfigError(f"pool must be a WorkerPool, got {type(pool).__name__}")
        self._slicer = window_slices(frames_per_slice)  # validates frames_per_slice now
        self._frames_per_slice = frames_per_slice
        self.config = config or VADConfig()
        self._owns_pool = pool is None
        # validates backend, num_workers and backend_options; starts no thread
        self._pool = pool or WorkerPool(backend, num_workers, backend_options=backend_options)
        self._max_pending = max_pending_slices
        self._max_buffered = max_buffered_events
        self._backpressure: BackpressurePolicy = backpressure
        self._max_queued = max_queued_chunks
        self._slice_timeout_factor = slice_timeout_factor
        self._min_slice_timeout = min_slice_timeout
        self._stage: ModelStage | None = None
        self._audio_operators = tuple(audio_operators)
        self._event_operators = tuple(event_operators)
        self._streams: dict[str, StreamPort] = {}  # open streams, as the engine reaches them
        self._host = StreamHost(self._send, self._forget, self._events_backlog)
        self._opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._drain_pending = False
        self._fanout = EventFanout("the engine", raise_failures=False, on_consumed=self._room_made)
        self._subject: Subject[AudioChunk] | None = None
        self._subscriptions: list[DisposableBase] = []
        self._state = "new"
        self._broken: BaseException | None = None
        self._stale: set[str] = set()  # failed by an event operator; results still in the chain
        self._pool_closed: asyncio.Future[None] | None = None  # pool.close() in the executor
        self._finished: asyncio.Future[None] | None = None  # done once the engine is closed

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> VADEngine:
        """Start the pool (if owned) and build the operator chain.

        If starting fails or is cancelled, the engine is closed (its pool too).
        """
        if self._state == "running":
            require_loop(self._loop, "VADEngine.start()")
            return self
        if self._state == "starting":
            raise ClosedError("engine is already starting")
        if self._state != "new":
            raise ClosedError("engine is closed")
        if not self._owns_pool and not self._pool.started:
            raise ClosedError("the shared WorkerPool is not started")
        loop = self._loop = asyncio.get_running_loop()
        self._state = "starting"
        try:
            if self._owns_pool:
                await loop.run_in_executor(None, self._pool.start)
            if self._pool_closed is not None:
                raise ClosedError("engine was closed while it was starting")
            self._build_chain()
        except BaseException:
            self._state = "closing"
            self._close_pool()  # also ends a start still running in the executor
            self._fanout.complete()  # iterators and observers made before start() end
            raise
        self._state = "running"
        return self

    def _close_pool(self) -> None:
        """Close an owned pool in the executor, once; the engine is closed when it is done.

        Submitted at once, so the pool is closed even if the caller is cancelled.
        """
        if self._pool_closed is not None:
            return
        assert self._loop is not None
        self._finished_future()
        if self._owns_pool:
            self._pool_closed = self._loop.run_in_executor(None, self._pool.close)
        else:
            self._pool_closed = self._loop.create_future()
            self._pool_closed.set_result(None)
        self._pool_closed.add_done_callback(self._pool_close_done)

    def _pool_close_done(self, future: asyncio.Future[None]) -> None:
        self._state = "closed"
        if not future.cancelled() and future.exception() is not None:
            log.error("closing the worker pool failed", exc_info=future.exception())
        finished = self._finished_future()
        if not finished.done():
            finished.set_result(None)

    def _finished_future(self) -> asyncio.Future[None]:
        if self._finished is None:
            assert self._loop is not None
            self._finished = self._loop.create_future()
        return self._finished

    def _set_stage(self, stage: ModelStage) -> None:
        self._stage = stage

    def _build_chain(self) -> None:
        subject: Subject[AudioChunk] = Subject()
        # Each user operator is contained: its faults fail the stream they happened on.
        audio_operators = [
            contain(
                op,
                AudioChunk,
                name=f"audio_operators[{i}] ({operator_name(op)})",
                end_marker=_end_chunk_for,
            )
            for i, op in enumerate(self._audio_operators)
        ]
        event_operators = [
            contain(op, SpeechEvent, name=f"event_operators[{i}] ({operator_name(op)})")
            for i, op in enumerate(self._event_operators)
        ]
        results = _apply(
            subject,
            *audio_operators,
            self._slicer,
            ops.do_action(self._slice_submitted),
            parallel_map_on_pool(
                self._pool,
                slice_timeout_factor=self._slice_timeout_factor,
                min_slice_timeout=self._min_slice_timeout,
                on_stage=self._set_stage,
            ),
            reorder_by_seq(),
            ops.share(),
        )
        detected = _apply(
            results,
            merge_segments(self._config_for, keep_audio=self._keep_audio_for),
            emit_events(),
            ops.share(),
        )
        events = _apply(detected, *event_operators)
        # Subscription order matters: per result, segments and events are scheduled on
        # the loop before the progress update that releases flush()/close(). Segments
        # are taken before the event operators, which shape only what is delivered.
        self._subscriptions.append(
            detected.subscribe(self._segment_from_worker, self._chain_failed_from_worker)
        )
        self._subscriptions.append(
            events.subscribe(self._event_from_worker, self._chain_failed_from_worker)
        )
        self._subscriptions.append(
            results.subscribe(self._result_from_worker, self._chain_failed_from_worker)
        )
        self._subject = subject

    async def close(self) -> None:
        """Close every open stream (waiting for its last events), then stop the pool.

        If this is cancelled while streams are closing, the streams not yet ended
        fail (:class:`StreamFailedError`) and the pool is still stopped; awaiting
        ``close()`` again waits until it is.
        """
        if self._state == "new":
            self._state = "closed"
            self._fanout.complete()  # iterators and observers made before start() end
            return
        require_loop(self._loop, "VADEngine.close()")
        if self._state == "running":
            self._state = "closing"
            self._finished_future()  # a concurrent close() waits for this one
            try:
                streams = [port.stream for port in self._streams.values()]
                results = await asyncio.gather(
                    *(s.close() for s in streams), return_exceptions=True
                )
                for stream, result in zip(streams, results, strict=True):
                    if isinstance(result, BaseException) and not isinstance(
                        result, StreamFailedError
                    ):
                        log.error("closing stream %r failed", stream.stream_id, exc_info=result)
            finally:
                self._stop_chain()
                self._close_pool()
        elif self._state == "starting":
            self._close_pool()  # the start() in progress fails with ClosedError
        if self._finished is not None:
            await asyncio.shield(self._finished)

    def _stop_chain(self) -> None:
        """End the operator chain and every listener (synchronous: runs even when cancelled)."""
        for port in list(self._streams.values()):  # left over only if close() was cancelled
            sid = port.stream.stream_id
            failure = StreamFailedError(
                f"stream {sid!r}: the engine closed before the stream ended", sid
            )
            port.fail(failure)
            self._fanout.fail(failure)
        if self._subject is not None:
            self._subject.on_completed()
        for subscription in self._subscriptions:
            subscription.dispose()
        self._subscriptions.clear()
        self._fanout.complete()

    aclose = close

    async def __aenter__(self) -> VADEngine:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    @property
    def streams(self) -> Mapping[str, VADStream]:
        """Open streams by id (a read-only view)."""
        return {sid: port.stream for sid, port in self._streams.items()}

    # ------------------------------------------------------------------ streams

    def open_stream(
        self,
        stream_id: str | None = None,
        *,
        sample_rate: int = 16000,
        config: VADConfig | None = None,
        keep_probabilities: bool = False,
        keep_audio: bool = False,
        backpressure: BackpressurePolicy | None = None,
    ) -> VADStream:
        """Open a stream; ``stream_id`` defaults to a fresh UUID.

        Args:
            sample_rate: rate of the audio you will push (8/16 kHz run natively,
                others are resampled to 16 kHz).
            config: this stream's :class:`VADConfig` (default: the engine's).
            keep_probabilities: keep every frame's probability for the result.
            keep_audio: attach each segment's samples to its end event.
            backpressure: this stream's policy (default: the engine's).
        """
        if self._state != "running":
            raise ClosedError(
                "engine is not running; use 'async with VADEngine(...)' or await start()"
            )
        require_loop(self._loop, "VADEngine.open_stream()")
        if self._broken is not None:
            raise ClosedError(f"engine stopped after an internal error: {self._broken}")
        if stream_id is None:
            stream_id = uuid.uuid4().hex
        if not isinstance(stream_id, str):
            raise ConfigError(f"stream_id must be a str, got {type(stream_id).__name__}")
        if stream_id in self._streams:
            raise DuplicateStreamError(f"stream {stream_id!r} is already open", stream_id)
        rate = validate_sample_rate(sample_rate)
        supported = self._pool.probe().sample_rates
        if model_sample_rate(rate) not in supported:
            runs = " and ".join(f"{r} Hz" for r in sorted(supported)) or "no rate"
            raise UnsupportedSampleRateError(
                f"backend {self._pool.backend_name!r} runs at {runs} only: a stream at "
                f"{rate} Hz (processed at {model_sample_rate(rate)} Hz) is not supported"
            )
        if config is not None and not isinstance(config, VADConfig):
            raise ConfigError(f"config must be a VADConfig, got {config!r}")
        if backpressure is not None:
            check_policy(backpressure)
        stream = VADStream(
            self._host,
            stream_id,
            rate,
            config or self.config,
            keep_probabilities=keep_probabilities,
            keep_audio=keep_audio,
            max_pending_slices=self._max_pending,
            max_buffered_events=self._max_buffered,
            backpressure=backpressure or self._backpressure,
            max_queued_chunks=self._max_queued,
            frames_per_slice=self._frames_per_slice,
        )
        self._streams[stream_id] = port_of(stream)
        self._opened += 1
        return stream

    # ---------------------------------------------------------- all streams' events

    def subscribe(
        self, handler: Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
    ) -> abc.DisposableBase:
        """Call ``handler`` with every stream's events (start, end, error) from now on.

        Runs on the event loop; handler exceptions are logged and counted, never
        propagated. An observer's ``on_completed`` is called when the engine closes.
        """
        return self._fanout.subscribe(handler)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        """Every stream's events as one hot reactivex observable (on the loop)."""
        return self._fanout.observable

    def events(self) -> EventIterator:
        """Iterate over every stream's events (failures as ``error`` events) until the
        engine closes. Registers at call time (nothing is missed). Once it has started
        reading, while it holds ``max_buffered_events`` unread events, every stream's
        ``push()`` waits; until then it keeps every event for its reader. It is
        unregistered as for :meth:`VADStream.events`: ``aclose()`` or drop an
        iterator you will not read."""
        require_loop(self._loop, "VADEngine.events()")
        return self._fanout.events()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            open_streams=len(self._streams),
            streams_opened=self._opened,
            pool=self._pool.statistics(),
            stage=self._stage.statistics() if self._stage is not None else None,
            streams=tuple(port.stream.statistics() for port in self._streams.values()),
        )

    # ------------------------- the stream's StreamHost (on the loop; see __init__)

    def _send(self, chunk: AudioChunk) -> None:
        if self._broken is not None:
            raise ClosedError(f"engine stopped after an internal error: {self._broken}")
        assert self._subject is not None
        self._subject.on_next(chunk)

    def _forget(self, stream: VADStream) -> None:
        port = self._streams.get(stream.stream_id)
        if port is not None and port.stream is stream:
            del self._streams[stream.stream_id]

    def _events_backlog(self) -> int:
        return self._fanout.backlog

    def _room_made(self) -> None:
        for port in list(self._streams.values()):
            port.room_changed()

    # ----------------------------------------- chain callbacks (various threads)

    def _config_for(self, stream_id: str) -> VADConfig:
        port = self._streams.get(stream_id)  # read on a worker thread: one dict lookup
        return port.stream.config if port is not None else self.config

    def _keep_audio_for(self, stream_id: str) -> bool:
        port = self._streams.get(stream_id)
        return port.stream.keep_audio if port is not None else False

    def _slice_submitted(self, item: AudioSlice | StreamFailure) -> None:
        # Runs on the loop as a stream's chunk enters the chain. Failures travel on to
        # the result subscription, which reports them in order; the next push()
        # raises at once.
        port = self._streams.get(item.stream_id)
        if port is not None:
            if isinstance(item, AudioSlice):
                port.on_slice(item)
            else:
                port.failed_in_push(item.error)

    def _segment_from_worker(self, event: SpeechEvent) -> None:
        if event.segment is not None:
            self._call_on_loop(self._segment_on_loop, event)
        elif event.kind == "error" and event.error is not None:
            # a failure of the stream (also one of merge_segments, which only this path
            # sees), reported before the event operators could filter it out
            self._call_on_loop(
                self._event_failure_on_loop, StreamFailure(event.stream_id, event.error)
            )

    def _event_from_worker(self, event: SpeechEvent | StreamFailure) -> None:
        if isinstance(event, StreamFailure):  # an event operator failed on the stream
            self._call_on_loop(self._event_failure_on_loop, event)
        else:
            self._call_on_loop(self._event_on_loop, event)

    def _result_from_worker(self, item: FrameProbabilities | StreamFailure) -> None:
        if isinstance(item, StreamFailure):
            self._call_on_loop(self._failure_on_loop, item)
        else:
            self._call_on_loop(self._frames_on_loop, item)

    def _chain_failed_from_worker(self, error: Exception) -> None:
        self._call_on_loop(self._chain_failed_on_loop, error)

    def _call_on_loop(self, callback: Callable[[Any], None], arg: Any) -> None:
        """Run ``callback(arg)`` on the loop, in call order. Calls made while a drain is
        pending share one wake-up of the loop (one ``call_soon_threadsafe``)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._inbox.append((callback, arg))
        if not self._drain_pending:
            self._drain_pending = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._drain_pending = False
        inbox = self._inbox
        while inbox:
            callback, arg = inbox.popleft()
            try:
                callback(arg)
            except (KeyboardInterrupt, SystemExit):
                if inbox and self._loop is not None:  # the rest is still delivered
                    self._drain_pending = True
                    self._loop.call_soon(self._drain_inbox)
                raise
            except BaseException:
                log.exception("delivering %r failed", arg)

    # --------------------------------------------------------------- on the loop

    def _segment_on_loop(self, event: SpeechEvent) -> None:
        port = self._streams.get(event.stream_id)
        if port is not None and event.stream_id not in self._stale and event.segment is not None:
            port.on_segment(event.segment)

    def _event_on_loop(self, event: SpeechEvent) -> None:
        if event.stream_id in self._stale:
            return
        port = self._streams.get(event.stream_id)
        if port is not None and event.kind != "error":
            port.on_event(event)
            self._fanout.publish(event)

    def _frames_on_loop(self, item: FrameProbabilities) -> None:
        if item.stream_id in self._stale:
            if item.is_last:
                self._stale.discard(item.stream_id)
            return
        port = self._streams.get(item.stream_id)
        if port is not None:
            port.on_frames(item)

    def _failure_on_loop(self, failure: StreamFailure) -> None:
        if failure.stream_id in self._stale:
            self._stale.discard(failure.stream_id)
            return
        port = self._streams.get(failure.stream_id)
        if port is not None:
            port.fail(failure.error)
            self._fanout.fail(failure.error)
            self._end_failed(port)

    def _event_failure_on_loop(self, failure: StreamFailure) -> None:
        """The stream failed after the results branch (merge_segments, emit_events or an
        event operator): fail it now; what the chain still holds of it (up to its last
        result or failure) is stale, never a reopened stream's."""
        port = self._streams.get(failure.stream_id)
        if port is None or failure.stream_id in self._stale:
            return
        port.fail(failure.error)
        self._fanout.fail(failure.error)
        self._stale.add(failure.stream_id)
        self._end_failed(port)

    def _end_failed(self, port: StreamPort) -> None:
        """Send a failed stream's end through the chain, so every operator forgets it
        and its id can be opened again."""
        if self._broken is None and self._subject is not None:
            end = port.take_end_chunk()
            if end is not None:
                self._subject.on_next(end)

    def _chain_failed_on_loop(self, error: Exception) -> None:
        if self._broken is not None:
            return
        self._broken = error
        log.error("operator chain failed; failing all streams", exc_info=error)
        for port in list(self._streams.values()):
            sid = port.stream.stream_id
            failure = StreamFailedError(f"stream {sid!r}: the operator chain failed: {error}", sid)
            failure.__cause__ = error
            port.fail(failure)
            self._fanout.fail(failure)
