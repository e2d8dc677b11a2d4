"""reorder_by_seq: per-stream order restored, bounded, losses and duplicates reported."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prevad_rx as pv
from prevad_rx.operators import reorder_by_seq
from tests.operators.helpers import collect


@dataclass(frozen=True)
class Item:
    stream_id: str
    seq: int
    is_last: bool = False


def stream(sid: str, n: int) -> list[Item]:
    return [Item(sid, i, i == n - 1) for i in range(n)]


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_arrival_order_within_the_buffer_is_restored(data: st.DataObject) -> None:
    streams = {f"s{i}": data.draw(st.integers(1, 30)) for i in range(data.draw(st.integers(1, 5)))}
    items = [item for sid, n in streams.items() for item in stream(sid, n)]
    shuffled = data.draw(st.permutations(items))
    out = collect(shuffled, reorder_by_seq(max_buffered=64))
    for sid, n in streams.items():
        assert [o for o in out if o.stream_id == sid] == stream(sid, n)


def test_a_missing_item_fails_the_stream_when_the_buffer_overflows() -> None:
    items = [Item("a", 0)] + [Item("a", i) for i in range(2, 6)] + stream("b", 3)
    out = collect(items, reorder_by_seq(max_buffered=3))
    failure = next(o for o in out if isinstance(o, pv.StreamFailure))
    assert isinstance(failure.error, pv.SliceOrderError)
    assert failure.error.seq == 1 and "slice 1 is missing" in str(failure.error)
    assert [o for o in out if isinstance(o, Item) and o.stream_id == "b"] == stream("b", 3)


def test_a_gap_left_at_completion_is_reported() -> None:
    out = collect([Item("a", 0), Item("a", 2, True)], reorder_by_seq())
    assert out[0] == Item("a", 0)
    assert isinstance(out[1], pv.StreamFailure) and "never arrived" in str(out[1].error)


def test_a_duplicate_fails_the_stream_and_later_items_are_dropped() -> None:
    items = [Item("a", 0), Item("a", 0), Item("a", 1), Item("a", 2, True), Item("a", 0, True)]
    out = collect(items, reorder_by_seq())
    assert out[0] == Item("a", 0)
    assert isinstance(out[1], pv.StreamFailure) and "twice" in str(out[1].error)
    # the failed stream's remaining items are dropped up to its last; then the id is fresh
    assert out[2:] == [Item("a", 0, True)]


def test_a_stream_failing_after_its_last_item_drops_the_items_still_due() -> None:
    """Its last item came first; the items before it still arrive after the failure."""
    first = [Item("a", 2, True), Item("a", 2, True), Item("a", 0), Item("a", 1)]
    reopened = stream("a", 2)  # the same id, a new stream
    out = collect([*first, *reopened, *stream("b", 2)], reorder_by_seq())
    failures = [o for o in out if isinstance(o, pv.StreamFailure)]
    assert len(failures) == 1 and "slice 2 arrived twice" in str(failures[0].error)
    assert [o for o in out if isinstance(o, Item)] == [*reopened, *stream("b", 2)]


def test_a_stream_failing_before_its_last_item_also_drops_those_arriving_after_it() -> None:
    items = [Item("a", 1), Item("a", 1), Item("a", 3, True), Item("a", 2), Item("a", 0)]
    out = collect([*items, *stream("a", 2)], reorder_by_seq())
    assert isinstance(out[0], pv.StreamFailure) and "twice" in str(out[0].error)
    assert out[1:] == stream("a", 2)


def test_a_failed_stream_with_a_lost_item_ends_at_its_last() -> None:
    """Over max_buffered waiting behind a missing item: it counts as lost (memory bounded)."""
    items = [Item("a", 1), Item("a", 1), *(Item("a", i) for i in range(2, 7)), Item("a", 7, True)]
    out = collect([*items, *stream("a", 2)], reorder_by_seq(max_buffered=3))
    assert isinstance(out[0], pv.StreamFailure)
    assert out[1:] == stream("a", 2)


def test_failures_pass_through() -> None:
    failure = pv.StreamFailure("a", pv.StreamFailedError("upstream", "a"))
    out = collect([Item("a", 0), failure, Item("a", 0, True)], reorder_by_seq())
    assert out == [Item("a", 0), failure, Item("a", 0, True)]


def test_bad_bound() -> None:
    with pytest.raises(pv.ConfigError):
        reorder_by_seq(0)


def test_order_is_restored_after_a_parallel_stateless_map(pool: pv.WorkerPool) -> None:
    """The typical use: an unordered parallel stage followed by reorder_by_seq."""
    rng = np.random.default_rng(3)
    delays = {i: float(rng.uniform(0, 0.003)) for i in range(40)}

    def slow_identity(item: Item) -> Item:
        import time

        time.sleep(delays[item.seq])  # makes completion order differ from submission order
        return item

    items = stream("a", 40)
    out = collect(items, pv.operators.parallel_map_on_pool(pool, slow_identity), reorder_by_seq())
    assert out == items
