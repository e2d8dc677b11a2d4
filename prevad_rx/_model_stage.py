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
call that does not return within its deadline (``timeout_factor`` times the
audio it holds, at least ``min_timeout`` seconds) fails its streams with a
:class:`~prevad_rx.SliceTimeoutError`; the worker stuck in it is replaced, and
whatever the call returns later is ignored.

Input: :class:`~prevad_rx.AudioSlice` (in ``seq`` order per stream) and
:class:`~prevad_rx.StreamFailure` items. Output: :class:`~prevad_rx.FrameProbabilities`
and :class:`~prevad_rx.StreamFailure`, per-stream ordered, one at a time.

Four parts: :mod:`prevad_rx._lanes` keeps the books and picks the batches
(no threads, no locks), :mod:`prevad_rx._model_calls` calls the backend and
checks what it returns, :mod:`prevad_rx._watchdog` enforces the deadlines, and
:class:`ModelStage`, the driver, runs them on the pool: it holds the lock
around the books, calls the backend with no lock held, and emits under the
emission lock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np

from prevad_rx import _model_calls as calls
from prevad_rx._errors import ClosedError, ConfigError
from prevad_rx._lanes import (
    Batch,
    DecodeBatch,
    Followup,
    Lane,
    LaneTable,
    NotRun,
    StageStatistics,
    Work,
)
from prevad_rx._pool import NORMAL, URGENT, WorkerPool
from prevad_rx._types import AudioSlice, FrameProbabilities, StreamFailure
from prevad_rx._watchdog import Watchdog, WatchedCall
from prevad_rx.backends import Backend, ModelResult

__all__ = ["ModelStage", "StageStatistics"]

log = logging.getLogger("prevad_rx.stage")

Emit = Callable[[FrameProbabilities | StreamFailure], None]
Outcomes = TypeVar("Outcomes")


