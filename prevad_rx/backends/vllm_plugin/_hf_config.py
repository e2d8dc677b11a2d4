"""The model's configuration class, registered with transformers' ``AutoConfig``.

vLLM reads ``config.json`` through transformers, which only knows registered model
types; registering ours (from the general plugin, in every vLLM process) is what
lets a directory written by ``prevad-rx vllm-model`` load without remote code.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

__all__ = ["MODEL_TYPE", "PrevadSileroVADConfig", "register_config"]

MODEL_TYPE = "prevad_silero_vad"


class PrevadSileroVADConfig(PretrainedConfig):
    model_type = MODEL_TYPE


def register_config() -> None:
    AutoConfig.register(MODEL_TYPE, PrevadSileroVADConfig, exist_ok=True)
