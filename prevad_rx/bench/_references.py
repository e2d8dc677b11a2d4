"""The reference ways of running the same Silero v6.2 model, for comparison in the same run.

(a) :class:`FrameByFrame` -- one ORT call per 512-sample frame with the state carried
    (what silero-vad's ``OnnxWrapper`` / ``VADIterator`` do, and pipecat's and LiveKit's
    analyzers per stream);
(b) :class:`SequencePerChunk` -- one ORT call per chunk through
    ``silero_vad_16k_sequence.onnx`` (silero-vad's ``SileroVADSequence``);
(c) :func:`naive_split` -- each chunk cut into N slices, each on a fresh model instance
    (fast, and wrong: it changes decisions; measured for speed only).

All use single-threaded ORT sessions, as silero-vad does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prevad_rx.backends import model_path

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "FrameByFrame",
    "SequencePerChunk",
    "VadIteratorLike",
    "naive_split",
    "streaming_session",
    "windows_of",
]


def _session(role: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(model_path(role)), sess_options=options, providers=["CPUExecutionProvider"]
    )


def windows_of(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    """Model input rows [n, 576] of a whole 16 kHz signal (context + frame; last frame padded)."""
    n = -(-audio.size // 512)
    buffer = np.zeros(64 + n * 512, np.float32)
    buffer[64 : 64 + audio.size] = audio
    return np.lib.stride_tricks.as_strided(buffer, (n, 576), (2048, 4)).copy()


class FrameByFrame:
    """(a) The streaming model, one ORT call per frame, state and context carried."""

    def __init__(self, session: Any = None) -> None:
        self._session = session if session is not None else _session("streaming")
        self._rate = np.array(16000, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(64, np.float32)

    def __call__(self, frame: NDArray[np.float32]) -> float:
        row = np.concatenate((self._context, frame))[None, :]
        out, self._state = self._session.run(
            None, {"input": row, "state": self._state, "sr": self._rate}
        )
        self._context = frame[-64:]
        return float(out[0, 0])


class SequencePerChunk:
    """(b) The sequence model: one ORT call per chunk, h and c carried between chunks."""

    def __init__(self) -> None:
        self._session = _session("sequence")
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)

    def __call__(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        probs, self._h, self._c = self._session.run(
            None, {"input": windows, "h": self._h, "c": self._c}
        )
        return np.asarray(probs)


def naive_split(
    model: SequencePerChunk, windows: NDArray[np.float32], pieces: int
) -> NDArray[np.float32]:
    """(c) One chunk cut into ``pieces`` slices, each run from a fresh state."""
    out = []
    for part in np.array_split(windows, pieces):
        if part.shape[0]:
            model.reset()
            out.append(model(part))
    return np.concatenate(out)


def streaming_session() -> Any:
    """One ORT session of the streaming model (``run`` may be called from any thread)."""
    return _session("streaming")


class VadIteratorLike:
    """A per-stream analyzer as pipecat/LiveKit build it: (a) plus silero's ``VADIterator``
    hysteresis, fed 512-sample frames. Streams may share the ORT session (their state is
    their own); creating one per stream only costs start-up time."""

    def __init__(
        self, session: Any = None, threshold: float = 0.5, min_silence_ms: int = 100
    ) -> None:
        self.model = FrameByFrame(session)
        self.threshold = threshold
        self.min_silence = 16000 * min_silence_ms / 1000
        self.triggered = False
        self.temp_end = 0
        self.current = 0

    def __call__(self, frame: NDArray[np.float32]) -> str | None:
        self.current += frame.size
        prob = self.model(frame)
        if prob >= self.threshold and self.temp_end:
            self.temp_end = 0
        if prob >= self.threshold and not self.triggered:
            self.triggered = True
            return "start"
        if prob < self.threshold - 0.15 and self.triggered:
            if not self.temp_end:
                self.temp_end = self.current
            if self.current - self.temp_end >= self.min_silence:
                self.temp_end = 0
                self.triggered = False
                return "end"
        return None
