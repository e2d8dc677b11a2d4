"""``reorder_by_seq``: restore each stream's ``seq`` order, with a bounded buffer.

Input:  ``Observable[T | StreamFailure]`` where ``T`` has ``stream_id``, ``seq``
        (0, 1, 2, ... per stream) and ``is_last`` (``AudioSlice``,
        ``FrameProbabilities``, or your own items)
Output: ``Observable[T | StreamFailure]``, each stream in ``seq`` order

An item that arrives early waits until the items before it have been emitted.
Per stream at most ``max_buffered`` items wait; one more means an earlier item
is lost or far too slow, and the stream fails with a
:class:`~prevad_rx.SliceOrderError` (so memory stays bounded and the loss is
reported, not hidden). A duplicate ``seq`` fails the stream the same way, as
does a gap still open when the source completes. After a failure, the stream's
remaining items are dropped: up to its last one and every item before it, also
those arriving after the last (so a stream id reused afterwards starts afresh);
if more than ``max_buffered`` of them wait behind a missing one, that one counts
as lost and dropping ends with the last item.

The built-in model stage already emits each stream in order; this operator
makes that a checked guarantee for whatever stage precedes it (a stateless
``parallel_map_on_pool(pool, func)``, a remote service, your own operator).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prevad_rx._errors import ConfigError, SliceOrderError
from prevad_rx._types import StreamFailure
from prevad_rx.operators._builder import Operator, per_stream

__all__ = ["DEFAULT_MAX_BUFFERED", "Sequenced", "reorder_by_seq"]

DEFAULT_MAX_BUFFERED = 256


class Sequenced(Protocol):
    """An item ``reorder_by_seq`` can order: its stream, its number, whether it is the last."""

    @property
    def stream_id(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def is_last(self) -> bool: ...


T = TypeVar("T", bound=Sequenced)


@dataclass(slots=True)
class _Order(Generic[T]):
    next_seq: int = 0
    waiting: dict[int, T] = field(default_factory=dict)
    last_seq: int | None = None
    released_last: bool = False
    lost: bool = False  # failed, and too many items wait behind a missing one


def _is_last(item: Sequenced) -> bool:
    return bool(item.is_last)


class _Reorderer(Generic[T]):
    def __init__(self, max_buffered: int) -> None:
        self._max = max_buffered

    def step(self, order: _Order[T], item: T) -> list[T]:
        sid, seq = item.stream_id, item.seq
        if item.is_last:
            order.last_seq = seq
        if seq < order.next_seq or seq in order.waiting:
            raise SliceOrderError(f"stream {sid!r}: slice {seq} arrived twice", sid, seq)
        if seq != order.next_seq:
            order.waiting[seq] = item
            if len(order.waiting) > self._max:
                raise SliceOrderError(
                    f"stream {sid!r}: slice {order.next_seq} is missing while "
                    f"{len(order.waiting)} later slices wait (max_buffered={self._max})",
                    sid,
                    order.next_seq,
                )
            return []
        released = []
        nxt: T | None = item
        while nxt is not None:
            released.append(nxt)
            order.next_seq += 1
            if nxt.is_last:
                order.released_last = True
                break
            nxt = order.waiting.pop(order.next_seq, None) if order.waiting else None
        return released

    def skip(self, order: _Order[T], item: T) -> None:
        """An item of a failed stream: note that it came (the stream ends when all did)."""
        if item.is_last and order.last_seq is None:
            order.last_seq = item.seq
        if not order.lost and item.seq >= order.next_seq:
            order.waiting[item.seq] = item
            while order.waiting.pop(order.next_seq, None) is not None:
                order.next_seq += 1
            if len(order.waiting) > self._max:
                order.waiting.clear()
                order.lost = True
        order.released_last = self.done(order)

    def done(self, order: _Order[T]) -> bool:
        """Every item up to the last was emitted (or, failed, came or counts as lost)."""
        if order.released_last:
            return True
        if order.last_seq is None:
            return False
        return order.lost or order.next_seq > order.last_seq or len(order.waiting) > self._max

    @staticmethod
    def finish(order: _Order[T]) -> Iterator[T]:
        """The source completed: a stream with items still waiting has a gap."""
        if order.waiting:
            sid = next(iter(order.waiting.values())).stream_id
            raise SliceOrderError(
                f"stream {sid!r}: slice {order.next_seq} never arrived before the end",
                sid,
                order.next_seq,
            )
        yield from ()


def reorder_by_seq(
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> Operator[T | StreamFailure, T | StreamFailure]:
    """Emit each stream's items in ``seq`` order, holding at most ``max_buffered`` per stream."""
    if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
        raise ConfigError(f"max_buffered must be an int >= 1, got {max_buffered!r}")
    reorderer: _Reorderer[T] = _Reorderer(max_buffered)

    def new_order(item: T) -> _Order[T]:
        return _Order()

    return per_stream(
        reorderer.step,
        state=new_order,
        finish=reorderer.finish,
        is_last=_is_last,
        done=reorderer.done,
        skip=reorderer.skip,
        name="reorder_by_seq",
    )
