"""Model backends: the base class, request/result types, and the factory/registry.

Built in: ``onnx`` (default; Silero v6.2 shipped in the package). Third parties
add backends with :func:`register_backend` or the ``prevad_rx.backends``
entry-point group.
"""

from prevad_rx.backends._base import Backend, DecodeRequest, ModelRequest, ModelResult
from prevad_rx.backends._models import MODEL_FILES, model_path
from prevad_rx.backends._registry import (
    ENTRY_POINT_GROUP,
    BackendFactory,
    available_backends,
    create_backend,
    register_backend,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MODEL_FILES",
    "Backend",
    "BackendFactory",
    "DecodeRequest",
    "ModelRequest",
    "ModelResult",
    "available_backends",
    "create_backend",
    "model_path",
    "register_backend",
]
