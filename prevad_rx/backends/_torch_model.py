"""Silero VAD v6.2 (16 kHz) in torch: the network of the ``torch`` backend and the vLLM plugin.

The same arithmetic as the ONNX graph -- STFT as a strided convolution, four
convolutions, an LSTM in ONNX gate order (input, output, forget, cell) and the
output head -- loaded from the package's ``silero_vad_16k_weights.npz``. The two
halves are separate: :meth:`SileroVAD16k.encode` (frames independent) and
:meth:`SileroVAD16k.decode` (a padded batch of streams, each with its own state
and number of steps). Both take fixed shapes, so a CUDA graph can be captured
per shape. Matches onnxruntime within 1e-5 in fp32 (tests/torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SileroVAD16k", "build", "load_weights"]

#: Features per frame (the encoder's output, the LSTM's input and state width).
FEATURE_DIM = 128


def load_weights(path: str | None = None, *, verify: bool = True) -> dict[str, torch.Tensor]:
    """The shipped weights (checked against their sha256 pin) as torch tensors."""
    from prevad_rx.backends._models import model_path

    with np.load(path or model_path("weights", verify=verify)) as data:
        return {name: torch.from_numpy(data[name].copy()) for name in data.files}


class SileroVAD16k(nn.Module):
    """Windows [n, 576] + state [2, 128] per stream -> probabilities [n] + new state."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(258, 1, 256))
        shapes = [(128, 129), (64, 128), (64, 64), (128, 64)]
        self.convs = nn.ModuleList(nn.Conv1d(i, o, 3, padding=1) for o, i in shapes)
        self.strides = (1, 2, 2, 1)
        self.w_ih = nn.Parameter(torch.zeros(512, 128))
        self.w_hh = nn.Parameter(torch.zeros(512, 128))
        self.bias = nn.Parameter(torch.zeros(512))
        self.head = nn.Linear(128, 1)

    def load_silero(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.stft_basis.copy_(weights["stft_forward_basis_buffer"])
            for k, conv in enumerate(self.convs):
                conv.weight.copy_(weights[f"encoder_{k}_weight"])
                conv.bias.copy_(weights[f"encoder_{k}_bias"])
            self.w_ih.copy_(weights["LSTM_209"][0])
            self.w_hh.copy_(weights["LSTM_210"][0])
            b = weights["LSTM_211"][0]
            self.bias.copy_(b[:512] + b[512:])
            self.head.weight.copy_(weights["output_weight"][:, :, 0])
            self.head.bias.copy_(weights["output_bias"])

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """[N, 576] -> [N, 128]; frames are independent."""
        x = F.pad(windows.unsqueeze(1), (0, 64), mode="reflect")  # [N, 1, 640]
        spec = F.conv1d(x, self.stft_basis, stride=128)  # [N, 258, 4]
        x = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        for conv, stride in zip(self.convs, self.strides, strict=True):
            x = F.relu(F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=1))
        return x[:, :, 0]

    def decode(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features [T, B, 128] from states h, c [B, 128] -> probabilities [T, B], h, c.

        Stream ``b`` advances ``lengths[b]`` steps; its later steps (padding) leave
        its state as it is and give probabilities to be ignored.
        """
        steps = x.shape[0]
        gates_x = x @ self.w_ih.T + self.bias  # [T, B, 512]
        outputs = []
        for t in range(steps):
            gates = gates_x[t] + h @ self.w_hh.T
            i, o, f, g = gates.chunk(4, dim=1)  # ONNX order: input, output, forget, cell
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            live = (lengths > t).unsqueeze(1)
            h = torch.where(live, h_new, h)
            c = torch.where(live, c_new, c)
            outputs.append(h_new)
        hidden = torch.stack(outputs) if outputs else x.new_zeros(0, x.shape[1], FEATURE_DIM)
        probs = torch.sigmoid(self.head(F.relu(hidden))).squeeze(-1)  # [T, B]
        return probs, h, c

    def forward(
        self, runs: Sequence[torch.Tensor], states: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each run [n_i, 576] from its state [2, 128] -> probabilities [n_i], state."""
        lengths = [int(r.shape[0]) for r in runs]
        batch = len(runs)
        steps = max(lengths, default=0)
        device = self.w_ih.device
        x = torch.zeros(steps, batch, FEATURE_DIM, dtype=torch.float32, device=device)
        if sum(lengths):
            features = self.encode(torch.cat([r.to(device) for r in runs]))
            offset = 0
            for b, n in enumerate(lengths):
                x[:n, b] = features[offset : offset + n]
                offset += n
        state = torch.stack([s.to(device) for s in states])  # [B, 2, 128]
        active = torch.tensor(lengths, device=device)
        probs, h, c = self.decode(x, state[:, 0], state[:, 1], active)
        return (
            [probs[:n, b] for b, n in enumerate(lengths)],
            [torch.stack((h[b], c[b])) for b in range(batch)],
        )


def build(weights_path: str | None = None, *, verify: bool = True) -> SileroVAD16k:
    """The model with the shipped weights, in eval mode, on the CPU."""
    model = SileroVAD16k()
    model.load_silero(load_weights(weights_path, verify=verify))
    model.eval()
    return model
