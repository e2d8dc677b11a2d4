"""The backend interface: one model instance, owned and called by one worker thread.

A backend keeps **no per-stream state**: the recurrent state (Silero's LSTM h
and c, ``[2, 128]``) travels with each request and comes back updated, so any
worker may advance any stream and requests of many streams can share a call.

Two ways to run the model:

* :meth:`Backend.process` -- the whole model over runs of frames of several
  streams (required);
* :meth:`Backend.encode` + :meth:`Backend.decode` -- the stateless front
  (Silero's STFT and convolutions, ~90% of the work; frames independent, so
  any slice of any stream can be encoded on any worker in any order) and the
  recurrent back (LSTM and head, in frame order per stream). Optional: a
  backend that supports it returns True from :meth:`Backend.can_encode`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Backend", "DecodeRequest", "ModelRequest", "ModelResult"]


class ModelRequest(NamedTuple):
    """Run the whole model over ``windows`` ([n, context + frame]) of one stream from ``state``."""

    windows: NDArray[np.float32]
    state: NDArray[np.float32]
    sample_rate: int


class DecodeRequest(NamedTuple):
    """Run the recurrent back over encoded ``features`` ([n, dim]) of one stream from ``state``."""

    features: NDArray[np.float32]
    state: NDArray[np.float32]
    sample_rate: int


class ModelResult(NamedTuple):
    """Per-frame speech probabilities ([n]) and the stream's state after the last frame."""

    probabilities: NDArray[np.float32]
    state: NDArray[np.float32]


class Backend(ABC):
    """Base class of model backends; subclasses are registered by name (see ``register_backend``).

    Lifecycle, all on the owning worker thread: ``initialize()`` once, then any
    number of ``process``/``encode``/``decode`` calls, ``reset()`` after a call
    that raised, ``close()`` at the end.

    Results are checked in full before use: one :class:`ModelResult` per
    request, probabilities a float array of one value per frame, finite and
    within [0, 1], the state a finite float32 array of ``state_shape``. A call
    that raises (any exception, ``SystemExit`` included) or breaks these rules
    fails the streams it held, not the worker.
    """

    #: Registry name (set by subclasses).
    name: ClassVar[str] = ""
    #: Shape of one stream's recurrent state.
    state_shape: ClassVar[tuple[int, ...]] = (2, 128)
    #: Processing rates the backend runs; ``open_stream`` refuses a stream whose
    #: processing rate (8000, or 16000 for every other rate) is not among them.
    sample_rates: ClassVar[frozenset[int]] = frozenset({8000, 16000})

    def initialize(self) -> None:  # noqa: B027 - optional hook
        """Load the model; called once on the worker thread that owns the instance."""

    @abstractmethod
    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        """Run the model over each request (one per stream), batching them where possible."""

    def can_encode(self, sample_rate: int) -> bool:
        """Whether :meth:`encode`/:meth:`decode` are available at this rate."""
        return False

    def encode(self, windows: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        """Stateless front over frames of any streams: [n, context + frame] -> [n, dim]."""
        raise NotImplementedError(f"{type(self).__name__} has no separate encoder")

    def decode(self, requests: Sequence[DecodeRequest]) -> list[ModelResult]:
        """Recurrent back over encoded frames, one request per stream."""
        raise NotImplementedError(f"{type(self).__name__} has no separate decoder")

    def initial_state(self) -> NDArray[np.float32]:
        """The state of a stream before its first frame."""
        return np.zeros(self.state_shape, dtype=np.float32)

    def describe(self) -> Mapping[str, object]:
        """Facts about this instance for statistics and logs (e.g. which encoder runs)."""
        return {}

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Drop whatever a failed call may have left behind (caches, buffers).

        Called on the owning worker thread after a call raised, before the next
        call. Backends hold no per-stream state, so this never changes results.
        If it raises, the worker is replaced by a new one with a fresh backend.
        """

    def abandon(self) -> None:  # noqa: B027 - optional hook
        """The pool gave up on this instance: its call overran its deadline and a fresh
        worker took its place. Called from **another thread** while the call may still run;
        must return quickly. A backend whose calls can be interrupted (a remote request, a
        device queue) should cancel them here, so the stuck worker thread ends; the call's
        result is ignored either way, and ``close()`` follows on the owning thread."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model; called on the owning worker thread."""
