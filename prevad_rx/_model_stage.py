"""The model stage: runs slices of many streams on a WorkerPool, exactly.

For each stream (a *lane*):

* **encode** (stateless, where the backend splits the model): every queued
  slice of every stream may be encoded on any worker, in any order, so the
  slices of one chunk are encoded in parallel; several slices (of any
  streams) share one encoder call;
* **decode** (recurrent): runs over a lane's slices strictly in ``seq`` order,
  one run at a time per lane, carrying the lane's state; consecutive encoded
  slices of a lane share a call, and lanes that are ready at the same time
  share one batched call;
* **emit**: a lane's results are emitted in ``seq`` order while the lane is
  still held, under one emission lock, so downstream sees a serialized,
  per-stream ordered sequence.

A stream id may be reused once its last slice has been submitted: the new
stream gets a new lane that waits (for decoding and emitting) until the old
lane has emitted everything, so the two never interleave downstream.

A backend error fails only the streams whose work failed: a batched call that
raises (any exception, ``SystemExit`` included) or returns malformed results is
retried item by item to find them, and after each failed call the worker resets
its backend (:meth:`Backend.reset`; one that cannot be reset is replaced). A
call that does not return within
its deadline (``timeout_factor`` times the audio it holds, at least
``min_timeout`` seconds) fails its streams with a
:class:`~prevad_rx.SliceTimeoutError`; the worker stuck in it is replaced, and
whatever the call returns later is ignored.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from prevad_rx._errors import (
    BackendError,
    ClosedError,
    ConfigError,
    SliceTimeoutError,
    StreamFailedError,
)
from prevad_rx._pool import NORMAL, URGENT, WorkerPool
from prevad_rx._types import AudioSlice, FrameProbabilities, StreamFailure
from prevad_rx.backends import Backend, DecodeRequest, ModelRequest, ModelResult

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["ModelStage", "StageStatistics"]

log = logging.getLogger("prevad_rx.stage")

Emit = Callable[[FrameProbabilities | StreamFailure], None]


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """A snapshot of the model stage: queues, in-flight work and counters."""

    streams: int
    queued_encode_slices: int
    encoded_waiting_slices: int
    decoding_streams: int
    in_flight_slices: int
    frames_processed: int
    encode_calls: int
    decode_calls: int
    decoded_streams: int
    failed_streams: int
    timed_out_calls: int

    @property
    def mean_streams_per_decode(self) -> float:
        return self.decoded_streams / self.decode_calls if self.decode_calls else 0.0


@dataclass(slots=True)
class _Work:
    slice: AudioSlice
    features: NDArray[np.float32] | None = None


@dataclass(slots=True, eq=False)
class _Lane:
    """One stream's place in the stage (one *generation* of a stream id)."""

    stream_id: str
    sample_rate: int
    encodable: bool
    state: NDArray[np.float32]
    next_seq: int = 0
    ready: dict[int, _Work] = field(default_factory=dict)
    queued: int = 0  # slices submitted and not yet emitted or dropped
    busy: bool = False  # a worker holds the lane (decoding or emitting)
    in_ready_queue: bool = False
    saw_last: bool = False  # upstream sends nothing more for this stream
    gone: bool = False  # finished or failed; its remaining work is dropped
    waiting_for: _Lane | None = None  # the previous generation, still emitting
    successor: _Lane | None = None
    error: StreamFailedError | None = None
    solo: bool = False  # after a timed-out batch: run alone until it succeeds

    def is_ready(self) -> bool:
        return (
            not self.busy
            and not self.gone
            and self.error is None
            and self.waiting_for is None
            and self.next_seq in self.ready
        )


@dataclass(eq=False)
class _Call:
    """A backend call in progress, watched for its deadline."""

    thread: int
    deadline: float
    timeout: float
    kind: str  # "encode" | "decode"
    # what the call holds: (lane, slice) for encode, (lane, run of works) for decode
    items: list[tuple[_Lane, Any]]
    abandoned: bool = False


