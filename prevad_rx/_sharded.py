"""ShardedVADEngine: streams spread over several processes (shards), each running a VADEngine.

::

    user's loop                                     shard process (spawned)
    ───────────                                     ───────────────────────
    push() ─ samples ─▶ shared memory ring ───────▶ copy out ─▶ VADStream.push()
          └ record (slot, offset, length) ─▶ pipe ─▶ (batched per loop iteration)
    events, flush, close, counters ◀─ pipe ◀──────── results batched per loop iteration

A stream lives in exactly one shard (its decoder state never moves), so results
are those of :class:`VADEngine`. Each shard is an ordinary ``VADEngine`` with
``workers_per_shard`` threads; the threads of different shards do not share a
GIL, so the engine's own Python work scales with the shards. A shard that dies
fails only its streams (:class:`ShardFailedError`) and is replaced for new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import sys
import uuid
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from types import TracebackType
from typing import Any, Literal

import numpy as np
from reactivex import Observable, abc

from prevad_rx._audio import AudioInput, model_sample_rate, to_float32_mono, validate_sample_rate
from prevad_rx._config import VADConfig
from prevad_rx._engine import AnyOperator, VADEngine
from prevad_rx._errors import (
    BackendError,
    BackpressureError,
    ClosedError,
    ConfigError,
    DuplicateStreamError,
    ShardFailedError,
    StreamClosedError,
    StreamFailedError,
    UnsupportedSampleRateError,
)
from prevad_rx._fanout import EventFanout, EventIterator
from prevad_rx._loop import Signal, require_loop
from prevad_rx._pipes import PipeReader, PipeWriter
from prevad_rx._shard_ring import ShardRing
from prevad_rx._shard_worker import shard_main
from prevad_rx._stream import StreamState, StreamStatistics
from prevad_rx._types import Segment, SpeechEvent, StreamResult
from prevad_rx.operators import DEFAULT_FRAMES_PER_SLICE

__all__ = ["ShardStatistics", "ShardedEngineStatistics", "ShardedStream", "ShardedVADEngine"]

log = logging.getLogger("prevad_rx.shards")

Placement = Literal["least_loaded", "hash"]
ShardState = Literal["starting", "ready", "failed", "closing", "closed"]


@dataclass(frozen=True, slots=True)
class ShardStatistics:
    """One shard: its process, its load, and its ring."""

    index: int
    pid: int | None
    state: ShardState
    restarts: int
    open_streams: int
    streams_opened: int
    frames_processed: int
    chunks_sent: int
    ring_samples: int
    ring_used_samples: int


@dataclass(frozen=True, slots=True)
class ShardedEngineStatistics:
    """A snapshot of a :class:`ShardedVADEngine`: every shard and every open stream."""

    open_streams: int
    streams_opened: int
    shards: tuple[ShardStatistics, ...]
    streams: tuple[StreamStatistics, ...]


class _Shard:
    """The user's side of one shard process: pipes, ring, outbox and its streams."""

    def __init__(
        self,
        engine: ShardedVADEngine,
        index: int,
        restarts: int,
        ring_samples: int,
    ) -> None:
        self.engine = engine
        self.index = index
        self.restarts = restarts
        self.state: ShardState = "starting"
        self.pid: int | None = None
        self.streams: dict[int, ShardedStream] = {}
        self.streams_opened = 0
        self.frames_processed = 0
        self.chunks_sent = 0
        self.next_slot = 0
        self.outbox: list[tuple[Any, ...]] = []
        self.send_scheduled = False
        self.fatal: str | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.loop = engine._require_started_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.last_heard = self.loop.time()
        self.ring = ShardRing(ring_samples)
        ctx = multiprocessing.get_context("spawn")
        child_commands, self.commands = ctx.Pipe(duplex=False)
        self.results, child_results = ctx.Pipe(duplex=False)
        self.process: BaseProcess = ctx.Process(
            target=shard_main,
            args=(child_commands, child_results, self.ring.name, ring_samples, engine._options),
            kwargs={"use_uvloop": engine._use_uvloop, "cpus": engine._cpus_for(index)},
            name=f"prevad-rx-shard-{index}",
            daemon=True,
        )
        try:
            self.process.start()
        except BaseException:
            self.commands.close()
            self.results.close()
            self.ring.close()
            raise
        finally:
            child_commands.close()
            child_results.close()
        self.pid = self.process.pid
        # both pipes non-blocking: a stalled shard can never stall this loop
        self.writer = PipeWriter(self.commands, self.loop)
        self.reader = PipeReader(self.results, self.loop, self._on_results, self.lost)

    # ------------------------------------------------------------------ sending

    def send(self, record: tuple[Any, ...]) -> None:
        self.outbox.append(record)
        if not self.send_scheduled and self.state in ("ready", "closing"):
            self.send_scheduled = True
            self.loop.call_soon(self.flush_outbox)

    def flush_outbox(self) -> None:
        self.send_scheduled = False
        if not self.outbox or self.state not in ("ready", "closing"):
            return
        batch, self.outbox = self.outbox, []
        self.writer.send(ForkingPickler.dumps(batch))  # a shard that is gone: see lost()

    # ------------------------------------------------------------------ receiving

    def _on_results(self, data: memoryview) -> None:
        """One batch of messages from the shard (a whole pipe message)."""
        self.last_heard = self.loop.time()
        for message in pickle.loads(data):
            try:
                self._handle(message)
            except Exception:
                log.exception("shard %d: handling %r failed", self.index, message[0])

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "progress":
            _, slot, taken, submitted, processed, in_flight, segments = message
            stream = self.streams.get(slot)
            if stream is not None:
                self.frames_processed += processed - stream._frames_done
                stream._on_progress(taken, submitted, processed, in_flight, segments)
        elif kind == "ack":
            self.ring.ack(message[1])
            for stream in self.streams.values():
                stream._signal.notify()
        elif kind == "event":
            stream = self.streams.get(message[1])
            if stream is not None:
                stream._on_event(message[2])
        elif kind == "flushed":
            stream = self.streams.get(message[1])
            if stream is not None:
                stream._on_flushed(message[2])
        elif kind == "closed":
            stream = self.streams.pop(message[1], None)
            if stream is not None:
                stream._on_closed(message[2])
        elif kind == "failed":
            _, slot, error, cause = message
            if cause is not None:
                error.__cause__ = cause
            stream = self.streams.pop(slot, None)
            if stream is not None:
                if error.stream_id is None:
                    error.stream_id = stream.stream_id
                stream._fail(error)
        elif kind == "ready":
            _, self.pid, rates = message
            self.engine._sample_rates = frozenset(rates)
            if self.state == "starting":
                self.state = "ready"
            if not self.ready.done():
                self.ready.set_result(None)
            self.send_scheduled = True
            self.flush_outbox()
        elif kind == "fatal":
            self.fatal = message[1]

    def check_alive(self, timeout: float) -> None:
        """Kill a ready shard whose loop has not been heard from for ``timeout`` s: its
        streams then fail (ShardFailedError) and it is replaced, instead of hanging."""
        if self.state != "ready" or self.ended.done():
            return
        if self.results.poll():  # news already waiting (this loop was the slow one)
            self.last_heard = self.loop.time()
            return
        silent = self.loop.time() - self.last_heard
        if silent > timeout:
            self.fatal = f"it did not answer for {silent:.1f} s (shard_timeout) and was killed"
            log.error("shard %d (process %s): %s", self.index, self.pid, self.fatal)
            with contextlib.suppress(ProcessLookupError, ValueError):
                self.process.kill()

    # ------------------------------------------------------------------ ending

    def lost(self) -> None:
        """The results pipe ended: the process exited (asked to, or not)."""
        if self.ended.done():
            return
        self.reader.close()
        self.writer.close()
        expected = self.state in ("closing", "closed")
        was_ready = self.state == "ready"
        self.state = "closed" if expected else "failed"
        self.results.close()
        self.commands.close()
        self.ring.close()
        self.outbox.clear()
        if not expected:
            self.process.join(0.1)  # it has closed its pipe: its exit status is due
        why = self.fatal or _exit_reason(self.process.exitcode)
        error = BackendError(f"shard {self.index} (process {self.pid}) ended: {why}")
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: start() or a stream reports it
        if self.streams:
            if not expected:
                log.error("shard %d (process %s) ended: %s", self.index, self.pid, why)
            for stream in list(self.streams.values()):
                failure = ShardFailedError(
                    f"stream {stream.stream_id!r}: shard {self.index} (process {self.pid}) "
                    f"ended: {why}",
                    stream.stream_id,
                    shard=self.index,
                )
                stream._fail(failure)
            self.streams.clear()
        self.ended.set_result(None)
        if was_ready:
            self.engine._replace(self)

    async def stop(self, timeout: float) -> None:
        """Ask the shard to stop, wait for it (killing it after ``timeout`` s), reap it (once)."""
        if self.stopping is None:
            self.stopping = self.loop.create_task(self._stop(timeout))
        await asyncio.shield(self.stopping)

    async def _stop(self, timeout: float) -> None:
        if not self.ended.done() and self.state in ("ready", "starting"):
            self.state = "closing"
            self.send(("stop",))
            self.send_scheduled = True
            self.flush_outbox()
        else:
            self.state = "closing" if not self.ended.done() else self.state
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), timeout)
        await self.loop.run_in_executor(None, _reap, self.process, 2.0)
        self.lost()  # no-op once ended; else closes what is left
        self.process.close()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "its pipe closed unexpectedly"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _reap(process: BaseProcess, timeout: float) -> None:
    """Join ``process``; terminate, then kill it if it does not end in time."""
    process.join(timeout)
    if process.exitcode is None:
        process.terminate()
        process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()


