"""WorkerPool: per-thread backends, start-up failures, priorities, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import prevad_rx as pv
from prevad_rx._pool import NORMAL, URGENT
from prevad_rx.backends import _registry
from tests.backends.test_registry import ConstantBackend
from tests.spy_backends import make_gated_start


class BrokenBackend(ConstantBackend):
    def initialize(self) -> None:
        raise RuntimeError("no model here")


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("prevad-rx")}


@pytest.fixture
def registered() -> Iterator[None]:
    pv.register_backend("broken", BrokenBackend, replace=True)
    pv.register_backend("constant", ConstantBackend, replace=True)
    yield
    _registry._registered.pop("broken", None)
    _registry._registered.pop("constant", None)


@pytest.mark.usefixtures("registered")
def test_a_backend_that_fails_to_start_fails_the_pool_cleanly() -> None:
    pool = pv.WorkerPool("broken", 3)
    with pytest.raises(pv.BackendError, match="no model here"):
        pool.start()
    assert pool.closed
    with pytest.raises(pv.ClosedError):
        pool.submit(lambda backend: None)


def test_unknown_backend_fails_at_start() -> None:
    with pytest.raises(pv.UnknownBackendError):
        pv.WorkerPool("nope", 1).start()


@pytest.mark.usefixtures("registered")
def test_each_worker_owns_one_instance() -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def record(backend: pv.Backend) -> None:
        barrier.wait(10)  # four tasks run at once, one per worker
        with lock:
            seen[threading.current_thread().name] = id(backend)

    with pv.WorkerPool("constant", 4) as pool:
        for _ in range(4):
            pool.submit(record)
        pool.close(cancel_pending=False)  # let the queued tasks run
    assert len(seen) == 4 and len(set(seen.values())) == 4


@pytest.mark.usefixtures("registered")
def test_urgent_tasks_run_before_normal_ones() -> None:
    order: list[str] = []
    gate = threading.Event()
    with pv.WorkerPool("constant", 1) as pool:
        pool.submit(lambda backend: gate.wait(10))  # hold the only worker
        pool.submit(lambda backend: order.append("normal"), NORMAL)
        pool.submit(lambda backend: order.append("urgent"), URGENT)
        gate.set()
        pool.close(cancel_pending=False)
    assert order == ["urgent", "normal"]


@pytest.mark.usefixtures("registered")
def test_a_task_that_raises_does_not_kill_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()

    def explode(backend: pv.Backend) -> None:
        raise RuntimeError("task bug")

    with pv.WorkerPool("constant", 1) as pool:
        pool.submit(explode)
        pool.submit(lambda backend: done.set())
        assert done.wait(10)
        stats = pool.statistics()
    assert stats.task_errors == 1 and stats.tasks_completed >= 1
    assert "task bug" in caplog.text


@pytest.mark.usefixtures("registered")
def test_a_task_raising_a_base_exception_does_not_kill_its_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = threading.Event()

    def leave(backend: pv.Backend) -> None:
        raise SystemExit("task called sys.exit()")

    with pv.WorkerPool("constant", 1) as pool:
        pool.submit(leave)
        pool.submit(lambda backend: done.set())
        assert done.wait(10)  # the only worker is still serving
        stats = pool.statistics()
    assert stats.task_errors == 1 and stats.workers_replaced == 0
    assert "sys.exit()" in caplog.text


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("onnx", 0), {}, pv.ConfigError, "num_workers"),
        (("onnx", -1), {}, pv.ConfigError, "num_workers"),
        (("onnx", 1.5), {}, pv.ConfigError, "num_workers"),
        (("onnx", True), {}, pv.ConfigError, "num_workers"),
        ((42, 1), {}, pv.ConfigError, "backend"),
        (("", 1), {}, pv.ConfigError, "backend"),
        (("no-such-backend", 1), {}, pv.UnknownBackendError, "available: .*onnx"),
        (("onnx", 1), {"backend_options": [("a", 1)]}, pv.ConfigError, "backend_options"),
        (("onnx", 1), {"backend_options": {1: 2}}, pv.ConfigError, "backend_options"),
        (("onnx", 1), {"name": ""}, pv.ConfigError, "name"),
    ],
)
def test_every_argument_is_checked_before_any_thread_starts(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=match):
        pv.WorkerPool(*args, **kwargs)  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_close_while_starting_stops_the_start_and_every_thread() -> None:
    gate, started = threading.Event(), threading.Event()
    before = set(threading.enumerate())
    pv.register_backend("gated-start", make_gated_start, replace=True)
    try:
        pool = pv.WorkerPool("gated-start", 2, backend_options={"gate": gate, "started": started})
        outcome: list[Exception | None] = []

        def start() -> None:
            try:
                pool.start()
                outcome.append(None)
            except Exception as exc:  # noqa: BLE001 - the outcome is checked below
                outcome.append(exc)

        starter = threading.Thread(target=start)
        starter.start()
        assert started.wait(30)  # a worker is loading its model
        closer = threading.Thread(target=pool.close)
        closer.start()
        starter.join(30)
        assert not starter.is_alive()  # start() gave up at once
        gate.set()  # the workers finish loading, see the pool closed, and exit
        closer.join(30)
        assert not closer.is_alive()
    finally:
        gate.set()
        _registry._registered.pop("gated-start", None)
    (error,) = outcome
    assert isinstance(error, pv.ClosedError) and "closed while it was starting" in str(error)
    assert pool.closed and set(threading.enumerate()) <= before  # no thread left


def test_arguments_and_lifecycle() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        pv.WorkerPool("onnx", 0)
    pool = pv.WorkerPool("onnx", 1)
    with pytest.raises(pv.ClosedError, match="not started"):
        pool.submit(lambda backend: None)
    with pool:
        assert pool.started and pool.start() is pool  # idempotent
    assert pool.closed
    pool.close()  # idempotent
    with pytest.raises(pv.ClosedError):
        pool.start()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": False})])
async def test_async_context_manager() -> None:
    async with pv.WorkerPool("onnx", 2) as pool:
        assert pool.started
    assert pool.closed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": False})])
async def test_a_cancelled_async_start_closes_the_pool() -> None:
    gate, started = threading.Event(), threading.Event()
    before = pool_threads()
    pv.register_backend("gated-start", make_gated_start, replace=True)
    try:
        pool = pv.WorkerPool("gated-start", 2, backend_options={"gate": gate, "started": started})

        async def use() -> None:
            async with pool:
                await asyncio.Event().wait()

        task = asyncio.create_task(use())
        assert await asyncio.to_thread(started.wait, 30)  # the workers are loading the model
        task.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        gate.set()
        _registry._registered.pop("gated-start", None)
    assert pool.closed and pool_threads() <= before  # no worker left


@pytest.mark.usefixtures("registered")
def test_probe_answers_from_a_serving_worker_and_a_replaced_backend_is_let_go() -> None:
    import time

    with pv.WorkerPool("constant", 2) as pool:
        first = pool.probe()
        (ident,) = [i for i, b in pool._backend_of.items() if b is first]
        pool.replace_worker(ident)  # idle: it exits at once, a new worker takes its place
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            ident in pool._backend_of or len(pool._backend_of) < 2
        ):
            time.sleep(0.01)
        assert ident not in pool._backend_of and len(pool._backend_of) == 2
        assert pool.probe() is not first
        assert first not in pool._backends  # not kept alive by the pool
        assert len(pool._backends) == 2
