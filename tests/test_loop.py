"""Signal: the wake-up the streams' waiting pushes and flushes use."""

from __future__ import annotations

import asyncio

import pytest

from prevad_rx._loop import IterationEnd, Signal

pytestmark = pytest.mark.anyio


async def test_notify_wakes_every_waiter_and_each_rechecks_its_condition() -> None:
    signal = Signal()
    level = [0]
    woke: list[int] = []

    async def wait_for(n: int) -> None:
        await signal.wait_until(lambda: level[0] >= n)
        woke.append(n)

    tasks = [asyncio.create_task(wait_for(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    for value in (1, 2, 3):
        level[0] = value
        signal.notify()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert woke == list(range(1, value + 1))  # only those whose condition now holds
    await asyncio.gather(*tasks)


async def test_a_condition_already_true_does_not_wait() -> None:
    signal = Signal()
    await asyncio.wait_for(signal.wait_until(lambda: True), 1)


async def test_cancelled_waiters_are_not_kept() -> None:
    signal = Signal()
    for _ in range(100):
        task = asyncio.create_task(signal.wait_until(lambda: False))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert signal._waiters == []
    # a waiter cancelled after notify() has already taken it is fine too
    task = asyncio.create_task(signal.wait_until(lambda: False))
    await asyncio.sleep(0)
    signal.notify()
    task.cancel()
    assert isinstance((await asyncio.gather(task, return_exceptions=True))[0], BaseException)
    assert signal._waiters == []


async def test_iteration_end_runs_once_per_iteration_however_often_asked() -> None:
    runs: list[int] = []
    soon = IterationEnd(asyncio.get_running_loop(), lambda: runs.append(len(runs)))
    for _ in range(5):
        soon.request()
    assert runs == []  # not before the iteration ends
    await asyncio.sleep(0)
    assert runs == [0]
    await asyncio.sleep(0)
    assert runs == [0]  # nothing asked: nothing run
    soon.request()
    await asyncio.sleep(0)
    assert runs == [0, 1]


async def test_iteration_end_asked_again_by_its_own_callback_runs_in_the_next_iteration() -> None:
    runs: list[int] = []
    loop = asyncio.get_running_loop()

    def callback() -> None:
        runs.append(1)
        if len(runs) < 3:
            soon.request()

    soon = IterationEnd(loop, callback)
    soon.request()
    for expected in (1, 2, 3, 3):
        await asyncio.sleep(0)
        assert len(runs) == expected
