"""WorkerPool: per-thread backends, start-up failures, priorities, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import prevad_rx as pv
from prevad_rx._pool import NORMAL, URGENT
from prevad_rx.backends import _registry
from tests.backends.test_registry import ConstantBackend


class BrokenBackend(ConstantBackend):
    def initialize(self) -> None:
        raise RuntimeError("no model here")


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
