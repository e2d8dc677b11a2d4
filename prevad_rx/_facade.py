"""AsyncParallelVAD: the single-stream facade, for code written against the original design.

::

    async with AsyncParallelVAD(backend_type="onnx", num_workers=4, threshold=0.5) as vad:
        for chunk in chunks:
            await vad.process_chunk(chunk)
        for segment in await vad.get_results():
            print(segment.start_time_ms, segment.end_time_ms)

It runs one :class:`~prevad_rx.VADEngine` with one stream; ``get_results``
ends the current stream (the audio so far is one recording) and the next
``process_chunk`` starts a new one.
"""

from __future__ import annotations

import itertools
from types import TracebackType
from typing import Any

from prevad_rx._audio import AudioInput
from prevad_rx._config import VADConfig
from prevad_rx._engine import VADEngine
from prevad_rx._errors import ClosedError
from prevad_rx._stream import VADStream
from prevad_rx._types import Segment

__all__ = ["AsyncParallelVAD"]


class AsyncParallelVAD:
    """One audio stream with the engine's exact parallel VAD behind it.

    Args:
        backend_type: backend name (``"onnx"``).
        num_workers: worker threads.
        threshold: speech threshold; other :class:`VADConfig` fields may be
            passed as keyword arguments (``min_silence_duration_ms=...``).
        sample_rate: rate of the audio passed to :meth:`process_chunk`.
    """

    def __init__(
        self,
        backend_type: str = "onnx",
        num_workers: int = 4,
        threshold: float = 0.5,
        *,
        sample_rate: int = 16000,
        backend_options: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        self.config = VADConfig(threshold=threshold, **config)
        self.sample_rate = sample_rate
        self._engine = VADEngine(
            backend_type, num_workers, self.config, backend_options=backend_options
        )
        self._stream: VADStream | None = None
        self._reported = 0
        self._ids = itertools.count()
        self._initialized = False

    async def initialize(self) -> None:
        """Start the worker pool and load the model on every worker."""
        if not self._initialized:
            await self._engine.start()
            self._initialized = True

    def _current(self) -> VADStream:
        if not self._initialized:
            raise ClosedError("call initialize() (or use 'async with') first")
        if self._stream is None:
            self._stream = self._engine.open_stream(
                f"stream-{next(self._ids)}", sample_rate=self.sample_rate
            )
            self._reported = 0
        return self._stream

    async def process_chunk(self, audio: AudioInput) -> list[Segment]:
        """Process one chunk; returns the segments it finished (exact, final)."""
        stream = self._current()
        await stream.push(audio)
        await stream.flush()
        segments = stream.segments
        new = segments[self._reported :]
        self._reported = len(segments)
        return new

    async def get_results(self) -> list[Segment]:
        """End the current recording and return all of its segments."""
        stream = self._current()
        self._stream = None
        result = await stream.close()
        return list(result.segments)

    async def close(self) -> None:
        """Stop the engine and its workers."""
        await self._engine.close()

    async def __aenter__(self) -> AsyncParallelVAD:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
