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
remaining items are dropped up to its last one.

The built-in model stage already emits each stream in order; this operator
makes that a checked guarantee for whatever stage precedes it (a stateless
``parallel_map_on_pool(pool, func)``, a remote service, your own operator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prevad_rx._errors import ConfigError, SliceOrderError
from prevad_rx._types import StreamFailure
from prevad_rx.operators._plumbing import Operator, operator_from

__all__ = ["DEFAULT_MAX_BUFFERED", "reorder_by_seq"]

DEFAULT_MAX_BUFFERED = 256


@dataclass(slots=True)
class _Order:
    next_seq: int = 0
    waiting: dict[int, Any] = field(default_factory=dict)
    last_seq: int | None = None


class _Reorderer:
    def __init__(
        self, emit: Callable[[Any], None], complete: Callable[[], None], max_buffered: int
    ) -> None:
        self._emit = emit
        self._complete = complete
        self._max = max_buffered
        self._orders: dict[str, _Order] = {}
        self._dropping: set[str] = set()  # failed streams whose items are dropped up to the last

    def on_next(self, item: Any) -> None:
        if isinstance(item, StreamFailure):
            self._orders.pop(item.stream_id, None)
            self._dropping.discard(item.stream_id)
            self._emit(item)
            return
        sid = item.stream_id
        if sid in self._dropping:
            if item.is_last:
                self._dropping.discard(sid)
            return
        order = self._orders.setdefault(sid, _Order())
        seq = item.seq
        if item.is_last:
            order.last_seq = seq
        if seq < order.next_seq or seq in order.waiting:
            self._fail(sid, order, f"slice {seq} arrived twice", seq)
            return
        if seq != order.next_seq:
            order.waiting[seq] = item
            if len(order.waiting) > self._max:
                self._fail(
                    sid,
                    order,
                    f"slice {order.next_seq} is missing while {len(order.waiting)} later "
                    f"slices wait (max_buffered={self._max})",
                    order.next_seq,
                )
            return
        self._release(sid, order, item)

    def _release(self, sid: str, order: _Order, item: Any) -> None:
        while True:
            self._emit(item)
            order.next_seq += 1
            if item.is_last:
                del self._orders[sid]
                return
            nxt = order.waiting.pop(order.next_seq, None)
            if nxt is None:
                return
            item = nxt

    def _fail(self, sid: str, order: _Order, reason: str, seq: int) -> None:
        del self._orders[sid]
        if order.last_seq is None:
            self._dropping.add(sid)
        error = SliceOrderError(f"stream {sid!r}: {reason}", sid, seq)
        self._emit(StreamFailure(sid, error))

    def on_completed(self) -> None:
        for sid, order in list(self._orders.items()):
            if order.waiting:
                self._fail(
                    sid,
                    order,
                    f"slice {order.next_seq} never arrived before the end",
                    order.next_seq,
                )
        self._orders.clear()
        self._complete()

    def dispose(self) -> None:
        self._orders.clear()


def reorder_by_seq(max_buffered: int = DEFAULT_MAX_BUFFERED) -> Operator[Any, Any]:
    """Emit each stream's items in ``seq`` order, holding at most ``max_buffered`` per stream."""
    if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
        raise ConfigError(f"max_buffered must be an int >= 1, got {max_buffered!r}")
    return operator_from(lambda emit, complete: _Reorderer(emit, complete, max_buffered))