class ModelStage:
    """Schedules the model work of many streams on a pool and emits ordered results.

    ``emit`` is called with items in per-stream order, never concurrently.
    ``on_complete`` is called, under the same serialization, once the stage has
    no work left after :meth:`complete`. ``on_release(n)`` reports ``n``
    submitted slices leaving the stage (emitted or dropped with their stream).
    """

    def __init__(
        self,
        pool: WorkerPool,
        emit: Emit,
        *,
        max_batch_frames: int = 512,
        on_complete: Callable[[], None] | None = None,
        on_release: Callable[[int], None] | None = None,
        timeout_factor: float | None = 4.0,
        min_timeout: float = 2.0,
    ) -> None:
        check_timeouts(timeout_factor, min_timeout)
        self._pool = pool
        self._timeout_factor = timeout_factor
        self._min_timeout = min_timeout
        self._calls: set[_Call] = set()
        self._watch = threading.Condition(threading.Lock())
        self._watchdog: threading.Thread | None = None
        self._timeouts = 0
        self._emit = emit
        self._on_complete = on_complete
        self._on_release = on_release
        self._max_batch_frames = max_batch_frames
        self._lock = threading.Lock()
        self._emit_lock = threading.RLock()
        self._lanes: dict[str, _Lane] = {}  # the newest generation of each stream id
        self._tombstones: set[str] = set()  # failed streams whose remaining slices are dropped
        self._encode_queue: deque[tuple[_Lane, AudioSlice, bool]] = deque()  # (.., solo)
        self._encode_queued_frames = 0
        self._ready_lanes: deque[_Lane] = deque()
        # Tasks queued or running on the pool, at most one per worker for each kind: a task
        # takes its share of the queue and re-queues itself while work remains, so bursts
        # are batched instead of waking a worker per slice.
        self._encode_tasks = 0
        self._decode_tasks = 0
        self._in_flight = 0
        self._completing = False
        self._terminated = False
        backend = pool.probe()
        self._initial_state = backend.initial_state()
        self._encodable = {rate: backend.can_encode(rate) for rate in backend.sample_rates}
        self._frames = 0
        self._encode_calls = 0
        self._decode_calls = 0
        self._decoded_streams = 0
        self._failed = 0

    # ---------------------------------------------------------------- inputs

    def submit(self, item: AudioSlice) -> None:
        """Queue one slice; slices of a stream must arrive in ``seq`` order."""
        with self._lock:
            if self._terminated:
                return
            sid = item.stream_id
            if sid in self._tombstones:
                if item.is_last:
                    self._tombstones.discard(sid)
                return
            lane = self._lanes.get(sid)
            if lane is None or lane.saw_last:
                lane = self._new_lane(sid, item.sample_rate, predecessor=lane)
            lane.queued += 1
            lane.saw_last = item.is_last
            self._in_flight += 1
            if lane.encodable and item.num_frames:
                self._encode_queue.append((lane, item, False))
                self._encode_queued_frames += item.num_frames
            else:
                features = np.zeros((0, 0), np.float32) if lane.encodable else None
                lane.ready[item.seq] = _Work(item, features)
                self._mark_if_ready(lane)
            encode, decode = self._wanted_tasks()
        self._start_tasks(encode, decode)

    def fail_stream(self, failure: StreamFailure) -> None:
        """An upstream failure: drop the stream's pending work, forward the failure in order."""
        with self._lock:
            if self._terminated:
                return
            lane = self._lanes.get(failure.stream_id)
            if lane is None or lane.saw_last:
                lane = self._new_lane(failure.stream_id, 0, predecessor=lane)
            lane.saw_last = True
            if lane.error is None:
                lane.error = failure.error
        self._flush_failure(lane)

    def complete(self) -> None:
        """No more input: call ``on_complete`` once all in-flight work is emitted."""
        with self._lock:
            self._completing = True
            done = self._in_flight == 0 and not self._terminated
            if done:
                self._terminated = True
        if done:
            self._finish()

    def terminate(self) -> None:
        """Stop: drop all queued work and emit nothing more."""
        with self._lock:
            self._terminated = True
            self._lanes.clear()
            self._encode_queue.clear()
            self._ready_lanes.clear()
        self._stop_watchdog()

    def statistics(self) -> StageStatistics:
        with self._lock:
            lanes = list(self._lanes.values())
            return StageStatistics(
                streams=len(lanes),
                queued_encode_slices=len(self._encode_queue),
                encoded_waiting_slices=sum(len(lane.ready) for lane in lanes),
                decoding_streams=sum(lane.busy for lane in lanes),
                in_flight_slices=self._in_flight,
                frames_processed=self._frames,
                encode_calls=self._encode_calls,
                decode_calls=self._decode_calls,
                decoded_streams=self._decoded_streams,
                failed_streams=self._failed,
                timed_out_calls=self._timeouts,
            )

    # ------------------------------------------------------------- scheduling

    def _new_lane(self, sid: str, sample_rate: int, predecessor: _Lane | None) -> _Lane:
        """Start a stream's lane (lock held); a still-emitting predecessor goes first."""
        lane = _Lane(
            sid,
            sample_rate,
            self._encodable.get(sample_rate, False),
            self._initial_state.copy(),
        )
        if predecessor is not None and not predecessor.gone:
            lane.waiting_for = predecessor
            predecessor.successor = lane
        self._lanes[sid] = lane
        return lane

    def _schedule(self, task: Callable[[Backend], None], priority: int) -> None:
        try:
            self._pool.submit(task, priority)
        except ClosedError as exc:
            self._fail_everything(exc)

    def _wanted_tasks(self) -> tuple[int, int]:
        """Count the encode/decode tasks to start for the queued work (lock held)."""
        workers = self._pool.num_workers
        encode = decode = 0
        if self._encode_queue and self._encode_tasks < workers:
            encode = min(workers - self._encode_tasks, len(self._encode_queue))
            self._encode_tasks += encode
        if self._ready_lanes and self._decode_tasks < workers:
            decode = min(workers - self._decode_tasks, len(self._ready_lanes))
            self._decode_tasks += decode
        return encode, decode

    def _start_tasks(self, encode: int, decode: int) -> None:
        for _ in range(decode):
            self._schedule(self._run_decode, URGENT)
        for _ in range(encode):
            self._schedule(self._run_encode, NORMAL)

    def _mark_if_ready(self, lane: _Lane) -> None:
        """Queue the lane for decoding if it can run now (call with the lock held)."""
        if lane.is_ready() and not lane.in_ready_queue:
            lane.in_ready_queue = True
            self._ready_lanes.append(lane)

    def _share(self, total: int) -> int:
        """How much of ``total`` queued work one task takes: enough to batch, not so much
        that other workers sit idle."""
        return max(1, math.ceil(total / self._pool.num_workers))

    # ----------------------------------------------------------------- encode

    def _run_encode(self, backend: Backend) -> None:
        with self._lock:
            if self._terminated:
                self._encode_tasks -= 1
                return
            budget = min(self._max_batch_frames, self._share(self._encode_queued_frames))
            batch: list[tuple[_Lane, AudioSlice]] = []
            frames = 0
            while self._encode_queue:
                lane, item, solo = self._encode_queue[0]
                if batch and (solo or frames + item.num_frames > budget):
                    break
                self._encode_queue.popleft()
                self._encode_queued_frames -= item.num_frames
                if lane.gone or lane.error is not None:
                    continue
                batch.append((lane, item))
                frames += item.num_frames
                if solo:
                    break  # retried alone after a timed-out batch
            if not batch:
                self._encode_tasks -= 1
                return
        slices = [item for _, item in batch]
        call = self._begin_call(
            "encode", batch, frames * slices[0].frame_samples / slices[0].sample_rate
        )
        outcomes = self._call_isolated(
            backend, slices, lambda items: self._encode_call(backend, items)
        )
        if not self._end_call(call):
            return  # timed out: its streams have failed and a new worker took over
        failed: list[_Lane] = []
        with self._lock:
            self._encode_calls += 1
            for (lane, item), outcome in zip(batch, outcomes, strict=True):
                if lane.gone or lane.error is not None:
                    continue
                if isinstance(outcome, BaseException):
                    lane.error = _slice_error("encoding", item, outcome)
                    failed.append(lane)
                    continue
                lane.ready[item.seq] = _Work(item, outcome)
                self._mark_if_ready(lane)
            again = bool(self._encode_queue) and not self._terminated
            if not again:
                self._encode_tasks -= 1
            encode, decode = self._wanted_tasks()
        for lane in failed:
            self._flush_failure(lane)
        self._start_tasks(encode, decode)
        if again:  # re-queued behind any decode work, so decoding is never starved
            self._schedule(self._run_encode, NORMAL)

    def _encode_call(
        self, backend: Backend, items: Sequence[AudioSlice]
    ) -> list[NDArray[np.float32]]:
        windows = [item.windows for item in items]
        features = backend.encode(
            windows[0] if len(windows) == 1 else np.concatenate(windows), items[0].sample_rate
        )
        total = sum(w.shape[0] for w in windows)
        if not (
            isinstance(features, np.ndarray) and features.ndim == 2 and features.shape[0] == total
        ):
            shape = getattr(features, "shape", type(features).__name__)
            raise BackendError(
                f"backend {self._pool.backend_name!r}: encode returned {shape} "
                f"for {total} frames, expected [{total}, dim]"
            )
        bounds = np.cumsum([0] + [w.shape[0] for w in windows])
        return [features[bounds[k] : bounds[k + 1]] for k in range(len(items))]

    # ----------------------------------------------------------------- decode

    def _run_decode(self, backend: Backend) -> None:
        runs: list[tuple[_Lane, list[_Work]]] = []
        with self._lock:
            if self._terminated:
                self._decode_tasks -= 1
                return
            take = self._share(len(self._ready_lanes))
            while self._ready_lanes and len(runs) < take:
                if runs and self._ready_lanes[0].solo:
                    break
                lane = self._ready_lanes.popleft()
                lane.in_ready_queue = False
                if not lane.is_ready():
                    continue
                lane.busy = True
                works: list[_Work] = []
                frames = 0
                while lane.next_seq + len(works) in lane.ready and frames < self._max_batch_frames:
                    work = lane.ready.pop(lane.next_seq + len(works))
                    works.append(work)
                    frames += work.slice.num_frames
                runs.append((lane, works))
                if lane.solo:
                    break  # retried alone after a timed-out batch
            if not runs:
                self._decode_tasks -= 1
                return
        call = self._begin_call(
            "decode",
            list(runs),
            sum(
                w.slice.num_frames * w.slice.frame_samples / w.slice.sample_rate
                for _, works in runs
                for w in works
            ),
        )
        outcomes = self._call_isolated(
            backend, runs, lambda batch: self._decode_call(backend, batch)
        )
        if not self._end_call(call):
            return
        with self._lock:
            self._decode_calls += 1
            self._decoded_streams += len(runs)
        for (lane, works), outcome in zip(runs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                with self._lock:
                    if lane.error is None:
                        lane.error = _slice_error("decoding", works[0].slice, outcome)
                    lane.busy = False
                    done = self._release(len(works), lane)
                self._flush_failure(lane)
                if done:
                    self._finish()
                continue
            self._emit_run(lane, works, outcome)
        with self._lock:
            again = bool(self._ready_lanes) and not self._terminated
            if not again:
                self._decode_tasks -= 1
            encode, decode = self._wanted_tasks()
        self._start_tasks(encode, decode)
        if again:
            self._schedule(self._run_decode, URGENT)

    def _decode_call(
        self, backend: Backend, runs: Sequence[tuple[_Lane, list[_Work]]]
    ) -> list[ModelResult]:
        decode_idx = [i for i, (lane, _) in enumerate(runs) if lane.encodable]
        process_idx = [i for i, (lane, _) in enumerate(runs) if not lane.encodable]
        results: list[ModelResult | None] = [None] * len(runs)
        if decode_idx:
            requests = [
                DecodeRequest(
                    _concat([w.features for w in runs[i][1] if w.features is not None]),
                    runs[i][0].state,
                    runs[i][0].sample_rate,
                )
                for i in decode_idx
            ]
            decoded = self._counted(backend.decode(requests), len(requests))
            for i, result in zip(decode_idx, decoded, strict=True):
                results[i] = result
        if process_idx:
            model_requests = [
                ModelRequest(
                    _concat([w.slice.windows for w in runs[i][1]]),
                    runs[i][0].state,
                    runs[i][0].sample_rate,
                )
                for i in process_idx
            ]
            processed = self._counted(backend.process(model_requests), len(model_requests))
            for i, result in zip(process_idx, processed, strict=True):
                results[i] = result
        return self._checked(results, [sum(w.slice.num_frames for w in works) for _, works in runs])

    def _counted(self, results: object, expected: int) -> list[Any]:
        """The backend's results as a list, one per request, or a :class:`BackendError`."""
        if not isinstance(results, Sequence) or len(results) != expected:
            count = len(results) if isinstance(results, Sequence) else type(results).__name__
            raise BackendError(
                f"backend {self._pool.backend_name!r} returned {count} results "
                f"for {expected} requests"
            )
        return list(results)

    def _checked(self, results: Sequence[object], frames: Sequence[int]) -> list[ModelResult]:
        """A call's results, checked in full: for ``frames[i]`` frames, probabilities a float
        array of that shape, finite and within [0, 1]; the state finite and of the initial
        state's shape and dtype. Anything else raises :class:`BackendError`. The value checks
        run once over the whole call (a failure is then narrowed down by ``_call_isolated``)."""
        name = self._pool.backend_name
        expected = self._initial_state
        checked: list[ModelResult] = []
        for result, n in zip(results, frames, strict=True):
            probabilities = getattr(result, "probabilities", None)
            state = getattr(result, "state", None)
            if not isinstance(probabilities, np.ndarray) or not isinstance(state, np.ndarray):
                raise BackendError(
                    f"backend {name!r} returned {type(result).__name__}, expected a "
                    "ModelResult of two numpy arrays"
                )
            if probabilities.shape != (n,):
                raise BackendError(
                    f"backend {name!r} returned {probabilities.shape} probabilities for {n} frames"
                )
            if probabilities.dtype.kind != "f":
                raise BackendError(
                    f"backend {name!r} returned probabilities of dtype {probabilities.dtype}, "
                    "expected floats"
                )
            if state.shape != expected.shape or state.dtype != expected.dtype:
                raise BackendError(
                    f"backend {name!r} returned a state of shape {state.shape} and dtype "
                    f"{state.dtype}, expected {expected.shape} {expected.dtype}"
                )
            if probabilities.dtype != np.float32:
                probabilities = probabilities.astype(np.float32)
            checked.append(ModelResult(probabilities, state))
        if not checked:
            return checked
        every = [r.probabilities for r in checked]
        values: Any = every[0] if len(every) == 1 else np.concatenate(every)
        # NaN fails both comparisons, so this one test also rules out NaN and Inf
        if values.size:
            low, high = float(values.min()), float(values.max())
            if not (low >= 0.0 and high <= 1.0):
                if not np.isfinite(values).all():
                    raise BackendError(f"backend {name!r} returned non-finite probabilities")
                raise BackendError(
                    f"backend {name!r} returned probabilities outside [0, 1] "
                    f"(min {low:.4g}, max {high:.4g})"
                )
        states = (
            checked[0].state if len(checked) == 1 else np.concatenate([r.state for r in checked])
        )
        if not np.isfinite(states).all():
            raise BackendError(f"backend {name!r} returned a non-finite state")
        return checked

    def _emit_run(self, lane: _Lane, works: list[_Work], result: ModelResult) -> None:
        last = works[-1].slice.is_last
        with self._lock:  # bookkeeping first: the lane stays held (busy) until emitted
            lane.solo = False
            lane.state = result.state
            lane.next_seq += len(works)
            if last:
                self._retire(lane)
        probabilities = np.asarray(result.probabilities, dtype=np.float32)
        offset = 0
        with self._emit_lock:
            for work in works:
                item = work.slice
                n = item.num_frames
                if not self._terminated:
                    self._emit(
                        FrameProbabilities(
                            stream_id=item.stream_id,
                            seq=item.seq,
                            start_frame=item.start_frame,
                            probabilities=probabilities[offset : offset + n],
                            sample_rate=item.sample_rate,
                            end_sample=item.end_sample,
                            is_last=item.is_last,
                            audio=item.audio,
                        )
                    )
                offset += n
        failed_successor = None
        with self._lock:
            lane.busy = False
            self._frames += offset
            if last:
                failed_successor = self._release_successor(lane)
            else:
                self._mark_if_ready(lane)
            pending_failure = lane.error is not None and not lane.gone
            done = self._release(len(works), lane)
            encode, decode = self._wanted_tasks()
        if pending_failure:
            self._flush_failure(lane)
        if failed_successor is not None:
            self._flush_failure(failed_successor)
        self._start_tasks(encode, decode)
        if done:
            self._finish()

    # --------------------------------------------------------------- failures

    def _call_isolated(
        self, backend: Backend, items: Sequence[Any], call: Callable[[Any], Any]
    ) -> list[Any]:
        """``call(items)``; if it raises, call each item alone so only the faulty ones fail.

        Any exception counts, ``SystemExit`` and other ``BaseException`` included: it
        fails the items' streams, never the worker thread.
        """
        try:
            return list(call(items))
        except BaseException as exc:  # noqa: BLE001 - isolated below
            self._recover(backend)
            if len(items) == 1:
                return [exc]
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.extend(call([item]))
            except BaseException as exc:  # noqa: BLE001 - reported as the stream's failure
                self._recover(backend)
                outcomes.append(exc)
        return outcomes

    def _recover(self, backend: Backend) -> None:
        """After a failed call, let the worker's backend drop whatever the call left in its
        caches; a backend that cannot be reset is replaced by a fresh one."""
        try:
            backend.reset()
        except BaseException:
            log.exception(
                "backend %r could not be reset after a failed call; replacing its worker",
                self._pool.backend_name,
            )
            self._pool.replace_worker(threading.get_ident())

    def _flush_failure(self, lane: _Lane) -> None:
        """Emit a failed lane's failure once no worker holds it, then retire the lane.

        Until the stream's last slice arrives, its further slices are dropped.
        """
        with self._lock:
            if lane.busy or lane.gone or lane.error is None or lane.waiting_for is not None:
                return  # whoever releases the lane flushes the failure
            lane.busy = True
            error = lane.error
            self._retire(lane)
            if not lane.saw_last:
                self._tombstones.add(lane.stream_id)
            self._encode_queue = deque(e for e in self._encode_queue if e[0] is not lane)
            self._encode_queued_frames = sum(e[1].num_frames for e in self._encode_queue)
            lane.ready.clear()
            self._failed += 1
            done = self._release(lane.queued, lane)
        with self._emit_lock:
            if not self._terminated:
                self._emit(StreamFailure(lane.stream_id, error))
        with self._lock:
            lane.busy = False
            failed_successor = self._release_successor(lane)
            encode, decode = self._wanted_tasks()
        if failed_successor is not None:
            self._flush_failure(failed_successor)
        self._start_tasks(encode, decode)
        if done:
            self._finish()

    def _retire(self, lane: _Lane) -> None:
        """The lane takes no more work (lock held)."""
        lane.gone = True
        if self._lanes.get(lane.stream_id) is lane:
            del self._lanes[lane.stream_id]

    def _release_successor(self, lane: _Lane) -> _Lane | None:
        """Let the next generation of the stream id decode and emit (lock held).

        Returns the successor if it failed while waiting (the caller flushes that
        failure once the lock is released).
        """
        successor = lane.successor
        if successor is None:
            return None
        lane.successor = None
        successor.waiting_for = None
        if successor.error is not None:
            return successor
        self._mark_if_ready(successor)
        return None

    def _release(self, count: int, lane: _Lane) -> bool:
        """Account for ``count`` slices leaving the stage (lock held); True if the stage is done."""
        lane.queued -= count
        self._in_flight -= count
        if self._on_release is not None and count:
            self._on_release(count)
        if self._completing and self._in_flight == 0 and not self._terminated:
            self._terminated = True
            return True
        return False

    def _finish(self) -> None:
        self._stop_watchdog()
        if self._on_complete is not None:
            with self._emit_lock:
                self._on_complete()

    # --------------------------------------------------------------- deadlines

    def _begin_call(
        self, kind: str, items: Sequence[tuple[_Lane, Any]], audio_seconds: float
    ) -> _Call | None:
        """Register a backend call with its deadline (None: timeouts are off)."""
        if self._timeout_factor is None:
            return None
        timeout = max(self._min_timeout, self._timeout_factor * audio_seconds)
        call = _Call(threading.get_ident(), time.monotonic() + timeout, timeout, kind, list(items))
        with self._watch:
            self._calls.add(call)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch_calls, name="prevad-rx-watchdog", daemon=True
                )
                self._watchdog.start()
            self._watch.notify()
        return call

    def _end_call(self, call: _Call | None) -> bool:
        """The call returned; False if it had already been given up (drop its results)."""
        if call is None:
            return True
        with self._watch:
            self._calls.discard(call)
            return not call.abandoned

    def _watch_calls(self) -> None:
        while True:
            with self._watch:
                while not self._terminated:
                    now = time.monotonic()
                    expired = [c for c in self._calls if c.deadline <= now]
                    if expired:
                        for call in expired:
                            call.abandoned = True
                            self._calls.discard(call)
                        break
                    nearest = min((c.deadline for c in self._calls), default=None)
                    self._watch.wait(None if nearest is None else nearest - now)
                else:
                    return
            for call in expired:
                self._give_up(call)

    def _give_up(self, call: _Call) -> None:
        """A call overran its deadline: replace its worker, and fail its stream -- or, when
        it held several streams, run each of them again alone (only the culprit hangs again;
        the others' states were not touched, so rerunning them is exact)."""
        log.error(
            "%s call on %d stream(s) exceeded %.1f s; replacing the worker",
            call.kind,
            len(call.items),
            call.timeout,
        )
        failed: list[_Lane] = []
        with self._lock:
            self._timeouts += 1
            if call.kind == "encode":
                self._encode_tasks -= 1
            else:
                self._decode_tasks -= 1
            alone = len(call.items) == 1
            for lane, held in reversed(call.items):
                if call.kind == "decode":
                    lane.busy = False
                if lane.gone or lane.error is not None:
                    continue
                if alone:
                    first = held[0].slice if call.kind == "decode" else held
                    lane.error = SliceTimeoutError(
                        f"stream {first.stream_id!r}: {call.kind} of slice {first.seq} did "
                        f"not finish within {call.timeout:.1f} s",
                        first.stream_id,
                        first.seq,
                    )
                    failed.append(lane)
                elif call.kind == "decode":
                    for work in held:
                        lane.ready[work.slice.seq] = work
                    lane.solo = True
                    self._mark_if_ready(lane)
                else:
                    self._encode_queue.appendleft((lane, held, True))
                    self._encode_queued_frames += held.num_frames
            encode, decode = self._wanted_tasks()
        self._pool.replace_worker(call.thread)
        for lane in failed:
            self._flush_failure(lane)
        self._start_tasks(encode, decode)

    def _stop_watchdog(self) -> None:
        with self._watch:
            watchdog = self._watchdog
            self._watch.notify_all()
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join()

    def _fail_everything(self, exc: BaseException) -> None:
        with self._lock:
            lanes = list(self._lanes.values())
            for lane in lanes:
                if lane.error is None:
                    lane.error = StreamFailedError(
                        f"stream {lane.stream_id!r} stopped: {exc}", lane.stream_id
                    )
        for lane in lanes:
            self._flush_failure(lane)


def check_timeouts(timeout_factor: object, min_timeout: object) -> None:
    """Raise :class:`ConfigError` unless the deadline settings are usable."""
    if timeout_factor is not None and not _positive_number(timeout_factor):
        raise ConfigError(
            f"slice_timeout_factor must be a finite number > 0 or None, got {timeout_factor!r}"
        )
    if not _positive_number(min_timeout):
        raise ConfigError(f"min_slice_timeout must be a finite number > 0, got {min_timeout!r}")


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _concat(arrays: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    """Concatenate along frames, skipping empty runs (which may lack the column shape)."""
    nonempty = [a for a in arrays if a.shape[0]]
    if not nonempty:
        return arrays[0] if arrays else np.zeros((0, 0), np.float32)
    return nonempty[0] if len(nonempty) == 1 else np.concatenate(nonempty)


def _slice_error(stage: str, item: AudioSlice, cause: BaseException) -> StreamFailedError:
    error = StreamFailedError(
        f"stream {item.stream_id!r}: {stage} slice {item.seq} failed: {cause}",
        item.stream_id,
        item.seq,
    )
    error.__cause__ = cause
    return error
