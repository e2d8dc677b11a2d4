"""Watchdog: a call that overruns its deadline is given up, one that returns in time is not."""

from __future__ import annotations

import threading

from prevad_rx._watchdog import Watchdog, WatchedCall

WAIT_S = 10.0  # upper bound for an expiry to be seen (never reached when things work)


def test_no_thread_until_the_first_call_and_none_after_stop() -> None:
    watchdog: Watchdog[str] = Watchdog(lambda call: None)
    names = {t.name for t in threading.enumerate()}
    assert "prevad-rx-watchdog" not in names
    call = watchdog.begin(60.0, "work")
    assert "prevad-rx-watchdog" in {t.name for t in threading.enumerate()}
    assert watchdog.end(call)
    watchdog.stop()
    assert "prevad-rx-watchdog" not in {t.name for t in threading.enumerate()}


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

    watchdog: Watchdog[int] = Watchdog(on_expired)
    holder.append(watchdog)
    watchdog.begin(0.01, 1)
    assert done.wait(WAIT_S)
    watchdog.stop()  # joins the thread, which ends
    assert "prevad-rx-watchdog" not in {t.name for t in threading.enumerate()}


def test_calls_begun_after_stop_are_never_given_up() -> None:
    expired: list[WatchedCall[str]] = []
    watchdog: Watchdog[str] = Watchdog(expired.append)
    watchdog.stop()
    call = watchdog.begin(0.0, "late")
    assert "prevad-rx-watchdog" not in {t.name for t in threading.enumerate()}
    assert watchdog.end(call) and expired == []
