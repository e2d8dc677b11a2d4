"""vLLM plugin: Silero VAD v6.2 (16 kHz) served by vLLM, in-process or with ``vllm serve``.

Entry points (declared in ``pyproject.toml``, loaded by vLLM in every process it starts):

* ``vllm.general_plugins``: ``prevad_rx = prevad_rx.backends.vllm_plugin:register`` --
  registers the model architecture ``PrevadSileroVAD``;
* ``vllm.io_processor_plugins``: ``prevad_rx_vad = prevad_rx.backends.vllm_plugin:io_processor``
  -- lets ``/pooling`` take VAD requests (``--io-processor-plugin prevad_rx_vad``).

Nothing here imports vLLM or torch until vLLM calls it, so the package stays usable
without them. :mod:`._protocol` (request/response format) needs neither.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURE", "IO_PROCESSOR", "io_processor", "register"]

ARCHITECTURE = "PrevadSileroVAD"
IO_PROCESSOR = "prevad_rx_vad"


def register() -> None:
    """Register the model (and its config class) with vLLM (idempotent)."""
    from vllm import ModelRegistry

    from prevad_rx.backends.vllm_plugin._hf_config import register_config

    register_config()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            ARCHITECTURE, "prevad_rx.backends.vllm_plugin._model:PrevadSileroVAD"
        )


def io_processor() -> str:
    """The IO processor's class, by qualified name (vLLM imports it)."""
    return "prevad_rx.backends.vllm_plugin._io_processor.SileroIOProcessor"
