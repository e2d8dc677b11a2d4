"""emit_events: failures become error events; handler errors are routed, never fatal."""

from __future__ import annotations

import logging

import pytest
from reactivex import Observer

import prevad_rx as pv
from prevad_rx.operators import emit_events
from tests.operators.helpers import collect

START = pv.SpeechEvent("start", "a", 480, 16000, 4608)
END = pv.SpeechEvent("end", "a", 9000, 16000, 10240, segment=pv.Segment("a", 480, 9000, 16000))
FAILURE = pv.StreamFailure("b", pv.StreamFailedError("backend exploded", "b", 3))


def test_failures_become_error_events() -> None:
    out = collect([START, FAILURE, END], emit_events())
    assert [e.kind for e in out] == ["start", "error", "end"]
    error = out[1]
    assert error.stream_id == "b" and error.error is FAILURE.error
    assert error.segment is None


def test_handlers_see_every_event_and_their_errors_do_not_stop_the_chain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    observed: list[str] = []

    def flaky(event: pv.SpeechEvent) -> None:
        if event.kind == "start":
            raise RuntimeError("handler bug")
        seen.append(event.kind)

    routed: list[tuple[str, str]] = []
    out = collect(
        [START, END],
        emit_events(
            flaky,
            Observer(lambda e: observed.append(e.kind)),
            on_handler_error=lambda exc, event: routed.append((str(exc), event.kind)),
        ),
    )
    assert [e.kind for e in out] == ["start", "end"]
    assert seen == ["end"] and observed == ["start", "end"]
    assert routed == [("handler bug", "start")]

    with caplog.at_level(logging.ERROR, logger="prevad_rx.events"):
        collect([START], emit_events(flaky))
    assert "handler bug" in caplog.text  # default: logged with the traceback, not swallowed


def test_kinds_filter() -> None:
    out = collect([START, END, FAILURE], emit_events(kinds={"end", "error"}))
    assert [e.kind for e in out] == ["end", "error"]
    with pytest.raises(pv.ConfigError):
        emit_events(kinds={"middle"})


def test_bad_handler() -> None:
    with pytest.raises(TypeError):
        emit_events(42)  # type: ignore[arg-type]


def test_event_properties() -> None:
    assert END.time == 9000 / 16000
    assert END.delay == (10240 - 9000) / 16000
    assert END.segment is not None and END.segment.start_time_ms == 30.0
