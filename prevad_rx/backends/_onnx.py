"""The default backend: Silero v6.2 on onnxruntime, one single-threaded session set per worker.

16 kHz runs through the encoder/decoder split of the sequence model (bit-identical
to it and to the streaming model): :meth:`OnnxBackend.encode` takes frames of any
streams in one call; :meth:`OnnxBackend.decode` advances several streams in one
LSTM call (padded to the longest run, with ``sequence_lens``). 8 kHz runs through
the streaming model's 8 kHz branch, one frame per step with all streams batched.

The encoder runs the fast graph (:mod:`prevad_rx.backends._fast_encoder`) for the
batch sizes where it was verified bit-identical to the reference encoder at
start-up, and the reference graph otherwise; :attr:`OnnxBackend.encoder_verdict`
says which.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prevad_rx._cpu import vector_extensions
from prevad_rx._errors import BackendError
from prevad_rx.backends._base import Backend, DecodeRequest, ModelRequest, ModelResult
from prevad_rx.backends._fast_encoder import EncoderVerdict, FastEncoder, verify
from prevad_rx.backends._models import model_path

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["OnnxBackend"]

log = logging.getLogger("prevad_rx.backends")

_FEATURES = "/Transpose_output_0"
_FEATURE_DIM = 128
#: The probabilities of a request without frames (read-only: shared by every such result).
_NO_PROBABILITIES = np.zeros(0, np.float32)
_NO_PROBABILITIES.flags.writeable = False

EncoderMode = Literal["auto", "fast", "reference"]

# The fast encoder is verified once per process and session configuration (the verdict
# does not depend on the instance), and each verdict is logged once, at INFO.
_verify_lock = threading.Lock()
_verdicts: dict[tuple[int, tuple[str, ...]], EncoderVerdict] = {}


class OnnxBackend(Backend):
    """Silero v6.2 on onnxruntime (CPU by default).

    Args:
        intra_op_threads: threads per ORT session; 1 by default because the
            worker pool provides the parallelism.
        providers: ORT execution providers.
        verify_models: check the shipped files' sha256 pins on first use.
        encoder: ``"auto"`` (default) uses the fast encoder graph for the batch
            sizes where it was verified bit-identical to the reference at
            start-up; ``"fast"`` requires that verification to succeed;
            ``"reference"`` always runs the original graph.
    """

    name = "onnx"

    def __init__(
        self,
        *,
        intra_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        verify_models: bool = True,
        encoder: EncoderMode = "auto",
    ) -> None:
        if not isinstance(intra_op_threads, int) or intra_op_threads < 1:
            raise BackendError(f"intra_op_threads must be an int >= 1, got {intra_op_threads!r}")
        if encoder not in ("auto", "fast", "reference"):
            raise BackendError(f"encoder must be 'auto', 'fast' or 'reference', got {encoder!r}")
        self._threads = intra_op_threads
        self._providers = list(providers)
        self._verify = verify_models
        self._encoder_mode = encoder
        self._sessions: dict[str, Any] = {}
        self._fast: FastEncoder | None = None
        self._fast_minimum = 0
        self._verdict = EncoderVerdict("reference", None, "not initialized")

    def initialize(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        for role in ("encoder", "decoder", "streaming"):
            path = model_path(role, verify=self._verify)
            self._sessions[role] = ort.InferenceSession(
                str(path), sess_options=options, providers=self._providers
            )
        if self._encoder_mode == "reference":
            self._verdict = EncoderVerdict("reference", None, "encoder='reference' was asked for")
            return
        fast = FastEncoder(
            ort.InferenceSession(
                str(model_path("encoder_fast", verify=self._verify)),
                sess_options=options,
                providers=self._providers,
            )
        )
        self._verdict = self._verified(fast)
        if self._verdict.path == "reference":
            if self._encoder_mode == "fast":
                raise BackendError(f"encoder='fast': {self._verdict.reason}")
            return
        self._fast = fast
        self._fast_minimum = self._verdict.minimum_batch or 1

    def _verified(self, fast: FastEncoder) -> EncoderVerdict:
        key = (self._threads, tuple(self._providers))
        with _verify_lock:
            verdict = _verdicts.get(key)
            if verdict is None:
                minimum = verify(fast, self._reference_encode)
                if minimum is None:
                    verdict = EncoderVerdict(
                        "reference",
                        None,
                        "the fast encoder graph is not bit-identical to the reference encoder "
                        "on this machine and onnxruntime build",
                    )
                else:
                    verdict = EncoderVerdict(
                        "fast",
                        minimum,
                        f"bit-identical to the reference for batches of >= {minimum} frames",
                    )
                _verdicts[key] = verdict
                log.info(
                    "prevad_rx: %s encoder (%s; CPU: %s)",
                    verdict.path,
                    verdict.reason,
                    ", ".join(vector_extensions()) or "no known vector extensions",
                )
        return verdict

    @property
    def encoder_verdict(self) -> EncoderVerdict:
        """Which encoder runs (fast graph or reference), from which batch size, and why."""
        return self._verdict

    @property
    def fast_encoder_minimum(self) -> int | None:
        """Smallest batch the fast encoder runs (None: the reference encoder runs everything)."""
        return self._fast_minimum if self._fast is not None else None

    def describe(self) -> Mapping[str, object]:
        return {
            "encoder": self._verdict.path,
            "fast_encoder_minimum_batch": self.fast_encoder_minimum,
            "encoder_reason": self._verdict.reason,
        }

    def close(self) -> None:
        self._sessions.clear()
        self._fast = None

    def _session(self, role: str) -> Any:
        try:
            return self._sessions[role]
        except KeyError:
            raise BackendError("OnnxBackend used before initialize()") from None

    # ------------------------------------------------------------- 16 kHz split

    def can_encode(self, sample_rate: int) -> bool:
        return sample_rate == 16000

    def encode(self, windows: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
        if sample_rate != 16000:
            raise BackendError(f"the encoder runs at 16000 Hz only, not {sample_rate}")
        n = windows.shape[0]
        if n == 0:
            return np.zeros((0, _FEATURE_DIM), np.float32)
        if self._fast is not None and n >= self._fast_minimum:
            return self._fast(windows)
        return self._reference_encode(windows)

    def _reference_encode(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        (features,) = self._session("encoder").run(
            None, {"input": np.ascontiguousarray(windows, dtype=np.float32)}
        )
        return np.asarray(features).reshape(windows.shape[0], _FEATURE_DIM)

    def decode(self, requests: Sequence[DecodeRequest]) -> list[ModelResult]:
        # Plain Python over the requests where numpy would be called on tiny arrays: a
        # live call holds a few frames of a few streams, so the bookkeeping around
        # the ORT call costs as much as the call itself.
        lengths = [r.features.shape[0] for r in requests]
        for request in requests:
            if request.sample_rate != 16000:
                raise BackendError(f"the decoder runs at 16000 Hz only, not {request.sample_rate}")
        active = [i for i, n in enumerate(lengths) if n]
        if not active:
            return [ModelResult(_NO_PROBABILITIES, r.state) for r in requests]
        steps = max(lengths)
        if len(active) == len(requests) and min(lengths) == steps:
            if steps == 1:  # one frame per stream (live packets): [1, B, 128] in one copy
                batch = np.concatenate([r.features for r in requests])[None]
            else:
                batch = np.stack([r.features for r in requests], axis=1)  # [T, B, 128]
        else:
            batch = np.zeros((steps, len(active), _FEATURE_DIM), np.float32)
            for column, i in enumerate(active):
                batch[: lengths[i], column] = requests[i].features
        states = np.stack([requests[i].state for i in active], axis=1)  # [2, B, 128]
        probs, h, c = self._session("decoder").run(
            None,
            {
                _FEATURES: batch,
                "h": states[0:1],
                "c": states[1:2],
                "sequence_lens": np.array([lengths[i] for i in active], np.int32),
            },
        )
        probs = np.asarray(probs).reshape(len(active), steps)
        new_states = np.concatenate((h, c))  # [2, B, 128]
        results = [ModelResult(_NO_PROBABILITIES, r.state) for r in requests]
        for column, i in enumerate(active):
            results[i] = ModelResult(probs[column, : lengths[i]], new_states[:, column])
        return results

    # ------------------------------------------------------------ whole model

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        results: list[ModelResult | None] = [None] * len(requests)
        wide = [i for i, r in enumerate(requests) if r.sample_rate == 16000]
        narrow = [i for i, r in enumerate(requests) if r.sample_rate == 8000]
        if len(wide) + len(narrow) != len(requests):
            rates = sorted({r.sample_rate for r in requests} - {8000, 16000})
            raise BackendError(f"OnnxBackend runs at 8000 or 16000 Hz, not {rates}")
        if wide:
            windows = [requests[i].windows for i in wide]
            features = self.encode(
                np.concatenate(
                    [w for w in windows if w.shape[0]] or [np.zeros((0, 576), np.float32)]
                ),
                16000,
            )
            bounds = np.cumsum([0] + [w.shape[0] for w in windows])
            decoded = self.decode(
                [
                    DecodeRequest(features[bounds[k] : bounds[k + 1]], requests[i].state, 16000)
                    for k, i in enumerate(wide)
                ]
            )
            for i, result in zip(wide, decoded, strict=True):
                results[i] = result
        if narrow:
            for i, result in zip(
                narrow, self._stream_8k([requests[i] for i in narrow]), strict=True
            ):
                results[i] = result
        return [r for r in results if r is not None]

    def _stream_8k(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        """Step the streaming model frame by frame; streams with a frame at a step share it."""
        session = self._session("streaming")
        lengths = [r.windows.shape[0] for r in requests]
        probs = [np.zeros(n, np.float32) for n in lengths]
        states = np.stack([r.state for r in requests], axis=1).astype(np.float32)  # [2, B, 128]
        rate = np.array(8000, dtype=np.int64)
        for step in range(max(lengths, default=0)):
            active = [b for b, n in enumerate(lengths) if n > step]
            inputs = np.stack([requests[b].windows[step] for b in active])
            out, new_state = session.run(
                None,
                {"input": inputs, "state": np.ascontiguousarray(states[:, active]), "sr": rate},
            )
            out = np.asarray(out).reshape(-1)
            for k, b in enumerate(active):
                probs[b][step] = out[k]
            states[:, active] = new_state
        return [ModelResult(p, np.ascontiguousarray(states[:, b])) for b, p in enumerate(probs)]
