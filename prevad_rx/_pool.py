"""WorkerPool: N threads, each owning one backend instance created and used only on that thread.

The pool runs *tasks*: callables that receive the worker's backend. It knows
nothing of streams; the model stage (``parallel_map_on_pool``) decides what a
task does. Two priorities keep latency low: recurrent work (``URGENT``), which
is on the critical path of every stream, runs before stateless work
(``NORMAL``). ONNX Runtime releases the GIL inside its kernels, so the threads
run the model truly in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn

from prevad_rx._errors import (
    BackendError,
    ClosedError,
    ConfigError,
    PrevadError,
    UnknownBackendError,
)
from prevad_rx.backends import (
    Backend,
    DecodeRequest,
    ModelRequest,
    ModelResult,
    available_backends,
    create_backend,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["NORMAL", "URGENT", "PoolStatistics", "Task", "WorkerPool"]

log = logging.getLogger("prevad_rx.pool")

#: Task priorities: URGENT tasks run before any NORMAL task.
URGENT: Final = 0
NORMAL: Final = 1
#: A replacement worker whose backend cannot start tries again after this many seconds,
#: doubling up to the maximum.
REPLACEMENT_RETRY_S: Final = 0.5
MAX_REPLACEMENT_RETRY_S: Final = 30.0
#: Failed starts in a row of a replacement after which, while no worker serves, queued
#: work fails (BackendError) instead of waiting for one.
FAILED_STARTS_BEFORE_FAILING_WORK: Final = 3

Task = Callable[[Backend], None]


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool's queues and counters."""

    backend: str
    num_workers: int
    busy_workers: int
    queued_urgent: int
    queued_normal: int
    tasks_completed: int
    task_errors: int
    workers_replaced: int
    #: What the backend says of itself (:meth:`Backend.describe`), e.g. which encoder runs.
    backend_info: Mapping[str, object] = field(default_factory=dict)


