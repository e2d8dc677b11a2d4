"""DropOldestQueue: the chunks a ``"drop_oldest"`` stream holds back while it has no room.

Used by :class:`~prevad_rx.VADStream` (a chunk is one piece) and by
:class:`~prevad_rx.ShardedStream` (a chunk longer than a ring piece is several).
:meth:`~DropOldestQueue.trim` keeps the newest ``limit`` chunks; a chunk whose first
pieces have gone on is neither counted nor dropped (the rest of it follows). Chunks
are numbered as they come, so a flush can wait for the chunks queued before it
(:meth:`~DropOldestQueue.mark`) and not for those a sender keeps pushing meanwhile.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["DropOldestQueue"]


class DropOldestQueue:
    """Chunks waiting for room, each as its pieces, oldest first (on the loop only)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[tuple[int, list[np.ndarray]]] = deque()
        self._head_started = False
        self._count = 0
        self.dropped_samples = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, pieces: list[np.ndarray]) -> None:
        """A chunk (the caller's copies), after every chunk already waiting."""
        self._chunks.append((self._count, pieces))
        self._count += 1

    def trim(self) -> None:
        """Drop the oldest chunks not yet started beyond ``limit`` (counted)."""
        while len(self._chunks) - self._head_started > self._limit:
            index = int(self._head_started)
            _, pieces = self._chunks[index]
            del self._chunks[index]
            self.dropped_samples += sum(piece.size for piece in pieces)

    def next_piece(self) -> np.ndarray | None:
        """The piece :meth:`take_piece` would return (None when nothing waits)."""
        return self._chunks[0][1][0] if self._chunks else None

    def take_piece(self) -> np.ndarray:
        pieces = self._chunks[0][1]
        piece = pieces.pop(0)
        self._head_started = bool(pieces)
        if not pieces:
            self._chunks.popleft()
        return piece

    def mark(self) -> int:
        """The number the next chunk will get."""
        return self._count

    def holds_before(self, mark: int) -> bool:
        """Whether a chunk queued before ``mark`` still waits (in whole or in part)."""
        return bool(self._chunks) and self._chunks[0][0] < mark

    def clear(self) -> None:
        self._chunks.clear()
        self._head_started = False
