"""Backend factory and registry: built-ins, ``register_backend``, and entry points."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from prevad_rx._errors import BackendError, UnknownBackendError
from prevad_rx.backends._base import Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "available_backends",
    "create_backend",
    "register_backend",
]

#: Entry-point group third-party packages use to provide backends.
ENTRY_POINT_GROUP = "prevad_rx.backends"

BackendFactory = Callable[..., Backend]

_BUILTIN: dict[str, str] = {
    "onnx": "prevad_rx.backends._onnx:OnnxBackend",
    "torch": "prevad_rx.backends._torch:TorchBackend",
    "vllm": "prevad_rx.backends._vllm:VllmBackend",
    "vllm-api": "prevad_rx.backends._vllm_api:VllmApiBackend",
}

_lock = threading.Lock()
_registered: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``create_backend(name, **options)`` call ``factory(**options)``.

    ``factory`` is usually a :class:`Backend` subclass. Registering a name
    twice raises :class:`ValueError` unless ``replace`` is true.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("backend name must be a non-empty str")
    if not callable(factory):
        raise TypeError("backend factory must be callable")
    with _lock:
        if not replace and (name in _registered or name in _BUILTIN):
            raise ValueError(f"a backend named {name!r} is already registered")
        _registered[name] = factory


def _load(target: str) -> BackendFactory:
    module, _, attr = target.partition(":")
    factory: BackendFactory = getattr(importlib.import_module(module), attr)
    return factory


def _from_entry_points(name: str) -> BackendFactory | None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            factory: BackendFactory = entry.load()
            return factory
    return None


def _lookup(name: str) -> BackendFactory:
    with _lock:
        factory = _registered.get(name)
    if factory is not None:
        return factory
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    found = _from_entry_points(name)
    if found is None:
        raise UnknownBackendError(
            f"unknown backend {name!r}; available: {', '.join(available_backends())}"
        )
    return found


def available_backends() -> list[str]:
    """Names ``create_backend`` accepts: built-in, registered and entry-point backends."""
    names = set(_BUILTIN)
    with _lock:
        names.update(_registered)
    names.update(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def create_backend(name: str, **options: Any) -> Backend:
    """A new, uninitialised backend instance: ``factory(**options)`` for the named backend."""
    if not isinstance(name, str):
        raise UnknownBackendError(f"backend name must be a str, got {type(name).__name__}")
    factory = _lookup(name)
    try:
        backend = factory(**options)
    except TypeError as exc:
        raise BackendError(f"bad options for backend {name!r}: {exc}") from exc
    if not isinstance(backend, Backend):
        raise BackendError(
            f"backend factory for {name!r} returned {type(backend).__name__}, "
            "not a prevad_rx.backends.Backend"
        )
    return backend
