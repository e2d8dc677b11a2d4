"""The IO-processor plugin: lets ``vllm serve``'s ``/pooling`` endpoint take VAD requests.

``POST /pooling`` with ``{"model": ..., "data": <request>}`` (see :mod:`._protocol`);
the response's ``data`` is ``{"frames": n, "probabilities": <base64 f32 [n]>,
"state": <base64 f32 [2, 128]>}``. Requests are validated (sizes, base64, finite
values) before they reach the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor

from prevad_rx.backends.vllm_plugin._protocol import encode_array, parse_request, unpack_output

__all__ = ["SileroIOProcessor"]


class SileroIOProcessor(IOProcessor[dict[str, Any], dict[str, Any]]):
    def parse_data(self, data: object) -> dict[str, Any]:
        windows, state = parse_request(data)
        return {"windows": windows, "state": state}

    def pre_process(
        self, prompt: dict[str, Any], request_id: str | None = None, **kwargs: Any
    ) -> Any:
        return {
            "prompt_token_ids": [1],
            "multi_modal_data": {
                "image": {
                    "windows": torch.from_numpy(prompt["windows"]),
                    "state": torch.from_numpy(prompt["state"]),
                }
            },
        }

    def post_process(
        self,
        model_output: Sequence[PoolingRequestOutput],
        request_id: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        (output,) = model_output
        row = output.outputs.data.detach().cpu().numpy()
        frames = int(row[0])
        probabilities, state = unpack_output(row, frames)
        return {
            "frames": frames,
            "probabilities": encode_array(probabilities),
            "state": encode_array(state),
        }