class WorkerPool:
    """A pool of worker threads, each owning its own backend instance.

    Args:
        backend: registry name of the backend (``"onnx"`` by default).
        num_workers: threads (and model instances); default: the CPU count.
        backend_options: keyword arguments for the backend's constructor.
        name: prefix of the worker threads' names.

    Use as a context manager (``with`` or ``async with``) or call
    :meth:`start` / :meth:`close`. Starting waits until every worker has
    created and initialised its backend; if any fails, the pool closes and
    the error is raised. Arguments are checked here, before any thread starts
    (:class:`~prevad_rx.ConfigError`, :class:`~prevad_rx.UnknownBackendError`).
    """

    def __init__(
        self,
        backend: str = "onnx",
        num_workers: int | None = None,
        *,
        backend_options: Mapping[str, Any] | None = None,
        name: str = "prevad-rx",
    ) -> None:
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigError(f"num_workers must be an int >= 1, got {num_workers!r}")
        if not isinstance(backend, str) or not backend:
            raise ConfigError(f"backend must be a backend name (a non-empty str), got {backend!r}")
        known = available_backends()
        if backend not in known:
            raise UnknownBackendError(f"unknown backend {backend!r}; available: {', '.join(known)}")
        if backend_options is not None and not (
            isinstance(backend_options, Mapping)
            and all(isinstance(k, str) for k in backend_options)
        ):
            raise ConfigError(
                f"backend_options must be a mapping of option names to values, "
                f"got {backend_options!r}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        self.backend_name = backend
        self.num_workers = num_workers
        self._backend_options = dict(backend_options or {})
        self._name = name
        self._cond = threading.Condition()
        self._queues: tuple[deque[Task], deque[Task]] = (deque(), deque())
        self._threads: list[threading.Thread] = []
        self._thread_ids: set[int] = set()
        self._backends: list[Backend] = []
        self._backend_of: dict[int, Backend] = {}  # worker thread ident -> its backend
        self._ready = 0
        self._start_error: BaseException | None = None
        self._started = False
        self._closed = False
        self._busy = 0
        self._completed = 0
        self._errors = 0
        self._retired: set[int] = set()  # thread idents whose backend is abandoned
        self._next_index = num_workers
        self._replaced = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> WorkerPool:
        """Start the workers and wait for every backend to initialise (idempotent)."""
        with self._cond:
            if self._closed:
                raise ClosedError("worker pool is closed")
            if self._started:
                return self
            self._started = True
            # started under the lock, so a close() from another thread joins every one
            for index in range(self.num_workers):
                self._spawn(index).start()
            while self._ready < self.num_workers and self._start_error is None and not self._closed:
                self._cond.wait()
            error = self._start_error
            closed = self._closed
        if error is not None:
            self.close()
            if isinstance(error, PrevadError):
                raise error
            raise BackendError(f"backend {self.backend_name!r} failed to start: {error}") from error
        if closed:
            raise ClosedError("worker pool was closed while it was starting")
        return self

    def close(self, *, cancel_pending: bool = True) -> None:
        """Stop the workers (after their current task) and close their backends.

        Queued tasks are dropped unless ``cancel_pending`` is false, in which
        case they run first. Safe to call more than once, and from any thread
        (also while :meth:`start` runs in another); every call returns once the
        workers have ended (a worker calling it does not wait for itself).
        """
        with self._cond:
            self._closed = True
            if cancel_pending:
                for queue in self._queues:
                    queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        current = threading.get_ident()
        for thread in threads:
            if thread.ident == current:
                continue
            if thread.ident in self._retired:
                thread.join(timeout=1.0)  # may be stuck in its backend for good: daemon
            else:
                thread.join()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> WorkerPool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.start)
        except BaseException:  # failed or cancelled: no worker outlives the block
            await asyncio.shield(loop.run_in_executor(None, self.close))
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def started(self) -> bool:
        return self._started and not self._closed

    # -------------------------------------------------------------------- tasks

    def submit(self, task: Task, priority: int = NORMAL) -> None:
        """Queue ``task(backend)`` to run on some worker."""
        with self._cond:
            if self._closed:
                raise ClosedError("worker pool is closed")
            if not self._started:
                raise ClosedError("worker pool is not started; use start() or a with block")
            self._queues[priority].append(task)
            self._cond.notify()

    def replace_worker(self, ident: int) -> None:
        """Give up on the worker thread ``ident`` (stuck in its backend, or with a backend
        that could not be reset) and start a new worker with a fresh backend in its place.
        The old thread exits once its current call returns (if ever) and closes its
        backend; the results of a call that timed out are not used."""
        with self._cond:
            if self._closed or ident in self._retired or ident not in self._thread_ids:
                return
            self._retired.add(ident)
            self._replaced += 1
            self._spawn(self._next_index).start()  # under the lock: close() joins it
            self._next_index += 1
            self._cond.notify_all()  # the retired worker, if idle, exits now
            abandoned = self._backend_of.get(ident)
        log.warning("worker thread %d replaced", ident)
        if abandoned is not None:
            try:
                abandoned.abandon()  # let it cancel the stuck call, so the old thread ends
            except BaseException:
                log.exception("abandoning the backend of worker thread %d failed", ident)

    def _spawn(self, index: int) -> threading.Thread:
        """A new (not yet started) worker thread, recorded for ``close()`` to join."""
        thread = threading.Thread(
            target=self._worker, args=(index,), name=f"{self._name}-{index}", daemon=True
        )
        self._threads.append(thread)
        return thread

    def on_worker_thread(self) -> bool:
        """Whether the calling thread is one of this pool's workers."""
        return threading.get_ident() in self._thread_ids

    def probe(self) -> Backend:
        """A started backend of a worker still serving (not one that was replaced), for
        capability queries (``can_encode``, ``initial_state``) only."""
        with self._cond:
            for ident, backend in self._backend_of.items():
                if ident not in self._retired:
                    return backend
            if self._backends:  # between a replacement and its start
                return self._backends[-1]
        raise ClosedError("worker pool is not started")

    def statistics(self) -> PoolStatistics:
        with self._cond:
            return PoolStatistics(
                backend=self.backend_name,
                num_workers=self.num_workers,
                busy_workers=self._busy,
                queued_urgent=len(self._queues[URGENT]),
                queued_normal=len(self._queues[NORMAL]),
                tasks_completed=self._completed,
                task_errors=self._errors,
                workers_replaced=self._replaced,
                backend_info=dict(self._backends[0].describe()) if self._backends else {},
            )

    # ------------------------------------------------------------------ workers

    def _worker(self, index: int) -> None:
        me = threading.get_ident()
        self._thread_ids.add(me)
        try:
            self._run_worker(index)
        finally:  # the system may give this ident to a later thread: forget it
            with self._cond:
                self._thread_ids.discard(me)
                self._retired.discard(me)

    def _run_worker(self, index: int) -> None:
        backend = self._start_backend(index)
        if backend is None:
            return
        with self._cond:
            self._backends.append(backend)
            self._backend_of[threading.get_ident()] = backend
            self._ready += 1
            self._cond.notify_all()
        try:
            self._serve(backend)
        finally:
            with self._cond:
                self._backend_of.pop(threading.get_ident(), None)
                if len(self._backends) > 1:  # a replaced worker's: not kept alive for ever
                    self._backends.remove(backend)
            try:
                backend.close()
            except BaseException:
                log.exception("closing backend of worker %d failed", index)

    def _start_backend(self, index: int) -> Backend | None:
        """This worker's started backend; None if it cannot start at the pool's start
        (``start()`` raises) or the pool closes meanwhile. A replacement that cannot
        start tries again, every 0.5 s to 30 s, logging each failure: the pool would
        otherwise shrink for good (to no worker at all). Work waits for it through a
        passing fault; from the third failure in a row on, while no worker serves, what
        waits fails instead (see :meth:`_fail_queued_if_unserved`)."""
        delay = REPLACEMENT_RETRY_S
        failures = 0
        while True:
            try:
                backend = create_backend(self.backend_name, **self._backend_options)
                backend.initialize()
                return backend
            except BaseException as exc:
                with self._cond:
                    starting = self._ready < self.num_workers
                    if starting and self._start_error is None:
                        self._start_error = exc
                    self._cond.notify_all()
                if starting:
                    return None
                log.error(
                    "replacement worker %d failed to start; trying again in %.1f s",
                    index,
                    delay,
                    exc_info=exc,
                )
                failures += 1
                if failures >= FAILED_STARTS_BEFORE_FAILING_WORK:
                    self._fail_queued_if_unserved(exc)
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, timeout=delay):
                    return None
            delay = min(2 * delay, MAX_REPLACEMENT_RETRY_S)

    def _fail_queued_if_unserved(self, cause: BaseException) -> None:
        """With no worker serving, run the queued tasks on a stand-in whose every call
        raises :class:`BackendError` naming ``cause``: their streams fail with it instead
        of waiting for a worker that may never start."""
        stand_in = _Unavailable(self.backend_name, cause)
        while True:
            with self._cond:
                if self._closed or any(i not in self._retired for i in self._backend_of):
                    return  # a worker serves (or nothing will): the queue is its
                urgent, normal = self._queues
                if not urgent and not normal:
                    return
                task = urgent.popleft() if urgent else normal.popleft()
            try:
                task(stand_in)
            except BaseException:
                log.exception("a task failed on the stand-in for an unavailable backend")

    def _serve(self, backend: Backend) -> None:
        urgent, normal = self._queues
        me = threading.get_ident()
        while True:
            with self._cond:
                while not urgent and not normal and not self._closed and me not in self._retired:
                    self._cond.wait()
                if me in self._retired:
                    return  # replaced: a new worker serves instead
                if urgent:
                    task = urgent.popleft()
                elif normal:
                    task = normal.popleft()
                else:
                    return  # closed and drained
                self._busy += 1
            failed = False
            try:
                task(backend)
            except BaseException:  # even SystemExit: the worker must go on serving
                failed = True
                log.exception("worker task failed")
            with self._cond:
                self._busy -= 1
                self._completed += 1
                self._errors += failed


class _Unavailable(Backend):
    """Stands in for a backend no worker could start: every model call raises."""

    name = "unavailable"

    def __init__(self, backend: str, cause: BaseException) -> None:
        self._why = (
            f"backend {backend!r} is unavailable: no worker could start it "
            f"({type(cause).__name__}: {cause})"
        )

    def _refuse(self) -> NoReturn:
        raise BackendError(self._why)

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        self._refuse()

    def can_encode(self, sample_rate: int) -> bool:
        return True

    def encode(self, windows: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        self._refuse()

    def decode(self, requests: Sequence[DecodeRequest]) -> list[ModelResult]:
        self._refuse()
