"""prevad_rx: exact, parallel, streaming voice activity detection for many concurrent streams.

Silero VAD v6.2 behind composable reactive operators (``prevad_rx.operators``),
a pool of worker threads each owning its model instance, and an asyncio API
(:class:`VADEngine`). Every speech decision equals silero-vad's
``get_speech_timestamps`` on the same audio.

Quick start::

    import prevad_rx as pv

    async def main(chunks):
        async with pv.VADEngine(num_workers=2) as engine:
            stream = engine.open_stream("caller-42", sample_rate=16000)
            stream.subscribe(print)
            for chunk in chunks:
                await stream.push(chunk)
            result = await stream.close()
            return result.segments

    pv.run(main(chunks))
"""

from prevad_rx import backends, operators
from prevad_rx._audio import NATIVE_SAMPLE_RATES, AudioInput
from prevad_rx._config import MAX_DURATION_S, VADConfig
from prevad_rx._engine import EngineStatistics, VADEngine
from prevad_rx._errors import (
    AudioFormatError,
    BackendError,
    BackendUnavailableError,
    BackpressureError,
    ClosedError,
    ConfigError,
    DuplicateStreamError,
    ModelIntegrityError,
    OperatorError,
    PrevadError,
    RemoteBackendError,
    ShardFailedError,
    SliceOrderError,
    SliceTimeoutError,
    StreamClosedError,
    StreamError,
    StreamFailedError,
    UnknownBackendError,
    UnsupportedSampleRateError,
    WrongEventLoopError,
)
from prevad_rx._facade import AsyncParallelVAD
from prevad_rx._fanout import EventIterator
from prevad_rx._model_stage import StageStatistics
from prevad_rx._pool import PoolStatistics, WorkerPool
from prevad_rx._runtime import aiter_observable, run, uvloop_available
from prevad_rx._segmenter import segments_from_probabilities
from prevad_rx._sharded import ShardedEngineStatistics, ShardedVADEngine, ShardStatistics
from prevad_rx._sharded_stream import ShardedStream
from prevad_rx._stream import BackpressurePolicy, StreamState, StreamStatistics, VADStream
from prevad_rx._types import (
    AudioChunk,
    AudioSlice,
    EventKind,
    FrameProbabilities,
    Segment,
    SpeechEvent,
    StreamFailure,
    StreamResult,
)
from prevad_rx._version import __version__
from prevad_rx.backends import Backend, available_backends, create_backend, register_backend
from prevad_rx.operators import run_pipeline

__all__ = [
    "MAX_DURATION_S",
    "NATIVE_SAMPLE_RATES",
    "AsyncParallelVAD",
    "AudioChunk",
    "AudioFormatError",
    "AudioInput",
    "AudioSlice",
    "Backend",
    "BackpressureError",
    "BackpressurePolicy",
    "BackendError",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigError",
    "DuplicateStreamError",
    "EngineStatistics",
    "EventIterator",
    "EventKind",
    "FrameProbabilities",
    "ModelIntegrityError",
    "OperatorError",
    "PoolStatistics",
    "PrevadError",
    "RemoteBackendError",
    "Segment",
    "ShardFailedError",
    "ShardStatistics",
    "ShardedEngineStatistics",
    "ShardedStream",
    "ShardedVADEngine",
    "SliceOrderError",
    "SliceTimeoutError",
    "SpeechEvent",
    "StageStatistics",
    "StreamClosedError",
    "StreamError",
    "StreamFailedError",
    "StreamFailure",
    "StreamResult",
    "StreamState",
    "StreamStatistics",
    "UnknownBackendError",
    "UnsupportedSampleRateError",
    "VADConfig",
    "VADEngine",
    "VADStream",
    "WorkerPool",
    "WrongEventLoopError",
    "__version__",
    "aiter_observable",
    "available_backends",
    "backends",
    "create_backend",
    "operators",
    "register_backend",
    "run",
    "run_pipeline",
    "segments_from_probabilities",
    "uvloop_available",
]
