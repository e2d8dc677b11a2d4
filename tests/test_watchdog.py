"""Watchdog: a call that overruns its deadline is given up, one that returns in time is not."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from prevad_rx._watchdog import Watchdog, WatchedCall

WAIT_S = 10.0  # upper bound for an expiry to be seen (never reached when things work)


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_no_thread_until_the_first_call_and_none_after_stop() -> None:
    """Checks this watchdog's own thread (a name of its own), not others in the process."""
    name = f"watchdog-{uuid.uuid4().hex}"
    watchdog: Watchdog[str] = Watchdog(lambda call: None, name=name)
    assert _threads_named(name) == []
    call = watchdog.begin(60.0, "work")
    (thread,) = _threads_named(name)
    assert thread.daemon and thread.is_alive()
    assert watchdog.end(call)
    watchdog.stop()
    assert not thread.is_alive()  # stop() joined it


def test_a_call_that_returns_in_time_is_kept() -> None:
    expired: list[WatchedCall[str]] = []
    watchdog: Watchdog[str] = Watchdog(expired.append)
    call = watchdog.begin(60.0, "work")
    assert call.thread == threading.get_ident() and call.timeout == 60.0
    assert watchdog.end(call)  # its results count
    assert watchdog.watched == 0
    watchdog.stop()
    assert expired == []


def test_an_overdue_call_is_given_up_and_its_results_dropped() -> None:
    expired: list[WatchedCall[str]] = []
    seen = threading.Event()

    def on_expired(call: WatchedCall[str]) -> None:
        expired.append(call)
        seen.set()

    watchdog: Watchdog[str] = Watchdog(on_expired)
    slow = watchdog.begin(60.0, "slow")
    time.sleep(0.05)  # the thread now sleeps toward the 60 s deadline
    stuck = watchdog.begin(0.01, "stuck")  # nearer than the one it sleeps for: wakes it
    assert seen.wait(WAIT_S)
    assert [c.payload for c in expired] == ["stuck"] and stuck.abandoned
    assert not watchdog.end(stuck)  # it returned late: someone else dealt with its work
    assert watchdog.watched == 1 and watchdog.end(slow)
    watchdog.stop()


def test_the_expiry_callback_may_stop_the_watchdog() -> None:
    """The stage finishes (and stops the watchdog) from inside a give-up."""
    done = threading.Event()
    holder: list[Watchdog[int]] = []

    def on_expired(call: WatchedCall[int]) -> None:
        holder[0].stop()  # on its own thread: must not join itself
        done.set()

    name = f"watchdog-{uuid.uuid4().hex}"
    watchdog: Watchdog[int] = Watchdog(on_expired, name=name)
    holder.append(watchdog)
    watchdog.begin(0.01, 1)
    (thread,) = _threads_named(name)
    assert done.wait(WAIT_S)
    watchdog.stop()  # joins the thread, which ends
    assert not thread.is_alive()


def test_calls_begun_after_stop_are_never_given_up() -> None:
    expired: list[WatchedCall[str]] = []
    name = f"watchdog-{uuid.uuid4().hex}"
    watchdog: Watchdog[str] = Watchdog(expired.append, name=name)
    watchdog.stop()
    call = watchdog.begin(0.0, "late")
    assert _threads_named(name) == []  # no thread started for it
    assert watchdog.end(call) and expired == []


def test_a_failing_expiry_callback_is_logged_and_the_watch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The give-up of one call raises: it is logged with its traceback; the next is still seen."""
    expired: list[str] = []
    seen = threading.Event()

    def on_expired(call: WatchedCall[str]) -> None:
        expired.append(call.payload)
        if call.payload == "first":
            raise RuntimeError("give-up failed")
        seen.set()

    name = f"watchdog-{uuid.uuid4().hex}"
    watchdog: Watchdog[str] = Watchdog(on_expired, name=name)
    with caplog.at_level(logging.ERROR, logger="prevad_rx.stage"):
        first = watchdog.begin(0.0, "first")
        (thread,) = _threads_named(name)
        deadline = time.monotonic() + WAIT_S
        while not first.abandoned and time.monotonic() < deadline:
            time.sleep(0.001)
        second = watchdog.begin(0.01, "second")  # once the first has been given up
        assert seen.wait(WAIT_S)
        assert thread.is_alive()  # the same thread, still watching
        watchdog.stop()
    assert expired == ["first", "second"] and second.abandoned
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_calls_due_later_than_the_nearest_do_not_wake_the_watch() -> None:
    """Each begin() due after the deadline the thread sleeps toward leaves it asleep."""
    wakes = 0
    watchdog: Watchdog[str] = Watchdog(lambda call: None)
    first = watchdog.begin(60.0, "first")
    time.sleep(0.05)
    original_notify = watchdog._cond.notify

    def counting_notify(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        original_notify(n)

    watchdog._cond.notify = counting_notify  # type: ignore[method-assign]
    later = [watchdog.begin(61.0 + k, f"later{k}") for k in range(100)]
    assert wakes == 0
    for call in [first, *later]:
        assert watchdog.end(call)
    watchdog.stop()


def test_the_worker_of_a_given_up_call_waits_until_the_giving_up_is_over() -> None:
    """end() of an abandoned call returns only once on_expired has returned: its worker
    takes no other work while it is being given up (on_expired retires it), so the
    replacement can never hit the next, innocent call instead."""
    giving_up = threading.Event()
    finish = threading.Event()

    def on_expired(call: WatchedCall[str]) -> None:
        giving_up.set()
        assert finish.wait(WAIT_S)

    watchdog: Watchdog[str] = Watchdog(on_expired)
    call = watchdog.begin(0.01, "work")
    assert giving_up.wait(WAIT_S)  # the call returns while it is being given up
    ended: list[bool] = []
    worker = threading.Thread(target=lambda: ended.append(watchdog.end(call)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and ended == []  # still waiting for on_expired
    finish.set()
    worker.join(WAIT_S)
    assert ended == [False]
    watchdog.stop()


def test_stop_when_idle_still_gives_up_a_call_running_and_never_waits() -> None:
    """A stage that stops while one of its calls hangs (its subscriber went away): the call
    is still given up at its deadline (a shared pool gets a new worker), then the thread
    ends. stop_when_idle() returns at once, also while a give-up is under way: it may be
    called with a lock held that the give-up is waiting for."""
    expired: list[str] = []
    unblock = threading.Event()
    name = f"watchdog-{uuid.uuid4().hex}"

    def on_expired(call: WatchedCall[str]) -> None:
        expired.append(call.payload)
        assert unblock.wait(WAIT_S)  # as if waiting for a lock the stopping thread holds

    watchdog: Watchdog[str] = Watchdog(on_expired, name=name)
    running = watchdog.begin(0.2, "hung")
    watchdog.stop_when_idle()  # returns at once; the call is still watched
    deadline = time.monotonic() + WAIT_S
    while not expired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert expired == ["hung"]
    watchdog.stop_when_idle()  # again, while the give-up waits: still returns at once
    unblock.set()
    assert not watchdog.end(running)
    (thread,) = _threads_named(name) or [None]
    if thread is not None:
        thread.join(WAIT_S)
        assert not thread.is_alive()
