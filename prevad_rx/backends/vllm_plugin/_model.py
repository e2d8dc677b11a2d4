"""Silero VAD as a vLLM model: attention-free, pooling, raw tensors in, one row out per request.

Shaped after vLLM's own non-LLM model (``vllm/model_executor/models/terratorch.py``):
the request carries its tensors in ``multi_modal_data`` under the ``image``
modality (vLLM requires a modality key) -- ``windows`` [n, 576] and ``state``
[2, 128] -- with a one-token dummy prompt; no tokenizer is involved. The model
runs every scheduled request's run of frames in one batched forward and returns
one packed row per request (see :mod:`._protocol`), which the identity pooler
hands back as the request's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import ModalityData, MultiModalDataDict, MultiModalInput, mm_input
from vllm.model_executor.layers.pooler import IdentityPooler
from vllm.model_executor.models.interfaces import (
    IsAttentionFree,
    MultiModalEmbeddings,
    SupportsMultiModal,
)
from vllm.model_executor.models.interfaces_base import attn_type
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import (
    ImageItem,
    MultiModalFieldConfig,
    MultiModalKwargsItems,
    PlaceholderRange,
)
from vllm.multimodal.parse import (
    DictEmbeddingItems,
    ModalityDataItems,
    MultiModalDataItems,
    MultiModalDataParser,
)
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptUpdate,
    TimingContext,
)
from vllm.sequence import IntermediateTensors

from prevad_rx.backends._torch_model import SileroVAD16k
from prevad_rx.backends.vllm_plugin._protocol import FRAME_WIDTH, OUTPUT_WIDTH

__all__ = ["PrevadSileroVAD"]

_MODALITY = "image"
_FIELDS = frozenset({"windows", "state"})


def _fields(hf_inputs: Mapping[str, torch.Tensor]) -> Mapping[str, MultiModalFieldConfig]:
    return {name: MultiModalFieldConfig.batched(_MODALITY) for name in _FIELDS}


def _shared_fields(hf_inputs: Mapping[str, torch.Tensor]) -> Mapping[str, MultiModalFieldConfig]:
    return {name: MultiModalFieldConfig.shared(_MODALITY, batch_size=1) for name in _FIELDS}


class _DataParser(MultiModalDataParser):
    def _parse_image_data(
        self, data: dict[str, torch.Tensor] | ModalityData[ImageItem]
    ) -> ModalityDataItems[Any, Any] | None:
        if isinstance(data, dict):
            return DictEmbeddingItems(
                data,
                modality=_MODALITY,
                required_fields=set(_FIELDS),
                fields_factory=_shared_fields,
            )
        return super()._parse_image_data(data)

    def parse_mm_data(self, mm_data: MultiModalDataDict) -> MultiModalDataItems:
        if _MODALITY not in mm_data:
            mm_data = {_MODALITY: mm_data}
        return super().parse_mm_data(mm_data)


class _ProcessingInfo(BaseProcessingInfo):
    def get_data_parser(self) -> MultiModalDataParser:
        return _DataParser(expected_hidden_size=self._get_expected_hidden_size())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {_MODALITY: None}


class _DummyInputs(BaseDummyInputsBuilder[_ProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ""

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions
    ) -> MultiModalDataDict:
        return {
            _MODALITY: {
                "windows": torch.zeros(1, FRAME_WIDTH, dtype=torch.float32),
                "state": torch.zeros(2, 128, dtype=torch.float32),
            }
        }


class _Processor(BaseMultiModalProcessor[_ProcessingInfo]):
    requires_tokenizer = False

    def _get_mm_fields_config(
        self,
        hf_inputs: BatchFeature,
        hf_processor_mm_kwargs: Mapping[str, object],
    ) -> Mapping[str, MultiModalFieldConfig]:
        return _fields(hf_inputs)

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        return []

    def apply(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> MultiModalInput:
        with timing_ctx.record("apply_hf_processor"):
            passthrough = self._get_hf_mm_inputs(
                inputs.mm_data_items, inputs.hf_processor_mm_kwargs
            ).passthrough_data
            processed = BatchFeature(
                {k: torch.as_tensor(v).unsqueeze(0) for k, v in passthrough.items()},
                tensor_type="pt",
            )
        mm_kwargs = MultiModalKwargsItems.from_hf_inputs(processed, _fields(processed))
        with timing_ctx.record("get_mm_hashes"):
            mm_hashes = inputs.get_mm_hashes(
                self.info.model_id, self.info.ctx.get_mm_config().mm_hasher_algorithm
            )
        return mm_input(
            prompt_token_ids=[1],
            mm_kwargs=mm_kwargs,
            mm_hashes=mm_hashes,
            mm_placeholders={_MODALITY: [PlaceholderRange(offset=0, length=0)]},
        )


def _as_list(value: Any) -> list[torch.Tensor]:
    """Batched fields arrive stacked ([B, ...], equal shapes) or as a list of tensors."""
    if value is None:
        return []
    items: list[torch.Tensor] = list(value)
    return items


@attn_type("attention_free")
@MULTIMODAL_REGISTRY.register_processor(_Processor, info=_ProcessingInfo, dummy_inputs=_DummyInputs)
class PrevadSileroVAD(nn.Module, IsAttentionFree, SupportsMultiModal):
    """Silero VAD v6.2 (16 kHz) served by vLLM; state travels with each request."""

    supports_multimodal_raw_input_only = True
    is_pooling_model = True

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith(_MODALITY):
            return None
        raise ValueError("only the raw-tensor input is supported")

    def __init__(self, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        self.vad = SileroVAD16k()
        self.pooler = IdentityPooler()

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: MultiModalEmbeddings | None = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return torch.empty((input_ids.shape[0], 0))  # the dummy token carries nothing

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        runs = [r.reshape(-1, FRAME_WIDTH).float() for r in _as_list(kwargs.get("windows"))]
        states = [s.reshape(2, 128).float() for s in _as_list(kwargs.get("state"))]
        rows = torch.zeros(max(len(runs), positions.shape[0]), OUTPUT_WIDTH)
        if runs:
            with torch.no_grad():
                probs, new_states = self.vad(runs, states)
            for b, (p, s) in enumerate(zip(probs, new_states, strict=True)):
                rows[b, 0] = p.shape[0]
                rows[b, 1:257] = s.reshape(-1)
                rows[b, 257 : 257 + p.shape[0]] = p
        return rows

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        self.vad.load_silero(dict(weights))
        return {f"vad.{name}" for name, _ in self.vad.named_parameters()} | {"vad.stft_basis"}
