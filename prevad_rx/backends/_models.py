"""The Silero v6.2 model files shipped in the package, checked against their sha256 pins.

The files come from the silero-vad 6.2.3 wheel (MIT licence, ``models/LICENSE``);
the encoder/decoder split is derived from its sequence model by
``scripts/derive_models.py``, which also writes ``models/SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import threading
from functools import cache
from importlib import resources
from pathlib import Path

from prevad_rx._errors import ModelIntegrityError

__all__ = ["MODEL_FILES", "model_path", "pinned_digests"]

#: Shipped model files by role.
MODEL_FILES = {
    "streaming": "silero_vad.onnx",
    "sequence": "silero_vad_16k_sequence.onnx",
    "encoder": "silero_vad_16k_encoder.onnx",
    "decoder": "silero_vad_16k_decoder.onnx",
    "encoder_fast": "silero_vad_16k_encoder_fast.onnx",
    "weights": "silero_vad_16k_weights.npz",
}

_lock = threading.Lock()
_verified: set[str] = set()


def _models_dir() -> Path:
    return Path(str(resources.files("prevad_rx.backends") / "models"))


@cache
def pinned_digests() -> dict[str, str]:
    """File name -> sha256 hex digest, from ``models/SHA256SUMS``."""
    text = (_models_dir() / "SHA256SUMS").read_text()
    pins = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            pins[name] = digest
    return pins


def model_path(role: str, *, verify: bool = True) -> Path:
    """Path of a shipped model file; the first use per process checks its sha256 pin."""
    name = MODEL_FILES[role]
    path = _models_dir() / name
    if verify:
        with _lock:
            if name not in _verified:
                expected = pinned_digests().get(name)
                try:
                    actual = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as exc:
                    raise ModelIntegrityError(f"model file {path} is missing: {exc}") from exc
                if actual != expected:
                    raise ModelIntegrityError(
                        f"model file {path} has sha256 {actual}, expected {expected}; "
                        "reinstall prevad_rx or re-derive with scripts/derive_models.py"
                    )
                _verified.add(name)
    return path
