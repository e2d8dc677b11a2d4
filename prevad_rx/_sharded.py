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

The parts: :mod:`prevad_rx._sharded_stream` (a stream on the user's loop),
:mod:`prevad_rx._shard_handle` (the user's side of one shard process: its pipes,
ring and streams), :mod:`prevad_rx._shard_worker` (what runs in the shard), and
this engine, which places streams, watches and replaces shards, and gathers their
events and statistics. They call each other through small records of callables
(``ShardHost``, ``ShardedStreamHost``, ``ShardedStreamPort``), not private members.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
import uuid
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from reactivex import Observable, abc

from prevad_rx._audio import model_sample_rate, validate_sample_rate
from prevad_rx._config import VADConfig
from prevad_rx._engine import AnyOperator, VADEngine
from prevad_rx._errors import (
    BackendError,
    ClosedError,
    ConfigError,
    DuplicateStreamError,
    StreamFailedError,
    UnsupportedSampleRateError,
)
from prevad_rx._fanout import EventFanout, EventIterator
from prevad_rx._loop import require_loop
from prevad_rx._shard_handle import ShardHandle, ShardHost, ShardState
from prevad_rx._sharded_stream import ShardedStream, ShardedStreamHost, ShardedStreamPort, port_of
from prevad_rx._stream import BackpressurePolicy, StreamStatistics, check_policy
from prevad_rx._types import SpeechEvent
from prevad_rx.operators import DEFAULT_FRAMES_PER_SLICE

__all__ = ["ShardStatistics", "ShardedEngineStatistics", "ShardedVADEngine"]

log = logging.getLogger("prevad_rx.shards")

Placement = Literal["least_loaded", "hash"]


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
        backpressure: ``"wait"``, ``"drop_oldest"`` or ``"error"`` (see
            :meth:`ShardedStream.push`); streams may override it.
        max_queued_chunks: chunks a ``"drop_oldest"`` stream holds back, here and in
            its shard, before dropping the oldest.
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
        backpressure: BackpressurePolicy = "wait",
        max_queued_chunks: int = 64,
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
        check_policy(backpressure)
        self._max_queued = _check_int("max_queued_chunks", max_queued_chunks)
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
            "max_queued_chunks": max_queued_chunks,
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
        self._backpressure: BackpressurePolicy = backpressure
        self._start_timeout = float(start_timeout)
        self._shard_timeout = None if shard_timeout is None else float(shard_timeout)
        self._watchdog: asyncio.TimerHandle | None = None
        self._use_uvloop = use_uvloop
        self._shards: list[ShardHandle] = []
        self._retired: list[ShardHandle] = []
        self._reaping: set[asyncio.Task[None]] = set()
        self._streams: dict[str, ShardedStreamPort] = {}
        self._shard_host: ShardHost | None = None  # made once the loop is known
        self._stream_host = ShardedStreamHost(
            publish=self._publish,
            fail=self._fail_event,
            events_backlog=self._events_backlog,
            forget=self._forget,
            max_pending_chunks=self._max_pending_chunks,
            max_buffered_events=self._max_buffered,
            max_queued_chunks=self._max_queued,
        )
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

    def _new_shard(self, index: int, restarts: int) -> ShardHandle:
        if self._shard_host is None:
            self._shard_host = ShardHost(
                loop=self._require_started_loop(),
                options=self._options,
                use_uvloop=self._use_uvloop,
                cpus=self._cpus_for,
                rates_known=self._rates_known,
                replace=self._replace,
            )
        return ShardHandle(self._shard_host, index, restarts, self._ring_samples)

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
                self._shards.append(self._new_shard(index, 0))
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(s.ready) for s in self._shards)),
                self._start_timeout,
            )
        except BaseException as exc:
            self._state = "closing"
            await asyncio.shield(self._stop_shards())
            self._state = "closed"
            self._fanout.complete()  # iterators and observers made before start() end
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
            self._fanout.complete()  # iterators and observers made before start() end
            return
        require_loop(self._loop, "ShardedVADEngine.close()")
        if self._state == "closed" and self._shutdown is None:
            return  # start() failed and stopped the shards
        if self._shutdown is None:
            self._shutdown = self._require_started_loop().create_task(self._close_all())
        await asyncio.shield(self._shutdown)

    async def _close_all(self) -> None:
        self._state = "closing"
        streams = [port.stream for port in self._streams.values()]
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
        for port in list(self._streams.values()):  # only if a shard did not answer
            sid = port.stream.stream_id
            port.fail(
                StreamFailedError(f"stream {sid!r}: the engine closed before the stream ended", sid)
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
        return {sid: port.stream for sid, port in self._streams.items()}

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
        backpressure: BackpressurePolicy | None = None,
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
        if backpressure is not None:
            check_policy(backpressure)
        shard = self._place(stream_id)
        slot = shard.next_slot
        shard.next_slot += 1
        stream = ShardedStream(
            self._stream_host,
            shard,
            slot,
            stream_id,
            rate,
            config or self.config,
            keep_audio=keep_audio,
            backpressure=backpressure or self._backpressure,
        )
        port = port_of(stream)
        shard.streams[slot] = port
        shard.streams_opened += 1
        shard.send(
            (
                "open",
                slot,
                stream_id,
                rate,
                stream.config,
                keep_probabilities,
                keep_audio,
                # the user's side applies "wait" and "error"; the shard's stream waits
                "drop_oldest" if stream.backpressure == "drop_oldest" else "wait",
            )
        )
        self._streams[stream_id] = port
        self._opened += 1
        return stream

    def _place(self, stream_id: str) -> ShardHandle:
        if self._placement == "hash":
            index = zlib.crc32(stream_id.encode()) % self._num_shards
        else:
            index = min(range(self._num_shards), key=lambda i: len(self._shards[i].streams))
        shard = self._shards[index]
        if shard.state == "failed":  # its replacement failed to start: try again
            shard = self._replace(shard)
        return shard

    def _replace(self, shard: ShardHandle) -> ShardHandle:
        """Start a new process in a failed shard's place (while the engine runs)."""
        if self._state != "running" or self._shards[shard.index] is not shard:
            return shard
        self._retired.append(shard)
        reaping = self._require_started_loop().create_task(shard.stop(2.0))  # no zombie
        self._reaping.add(reaping)
        reaping.add_done_callback(self._reaping.discard)
        reaping.add_done_callback(lambda _: self._retired.remove(shard))
        fresh = self._shards[shard.index] = self._new_shard(shard.index, shard.restarts + 1)
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
            streams=tuple(port.stream.statistics() for port in self._streams.values()),
        )

    # ------------------------------- the streams' and shards' hosts (on the loop)

    def _publish(self, event: SpeechEvent) -> None:
        self._fanout.publish(event)

    def _fail_event(self, error: StreamFailedError) -> None:
        self._fanout.fail(error)

    def _events_backlog(self) -> int:
        return self._fanout.backlog

    def _forget(self, stream: ShardedStream) -> None:
        port = self._streams.get(stream.stream_id)
        if port is not None and port.stream is stream:
            del self._streams[stream.stream_id]

    def _rates_known(self, rates: frozenset[int]) -> None:
        self._sample_rates = rates

    def _room_made(self) -> None:
        for port in list(self._streams.values()):
            port.room_changed()
