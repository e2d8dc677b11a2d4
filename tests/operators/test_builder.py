"""The public operator builders: per_stream, contain, run_pipeline, FailedStreams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import reactivex as rx
from reactivex import operators as ops

import prevad_rx as pv
from prevad_rx.operators import FailedStreams, contain, per_stream, run_pipeline
from tests.operators.helpers import collect


@dataclass(frozen=True)
class Item:
    stream_id: str
    value: int
    is_last: bool = False


@dataclass
class Total:
    sum: int = 0
    made: list[str] = field(default_factory=list)


def running_sum(made: list[str]) -> pv.operators.Operator[Item | pv.StreamFailure, object]:
    def state(item: Item) -> Total:
        made.append(item.stream_id)
        return Total()

    def step(total: Total, item: Item) -> Iterator[tuple[str, int]]:
        if item.value < 0:
            raise ValueError(f"negative value {item.value}")
        total.sum += item.value
        yield (item.stream_id, total.sum)

    return per_stream(step, state=state, accepts=Item, name="running_sum")


def test_state_is_per_stream_and_dropped_after_the_last_item() -> None:
    made: list[str] = []
    items = [
        Item("a", 1),
        Item("b", 10),
        Item("a", 2, is_last=True),
        Item("b", 20),
        Item("a", 5),  # the id starts afresh after its last item
    ]
    out = collect(items, running_sum(made))
    assert out == [("a", 1), ("b", 10), ("a", 3), ("b", 30), ("a", 5)]
    assert made == ["a", "b", "a"]


def test_each_subscription_has_its_own_state() -> None:
    operator = running_sum([])
    assert collect([Item("a", 1), Item("a", 2)], operator) == [("a", 1), ("a", 3)]
    assert collect([Item("a", 1), Item("a", 2)], operator) == [("a", 1), ("a", 3)]


def test_a_raising_step_fails_only_its_stream_until_its_last_item() -> None:
    items = [
        Item("a", 1),
        Item("b", 1),
        Item("a", -1),  # fails a
        Item("a", 7),  # dropped
        Item("b", 2),
        Item("a", 8, is_last=True),  # dropped, ends the dropping
        Item("a", 4),  # a new stream "a"
    ]
    out = collect(items, running_sum([]))
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert [o for o in out if not isinstance(o, pv.StreamFailure)] == [
        ("a", 1),
        ("b", 1),
        ("b", 3),
        ("a", 4),
    ]
    assert len(failures) == 1 and failures[0].stream_id == "a"
    error = failures[0].error
    assert isinstance(error, pv.OperatorError) and error.operator == "running_sum"
    assert isinstance(error.__cause__, ValueError) and "running_sum" in str(error)


def test_a_base_exception_in_a_step_is_contained_but_keyboard_interrupt_is_not() -> None:
    def step(state: None, item: Item) -> list[Item]:
        if item.value == 1:
            raise asyncio.CancelledError("cancelled future")
        if item.value == 2:
            raise KeyboardInterrupt
        return [item]

    operator = per_stream(step, state=lambda item: None)
    out = collect([Item("a", 1), Item("b", 0)], operator)
    assert isinstance(out[0], pv.StreamFailure) and out[1] == Item("b", 0)
    assert isinstance(out[0].error.__cause__, asyncio.CancelledError)
    with pytest.raises(KeyboardInterrupt):
        collect([Item("a", 2)], operator)


def test_stream_failures_pass_through_and_raised_stream_errors_stay_as_they_are() -> None:
    def step(state: None, item: Item) -> list[Item]:
        raise pv.StreamFailedError(f"stream {item.stream_id!r}: rejected", item.stream_id)

    upstream = pv.StreamFailure("x", pv.StreamFailedError("upstream", "x"))
    out = collect([upstream, Item("a", 0, is_last=True)], per_stream(step, state=lambda i: None))
    assert out[0] is upstream
    assert type(out[1].error) is pv.StreamFailedError and "rejected" in str(out[1].error)


def test_a_wrong_item_fails_its_stream_once_and_an_anonymous_one_is_a_chain_error() -> None:
    with pytest.raises(TypeError, match="running_sum expects Item items, got dict"):
        collect([{"stream_id": "a"}], running_sum([]))

    @dataclass(frozen=True)
    class Other:
        stream_id: str
        is_last: bool = False

    out = collect([Other("a"), Other("a"), Item("b", 1)], running_sum([]))
    assert [type(o) for o in out] == [pv.StreamFailure, tuple]
    assert "expects Item items, got Other" in str(out[0].error)


def test_finish_and_done() -> None:
    def step(held: list[int], item: Item) -> list[int]:
        held.append(item.value)
        return list(held) if len(held) == 2 else []

    operator = per_stream(
        step,
        state=lambda item: [],
        finish=lambda held: [-sum(held)],
        done=lambda held: len(held) == 2,
    )
    out = collect([Item("a", 1), Item("a", 2), Item("a", 3), Item("b", 4)], operator)
    assert out == [1, 2, -3, -4]  # done after two; the rest finished at completion


def test_skip_notes_a_failed_streams_items_until_done() -> None:
    """A ``done`` operator whose stream fails after its last item: the rest is skipped."""
    noted: list[int] = []

    def step(held: list[int], item: Item) -> list[int]:
        if item.value < 0:
            raise ValueError("negative")
        held.append(item.value)
        return list(held) if len(held) == 3 else []

    def skip(held: list[int], item: Item) -> None:
        noted.append(item.value)
        held.append(item.value)

    operator = per_stream(step, state=lambda item: [], done=lambda held: len(held) == 3, skip=skip)
    failed = [Item("a", 1, True), Item("a", -1), Item("a", 2), Item("a", 3)]
    out = collect([*failed, Item("a", 4), Item("a", 5), Item("a", 6)], operator)
    assert isinstance(out[0], pv.StreamFailure) and "negative" in str(out[0].error)
    assert noted == [2, 3]  # they complete the failed stream; 4 starts it afresh
    assert out[1:] == [4, 5, 6]
    with pytest.raises(pv.ConfigError, match="skip needs done"):
        per_stream(step, state=lambda item: [], skip=skip)


def test_a_raising_skip_falls_back_to_dropping_up_to_the_last_item() -> None:
    def step(held: list[int], item: Item) -> list[int]:
        if item.value < 0:
            raise ValueError("negative")
        held.append(item.value)
        return [sum(held)] if item.is_last else []

    def skip(held: list[int], item: Item) -> None:
        raise RuntimeError("cannot track")

    operator = per_stream(step, state=lambda item: [], done=lambda held: False, skip=skip)
    items = [Item("a", 1), Item("a", -1), Item("a", 2), Item("a", 3, True), Item("a", 5, True)]
    out = collect(items, operator)
    assert isinstance(out[0], pv.StreamFailure) and out[1:] == [5]  # 2 and 3 dropped


def test_failed_streams() -> None:
    failed = FailedStreams()
    failed.add("a")
    assert "a" in failed and len(failed) == 1
    assert failed.drops("a", last=False) and failed.drops("a", last=True)
    assert not failed.drops("a", last=False) and "a" not in failed


# ------------------------------------------------------------------------------ contain


def chunk(sid: str, n: int, last: bool = False) -> pv.AudioChunk:
    return pv.AudioChunk(sid, np.full(n, 0.1, np.float32), 16000, last)


def end_of(c: pv.AudioChunk) -> pv.AudioChunk:
    return pv.AudioChunk(c.stream_id, np.zeros(0, np.float32), c.sample_rate, True)


def test_contain_fails_one_stream_and_resubscribes_for_the_others() -> None:
    def boom(c: pv.AudioChunk) -> pv.AudioChunk:
        if c.stream_id == "a" and c.samples.size == 2:
            raise RuntimeError("boom")
        return c

    items = [chunk("a", 1), chunk("b", 1), chunk("a", 2), chunk("a", 3), chunk("b", 4)]
    items += [chunk("a", 0, last=True), chunk("a", 5)]
    out = collect(items, contain(ops.map(boom), pv.AudioChunk, name="boom", end_marker=end_of))
    summary = [
        (o.stream_id, "failed" if isinstance(o, pv.StreamFailure) else o.samples.size) for o in out
    ]
    assert summary == [("a", 1), ("b", 1), ("a", "failed"), ("b", 4), ("a", 5)]
    failure = next(o for o in out if isinstance(o, pv.StreamFailure))
    assert isinstance(failure.error, pv.OperatorError) and failure.error.operator == "boom"
    assert isinstance(failure.error.__cause__, RuntimeError)


def test_contain_checks_the_type_and_puts_back_a_swallowed_end() -> None:
    gate = contain(
        ops.filter(lambda c: c.samples.size > 0), pv.AudioChunk, name="gate", end_marker=end_of
    )
    out = collect([chunk("a", 3), chunk("a", 0, last=True)], gate)
    assert [(o.samples.size, o.end_of_stream) for o in out] == [(3, False), (0, True)]

    to_dict = contain(
        ops.map(lambda c: {"n": c.samples.size}), pv.AudioChunk, name="to_dict", end_marker=end_of
    )
    out = collect([chunk("a", 3), chunk("a", 4), chunk("a", 0, last=True), chunk("b", 1)], to_dict)
    assert len(out) == 2 and isinstance(out[0], pv.StreamFailure)  # once for "a" ...
    assert "to_dict emitted dict" in str(out[0].error)
    assert isinstance(out[1], pv.StreamFailure) and out[1].stream_id == "b"  # ... once for "b"


def test_contain_reports_an_error_outside_any_item_as_a_chain_error() -> None:
    def later(source: rx.Observable[object]) -> rx.Observable[object]:
        return rx.throw(RuntimeError("asynchronous failure"))

    with pytest.raises(pv.OperatorError, match="outside of any item"):
        collect([chunk("a", 1)], contain(later, pv.AudioChunk))


# ------------------------------------------------------------------------- run_pipeline


@pytest.mark.anyio
async def test_run_pipeline_returns_everything_once_complete() -> None:
    assert await run_pipeline([1, 2, 3], ops.map(lambda x: x * 2)) == [2, 4, 6]
    assert await run_pipeline(rx.from_iterable("ab")) == ["a", "b"]
    with pytest.raises(ValueError, match="bad"):
        await run_pipeline(rx.throw(ValueError("bad")))


def test_a_failure_on_items_without_an_end_marker_drops_nothing_later() -> None:
    """Events mark no stream end: after a failure, the stream's later items still come."""

    def step(state: None, event: pv.SpeechEvent) -> list[pv.SpeechEvent]:
        if event.sample == 1:
            raise ValueError("one bad event")
        return [event]

    events = [pv.SpeechEvent("start", "a", n, 16000, n) for n in (0, 1, 2)]
    out = collect(events, per_stream(step, state=lambda e: None))
    assert [type(o).__name__ for o in out] == ["SpeechEvent", "StreamFailure", "SpeechEvent"]
