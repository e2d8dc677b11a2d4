"""``parallel_map_on_pool``: run work on a :class:`~prevad_rx.WorkerPool`'s threads.

**Model stage** (``parallel_map_on_pool(pool)``)

Input:  ``Observable[AudioSlice | StreamFailure]`` (each stream's slices in ``seq`` order)
Output: ``Observable[FrameProbabilities | StreamFailure]`` (per stream in ``seq`` order)

Stateless work (the Silero encoder) runs in parallel on all workers, also for
slices of the same stream; the recurrent work runs in order per stream with
the stream's state carried between slices; streams ready together share one
batched model call. Items are emitted from worker threads, serialized (never
two ``on_next`` calls at once). A backend failure fails only the affected
stream (a :class:`~prevad_rx.StreamFailure` naming stream and slice).

**Stateless map** (``parallel_map_on_pool(pool, func)``)

Input:  ``Observable[T | StreamFailure]``; output: ``Observable[R | StreamFailure]``.
``func(item)`` runs on the workers for each item, in parallel and emitted in
completion order -- follow it with :func:`reorder_by_seq` when order matters.
If ``func`` raises, the item's stream (``item.stream_id``) fails; its results
still in flight and its further items, up to its last, are dropped.

On completion of the source, the operator completes once every accepted item
has been emitted. ``max_pending`` bounds the items queued on the pool: a
producer thread that submits beyond it waits (a pool worker never does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prevad_rx._errors import ConfigError, StreamFailedError
from prevad_rx._model_stage import ModelStage
from prevad_rx._pool import NORMAL, WorkerPool
from prevad_rx._types import AudioSlice, StreamFailure
from prevad_rx.operators._builder import (
    FATAL_EXCEPTIONS,
    FailedStreams,
    Operator,
    ends_stream,
    operator_from,
    operator_name,
)

__all__ = ["parallel_map_on_pool"]

T = TypeVar("T")
R = TypeVar("R")


class _Admission:
    """Bounds the items queued on the pool; callers on pool threads are never made to wait."""

    def __init__(self, pool: WorkerPool, limit: int | None) -> None:
        self._pool = pool
        self._limit = limit
        self._cond = threading.Condition()
        self._pending = 0

    def acquire(self) -> None:
        with self._cond:
            if self._limit is not None and self._pending >= self._limit:
                may_wait = not self._pool.on_worker_thread()  # asked only when it matters
                while may_wait and self._limit is not None and self._pending >= self._limit:
                    self._cond.wait()
            self._pending += 1

    def release(self, count: int = 1) -> None:
        with self._cond:
            self._pending -= count
            self._cond.notify_all()

    def open(self) -> None:
        """Stop bounding (on dispose), so no producer stays blocked."""
        with self._cond:
            self._limit = None
            self._cond.notify_all()


class _ModelHandler:
    def __init__(
        self,
        pool: WorkerPool,
        emit: Callable[[Any], None],
        complete: Callable[[], None],
        max_pending: int | None,
        max_batch_frames: int,
        timeout_factor: float | None,
        min_timeout: float,
        on_stage: Callable[[ModelStage], None] | None,
    ) -> None:
        self._admission = _Admission(pool, max_pending)
        self._stage = ModelStage(
            pool,
            emit,
            max_batch_frames=max_batch_frames,
            on_complete=complete,
            on_release=self._admission.release,
            timeout_factor=timeout_factor,
            min_timeout=min_timeout,
        )
        if on_stage is not None:
            on_stage(self._stage)

    def on_next(self, item: AudioSlice | StreamFailure) -> None:
        if isinstance(item, StreamFailure):
            self._stage.fail_stream(item)
            return
        if not isinstance(item, AudioSlice):
            raise TypeError(f"the model stage expects AudioSlice items, got {type(item).__name__}")
        self._admission.acquire()
        self._stage.submit(item)

    def on_completed(self) -> None:
        self._stage.complete()

    def dispose(self) -> None:
        self._stage.terminate()
        self._admission.open()

    @property
    def stage(self) -> ModelStage:
        return self._stage


class _MapHandler:
    def __init__(
        self,
        pool: WorkerPool,
        func: Callable[[Any], Any],
        emit: Callable[[Any], None],
        complete: Callable[[], None],
        max_pending: int | None,
    ) -> None:
        self._pool = pool
        self._func = func
        self._name = operator_name(func)
        self._emit = emit
        self._complete = complete
        self._admission = _Admission(pool, max_pending)
        self._lock = threading.Lock()
        self._emit_lock = threading.RLock()
        self._in_flight = 0
        self._completing = False
        self._disposed = False
        self._open: set[str] = set()  # streams whose last item has not been submitted yet
        self._failed = FailedStreams()  # their further items are dropped up to the last
        self._epoch: dict[str, int] = {}  # bumped on failure: results still in flight are dropped

    def on_next(self, item: Any) -> None:
        if isinstance(item, StreamFailure):
            with self._lock:
                failed = item.stream_id
                self._open.discard(failed)
                self._failed.discard(failed)
                self._epoch[failed] = self._epoch.get(failed, 0) + 1
            with self._emit_lock:
                self._emit(item)
            return
        sid = getattr(item, "stream_id", None)
        last = ends_stream(item)
        with self._lock:
            if isinstance(sid, str):
                if self._failed.drops(sid, last):
                    return
                if last:
                    self._open.discard(sid)
                else:
                    self._open.add(sid)
            epoch = self._epoch.get(sid, 0) if isinstance(sid, str) else 0
        self._admission.acquire()
        with self._lock:
            self._in_flight += 1
        self._pool.submit(lambda backend: self._run(item, epoch), NORMAL)

    def _run(self, item: Any, epoch: int) -> None:
        sid = getattr(item, "stream_id", None)
        fatal: BaseException | None = None
        try:
            out: Any = self._func(item)
        except BaseException as exc:  # noqa: BLE001 - becomes the item's stream failure
            if isinstance(exc, FATAL_EXCEPTIONS):
                fatal = exc  # raised into the pool once the item is accounted for
            error = StreamFailedError(
                f"stream {sid!r}: mapping item {getattr(item, 'seq', None)} failed: {exc} "
                f"(in {self._name})",
                sid if isinstance(sid, str) else None,
                getattr(item, "seq", None),
            )
            error.__cause__ = exc
            out = StreamFailure(str(sid), error)
        with self._emit_lock:
            with self._lock:
                current = not isinstance(sid, str) or self._epoch.get(sid, 0) == epoch
                if current and isinstance(out, StreamFailure) and isinstance(sid, str):
                    self._epoch[sid] = epoch + 1
                    if sid in self._open:
                        self._open.discard(sid)
                        self._failed.add(sid)
            if current and not self._disposed:
                self._emit(out)
        self._admission.release()
        with self._lock:
            self._in_flight -= 1
            done = self._completing and self._in_flight == 0
        if done:
            with self._emit_lock:
                self._complete()
        if fatal is not None:
            raise fatal

    def on_completed(self) -> None:
        with self._lock:
            self._completing = True
            done = self._in_flight == 0
        if done:
            with self._emit_lock:
                self._complete()

    def dispose(self) -> None:
        self._disposed = True
        self._admission.open()


def parallel_map_on_pool(
    pool: WorkerPool,
    func: Callable[[T], R] | None = None,
    *,
    max_pending: int | None = None,
    max_batch_frames: int = 512,
    slice_timeout_factor: float | None = 4.0,
    min_slice_timeout: float = 2.0,
    on_stage: Callable[[ModelStage], None] | None = None,
) -> Operator[Any, Any]:
    """Run the model (or ``func``) on ``pool``'s workers; see the module docs for the contract.

    Args:
        pool: a started :class:`~prevad_rx.WorkerPool`.
        func: a stateless function to map items with instead of the model.
        max_pending: most items queued at once before a (non-worker) producer
            waits; ``None`` leaves the bound to the caller (``VADEngine``
            bounds each stream itself).
        max_batch_frames: most frames in one model call.
        slice_timeout_factor: a model call that takes longer than this many times
            the audio it holds (at least ``min_slice_timeout`` seconds) fails its
            streams with :class:`~prevad_rx.SliceTimeoutError` and its worker is
            replaced; ``None`` waits forever.
        min_slice_timeout: the shortest deadline, in seconds.
        on_stage: called with each subscription's model stage (for its
            ``statistics()``).
    """
    if not isinstance(pool, WorkerPool):
        raise TypeError(f"pool must be a WorkerPool, got {type(pool).__name__}")
    if max_pending is not None and (not isinstance(max_pending, int) or max_pending < 1):
        raise ConfigError(f"max_pending must be an int >= 1 or None, got {max_pending!r}")
    if not isinstance(max_batch_frames, int) or max_batch_frames < 1:
        raise ConfigError(f"max_batch_frames must be an int >= 1, got {max_batch_frames!r}")
    if slice_timeout_factor is not None and not slice_timeout_factor > 0:
        raise ConfigError(f"slice_timeout_factor must be > 0 or None, got {slice_timeout_factor!r}")
    if not min_slice_timeout > 0:
        raise ConfigError(f"min_slice_timeout must be > 0, got {min_slice_timeout!r}")
    if func is not None:
        mapper = func
        return operator_from(
            lambda emit, complete: _MapHandler(pool, mapper, emit, complete, max_pending)
        )
    return operator_from(
        lambda emit, complete: _ModelHandler(
            pool,
            emit,
            complete,
            max_pending,
            max_batch_frames,
            slice_timeout_factor,
            min_slice_timeout,
            on_stage,
        )
    )