class ShardedStream:
    """One stream inside a :class:`ShardedVADEngine`: the same API as :class:`VADStream`.

    Its audio is processed in one shard process; events, segments, counters and
    the result come back from there. All methods belong to the engine's loop.
    """

    def __init__(
        self,
        engine: ShardedVADEngine,
        shard: _Shard,
        slot: int,
        stream_id: str,
        sample_rate: int,
        config: VADConfig,
        *,
        keep_audio: bool,
        backpressure: Literal["wait", "error"],
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.processing_rate = model_sample_rate(sample_rate)
        self.config = config
        self.keep_audio = keep_audio
        self.backpressure = backpressure
        self._engine = engine
        self._shard = shard
        self._slot = slot
        self._max_pending = engine._max_pending_chunks
        self._max_buffered = engine._max_buffered
        self._push_lock = asyncio.Lock()
        self._signal = Signal()  # room for a waiting push (acks, progress, reads, the end)
        self._flushes = Signal()  # a waiting flush: its token came back, or the stream ended
        self._fanout = EventFanout(
            f"stream {stream_id!r}", raise_failures=True, on_consumed=self._signal.notify
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
        """Segments finished so far (as last reported by the shard)."""
        return list(self._segments)

    # ------------------------------------------------------------------ audio in

    async def push(self, audio: AudioInput) -> None:
        """Feed the next chunk (as :meth:`VADStream.push`).

        The samples are copied into the shard's ring, so the array may be reused
        once this returns. When the stream has ``max_pending_chunks`` chunks in
        its shard not yet taken, too many unread events, or the ring is full,
        ``"wait"`` waits and ``"error"`` raises :class:`BackpressureError` (taking
        nothing; with ``"error"`` a chunk may hold at most half of ``ring_samples``).
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
            and self._fits_now(samples.size)
        ):
            self._put(samples)  # the common case: room now, nothing to wait for
            return
        pieces = [samples[i : i + step] for i in range(0, samples.size, step)]
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

    def _put(self, piece: np.ndarray) -> None:
        """Copy a piece that fits into the ring and tell the shard where it lies."""
        offset, end = self._shard.ring.write(piece)
        self._shard.send(("audio", self._slot, offset, piece.size, end))
        self._shard.chunks_sent += 1
        self._in_flight += 1
        self._samples_pushed += piece.size

    async def flush(self) -> None:
        """Return once every whole frame pushed so far is processed and its events delivered
        (as :meth:`VADStream.flush`)."""
        require_loop(self._done.get_loop(), "ShardedStream.flush()")
        self._check_writable()
        async with self._push_lock:
            self._check_writable()
            self._flush_token += 1
            token = self._flush_token
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

    def _fits_now(self, samples: int) -> bool:
        """A piece of ``samples`` may be written now: the stream has room, the ring space."""
        return self._has_room() and self._shard.ring.fits_all([samples])

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state != "open":
            raise StreamClosedError(f"stream {self.stream_id!r} is closed", self.stream_id)

    def _has_room(self) -> bool:
        return (
            self._in_flight < self._max_pending
            and self._fanout.backlog < self._max_buffered
            and self._engine._fanout.backlog < self._max_buffered
        )

    # ---------------------------------------------------------------- events out

    def subscribe(
        self, handler: Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
    ) -> abc.DisposableBase:
        """Call ``handler`` with each event from now on (as :meth:`VADStream.subscribe`)."""
        return self._fanout.subscribe(handler)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        """This stream's events as a hot reactivex observable (delivered on the loop)."""
        return self._fanout.observable

    def events(self) -> EventIterator:
        """Iterate over start/end events until the stream ends (as :meth:`VADStream.events`)."""
        require_loop(self._done.get_loop(), "ShardedStream.events()")
        return self._fanout.events()

    def statistics(self) -> StreamStatistics:
        """Counters of this stream now (frame counts as last reported by its shard;
        ``queued_chunks``: chunks sent to the shard and not yet taken by its engine)."""
        return StreamStatistics(
            stream_id=self.stream_id,
            state=self._state,
            samples_pushed=self._samples_pushed,
            queued_chunks=self._in_flight,
            dropped_samples=0,
            frames_submitted=self._frames_submitted,
            frames_processed=self._frames_done,
            slices_in_flight=self._slices_in_flight,
            events_delivered=self._fanout.delivered,
            events_buffered=self._fanout.buffered,
            segments=len(self._segments),
            handler_errors=self._fanout.handler_errors,
        )

    # --------------------------------------------------- from the shard (loop)

    def _on_progress(
        self,
        taken: int,
        submitted: int,
        processed: int,
        in_flight: int,
        segments: tuple[Segment, ...],
    ) -> None:
        self._in_flight -= taken
        self._frames_submitted = submitted
        self._frames_done = processed
        self._slices_in_flight = in_flight
        if self._state not in ("closed", "failed"):
            self._segments.extend(segments)
        self._signal.notify()

    def _on_event(self, event: SpeechEvent) -> None:
        if self._state in ("closed", "failed"):
            return
        self._fanout.publish(event)
        self._engine._fanout.publish(event)

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
        self._fanout.fail(error)
        self._engine._fanout.fail(error)
        self._end()

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._engine._forget(self)
        self._signal.notify()
        self._flushes.notify()


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_importable(operator: object) -> None:
    """Shards import what they unpickle: an operator made in an interactive session
    (``__main__`` with no file) cannot be found there."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__file__", None):
        return
    for part in (operator, getattr(operator, "func", None)):
        if getattr(part, "__module__", None) == "__main__":
            raise ConfigError(
                f"operator {operator!r} is defined in an interactive session: shard "
                "processes cannot import it; define it in a module"
            )


def _check_affinity(affinity: object, workers: int) -> tuple[tuple[int, ...], ...]:
    """CPU sets per shard (cycled), checked against the CPUs this process may use."""
    if affinity is None:
        return ()
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("cpu_affinity needs os.sched_setaffinity (Linux)")
    usable = sorted(os.sched_getaffinity(0))
    if affinity == "spread":
        count = max(1, len(usable) // workers)
        return tuple(
            tuple(usable[(i * workers + k) % len(usable)] for k in range(workers))
            for i in range(count)
        )
    if isinstance(affinity, str | bytes) or not isinstance(affinity, Sequence) or not affinity:
        raise ConfigError(
            f"cpu_affinity must be 'spread', None or a sequence of CPU sets, got {affinity!r}"
        )
    sets = []
    for cpus in affinity:
        if isinstance(cpus, str | bytes) or not isinstance(cpus, Collection) or not cpus:
            raise ConfigError(f"cpu_affinity holds a CPU set that is not one: {cpus!r}")
        for cpu in cpus:
            if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu not in usable:
                raise ConfigError(
                    f"cpu_affinity names CPU {cpu!r}, not one this process may use ({usable})"
                )
        sets.append(tuple(sorted(set(cpus))))
    return tuple(sets)


class ShardedVADEngine:
    """Streaming VAD over many streams in several processes (shards), exact to silero-vad.

    The same asyncio API as :class:`VADEngine`; each shard is a process
    (``multiprocessing`` "spawn") running a ``VADEngine`` with
    ``workers_per_shard`` threads, and each stream lives in one shard. Use it
    when the engine's own Python work, not the model, limits throughput (many
    cores, many small packets); one process (:class:`VADEngine`) stays the
    simplest choice for small deployments and debugging.

    Args:
        backend: backend name, created in every shard.
        shards: number of shard processes (default: usable CPUs // workers_per_shard).
        workers_per_shard: worker threads in each shard.
        config: default :class:`VADConfig` for streams.
        backend_options: keyword arguments for the backend (picklable).
        placement: ``"least_loaded"`` (the shard with the fewest open streams) or
            ``"hash"`` (by a stable hash of the stream id).
        max_pending_chunks: per stream, chunks sent to its shard and not yet taken
            by its engine before ``push()`` waits.
        ring_samples: samples each shard's shared memory ring holds (float32).
        backpressure: ``"wait"`` or ``"error"`` (see :meth:`ShardedStream.push`).
        start_timeout: seconds each shard may take to start.
        cpu_affinity: pin each shard's process to CPUs (Linux): ``"spread"`` gives shard
            ``i`` its own ``workers_per_shard`` CPUs in turn; a sequence gives shard ``i``
            the CPU set at ``i % len(cpu_affinity)``. None (default): not pinned.
        shard_timeout: a shard whose event loop has not answered for this many seconds
            (blocked, e.g. by an operator that never returns) is killed: its streams
            fail with :class:`ShardFailedError` and it is replaced. None: wait forever.
        audio_operators, event_operators: as for :class:`VADEngine`; they run inside
            the shards, so they must be picklable (module-level functions, or
            operators built by module-level factories from picklable arguments).
        frames_per_slice, max_pending_slices, max_buffered_events,
        slice_timeout_factor, min_slice_timeout: as for :class:`VADEngine`.

    Every argument is checked here (:class:`ConfigError`), before any process starts.
    A script that uses it must start it under ``if __name__ == "__main__":`` (shards
    are spawned: they import the main module).
    """

    def __init__(
        self,
        backend: str = "onnx",
        shards: int | None = None,
        workers_per_shard: int = 1,
        config: VADConfig | None = None,
        *,
        backend_options: Mapping[str, Any] | None = None,
        placement: Placement = "least_loaded",
        max_pending_chunks: int = 16,
        ring_samples: int = 1 << 20,
        backpressure: Literal["wait", "error"] = "wait",
        start_timeout: float = 60.0,
        shard_timeout: float | None = 30.0,
        cpu_affinity: Sequence[Collection[int]] | Literal["spread"] | None = None,
        frames_per_slice: int = DEFAULT_FRAMES_PER_SLICE,
        max_pending_slices: int = 16,
        max_buffered_events: int = 1024,
        slice_timeout_factor: float | None = 4.0,
        min_slice_timeout: float = 2.0,
        audio_operators: Sequence[AnyOperator] = (),
        event_operators: Sequence[AnyOperator] = (),
        use_uvloop: bool | None = None,
    ) -> None:
        workers = _check_int("workers_per_shard", workers_per_shard)
        if shards is None:
            shards = max(1, _usable_cpus() // workers)
        self._num_shards = _check_int("shards", shards)
        self._max_pending_chunks = _check_int("max_pending_chunks", max_pending_chunks)
        self._ring_samples = _check_int("ring_samples", ring_samples, 4096)
        self._max_buffered = _check_int("max_buffered_events", max_buffered_events)
        if placement not in ("least_loaded", "hash"):
            raise ConfigError(f"placement must be 'least_loaded' or 'hash', got {placement!r}")
        if backpressure not in ("wait", "error"):
            raise ConfigError(
                f"backpressure must be 'wait' or 'error' for a ShardedVADEngine, "
                f"got {backpressure!r}"
            )
        if (
            isinstance(start_timeout, bool)
            or not isinstance(start_timeout, int | float)
            or not start_timeout > 0
        ):
            raise ConfigError(f"start_timeout must be a number > 0, got {start_timeout!r}")
        if shard_timeout is not None and (
            isinstance(shard_timeout, bool)
            or not isinstance(shard_timeout, int | float)
            or not shard_timeout >= 1
        ):
            raise ConfigError(
                f"shard_timeout must be a number >= 1 (seconds) or None, got {shard_timeout!r}"
            )
        self._affinity = _check_affinity(cpu_affinity, workers)
        options: dict[str, Any] = {
            "backend": backend,
            "num_workers": workers,
            "config": config,
            "backend_options": dict(backend_options or {}),
            "frames_per_slice": frames_per_slice,
            "max_pending_slices": max_pending_slices,
            "max_buffered_events": max_buffered_events,
            "slice_timeout_factor": slice_timeout_factor,
            "min_slice_timeout": min_slice_timeout,
            "audio_operators": audio_operators,
            "event_operators": event_operators,
        }
        VADEngine(**options)  # checks every option the shards' engines take; starts nothing
        for operator in (*options["audio_operators"], *options["event_operators"]):
            _check_importable(operator)
        try:
            self._options = pickle.dumps(options)
        except Exception as exc:
            raise ConfigError(
                "the options of a ShardedVADEngine must be picklable, as they are sent to its "
                "shard processes: use module-level functions, or operators made by "
                f"module-level factories ({type(exc).__name__}: {exc})"
            ) from exc
        self.config = config or VADConfig()
        self._placement: Placement = placement
        self._backpressure: Literal["wait", "error"] = backpressure
        self._start_timeout = float(start_timeout)
        self._shard_timeout = None if shard_timeout is None else float(shard_timeout)
        self._watchdog: asyncio.TimerHandle | None = None
        self._use_uvloop = use_uvloop
        self._shards: list[_Shard] = []
        self._retired: list[_Shard] = []
        self._reaping: set[asyncio.Task[None]] = set()
        self._streams: dict[str, ShardedStream] = {}
        self._opened = 0
        self._sample_rates: frozenset[int] = frozenset()
        self._fanout = EventFanout("the engine", raise_failures=False, on_consumed=self._room_made)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: Literal["new", "starting", "running", "closing", "closed"] = "new"
        self._shutdown: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    def _cpus_for(self, index: int) -> tuple[int, ...] | None:
        if not self._affinity:
            return None
        return self._affinity[index % len(self._affinity)]

    def _require_started_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def start(self) -> ShardedVADEngine:
        """Start every shard and wait until each is ready; on failure, stop them all."""
        if self._state == "running":
            require_loop(self._loop, "ShardedVADEngine.start()")
            return self
        if self._state != "new":
            raise ClosedError(f"engine is {self._state}")
        self._loop = asyncio.get_running_loop()
        self._state = "starting"
        try:
            for index in range(self._num_shards):
                self._shards.append(_Shard(self, index, 0, self._ring_samples))
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(s.ready) for s in self._shards)),
                self._start_timeout,
            )
        except BaseException as exc:
            self._state = "closing"
            await asyncio.shield(self._stop_shards())
            self._state = "closed"
            if isinstance(exc, asyncio.TimeoutError):
                raise BackendError(
                    f"the shards did not start within {self._start_timeout} s"
                ) from exc
            raise
        if self._state != "starting":  # closed meanwhile
            raise ClosedError("engine was closed while it was starting")
        self._state = "running"
        self._arm_watchdog()
        return self

    def _arm_watchdog(self) -> None:
        if self._shard_timeout is None or self._state not in ("running", "closing"):
            return
        period = min(1.0, self._shard_timeout / 4)
        loop = self._require_started_loop()
        self._watchdog = loop.call_later(period, self._watch, loop.time() + period)

    def _watch(self, due: float) -> None:
        assert self._shard_timeout is not None
        late = self._require_started_loop().time() - due
        for shard in list(self._shards):
            if late > self._shard_timeout / 2:  # this loop itself was held up: judge later
                shard.last_heard = max(shard.last_heard, self._require_started_loop().time())
            else:
                shard.check_alive(self._shard_timeout)
        self._arm_watchdog()

    async def close(self) -> None:
        """Close every open stream (waiting for its last events), then stop the shards.

        Runs to the end even if the caller is cancelled; awaiting it again waits for it.
        """
        if self._state == "new":
            self._state = "closed"
            return
        require_loop(self._loop, "ShardedVADEngine.close()")
        if self._state == "closed" and self._shutdown is None:
            return  # start() failed and stopped the shards
        if self._shutdown is None:
            self._shutdown = self._require_started_loop().create_task(self._close_all())
        await asyncio.shield(self._shutdown)

    async def _close_all(self) -> None:
        self._state = "closing"
        streams = list(self._streams.values())
        results = await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        for stream, result in zip(streams, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, StreamFailedError):
                log.error("closing stream %r failed", stream.stream_id, exc_info=result)
        if self._watchdog is not None:  # it watched the streams close; stopping has a limit
            self._watchdog.cancel()
        await self._stop_shards()
        self._fanout.complete()
        self._state = "closed"

    async def _stop_shards(self) -> None:
        shards = self._shards + self._retired
        await asyncio.gather(*(s.stop(10.0) for s in shards), return_exceptions=True)
        for stream in list(self._streams.values()):  # only if a shard did not answer
            stream._fail(
                StreamFailedError(
                    f"stream {stream.stream_id!r}: the engine closed before the stream ended",
                    stream.stream_id,
                )
            )

    aclose = close

    async def __aenter__(self) -> ShardedVADEngine:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def num_shards(self) -> int:
        return self._num_shards

    @property
    def streams(self) -> Mapping[str, ShardedStream]:
        """Open streams by id (a read-only view)."""
        return dict(self._streams)

    def shard_pids(self) -> tuple[int | None, ...]:
        """The process id of each shard now (a replaced shard has a new one)."""
        return tuple(s.pid for s in self._shards)

    # ------------------------------------------------------------------ streams

    def open_stream(
        self,
        stream_id: str | None = None,
        *,
        sample_rate: int = 16000,
        config: VADConfig | None = None,
        keep_probabilities: bool = False,
        keep_audio: bool = False,
        backpressure: Literal["wait", "error"] | None = None,
    ) -> ShardedStream:
        """Open a stream in one shard (as :meth:`VADEngine.open_stream`)."""
        if self._state != "running":
            raise ClosedError(
                "engine is not running; use 'async with ShardedVADEngine(...)' or await start()"
            )
        require_loop(self._loop, "ShardedVADEngine.open_stream()")
        if stream_id is None:
            stream_id = uuid.uuid4().hex
        if not isinstance(stream_id, str):
            raise ConfigError(f"stream_id must be a str, got {type(stream_id).__name__}")
        if stream_id in self._streams:
            raise DuplicateStreamError(f"stream {stream_id!r} is already open", stream_id)
        rate = validate_sample_rate(sample_rate)
        if model_sample_rate(rate) not in self._sample_rates:
            runs = " and ".join(f"{r} Hz" for r in sorted(self._sample_rates)) or "no rate"
            raise UnsupportedSampleRateError(
                f"the shards' backend runs at {runs} only: a stream at {rate} Hz "
                f"(processed at {model_sample_rate(rate)} Hz) is not supported"
            )
        if config is not None and not isinstance(config, VADConfig):
            raise ConfigError(f"config must be a VADConfig, got {config!r}")
        if backpressure is not None and backpressure not in ("wait", "error"):
            raise ConfigError(f"backpressure must be 'wait' or 'error', got {backpressure!r}")
        shard = self._place(stream_id)
        slot = shard.next_slot
        shard.next_slot += 1
        stream = ShardedStream(
            self,
            shard,
            slot,
            stream_id,
            rate,
            config or self.config,
            keep_audio=keep_audio,
            backpressure=backpressure or self._backpressure,
        )
        shard.streams[slot] = stream
        shard.streams_opened += 1
        shard.send(("open", slot, stream_id, rate, stream.config, keep_probabilities, keep_audio))
        self._streams[stream_id] = stream
        self._opened += 1
        return stream

    def _place(self, stream_id: str) -> _Shard:
        if self._placement == "hash":
            index = zlib.crc32(stream_id.encode()) % self._num_shards
        else:
            index = min(range(self._num_shards), key=lambda i: len(self._shards[i].streams))
        shard = self._shards[index]
        if shard.state == "failed":  # its replacement failed to start: try again
            shard = self._replace(shard)
        return shard

    def _replace(self, shard: _Shard) -> _Shard:
        """Start a new process in a failed shard's place (while the engine runs)."""
        if self._state != "running" or self._shards[shard.index] is not shard:
            return shard
        self._retired.append(shard)
        reaping = self._require_started_loop().create_task(shard.stop(2.0))  # no zombie
        self._reaping.add(reaping)
        reaping.add_done_callback(self._reaping.discard)
        reaping.add_done_callback(lambda _: self._retired.remove(shard))
        fresh = self._shards[shard.index] = _Shard(
            self, shard.index, shard.restarts + 1, self._ring_samples
        )
        return fresh

    # ---------------------------------------------------------- all streams' events

    def subscribe(
        self, handler: Callable[[SpeechEvent], object] | abc.ObserverBase[SpeechEvent]
    ) -> abc.DisposableBase:
        """Call ``handler`` with every stream's events (start, end, error) from now on."""
        return self._fanout.subscribe(handler)

    @property
    def observable(self) -> Observable[SpeechEvent]:
        """Every stream's events as one hot reactivex observable (on the loop)."""
        return self._fanout.observable

    def events(self) -> EventIterator:
        """Iterate over every stream's events (failures as ``error`` events) until the
        engine closes (as :meth:`VADEngine.events`)."""
        require_loop(self._loop, "ShardedVADEngine.events()")
        return self._fanout.events()

    def statistics(self) -> ShardedEngineStatistics:
        """Every shard's load (streams, frames processed) and every open stream."""
        return ShardedEngineStatistics(
            open_streams=len(self._streams),
            streams_opened=self._opened,
            shards=tuple(
                ShardStatistics(
                    index=s.index,
                    pid=s.pid,
                    state=s.state,
                    restarts=s.restarts,
                    open_streams=len(s.streams),
                    streams_opened=s.streams_opened,
                    frames_processed=s.frames_processed,
                    chunks_sent=s.chunks_sent,
                    ring_samples=s.ring.capacity,
                    ring_used_samples=s.ring.used,
                )
                for s in self._shards
            ),
            streams=tuple(s.statistics() for s in self._streams.values()),
        )

    # ------------------------------------------------------------- from streams

    def _forget(self, stream: ShardedStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]

    def _room_made(self) -> None:
        for stream in list(self._streams.values()):
            stream._signal.notify()
