"""The exception tree: every error prevad_rx raises derives from :class:`PrevadError`.

::

    PrevadError
    ├── ConfigError                 invalid VADConfig or option value (also a ValueError)
    ├── AudioFormatError            audio that cannot be read as mono samples (also a ValueError)
    │   └── UnsupportedSampleRateError
    ├── StreamError                 something about one stream (carries ``stream_id``)
    │   ├── StreamClosedError       push/flush after close
    │   ├── DuplicateStreamError    an open stream already has this id
    │   ├── BackpressureError       push refused: the stream is full (policy "error")
    │   └── StreamFailedError       processing failed; ``seq`` names the slice, ``__cause__`` why
    │       ├── SliceOrderError     a slice was lost, duplicated or arrived too far out of order
    │       ├── SliceTimeoutError   a model call on the stream's slice took too long
    │       ├── OperatorError       an operator raised on the stream's item or emitted a wrong item
    │       └── ShardFailedError    the shard process that ran the stream ended (ShardedVADEngine)
    ├── BackendError                a model backend failed or is unavailable
    │   ├── UnknownBackendError     no backend registered under that name (also a LookupError)
    │   ├── BackendUnavailableError its optional dependencies are missing
    │   ├── RemoteBackendError      a model server could not be reached or answered wrongly
    │   └── ModelIntegrityError     a shipped model file does not match its sha256 pin
    ├── ClosedError                 the pool or engine is closed
    └── WrongEventLoopError         an engine or stream used outside its event loop (a RuntimeError)
"""

from __future__ import annotations

__all__ = [
    "AudioFormatError",
    "BackpressureError",
    "BackendError",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigError",
    "DuplicateStreamError",
    "ModelIntegrityError",
    "OperatorError",
    "PrevadError",
    "RemoteBackendError",
    "ShardFailedError",
    "SliceOrderError",
    "SliceTimeoutError",
    "StreamClosedError",
    "StreamError",
    "StreamFailedError",
    "UnknownBackendError",
    "UnsupportedSampleRateError",
    "WrongEventLoopError",
]


class PrevadError(Exception):
    """Base class of every error raised by prevad_rx."""


class ConfigError(PrevadError, ValueError):
    """A configuration value is out of range or inconsistent."""


class AudioFormatError(PrevadError, ValueError):
    """Audio has the wrong type, dtype or shape, or holds NaN/Inf samples."""


class UnsupportedSampleRateError(AudioFormatError):
    """The sample rate is not a positive integer in the supported range."""


class StreamError(PrevadError):
    """An error about one stream; other streams are not affected."""

    def __init__(self, message: str, stream_id: str | None = None) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class StreamClosedError(StreamError):
    """Audio was pushed to (or another operation attempted on) a closed stream."""


class DuplicateStreamError(StreamError):
    """A stream with this id is already open."""


class StreamFailedError(StreamError):
    """Processing of a stream failed; the stream ends and reports this error.

    ``seq`` is the slice that failed (None when the failure is not tied to one),
    and ``__cause__`` holds the underlying exception where there is one.
    """

    def __init__(self, message: str, stream_id: str | None = None, seq: int | None = None) -> None:
        super().__init__(message, stream_id)
        self.seq = seq


class SliceOrderError(StreamFailedError):
    """A slice was lost, duplicated, or arrived further out of order than allowed."""


class SliceTimeoutError(StreamFailedError):
    """A backend call on one of the stream's slices did not return in time."""


class OperatorError(StreamFailedError):
    """An operator raised while handling one of the stream's items, or emitted an item of
    the wrong type; only that stream fails.

    ``operator`` names the operator, ``__cause__`` holds what it raised.
    """

    def __init__(
        self,
        message: str,
        stream_id: str | None = None,
        seq: int | None = None,
        *,
        operator: str | None = None,
    ) -> None:
        super().__init__(message, stream_id, seq)
        self.operator = operator


class ShardFailedError(StreamFailedError):
    """The shard process running the stream ended unexpectedly (:class:`ShardedVADEngine`);
    only that shard's streams fail, and the shard is replaced for new streams.

    ``shard`` is the shard's index.
    """

    def __init__(
        self,
        message: str,
        stream_id: str | None = None,
        seq: int | None = None,
        *,
        shard: int | None = None,
    ) -> None:
        super().__init__(message, stream_id, seq)
        self.shard = shard


class BackpressureError(StreamError):
    """``push()`` with ``backpressure="error"`` found the stream full; nothing was taken."""


class BackendError(PrevadError):
    """A model backend failed, or could not be created."""


class UnknownBackendError(BackendError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailableError(BackendError):
    """The backend exists but its optional dependencies are not installed."""


class RemoteBackendError(BackendError):
    """A model server (``vllm-api``) was unreachable or answered wrongly, after retries."""


class ModelIntegrityError(BackendError):
    """A model file does not match its pinned sha256 digest."""


class ClosedError(PrevadError):
    """The worker pool or engine has been closed."""


class WrongEventLoopError(PrevadError, RuntimeError):
    """An engine or stream method was called outside the event loop the engine started on.

    Engines and streams belong to that loop; from another thread, hand the call
    to it with ``asyncio.run_coroutine_threadsafe(stream.push(chunk), loop)``.
    """
