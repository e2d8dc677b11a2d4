"""ShardRing: a byte ring in shared memory that carries audio from the user's process to a shard.

One producer (the engine, on its event loop) writes float32 samples and sends a
small record naming where they lie; one consumer (the shard) copies them out and
acknowledges how far it has read. Positions are monotonic sample counters, so
``written - acked`` is the space in use; a piece never wraps: when it does not
fit before the end of the ring, the tail is skipped and counted as used.
"""

from __future__ import annotations

import weakref
from multiprocessing import shared_memory

import numpy as np

__all__: list[str] = []  # internal to ShardedVADEngine

_ITEM = np.dtype(np.float32).itemsize


class ShardRing:
    """The producer side: owns (creates and unlinks) the shared memory segment."""

    def __init__(self, capacity_samples: int) -> None:
        self.capacity = capacity_samples
        self._shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(
            create=True, size=capacity_samples * _ITEM
        )
        self.name = self._shm.name
        # an engine dropped without close() still removes its segment (at exit at the latest)
        self._finalizer = weakref.finalize(self, self._shm.unlink)
        self._view: np.ndarray | None = np.ndarray(
            (capacity_samples,), np.float32, buffer=self._shm.buf
        )
        self.written = 0  # samples handed out, skipped tails included
        self.acked = 0  # samples the consumer has released

    @property
    def used(self) -> int:
        return self.written - self.acked

    @property
    def max_piece(self) -> int:
        """The longest piece :meth:`write` takes: a quarter of the ring."""
        return max(1, self.capacity // 4)

    def fits_all(self, sizes: list[int]) -> bool:
        """Whether pieces of these sizes, written in turn, fit in the free space now."""
        written = self.written
        for n in sizes:
            start = written % self.capacity
            if start + n > self.capacity:
                written += self.capacity - start
            written += n
        return written - self.acked <= self.capacity

    def write(self, samples: np.ndarray) -> tuple[int, int]:
        """Copy ``samples`` in (the caller checked :meth:`fits_all`); returns (offset, end)."""
        assert self._view is not None, "ring is closed"
        n = samples.size
        start = self.written % self.capacity
        if start + n > self.capacity:
            self.written += self.capacity - start
            start = 0
        self._view[start : start + n] = samples
        self.written += n
        return start, self.written

    def ack(self, position: int) -> None:
        if position > self.acked:
            self.acked = position

    def close(self) -> None:
        """Unmap and unlink the segment (idempotent)."""
        self._view = None
        shm, self._shm = self._shm, None
        if shm is not None:
            self._finalizer.detach()
            shm.close()
            shm.unlink()


class RingReader:
    """The consumer side (in the shard): attaches to the segment by name."""

    def __init__(self, name: str, capacity_samples: int) -> None:
        # Attaching registers the name with the resource tracker the shard shares with
        # its parent; the tracker keeps a set, and the parent's unlink unregisters it.
        self._shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(name=name)
        self._view: np.ndarray | None = np.ndarray(
            (capacity_samples,), np.float32, buffer=self._shm.buf
        )

    def read(self, offset: int, length: int) -> np.ndarray:
        """A copy of ``length`` samples at ``offset`` (the space may be reused at once)."""
        assert self._view is not None, "ring is closed"
        return self._view[offset : offset + length].copy()

    def close(self) -> None:
        self._view = None
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()
