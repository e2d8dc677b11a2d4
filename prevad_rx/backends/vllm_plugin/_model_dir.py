"""Build the model directory vLLM loads: ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prevad_rx.backends._models import model_path
from prevad_rx.backends.vllm_plugin import ARCHITECTURE

__all__ = ["write_model_dir"]

CONFIG = {
    "architectures": [ARCHITECTURE],
    "model_type": "prevad_silero_vad",  # _hf_config.MODEL_TYPE (no transformers import here)
    "torch_dtype": "float32",
    "max_position_embeddings": 8,
    "num_hidden_layers": 1,
    "vocab_size": 2,
    "prevad_rx": {"model": "silero-vad 6.2 (16 kHz)", "weights": "silero_vad_16k_weights.npz"},
}


def write_model_dir(directory: Path) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` (needs safetensors)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    with np.load(model_path("weights")) as data:
        tensors = {name: np.ascontiguousarray(data[name]) for name in data.files}
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    return directory