class ModelStage:
    """Schedules the model work of many streams on a pool and emits ordered results.

    ``emit`` is called with items in per-stream order, never concurrently.
    ``on_complete`` is called, under the same serialization, once the stage has
    no work left after :meth:`complete`. ``on_release(n)`` reports ``n``
    submitted slices leaving the stage (emitted or dropped with their stream).

    The bookkeeping lives in a :class:`~prevad_rx._lanes.LaneTable`, read and
    changed only under ``_lock``; the stage calls the backend with no lock
    held and emits under ``_emit_lock``. Every step ends with the table's
    :class:`~prevad_rx._lanes.Followup`, carried out by :meth:`_proceed`.
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
        self._emit = emit
        self._on_complete = on_complete
        self._timeout_factor = timeout_factor
        self._min_timeout = min_timeout
        self._watchdog: Watchdog[Batch] | None = (
            None if timeout_factor is None else Watchdog(self._give_up)
        )
        self._lock = threading.Lock()
        self._emit_lock = threading.RLock()
        backend = pool.probe()
        self._initial_state = backend.initial_state()
        self._table = LaneTable(
            initial_state=self._initial_state,
            encodable={rate: backend.can_encode(rate) for rate in backend.sample_rates},
            workers=pool.num_workers,
            max_batch_frames=max_batch_frames,
            on_release=on_release,
        )

    # ---------------------------------------------------------------- inputs

    def submit(self, item: AudioSlice) -> None:
        """Queue one slice; slices of a stream must arrive in ``seq`` order."""
        with self._lock:
            encode, decode = self._table.submit(item)
        if encode or decode:
            self._start_tasks(encode, decode)

    def fail_stream(self, failure: StreamFailure) -> None:
        """An upstream failure: drop the stream's pending work, forward the failure in order."""
        with self._lock:
            lane = self._table.fail(failure)
        if lane is not None:
            self._flush_failure(lane)

    def complete(self) -> None:
        """No more input: call ``on_complete`` once all in-flight work is emitted."""
        with self._lock:
            done = self._table.complete()
        if done:
            self._finish()

    def terminate(self) -> None:
        """Stop: drop all queued work and emit nothing more."""
        with self._lock:
            self._table.terminate()
        self._stop_watchdog()

    def statistics(self) -> StageStatistics:
        with self._lock:
            return self._table.statistics()

    # ------------------------------------------------------------ the tasks

    def _run_encode(self, backend: Backend) -> None:
        with self._lock:
            batch = self._table.next_encode_batch()
        if batch is None:
            return
        recovery = _Recovery(backend, self._pool)
        outcomes = self._watched(
            batch, partial(calls.encode_batch, backend, batch, self._pool.backend_name, recovery)
        )
        if outcomes is None:
            return  # timed out: its streams have been dealt with and a new worker took over
        with self._lock:
            followup = self._table.encoded(batch, outcomes)
        if (
            followup.decode == 1
            and not followup.encode
            and not followup.again
            and not recovery.gave_up
        ):
            # The one decode task this asks for runs here, now: on a quiet stage (live
            # packets) the features need not wake another worker, whose thread would
            # only wait for this one's interpreter lock.
            followup.decode = 0
            self._proceed(followup)
            self._run_decode(backend)
            return
        self._proceed(followup, self._run_encode, NORMAL)  # re-queued behind decode work

    def _run_decode(self, backend: Backend) -> None:
        """Decode batches while lanes are ready, on this worker (decoding is the most
        urgent work, and another worker would first have to take the lock over)."""
        recovery = _Recovery(backend, self._pool)
        while True:
            with self._lock:
                batch = self._table.next_decode_batch()
            if batch is None:
                return
            decoded = self._watched(
                batch,
                partial(
                    calls.decode_batch,
                    backend,
                    batch,
                    self._pool.backend_name,
                    self._initial_state,
                    recovery,
                ),
            )
            if decoded is None:
                return
            with self._lock:
                self._table.decoded(batch)
            self._deliver(batch, decoded)
            with self._lock:
                followup = self._table.decode_task_step()
            again, followup.again = followup.again, False
            self._proceed(followup)
            if not again:
                return
            if recovery.gave_up:  # its backend is given up: another worker goes on
                self._schedule(self._run_decode, URGENT)
                return

    def _deliver(self, batch: DecodeBatch, outcomes: list[ModelResult | BaseException]) -> None:
        """Emit each run's results (or its failure), lane by lane, in the batch's order.

        The successful runs are booked, emitted and released together: one pass under
        the lock each side of the emission, not one per lane (a live batch holds one
        packet of each of many streams)."""
        done: list[tuple[Lane, list[Work], ModelResult]] = []
        for (lane, works), outcome in zip(batch.runs, outcomes, strict=True):
            if isinstance(outcome, NotRun):
                with self._lock:
                    followup = self._table.run_not_run(lane, works)
                self._proceed(followup)
            elif isinstance(outcome, BaseException):
                with self._lock:
                    followup = self._table.run_failed(lane, works, outcome)
                self._proceed(followup)
            else:
                done.append((lane, works, outcome))
        if not done:
            return
        with self._lock:  # bookkeeping first: the lanes stay held (busy) until emitted
            for lane, works, result in done:
                self._table.run_decoded(lane, works, result)
        emitted: list[tuple[Lane, list[Work], int]] = []
        with self._emit_lock:
            for lane, works, result in done:
                emitted.append((lane, works, self._emit_run(works, result)))
        with self._lock:
            followup = self._table.runs_emitted(emitted)
        self._proceed(followup)

    def _emit_run(self, works: list[Work], result: ModelResult) -> int:
        """Emit one lane's run (under the emission lock); returns its frames."""
        probabilities = np.asarray(result.probabilities, dtype=np.float32)
        offset = 0
        for work in works:
            item = work.slice
            n = item.num_frames
            if not self._table.stopped:
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
        return offset

    def _flush_failure(self, lane: Lane) -> None:
        """Emit a failed lane's failure once no worker holds it, then retire the lane.

        Until the stream's last slice arrives, its further slices are dropped.
        """
        with self._lock:
            error = self._table.begin_flush(lane)
        if error is None:
            return  # whoever releases the lane flushes the failure
        with self._emit_lock:
            if not self._table.stopped:
                self._emit(StreamFailure(lane.stream_id, error))
        with self._lock:
            followup = self._table.end_flush(lane)
        self._proceed(followup)

    # ------------------------------------------------------------ the tail

    def _proceed(
        self,
        followup: Followup,
        again: Callable[[Backend], None] | None = None,
        priority: int = NORMAL,
    ) -> None:
        """Carry out what a step left to do, with no lock held: emit the failures it
        found, start the tasks it reserved, finish the stage, and re-queue ``again``
        (the task that took the step) if its queue still holds work."""
        for lane in followup.flush:
            self._flush_failure(lane)
        self._start_tasks(followup.encode, followup.decode)
        if followup.done:
            self._finish()
        if followup.again and again is not None:
            self._schedule(again, priority)

    def _start_tasks(self, encode: int, decode: int) -> None:
        for _ in range(decode):
            self._schedule(self._run_decode, URGENT)
        for _ in range(encode):
            self._schedule(self._run_encode, NORMAL)

    def _schedule(self, task: Callable[[Backend], None], priority: int) -> None:
        try:
            self._pool.submit(task, priority)
        except ClosedError as exc:
            with self._lock:
                lanes = self._table.fail_all(exc)
            for lane in lanes:
                self._flush_failure(lane)

    def _finish(self) -> None:
        self._stop_watchdog()
        if self._on_complete is not None:
            with self._emit_lock:
                self._on_complete()

    # -------------------------------------------------------- backend faults

    # ------------------------------------------------------------- deadlines

    def _watched(self, batch: Batch, call: Callable[[], Outcomes]) -> Outcomes | None:
        """Run a backend call on ``batch`` under its deadline; None if the watchdog gave it
        up meanwhile (its streams were dealt with: drop its results)."""
        if self._watchdog is None or self._timeout_factor is None:
            return call()
        timeout = max(self._min_timeout, self._timeout_factor * batch.audio_seconds)
        watched = self._watchdog.begin(timeout, batch)
        outcomes = call()
        return outcomes if self._watchdog.end(watched) else None

    def _give_up(self, call: WatchedCall[Batch]) -> None:
        """A call overran its deadline (on the watchdog's thread): replace its worker;
        the table fails its stream or retries its streams alone."""
        batch = call.payload
        log.error(
            "%s call on %d stream(s) exceeded %.1f s; replacing the worker",
            batch.name,
            len(batch),
            call.timeout,
        )
        with self._lock:
            followup = self._table.timed_out(batch, call.timeout)
        self._pool.replace_worker(call.thread)
        self._proceed(followup)

    def _stop_watchdog(self) -> None:
        """Stop the watchdog once the calls it watches are over (not waiting for them: a
        hung call is still given up, and terminate() may run while an emission holds
        the lock the watchdog's give-up needs)."""
        if self._watchdog is not None:
            self._watchdog.stop_when_idle()


class _Recovery:
    """One task's recovery after a failed call: the worker's backend drops whatever the
    call left in its caches (``reset()``); a backend that cannot be reset is replaced by
    a fresh one, and the call returns False: this worker calls it no more
    (``gave_up``), and hands the rest of its task to another."""

    __slots__ = ("_backend", "_pool", "gave_up")

    def __init__(self, backend: Backend, pool: WorkerPool) -> None:
        self._backend = backend
        self._pool = pool
        self.gave_up = False

    def __call__(self) -> bool:
        try:
            self._backend.reset()
        except BaseException:
            log.exception(
                "backend %r could not be reset after a failed call; replacing its worker",
                self._pool.backend_name,
            )
            self._pool.replace_worker(threading.get_ident())
            self.gave_up = True
        return not self.gave_up


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
