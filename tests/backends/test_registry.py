"""Backend factory and registry: built-ins, register_backend, entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import prevad_rx as pv
from prevad_rx.backends import ModelRequest, ModelResult, _registry


class ConstantBackend(pv.Backend):
    """Says 'speech' with a fixed probability; state counts frames."""

    name = "constant"

    def __init__(self, probability: float = 0.9) -> None:
        self.probability = probability

    def process(self, requests: Sequence[ModelRequest]) -> list[ModelResult]:
        return [
            ModelResult(
                np.full(r.windows.shape[0], self.probability, np.float32),
                r.state + r.windows.shape[0],
            )
            for r in requests
        ]


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(_registry._registered)
    yield
    _registry._registered.clear()
    _registry._registered.update(saved)


def test_onnx_is_built_in() -> None:
    assert "onnx" in pv.available_backends()
    assert type(pv.create_backend("onnx")).__name__ == "OnnxBackend"


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(pv.UnknownBackendError, match=r"available: .*onnx"):
        pv.create_backend("no-such-backend")
    with pytest.raises(pv.UnknownBackendError):
        pv.create_backend(3)  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_registry")
def test_register_and_create_with_options() -> None:
    pv.register_backend("constant", ConstantBackend)
    backend = pv.create_backend("constant", probability=0.25)
    assert isinstance(backend, ConstantBackend) and backend.probability == 0.25
    assert "constant" in pv.available_backends()
    with pytest.raises(ValueError, match="already registered"):
        pv.register_backend("constant", ConstantBackend)
    pv.register_backend("constant", ConstantBackend, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        pv.register_backend("onnx", ConstantBackend)


@pytest.mark.usefixtures("clean_registry")
def test_a_factory_must_return_a_backend() -> None:
    pv.register_backend("not-a-backend", lambda: object())
    with pytest.raises(pv.BackendError, match=r"not a prevad_rx\.backends\.Backend"):
        pv.create_backend("not-a-backend")


def test_entry_point_backends_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party distribution declaring the entry point, installed on sys.path."""
    package = tmp_path / "thirdparty_vad"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from tests.backends.test_registry import ConstantBackend as Backend\n"
    )
    dist = tmp_path / "thirdparty_vad-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-vad\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[prevad_rx.backends]\nthirdparty = thirdparty_vad:Backend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "thirdparty_vad", raising=False)
    assert "thirdparty" in pv.available_backends()
    backend = pv.create_backend("thirdparty", probability=0.5)
    assert type(backend).__name__ == "ConstantBackend"
