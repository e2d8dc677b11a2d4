"""Outbox: what one stream pushed during the current loop iteration, sent on as one chunk.

A stream under load is pushed faster than its earlier audio is processed: a
sender with several 32 ms packets ready pushes them back to back, without
yielding to the loop. Each ``push()`` validates its packet and adds a copy
here; at the end of the loop iteration (one ``call_soon``) everything the
stream pushed in it enters the operator chain as a single :class:`AudioChunk`.
Every per-item cost after ``push()`` (the reactive hops, slicing, the model
stage's bookkeeping, reordering, segmenting, delivery to the loop) is then
paid once per iteration instead of once per packet. Results are identical for
any chunking, so this changes only how many items the chain carries; a stream
that pushes one packet per iteration (a paced live source) sends it as it is,
and once the waiting audio fills a slice it is sent at once (large pushes go
straight through, and the stream's backpressure bound keeps its meaning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from prevad_rx._loop import IterationEnd
from prevad_rx._types import AudioChunk, validated_chunk

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__: list[str] = []  # internal to VADStream


def owned(samples: NDArray[np.float32], source: object) -> NDArray[np.float32]:
    """``samples`` (converted from ``source``), copied when it may share the caller's memory."""
    if samples is source or samples.base is not None:
        return samples.copy()
    return samples


class Outbox:
    """One stream's validated audio waiting for the end of the loop iteration.

    ``send`` receives the coalesced chunk, on the loop. ``len()`` counts the
    pushes waiting (the stream counts them against its backpressure bound).
    Once ``limit`` samples wait they are sent without waiting for the
    iteration's end.
    """

    def __init__(
        self,
        stream_id: str,
        sample_rate: int,
        send: Callable[[AudioChunk], None],
        loop: asyncio.AbstractEventLoop,
        limit: int,
    ) -> None:
        self._stream_id = stream_id
        self._sample_rate = sample_rate
        self._send = send
        self._limit = limit
        self._parts: list[NDArray[np.float32]] = []
        self._samples = 0
        self._end = False
        self._at_iteration_end = IterationEnd(loop, self.send_now)

    def __len__(self) -> int:
        return len(self._parts) + self._end

    def add(self, samples: NDArray[np.float32]) -> None:
        """Samples the outbox may keep (see :func:`owned`), sent at the iteration's end."""
        self._parts.append(samples)
        self._samples += samples.size
        if self._samples >= self._limit:
            self.send_now()
        else:
            self._at_iteration_end.request()

    def add_end(self) -> None:
        """The stream's end: sent with (after) the samples already waiting."""
        self._end = True
        self._at_iteration_end.request()

    def send_now(self) -> None:
        """Send what is waiting at once, as one chunk (nothing if nothing waits)."""
        parts, end = self._parts, self._end
        if not parts and not end:
            return
        self._parts, self._end, self._samples = [], False, 0
        if not parts:
            samples: NDArray[np.float32] = np.zeros(0, np.float32)
        elif len(parts) == 1:
            samples = parts[0]
        else:
            samples = np.concatenate(parts)
        # every part was validated by push(): not checked again
        self._send(validated_chunk(self._stream_id, samples, self._sample_rate, end))

    def clear(self) -> bool:
        """Drop what is waiting (the stream failed: its audio goes nowhere); True if that
        included the end, which then is the stream's to send again."""
        end = self._end
        self._parts, self._end, self._samples = [], False, 0
        return end
